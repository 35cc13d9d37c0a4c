//! Converting TPM public areas into standard encodings (DER/PEM SubjectPublicKeyInfo).

use p256::elliptic_curve::sec1::FromEncodedPoint;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{BigUint, RsaPublicKey};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::Public;

use super::error::TpmError;

/// The public key of a TPM public area, in a form that encodes to SPKI.
enum Key {
    Rsa(RsaPublicKey),
    P256(p256::PublicKey),
}

fn key(public: &Public) -> Result<Key, TpmError> {
    match public {
        Public::Rsa {
            parameters, unique, ..
        } => {
            let exp = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            RsaPublicKey::new(BigUint::from_bytes_be(unique.value()), BigUint::from(exp))
                .map(Key::Rsa)
                .map_err(|e| TpmError::Encoding {
                    what: "RSA public key",
                    reason: e.to_string(),
                })
        }
        Public::Ecc {
            parameters, unique, ..
        } if parameters.ecc_curve() == EccCurve::NistP256 => {
            let bad = |reason: &str| TpmError::Encoding {
                what: "ECC P-256 public key",
                reason: reason.into(),
            };
            let x = coordinate(unique.x().value()).ok_or_else(|| bad("x longer than 32 bytes"))?;
            let y = coordinate(unique.y().value()).ok_or_else(|| bad("y longer than 32 bytes"))?;
            let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
            Option::<p256::PublicKey>::from(p256::PublicKey::from_encoded_point(&point))
                .map(Key::P256)
                .ok_or_else(|| bad("the point is not on the curve"))
        }
        _ => Err(TpmError::Encoding {
            what: "public key",
            reason: "only RSA and ECC NIST P-256 keys are supported".into(),
        }),
    }
}

/// The RSA public key of an RSA TPM public area (e.g. the binding key, to wrap a secret
/// to it in software).
pub fn public_to_rsa(public: &Public) -> Result<RsaPublicKey, TpmError> {
    match key(public)? {
        Key::Rsa(k) => Ok(k),
        Key::P256(_) => Err(TpmError::Encoding {
            what: "RSA public key",
            reason: "the key is ECC".into(),
        }),
    }
}

/// A big-endian coordinate left-padded to 32 bytes; `None` if it is longer.
fn coordinate(v: &[u8]) -> Option<[u8; 32]> {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let v = &v[start..];
    let mut out = [0u8; 32];
    out.get_mut(32usize.checked_sub(v.len())?..)?
        .copy_from_slice(v);
    Some(out)
}

/// DER SubjectPublicKeyInfo of an RSA or ECC P-256 TPM public area.
pub fn public_to_spki_der(public: &Public) -> Result<Vec<u8>, TpmError> {
    let der = match key(public)? {
        Key::Rsa(k) => k.to_public_key_der(),
        Key::P256(k) => k.to_public_key_der(),
    };
    der.map(|d| d.as_bytes().to_vec())
        .map_err(|e| TpmError::Encoding {
            what: "SubjectPublicKeyInfo",
            reason: e.to_string(),
        })
}

/// PEM SubjectPublicKeyInfo of an RSA or ECC P-256 TPM public area.
pub fn public_to_pem(public: &Public) -> Result<String, TpmError> {
    let pem = match key(public)? {
        Key::Rsa(k) => k.to_public_key_pem(LineEnding::LF),
        Key::P256(k) => k.to_public_key_pem(LineEnding::LF),
    };
    pem.map_err(|e| TpmError::Encoding {
        what: "PEM public key",
        reason: e.to_string(),
    })
}
