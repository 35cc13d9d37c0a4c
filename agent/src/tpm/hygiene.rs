//! Start-up hygiene: flush transient objects and sessions an earlier, killed `tvpd`
//! left in the TPM. Behind the kernel resource manager (`/dev/tpmrm0`) a new
//! connection sees none of them; on a directly attached TPM or swtpm they would
//! accumulate across crashes until the TPM runs out of slots.
//!
//! ESAPI cannot name sessions it did not start, so this speaks raw TPM2 commands
//! (GetCapability, FlushContext) through a TCTI of its own, before the ESAPI context
//! is opened. The `unsafe` FFI is confined to [`RawTcti`].

use std::ffi::CString;
use std::ptr::null_mut;

use log::{info, warn};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::{
    Tss2_TctiLdr_Finalize, Tss2_TctiLdr_Initialize, TSS2_TCTI_CONTEXT, TSS2_TCTI_CONTEXT_COMMON_V1,
};

use super::error::TpmError;

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_CC_GET_CAPABILITY: u32 = 0x0000_017a;
const TPM_CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const TPM_CAP_HANDLES: u32 = 1;
/// Transient objects, loaded sessions, saved (context-swapped) sessions.
const RANGES: [u32; 3] = [0x8000_0000, 0x0200_0000, 0x0300_0000];

/// A TCTI connection for a handful of raw commands.
pub(super) struct RawTcti {
    ctx: *mut TSS2_TCTI_CONTEXT,
    tcti: String,
}

impl RawTcti {
    pub(super) fn open(conf: TctiNameConf, tcti: &str) -> Result<Self, TpmError> {
        let tcti = tcti.to_string();
        let err = |reason: String| TpmError::Tcti {
            tcti: tcti.clone(),
            reason,
        };
        let name = CString::try_from(conf).map_err(|e| err(e.to_string()))?;
        let mut ctx = null_mut();
        // SAFETY: `name` is a valid NUL-terminated string for the call's duration and
        // `ctx` a valid out-pointer; on success the loader owns an initialized context
        // that we finalize exactly once in Drop.
        let rc = unsafe { Tss2_TctiLdr_Initialize(name.as_ptr(), &mut ctx) };
        if rc != 0 || ctx.is_null() {
            return Err(err(format!("TCTI loader returned {rc:#x}")));
        }
        Ok(RawTcti { ctx, tcti })
    }

    /// Send one command and return the response (header included).
    pub(super) fn execute(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TpmError> {
        let err = |reason: String| TpmError::Tcti {
            tcti: self.tcti.clone(),
            reason,
        };
        // SAFETY: every TCTI context begins with TSS2_TCTI_CONTEXT_COMMON_V1 (TSS TCTI
        // spec); `self.ctx` is a live context from Tss2_TctiLdr_Initialize. We only
        // copy the function pointers out.
        let common = unsafe { *(self.ctx as *const TSS2_TCTI_CONTEXT_COMMON_V1) };
        let (Some(transmit), Some(receive)) = (common.transmit, common.receive) else {
            return Err(err("TCTI has no transmit/receive".into()));
        };
        // SAFETY: `cmd` is valid for `cmd.len()` bytes; the TCTI copies it.
        let rc = unsafe { transmit(self.ctx, cmd.len() as u64, cmd.as_ptr()) };
        if rc != 0 {
            return Err(err(format!("transmit returned {rc:#x}")));
        }
        let mut buf = vec![0u8; 4096];
        let mut size = buf.len() as u64;
        // SAFETY: `buf` is writable for `size` bytes; the TCTI writes at most `size`
        // bytes and stores the actual length in `size`. -1 = block until complete.
        let rc = unsafe { receive(self.ctx, &mut size, buf.as_mut_ptr(), -1) };
        if rc != 0 {
            return Err(err(format!("receive returned {rc:#x}")));
        }
        buf.truncate((size as usize).min(4096));
        Ok(buf)
    }
}

impl Drop for RawTcti {
    fn drop(&mut self) {
        // SAFETY: `self.ctx` came from Tss2_TctiLdr_Initialize and is finalized once.
        unsafe { Tss2_TctiLdr_Finalize(&mut self.ctx) };
    }
}

fn command(cc: u32, params: &[u32]) -> Vec<u8> {
    let size = 10 + 4 * params.len() as u32;
    let mut c = Vec::with_capacity(size as usize);
    c.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    c.extend_from_slice(&size.to_be_bytes());
    c.extend_from_slice(&cc.to_be_bytes());
    for p in params {
        c.extend_from_slice(&p.to_be_bytes());
    }
    c
}

pub(super) fn response_code(r: &[u8]) -> u32 {
    r.get(6..10)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(u32::MAX)
}

/// Parse a GetCapability(TPM_CAP_HANDLES) response into handles.
fn parse_handles(r: &[u8]) -> Vec<u32> {
    if response_code(r) != 0 {
        return Vec::new();
    }
    // header(10) moreData(1) capability(4) count(4) handles...
    let Some(count) = r.get(15..19) else {
        return Vec::new();
    };
    let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
    r.get(19..)
        .unwrap_or_default()
        .chunks_exact(4)
        .take(count)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Flush every transient object and session visible on a fresh connection.
pub fn flush_stale(conf: TctiNameConf, tcti: &str) -> Result<usize, TpmError> {
    let mut tcti = RawTcti::open(conf, tcti)?;
    let mut flushed = 0;
    for first in RANGES {
        let r = tcti.execute(&command(
            TPM_CC_GET_CAPABILITY,
            &[TPM_CAP_HANDLES, first, 64],
        ))?;
        for handle in parse_handles(&r) {
            if !matches!(handle >> 24, 0x80 | 0x02 | 0x03) {
                continue;
            }
            let rc = response_code(&tcti.execute(&command(TPM_CC_FLUSH_CONTEXT, &[handle]))?);
            if rc == 0 {
                flushed += 1;
            } else {
                warn!(handle = format!("{handle:#010x}"), rc = format!("{rc:#x}"); "could not flush stale TPM handle");
            }
        }
    }
    if flushed > 0 {
        info!(count = flushed; "flushed stale TPM objects and sessions left by an earlier process");
    }
    Ok(flushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_responses() {
        assert_eq!(
            command(TPM_CC_FLUSH_CONTEXT, &[0x8000_0001]),
            [0x80, 0x01, 0, 0, 0, 14, 0, 0, 1, 0x65, 0x80, 0, 0, 1]
        );
        let mut r = vec![
            0x80, 0x01, 0, 0, 0, 27, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2,
        ];
        r.extend_from_slice(&0x8000_0000u32.to_be_bytes());
        r.extend_from_slice(&0x0200_0001u32.to_be_bytes());
        assert_eq!(parse_handles(&r), vec![0x8000_0000, 0x0200_0001]);
        // Truncated or failed responses yield nothing rather than garbage.
        assert!(parse_handles(&r[..12]).is_empty());
        r[9] = 1;
        assert!(parse_handles(&r).is_empty());
    }
}
