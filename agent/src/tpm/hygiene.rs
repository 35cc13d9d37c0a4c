//! Start-up hygiene: flush transient objects and sessions an earlier, killed `tvpd`
//! left in the TPM. Behind the kernel resource manager (`/dev/tpmrm0`) a new
//! connection sees none; on a directly attached TPM or swtpm they would accumulate
//! across crashes until the TPM runs out of slots.

use log::{info, warn};
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{ObjectHandle, TpmHandle};
use tss_esapi::structures::CapabilityData;
use tss_esapi::Context;

use super::error::{cmd, TpmError};

const TRANSIENT_FIRST: u32 = 0x8000_0000;
const HMAC_SESSION_FIRST: u32 = 0x0200_0000;
const POLICY_SESSION_FIRST: u32 = 0x0300_0000;

/// Flush every transient object and loaded session visible on this connection.
pub fn flush_stale(ctx: &mut Context) -> Result<usize, TpmError> {
    let mut flushed = 0;
    for first in [TRANSIENT_FIRST, HMAC_SESSION_FIRST, POLICY_SESSION_FIRST] {
        let (data, _) = ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, first, 64))
            .map_err(cmd("GetCapability(handles)"))?;
        let CapabilityData::Handles(list) = data else {
            continue;
        };
        for handle in list.into_inner() {
            let raw: u32 = handle.into();
            if raw >> 24 != first >> 24 {
                continue;
            }
            let obj: Result<ObjectHandle, _> =
                ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::try_from(raw)?));
            match obj.and_then(|o| ctx.flush_context(o)) {
                Ok(()) => flushed += 1,
                Err(e) => {
                    warn!(handle = format!("{raw:#010x}"), error = e.to_string(); "could not flush stale TPM handle")
                }
            }
        }
    }
    if flushed > 0 {
        info!(count = flushed; "flushed stale TPM objects and sessions left by an earlier process");
    }
    Ok(flushed)
}
