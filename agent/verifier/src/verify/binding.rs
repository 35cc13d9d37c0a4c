//! Verifying a host binding key (docs/api.md, `POST /v1/host/binding-key`): that the
//! trusted AK certified it with the verifier's nonce, that it is a TPM-resident
//! decryption key nobody can use with a password, and that its use policy is exactly
//! PolicyPCR over the platform PCR values the verifier expects.

use std::collections::BTreeMap;

use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::ak::AkKey;
use super::certify::{check_certify, CertifyError};
use crate::tpm::public::{
    ATTR_DECRYPT, ATTR_FIXED_PARENT, ATTR_FIXED_TPM, ATTR_RESTRICTED, ATTR_SIGN,
    ATTR_USER_WITH_AUTH,
};
use crate::tpm::{Public, PublicKey};

/// TPM_CC_PolicyPCR.
const CC_POLICY_PCR: u32 = 0x0000_017f;
/// TPM_ALG_SHA256.
const ALG_SHA256: u16 = 0x000b;

/// Why a binding key is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindingError {
    /// A structure does not parse.
    #[error("binding key: malformed {0}")]
    Format(String),
    /// The certification is not signed by the trusted AK.
    #[error("binding key: certification not signed by the trusted AK")]
    Signature,
    /// The certification carries another nonce (stale or replayed).
    #[error("binding key: certification nonce {got} is not the nonce issued ({want})")]
    Nonce { got: String, want: String },
    /// The certification is about another object.
    #[error("binding key: the AK certified object {certified}, not this key ({key})")]
    Name { certified: String, key: String },
    /// The key's attributes allow more than a TPM-bound, policy-only decryption key.
    #[error("binding key: attributes {0:#010x} are not fixedTPM+fixedParent+decrypt without userWithAuth, sign or restricted")]
    Attributes(u32),
    /// The key's use policy is not PolicyPCR over the expected platform values.
    #[error("binding key: use policy {actual} is not PolicyPCR over the expected platform PCRs ({expected})")]
    Policy { expected: String, actual: String },
    /// Not an RSA key.
    #[error("binding key: not an RSA key")]
    NotRsa,
}

/// The policy digest of a single TPM2_PolicyPCR over SHA-256 PCR `values` (from an
/// empty policy), as the TPM computes it: SHA-256(0³² ‖ TPM_CC_PolicyPCR ‖
/// TPML_PCR_SELECTION ‖ SHA-256(values in ascending PCR order)). The selection uses a
/// 3-byte bitmap, as tvpd's TPM stack encodes it.
pub fn pcr_policy_digest(values: &BTreeMap<u32, [u8; 32]>) -> [u8; 32] {
    let mut bitmap = [0u8; 3];
    let mut pcr_hash = Sha256::new();
    for (i, v) in values {
        if let Some(b) = bitmap.get_mut((*i / 8) as usize) {
            *b |= 1 << (i % 8);
        }
        pcr_hash.update(v);
    }
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(CC_POLICY_PCR.to_be_bytes());
    h.update(1u32.to_be_bytes());
    h.update(ALG_SHA256.to_be_bytes());
    h.update([3u8]);
    h.update(bitmap);
    h.update(pcr_hash.finalize());
    h.finalize().into()
}

/// Check a binding key and return its RSA public key (to wrap secrets to).
pub fn verify_binding_key(
    public_tpm2b: &[u8],
    certify_attest: &[u8],
    certify_signature: &[u8],
    ak: &AkKey,
    nonce: &[u8],
    expected_policy: &[u8; 32],
) -> Result<RsaPublicKey, BindingError> {
    let public = Public::parse_tpm2b(public_tpm2b)
        .map_err(|e| BindingError::Format(format!("TPM2B_PUBLIC: {e}")))?;
    check_certify(&public, certify_attest, certify_signature, ak, nonce).map_err(|e| match e {
        CertifyError::Format(m) => BindingError::Format(m),
        CertifyError::Signature(_) => BindingError::Signature,
        CertifyError::Nonce { got, want } => BindingError::Nonce { got, want },
        CertifyError::Name { certified, key } => BindingError::Name { certified, key },
    })?;
    let a = public.object_attributes;
    let required = ATTR_FIXED_TPM | ATTR_FIXED_PARENT | ATTR_DECRYPT;
    if a & required != required || a & (ATTR_USER_WITH_AUTH | ATTR_SIGN | ATTR_RESTRICTED) != 0 {
        return Err(BindingError::Attributes(a));
    }
    if public.auth_policy != expected_policy {
        return Err(BindingError::Policy {
            expected: hex::encode(expected_policy),
            actual: hex::encode(&public.auth_policy),
        });
    }
    match &public.key {
        PublicKey::Rsa {
            exponent, modulus, ..
        } => RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(*exponent))
            .map_err(|e| BindingError::Format(format!("RSA key: {e}"))),
        _ => Err(BindingError::NotRsa),
    }
}
