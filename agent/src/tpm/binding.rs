//! The host binding key: an RSA decryption key that lives only in this TPM (fixedTPM,
//! fixedParent), whose use is bound by policy to the platform PCR values at its
//! creation (PolicyPCR; userWithAuth clear, so no password can stand in for the
//! policy), and whose public part the AK certifies (TPM2_Certify) so a key-management
//! service can tell it is in this TPM. Image keys wrapped to it (RSA-OAEP-SHA-256)
//! unwrap only inside this TPM and only while the platform is unchanged.
//!
//! There is deliberately no API to unwrap: only tvpd's own VM start path uses it.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Attest, Data, Digest, HashScheme, Private, Public, PublicBuilder, PublicKeyRsa,
    PublicRsaParametersBuilder, RsaDecryptionScheme, RsaExponent, RsaScheme, Signature,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;
use tss_esapi::utils::create_restricted_decryption_rsa_public;

use super::error::{cmd, TpmError};
use super::pcr::sha256_selection;
use super::Tpm;

/// A binding key as tvpd keeps it: the TPM-encrypted private blob and the public area.
#[derive(Debug, Clone)]
pub struct BindingKey {
    /// TPM2B_PRIVATE buffer (encrypted by the TPM's storage key; useless elsewhere).
    pub private: Vec<u8>,
    /// The public area.
    pub public: Public,
    /// PCRs its policy binds.
    pub pcrs: Vec<u32>,
}

/// A certification of the binding key by the AK.
#[derive(Debug, Clone)]
pub struct BindingCertificate {
    /// Marshalled TPM2B_PUBLIC of the binding key.
    pub public_tpm2b: Vec<u8>,
    /// Marshalled TPMS_ATTEST (TPM_ST_ATTEST_CERTIFY) with the caller's nonce.
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE by the AK.
    pub signature: Vec<u8>,
}

fn enc(what: &'static str) -> impl Fn(tss_esapi::Error) -> TpmError {
    move |e| TpmError::Encoding {
        what,
        reason: e.to_string(),
    }
}

impl Tpm {
    /// The storage root key (owner hierarchy, TCG default template): re-created on
    /// demand (deterministic) and flushed after use.
    fn storage_root(&mut self) -> Result<KeyHandle, TpmError> {
        let public = create_restricted_decryption_rsa_public(
            SymmetricDefinitionObject::AES_128_CFB,
            RsaKeyBits::Rsa2048,
            RsaExponent::default(),
        )
        .map_err(cmd("SRK template"))?;
        self.ctx()?
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, public, None, None, None, None)
            })
            .map(|r| r.key_handle)
            .map_err(cmd("CreatePrimary(SRK)"))
    }

    /// TPM2_Certify of the loaded object `object` by the AK, `nonce` as qualifying
    /// data (password sessions for both: their authorizations are empty). The caller
    /// flushes the object. `what` names the command in errors.
    pub(super) fn certify_with_ak(
        &mut self,
        object: ObjectHandle,
        nonce: &[u8],
        what: &'static str,
    ) -> Result<(Attest, Signature), TpmError> {
        let ak = self.ak;
        let scheme = self.identity.ak_scheme.esapi();
        let data = Data::try_from(nonce.to_vec()).map_err(cmd("Certify qualifying data"))?;
        self.ctx()?
            .execute_with_sessions(
                (
                    Some(AuthSession::Password),
                    Some(AuthSession::Password),
                    None,
                ),
                |c| c.certify(object, ak, data, scheme),
            )
            .map_err(cmd(what))
    }

    pub(super) fn flush(&mut self, h: ObjectHandle) {
        if let Ok(c) = self.ctx() {
            let _ = c.execute_without_session(|c| c.flush_context(h));
        }
    }

    /// The PolicyPCR digest over the current values of `pcrs` (trial session).
    fn pcr_policy_digest(&mut self, pcrs: &[u32]) -> Result<Digest, TpmError> {
        let selection = sha256_selection(pcrs)?;
        let trial = self.start_policy(SessionType::Trial)?;
        let r = (|| {
            let ps = PolicySession::try_from(trial).map_err(cmd("PolicySession"))?;
            self.ctx()?
                .execute_without_session(|c| c.policy_pcr(ps, Digest::default(), selection))
                .map_err(cmd("PolicyPCR(trial)"))?;
            self.ctx()?
                .execute_without_session(|c| c.policy_get_digest(ps))
                .map_err(cmd("PolicyGetDigest"))
        })();
        self.flush(SessionHandle::from(trial).into());
        r
    }

    fn start_policy(&mut self, kind: SessionType) -> Result<AuthSession, TpmError> {
        self.ctx()?
            .execute_without_session(|c| {
                c.start_auth_session(
                    None,
                    None,
                    None,
                    kind,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
            })
            .map_err(cmd("StartAuthSession"))?
            .ok_or_else(|| TpmError::Refused("the TPM returned no session".into()))
    }

    /// Create a binding key whose use requires `pcrs` to hold their current values.
    pub fn create_binding_key(&mut self, pcrs: &[u32]) -> Result<BindingKey, TpmError> {
        let policy = self.pcr_policy_digest(pcrs)?;
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(false)
            .with_admin_with_policy(false)
            .with_decrypt(true)
            .with_sign_encrypt(false)
            .with_restricted(false)
            .build()
            .map_err(cmd("binding key attributes"))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_auth_policy(policy)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new()
                    .with_scheme(RsaScheme::Null)
                    .with_key_bits(RsaKeyBits::Rsa2048)
                    .with_exponent(RsaExponent::default())
                    .with_is_decryption_key(true)
                    .with_is_signing_key(false)
                    .with_restricted(false)
                    .build()
                    .map_err(cmd("binding key parameters"))?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build()
            .map_err(cmd("binding key template"))?;
        let srk = self.storage_root()?;
        let created = self
            .ctx()?
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create(srk, public, None, None, None, None)
            });
        self.flush(srk.into());
        let created = created.map_err(cmd("Create(binding key)"))?;
        Ok(BindingKey {
            private: created.out_private.value().to_vec(),
            public: created.out_public,
            pcrs: pcrs.to_vec(),
        })
    }

    /// Load the binding key under a fresh SRK; the caller flushes both.
    fn load_binding(&mut self, key: &BindingKey) -> Result<(KeyHandle, KeyHandle), TpmError> {
        let srk = self.storage_root()?;
        let private = Private::try_from(key.private.clone()).map_err(cmd("binding key blob"))?;
        let public = key.public.clone();
        match self
            .ctx()?
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(srk, private, public)
            }) {
            Ok(h) => Ok((srk, h)),
            Err(e) => {
                self.flush(srk.into());
                Err(TpmError::Command {
                    command: "Load(binding key)",
                    source: e,
                })
            }
        }
    }

    /// Certify the binding key with the AK, `nonce` as qualifying data.
    pub fn certify_binding_key(
        &mut self,
        key: &BindingKey,
        nonce: &[u8],
    ) -> Result<BindingCertificate, TpmError> {
        super::quote::check_nonce(nonce)?;
        let (srk, h) = self.load_binding(key)?;
        let r = self.certify_with_ak(h.into(), nonce, "Certify(binding key)");
        self.flush(h.into());
        self.flush(srk.into());
        let (attest, signature) = r?;
        Ok(BindingCertificate {
            public_tpm2b: tss_esapi::structures::PublicBuffer::try_from(key.public.clone())
                .and_then(|b| b.marshall())
                .map_err(enc("binding key TPM2B_PUBLIC"))?,
            attest: attest.marshall().map_err(enc("TPMS_ATTEST"))?,
            signature: signature.marshall().map_err(enc("TPMT_SIGNATURE"))?,
        })
    }

    /// Unwrap (RSA-OAEP-SHA-256) a secret wrapped to the binding key. The TPM refuses
    /// unless the bound PCRs still hold their values from the key's creation.
    pub fn binding_unwrap(
        &mut self,
        key: &BindingKey,
        wrapped: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, TpmError> {
        let ct = PublicKeyRsa::try_from(wrapped.to_vec())
            .map_err(|e| TpmError::InvalidArgument(format!("wrapped key: {e}")))?;
        let selection = sha256_selection(&key.pcrs)?;
        let (srk, h) = self.load_binding(key)?;
        let r = (|| {
            // Salted, with parameter encryption: the wrapped key goes in and the
            // unwrapped key comes out encrypted on the bus (see `session`).
            let session = self.start_salted(SessionType::Policy)?;
            let ps = PolicySession::try_from(session).map_err(cmd("PolicySession"))?;
            let out = self
                .ctx()?
                .execute_without_session(|c| c.policy_pcr(ps, Digest::default(), selection))
                .map_err(cmd("PolicyPCR"))
                .and_then(|()| {
                    self.ctx()?
                        .execute_with_session(Some(session), |c| {
                            c.rsa_decrypt(
                                h,
                                ct,
                                RsaDecryptionScheme::Oaep(HashScheme::new(
                                    HashingAlgorithm::Sha256,
                                )),
                                Data::default(),
                            )
                        })
                        .map_err(cmd("RSA_Decrypt(binding key)"))
                });
            self.flush(SessionHandle::from(session).into());
            out.map(|d| zeroize::Zeroizing::new(d.value().to_vec()))
        })();
        self.flush(h.into());
        self.flush(srk.into());
        r
    }
}
