//! A TPM2_Certify by the trusted AK: that the AK signed it, over the verifier's nonce,
//! about the object whose public area the verifier holds. Shared by the host binding
//! key ([`super::binding`]) and the vTPM CA key ([`crate::vtpm`]).

use super::ak::AkKey;
use crate::tpm::certify::CertifyAttest;
use crate::tpm::{Public, Signature};

/// Why a certification is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertifyError {
    /// The attest or signature does not parse, or the key's name cannot be computed.
    #[error("malformed {0}")]
    Format(String),
    /// The AK's signature does not verify.
    #[error("certification not signed by the trusted AK: {0}")]
    Signature(String),
    /// The certification carries another nonce (stale or replayed).
    #[error("certification nonce {got} is not the nonce issued ({want})")]
    Nonce {
        /// Hex nonce in the certification.
        got: String,
        /// Hex nonce the verifier issued.
        want: String,
    },
    /// The certification is about another object.
    #[error("the AK certified object {certified}, not this key ({key})")]
    Name {
        /// Hex name the AK certified.
        certified: String,
        /// Hex name of the key presented.
        key: String,
    },
}

/// Check that `attest` (TPMS_ATTEST, TPM_ST_ATTEST_CERTIFY) with `signature`
/// (TPMT_SIGNATURE) is signed by `ak`, carries `nonce` as extraData and certifies the
/// object named by `public` (nameAlg ‖ H(TPMT_PUBLIC)). Returns the parsed attest.
pub fn check_certify(
    public: &Public,
    attest: &[u8],
    signature: &[u8],
    ak: &AkKey,
    nonce: &[u8],
) -> Result<CertifyAttest, CertifyError> {
    let parsed = CertifyAttest::parse(attest)
        .map_err(|e| CertifyError::Format(format!("certification: {e}")))?;
    let sig =
        Signature::parse(signature).map_err(|e| CertifyError::Format(format!("signature: {e}")))?;
    ak.verify(attest, &sig).map_err(CertifyError::Signature)?;
    if parsed.extra_data != nonce {
        return Err(CertifyError::Nonce {
            got: hex::encode(&parsed.extra_data),
            want: hex::encode(nonce),
        });
    }
    let name = public
        .name()
        .ok_or_else(|| CertifyError::Format("unsupported name algorithm".into()))?;
    if parsed.name != name {
        return Err(CertifyError::Name {
            certified: hex::encode(&parsed.name),
            key: hex::encode(&name),
        });
    }
    Ok(parsed)
}
