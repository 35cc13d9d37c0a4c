//! TPM2_ActivateCredential: lets an inventory service prove that the AK lives in the
//! same TPM as the EK. The service encrypts a secret to the EK, bound to the AK's name
//! (TPM2_MakeCredential, e.g. `tpm2_makecredential`); only this TPM can recover it.

use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, SessionHandle};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject};

use super::error::{cmd, TpmError};
use super::Tpm;

impl Tpm {
    /// Recover the secret of a credential made for this host's EK and AK name.
    /// `credential_blob` is the TPM2B_ID_OBJECT's buffer, `secret` the
    /// TPM2B_ENCRYPTED_SECRET's buffer (both without their size prefix).
    pub fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let id = IdObject::try_from(credential_blob.to_vec())
            .map_err(|e| TpmError::InvalidArgument(format!("credential_blob: {e}")))?;
        let enc = EncryptedSecret::try_from(secret.to_vec())
            .map_err(|e| TpmError::InvalidArgument(format!("secret: {e}")))?;
        // Salted to the EK with parameter encryption: the recovered secret leaves the
        // TPM encrypted under a key a bus observer cannot derive (see `session`).
        let policy = self.start_salted(SessionType::Policy)?;
        let result = self.activate_with(policy, id, enc);
        // The policy session is single-purpose: flush it whatever happened.
        let flushed = self
            .ctx()?
            .execute_without_session(|c| c.flush_context(SessionHandle::from(policy).into()));
        if let Err(e) = flushed {
            log::warn!(error = e.to_string(); "could not flush the credential policy session");
        }
        result
    }

    fn activate_with(
        &mut self,
        policy: AuthSession,
        id: IdObject,
        enc: EncryptedSecret,
    ) -> Result<Vec<u8>, TpmError> {
        let policy_session = PolicySession::try_from(policy).map_err(cmd("PolicySession"))?;
        self.ctx()?
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.policy_secret(
                    policy_session,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .map_err(cmd("PolicySecret(endorsement)"))?;
        let (ak, ek) = (self.ak, self.ek);
        let digest = self
            .ctx()?
            .execute_with_sessions((Some(AuthSession::Password), Some(policy), None), |c| {
                c.activate_credential(ak, ek, id, enc)
            })
            .map_err(refused_credential)?;
        Ok(digest.value().to_vec())
    }
}

/// ActivateCredential's failure. A format-one response code names one of the command's
/// parameters, that is the caller's credential blob or secret (wrong size, wrong
/// integrity: not made for this host's EK and AK): the caller's error, answered 400.
/// Anything else is the TPM's.
fn refused_credential(e: tss_esapi::Error) -> TpmError {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(_)) => TpmError::InvalidArgument(
            format!("the TPM refused the credential ({e}): it was not made with tpm2_makecredential for this host's EK and AK"),
        ),
        e => cmd("ActivateCredential")(e),
    }
}
