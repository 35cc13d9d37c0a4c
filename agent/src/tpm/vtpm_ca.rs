//! The vTPM CA key: the host TPM's key that signs the certificates of every VM TPM
//! this host creates (its EK and its AK, docs/vtpm-identity.md).
//!
//! It is an ECC P-256 signing key that never leaves this TPM (fixedTPM, fixedParent,
//! sensitiveDataOrigin), a primary of the owner hierarchy with a template of its own,
//! so the TPM re-derives the same key on demand and nothing about it is stored on
//! disk. It is unrestricted, because a certificate's TBS is not a TPM structure; the
//! tenant learns that it is *this* TPM's key from a TPM2_Certify by the host's AK over
//! the tenant's nonce, which is what makes the certificates it signs worth trusting.

use sha2::{Digest as _, Sha256};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccScheme, HashScheme, HashcheckTicket,
    KeyDerivationFunctionScheme, Public, PublicBuilder, PublicEccParametersBuilder, Signature,
    SignatureScheme,
};
use tss_esapi::traits::Marshall;

use super::error::{cmd, TpmError};
use super::Tpm;

/// The label whose SHA-256 is the template's unique field: it tells this primary
/// apart from any other P-256 signing primary of the owner hierarchy.
const UNIQUE_LABEL: &[u8] = b"tvp vTPM CA v1";

/// The CA key's public part and a TPM2_Certify of it by the host's AK.
#[derive(Debug, Clone)]
pub struct CaCertification {
    /// Marshalled TPMT_PUBLIC of the CA key.
    pub public: Vec<u8>,
    /// Marshalled TPMS_ATTEST (TPM_ST_ATTEST_CERTIFY) with the caller's nonce.
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE by the AK.
    pub signature: Vec<u8>,
}

/// The CA key's template (see the module doc).
fn template() -> Result<Public, TpmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(cmd("vTPM CA attributes"))?;
    let parameters = PublicEccParametersBuilder::new()
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(false)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .build()
        .map_err(cmd("vTPM CA parameters"))?;
    let label = EccParameter::try_from(Sha256::digest(UNIQUE_LABEL).to_vec())
        .map_err(cmd("vTPM CA unique"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::new(label, EccParameter::default()))
        .build()
        .map_err(cmd("vTPM CA template"))
}

fn marshal(what: &'static str) -> impl Fn(tss_esapi::Error) -> TpmError {
    move |e| TpmError::Encoding {
        what,
        reason: e.to_string(),
    }
}

impl Tpm {
    /// Load (re-derive) the CA key; the caller flushes it.
    fn vtpm_ca_load(&mut self) -> Result<(KeyHandle, Public), TpmError> {
        let public = template()?;
        self.ctx()?
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, public, None, None, None, None)
            })
            .map(|r| (r.key_handle, r.out_public))
            .map_err(cmd("CreatePrimary(vTPM CA)"))
    }

    /// The CA key's TPMT_PUBLIC.
    pub fn vtpm_ca_public(&mut self) -> Result<Vec<u8>, TpmError> {
        let (h, public) = self.vtpm_ca_load()?;
        self.flush(h.into());
        public.marshall().map_err(marshal("vTPM CA TPMT_PUBLIC"))
    }

    /// Sign a SHA-256 digest (a certificate's TBS) with the CA key: (r, s), 32 bytes
    /// each, big-endian.
    pub fn vtpm_ca_sign(&mut self, digest: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), TpmError> {
        let (h, _) = self.vtpm_ca_load()?;
        let d = Digest::try_from(digest.to_vec()).map_err(cmd("Sign digest"))?;
        let ticket = HashcheckTicket::try_from(tss_esapi::tss2_esys::TPMT_TK_HASHCHECK {
            tag: tss_esapi::constants::tss::TPM2_ST_HASHCHECK,
            hierarchy: tss_esapi::constants::tss::TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(cmd("Sign ticket"))?;
        let r = self
            .ctx()?
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.sign(
                    h,
                    d,
                    SignatureScheme::EcDsa {
                        hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
                    },
                    ticket,
                )
            });
        self.flush(h.into());
        match r.map_err(cmd("Sign(vTPM CA)"))? {
            Signature::EcDsa(s) => {
                let r = fixed32(s.signature_r().value()).ok_or(TpmError::Encoding {
                    what: "vTPM CA signature r",
                    reason: "longer than 32 bytes".into(),
                })?;
                let s = fixed32(s.signature_s().value()).ok_or(TpmError::Encoding {
                    what: "vTPM CA signature s",
                    reason: "longer than 32 bytes".into(),
                })?;
                Ok((r, s))
            }
            other => Err(TpmError::Encoding {
                what: "vTPM CA signature",
                reason: format!("not ECDSA: {:?}", other.algorithm()),
            }),
        }
    }

    /// Certify the CA key with the host's AK, `nonce` as qualifying data.
    pub fn vtpm_ca_certify(&mut self, nonce: &[u8]) -> Result<CaCertification, TpmError> {
        super::quote::check_nonce(nonce)?;
        let (h, public) = self.vtpm_ca_load()?;
        let r = self.certify_with_ak(h.into(), nonce, "Certify(vTPM CA)");
        self.flush(h.into());
        let (attest, signature) = r?;
        Ok(CaCertification {
            public: public.marshall().map_err(marshal("vTPM CA TPMT_PUBLIC"))?,
            attest: attest.marshall().map_err(marshal("TPMS_ATTEST"))?,
            signature: signature.marshall().map_err(marshal("TPMT_SIGNATURE"))?,
        })
    }
}

/// A big-endian integer of at most 32 bytes, left-padded to 32.
fn fixed32(v: &[u8]) -> Option<[u8; 32]> {
    let v = {
        let lead = v.iter().take_while(|b| **b == 0).count();
        &v[lead..]
    };
    let mut out = [0u8; 32];
    out.get_mut(32usize.checked_sub(v.len())?..)?
        .copy_from_slice(v);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::fixed32;

    #[test]
    fn integers_are_left_padded_and_leading_zeros_dropped() {
        assert_eq!(fixed32(&[1, 2]).map(|a| a[30..].to_vec()), Some(vec![1, 2]));
        let mut long = vec![0u8; 3];
        long.extend([7u8; 32]);
        assert_eq!(fixed32(&long), Some([7u8; 32]));
        assert_eq!(fixed32(&[1u8; 33]), None);
    }
}
