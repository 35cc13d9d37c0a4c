//! The TPM core: the one place in tvp that talks to the TPM.
//!
//! A [`Tpm`] owns one long-lived ESAPI context. Because that context is not `Send`,
//! `tvpd` runs it on a dedicated thread ([`service::TpmService`]) and every caller
//! goes through that thread: TPM commands are serialized, which is what a lock would
//! give, without any caller ever holding the context.

pub mod binding;
pub mod credential;
pub mod error;
pub mod hygiene;
pub mod keys;
pub mod nv;
mod nv_session;
pub mod pcr;
pub mod provision;
pub mod quote;
pub mod service;
mod session;
pub mod vtpm_ca;

use std::str::FromStr;

use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

pub use error::TpmError;
pub use provision::{HostIdentity, ProvisionConfig};
pub use quote::QuoteResult;

/// An open TPM with the host's keys loaded.
pub struct Tpm {
    /// The ESAPI context; `None` only while [`nv`] speaks raw commands on the
    /// connection, or after reconnecting failed (then every command fails cleanly).
    esys: Option<Context>,
    ek: KeyHandle,
    ak: KeyHandle,
    identity: HostIdentity,
    tcti: String,
    /// `tcti` parsed (reconnecting must not parse it again: that costs milliseconds).
    conf: TctiNameConf,
    cfg: ProvisionConfig,
    /// A raw connection for [`nv`] next to the ESAPI one (resource manager only).
    raw: Option<hygiene::RawTcti>,
    /// The PCR values returned with the last quote. A quote whose signed digest is
    /// their hash is answered with them, without reading the PCRs again ([`quote`]).
    last_quoted: Option<pcr::PcrValues>,
    /// The salted session the anchor's NV_Extend reuses ([`nv_session`]).
    nv_session: Option<nv_session::NvSession>,
    /// The anchor index known to be written (its TPM name includes TPMA_NV_WRITTEN).
    nv_written: Option<u32>,
}

impl Tpm {
    /// Open the TPM through `tcti` (e.g. `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321`), clean up what an earlier process left
    /// behind, and provision (or find) the EK and AK.
    pub fn open(tcti: &str, cfg: &ProvisionConfig) -> Result<Self, TpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| TpmError::Tcti {
            tcti: tcti.to_string(),
            reason: e.to_string(),
        })?;
        hygiene::flush_stale(conf.clone(), tcti)?;
        let mut ctx = Context::new(conf.clone()).map_err(|e| TpmError::Tcti {
            tcti: tcti.to_string(),
            reason: e.to_string(),
        })?;
        let (ek, ak, identity) = provision::provision(&mut ctx, cfg)?;
        // Every command from here on authorizes with the password session (TPM_RS_PW,
        // empty auth): set once, reused for the life of the context.
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        Ok(Tpm {
            esys: Some(ctx),
            ek,
            ak,
            identity,
            tcti: tcti.to_string(),
            conf,
            cfg: *cfg,
            raw: None,
            last_quoted: None,
            nv_session: None,
            nv_written: None,
        })
    }

    /// The ESAPI context, or an error if the connection could not be re-established
    /// after raw NV commands.
    fn ctx(&mut self) -> Result<&mut Context, TpmError> {
        self.esys.as_mut().ok_or_else(|| TpmError::Tcti {
            tcti: self.tcti.clone(),
            reason: "the TPM connection was lost and could not be reopened; restart tvpd".into(),
        })
    }

    /// The host's identity: EK, EK certificate, AK.
    pub fn identity(&self) -> &HostIdentity {
        &self.identity
    }
}
