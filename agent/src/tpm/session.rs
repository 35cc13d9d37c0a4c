//! Sessions for commands that carry secrets.
//!
//! ActivateCredential's recovered secret and the binding key's unwrapped key cross the
//! TPM bus. An unsalted, unbound session with an empty auth value derives its
//! parameter-encryption key from the two nonces alone, which a bus observer sees, so
//! it hides nothing. A session salted to the EK is different: the salt travels
//! encrypted to the EK (only this TPM can read it), so the session key, and with it
//! the AES-128-CFB keys for the command's first parameter (`decrypt`) and the
//! response's first parameter (`encrypt`), stay between tvpd and the TPM.
//!
//! Quotes, PCR reads and extends carry nothing secret and keep using the one password
//! session set on the context (no per-command session start, no salt cost).

use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::SymmetricDefinition;

use super::error::{cmd, TpmError};
use super::Tpm;

impl Tpm {
    /// Start a session of `kind` salted to the EK, with command and response parameter
    /// encryption (AES-128-CFB) switched on. The caller flushes it after its one use.
    pub(crate) fn start_salted(&mut self, kind: SessionType) -> Result<AuthSession, TpmError> {
        let ek = self.ek;
        let session = self
            .ctx()?
            .execute_without_session(|c| {
                c.start_auth_session(
                    Some(ek),
                    None,
                    None,
                    kind,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
            })
            .map_err(cmd("StartAuthSession(salted to the EK)"))?
            .ok_or_else(|| TpmError::Refused("the TPM returned no session".into()))?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        let set = self
            .ctx()?
            .execute_without_session(|c| c.tr_sess_set_attributes(session, attrs, mask))
            .map_err(cmd("TRSess_SetAttributes(decrypt, encrypt)"));
        if let Err(e) = set {
            if let Ok(c) = self.ctx() {
                let _ = c.execute_without_session(|c| {
                    c.flush_context(tss_esapi::handles::SessionHandle::from(session).into())
                });
            }
            return Err(e);
        }
        Ok(session)
    }
}
