//! The attestation key as a verifier sees it: parsed from PEM (the caller's trusted
//! copy and the evidence's), or from the TPM's TPM2B_PUBLIC, compared, and used to
//! check a quote signature over SHA-256 of the attest bytes.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::sec1::FromEncodedPoint;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::tpm::alg::{ALG_SHA256, ECC_NIST_P256};
use crate::tpm::{Public, PublicKey, Signature};

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The PEM is neither an RSA nor a P-256 SubjectPublicKeyInfo.
    #[error("not an RSA or ECDSA P-256 public key in PEM SubjectPublicKeyInfo form")]
    Pem,
    /// The TPM public area holds a key this verifier does not support.
    #[error("unsupported TPM key: {0}")]
    Unsupported(String),
}

/// An attestation public key this verifier can check signatures with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkKey {
    /// RSA (RSASSA-PKCS1-v1_5 or RSA-PSS signatures).
    Rsa(RsaPublicKey),
    /// ECDSA on NIST P-256.
    P256(p256::PublicKey),
}

impl AkKey {
    /// Parse a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), RSA or EC P-256.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let pem = pem.trim();
        if let Ok(k) = <RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_pem(pem) {
            return Ok(AkKey::Rsa(k));
        }
        <p256::PublicKey as p256::pkcs8::DecodePublicKey>::from_public_key_pem(pem)
            .map(AkKey::P256)
            .map_err(|_| KeyError::Pem)
    }

    /// The key held in a TPM public area (RSA, or ECC on NIST P-256).
    pub fn from_tpm_public(public: &Public) -> Result<Self, KeyError> {
        match &public.key {
            PublicKey::Rsa {
                exponent, modulus, ..
            } => RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(*exponent))
                .map(AkKey::Rsa)
                .map_err(|e| KeyError::Unsupported(format!("RSA key: {e}"))),
            PublicKey::Ecc { curve, x, y, .. } => {
                if *curve != ECC_NIST_P256 {
                    return Err(KeyError::Unsupported(format!(
                        "ECC curve {curve:#06x} is not NIST P-256"
                    )));
                }
                let (x, y) = match (left_pad::<32>(x), left_pad::<32>(y)) {
                    (Some(x), Some(y)) => (x, y),
                    _ => return Err(KeyError::Unsupported("P-256 coordinate too long".into())),
                };
                let point =
                    p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                Option::<p256::PublicKey>::from(p256::PublicKey::from_encoded_point(&point))
                    .map(AkKey::P256)
                    .ok_or_else(|| KeyError::Unsupported("P-256 point not on the curve".into()))
            }
        }
    }

    /// A short description for messages, e.g. `RSA-2048` or `ECDSA P-256`.
    pub fn describe(&self) -> String {
        match self {
            AkKey::Rsa(k) => format!("RSA-{}", k.n().bits()),
            AkKey::P256(_) => "ECDSA P-256".to_string(),
        }
    }

    /// Check `sig` over SHA-256(`message`). The signature must use SHA-256 and a scheme
    /// matching the key type: RSASSA-PKCS1-v1_5, RSA-PSS (salt = hash length, or the
    /// maximum as older TPMs use) or ECDSA.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), String> {
        if sig.hash() != ALG_SHA256 {
            return Err(format!("signature hash {:#06x} is not SHA-256", sig.hash()));
        }
        let digest = Sha256::digest(message);
        match (self, sig) {
            (AkKey::Rsa(k), Signature::RsaSsa { sig, .. }) => k
                .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, sig)
                .map_err(|_| {
                    "RSASSA-PKCS1-v1_5 SHA-256 signature does not verify with the trusted AK".into()
                }),
            (AkKey::Rsa(k), Signature::RsaPss { sig, .. }) => {
                let max_salt = k.size().saturating_sub(32 + 2);
                let ok = [32, max_salt].into_iter().any(|salt| {
                    k.verify(Pss::new_with_salt::<Sha256>(salt), &digest, sig)
                        .is_ok()
                });
                if ok {
                    Ok(())
                } else {
                    Err("RSA-PSS SHA-256 signature does not verify with the trusted AK".into())
                }
            }
            (AkKey::P256(k), Signature::Ecdsa { r, s, .. }) => {
                let (r, s) = match (left_pad::<32>(r), left_pad::<32>(s)) {
                    (Some(r), Some(s)) => (r, s),
                    _ => return Err("ECDSA r or s longer than 32 bytes".into()),
                };
                let sig = p256::ecdsa::Signature::from_scalars(r, s)
                    .map_err(|_| "ECDSA r or s out of range".to_string())?;
                p256::ecdsa::VerifyingKey::from(k)
                    .verify_prehash(&digest, &sig)
                    .map_err(|_| {
                        "ECDSA P-256 SHA-256 signature does not verify with the trusted AK".into()
                    })
            }
            (key, sig) => Err(format!(
                "signature scheme {} does not fit the trusted {} AK",
                scheme_name(sig),
                key.describe()
            )),
        }
    }
}

fn scheme_name(sig: &Signature) -> &'static str {
    match sig {
        Signature::RsaSsa { .. } => "RSASSA",
        Signature::RsaPss { .. } => "RSAPSS",
        Signature::Ecdsa { .. } => "ECDSA",
    }
}

/// Left-pad a big-endian integer to `N` bytes; `None` if it does not fit.
fn left_pad<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let v = v.get(start..)?;
    let mut out = [0u8; N];
    let offset = N.checked_sub(v.len())?;
    out.get_mut(offset..)?.copy_from_slice(v);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::fixture as fx;

    #[test]
    fn real_swtpm_signature_verifies() {
        let p = Public::parse_tpm2b(&hex::decode(fx::AK_PUB).unwrap()).unwrap();
        let key = AkKey::from_tpm_public(&p).unwrap();
        let sig = Signature::parse(&hex::decode(fx::QUOTE_SIG).unwrap()).unwrap();
        let msg = hex::decode(fx::QUOTE_MSG).unwrap();
        key.verify(&msg, &sig).unwrap();
        let mut bad = msg.clone();
        bad[20] ^= 1;
        assert!(key.verify(&bad, &sig).is_err());
    }

    #[test]
    fn left_pad_bounds() {
        assert_eq!(left_pad::<4>(&[1, 2]), Some([0, 0, 1, 2]));
        assert_eq!(left_pad::<2>(&[0, 0, 1, 2]), Some([1, 2]));
        assert_eq!(left_pad::<2>(&[1, 2, 3]), None);
        assert_eq!(left_pad::<2>(&[]), Some([0, 0]));
    }
}
