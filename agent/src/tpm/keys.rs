//! Converting TPM public areas into standard encodings (DER/PEM SubjectPublicKeyInfo).

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{BigUint, RsaPublicKey};
use tss_esapi::structures::Public;

use super::error::TpmError;

fn rsa_key(public: &Public) -> Result<RsaPublicKey, TpmError> {
    let Public::Rsa {
        parameters, unique, ..
    } = public
    else {
        return Err(TpmError::Encoding {
            what: "public key",
            reason: "only RSA keys are supported".into(),
        });
    };
    let exp = match parameters.exponent().value() {
        0 => 65537,
        e => e,
    };
    RsaPublicKey::new(BigUint::from_bytes_be(unique.value()), BigUint::from(exp)).map_err(|e| {
        TpmError::Encoding {
            what: "RSA public key",
            reason: e.to_string(),
        }
    })
}

/// DER SubjectPublicKeyInfo of an RSA TPM public area.
pub fn public_to_spki_der(public: &Public) -> Result<Vec<u8>, TpmError> {
    rsa_key(public)?
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| TpmError::Encoding {
            what: "SubjectPublicKeyInfo",
            reason: e.to_string(),
        })
}

/// PEM SubjectPublicKeyInfo of an RSA TPM public area.
pub fn public_to_pem(public: &Public) -> Result<String, TpmError> {
    rsa_key(public)?
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| TpmError::Encoding {
            what: "PEM public key",
            reason: e.to_string(),
        })
}
