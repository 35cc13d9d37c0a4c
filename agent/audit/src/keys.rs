//! Tenant management keys: the public key tvpd checks tokens with ([`TenantKey`],
//! Ed25519 or ECDSA P-256, named by the SHA-256 of its DER SubjectPublicKeyInfo) and
//! the tenant's signing key ([`TenantSigner`]; its `authorize` is in [`crate::token`]).
//! PEM, PKCS#8 and base64 DER forms as `tvpctl`, the API and the policy use them.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::token::AuthzError;

/// Signature algorithm of a tenant management key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigAlg {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256.
    EcdsaP256,
}

impl SigAlg {
    /// The name the signed bytes carry (`ed25519`, `ecdsa-p256`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SigAlg::Ed25519 => "ed25519",
            SigAlg::EcdsaP256 => "ecdsa-p256",
        }
    }
}

/// A tenant management public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ECDSA P-256.
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

/// A tenant signing key (the tenant's side: `tvpctl authorize`, tests).
pub enum TenantSigner {
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
    /// ECDSA P-256.
    EcdsaP256(p256::ecdsa::SigningKey),
}

impl TenantKey {
    /// From a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, AuthzError> {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(TenantKey::Ed25519(k));
        }
        p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map(TenantKey::EcdsaP256)
            .map_err(|_| {
                AuthzError::Malformed(
                    "management key is neither an Ed25519 nor a P-256 PEM public key".into(),
                )
            })
    }

    /// From its DER SubjectPublicKeyInfo in standard base64 (the `public_key`
    /// parameter of `rotate-key`; [`TenantKey::spki_base64`] writes it).
    pub fn from_spki_base64(b64: &str) -> Result<Self, AuthzError> {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| AuthzError::Malformed("public key is not standard base64".into()))?;
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(&der) {
            return Ok(TenantKey::Ed25519(k));
        }
        p256::ecdsa::VerifyingKey::from_public_key_der(&der)
            .map(TenantKey::EcdsaP256)
            .map_err(|_| {
                AuthzError::Malformed(
                    "public key is neither an Ed25519 nor a P-256 DER SubjectPublicKeyInfo".into(),
                )
            })
    }

    /// The DER SubjectPublicKeyInfo in standard base64.
    pub fn spki_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.spki_der())
    }

    /// PEM SubjectPublicKeyInfo (what [`TenantKey::from_pem`] reads).
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.spki_der());
        let mut s = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(&String::from_utf8_lossy(chunk));
            s.push('\n');
        }
        s.push_str("-----END PUBLIC KEY-----\n");
        s
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            TenantKey::Ed25519(k) => {
                use ed25519_dalek::pkcs8::EncodePublicKey as _;
                k.to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
            }
            TenantKey::EcdsaP256(k) => {
                use p256::pkcs8::EncodePublicKey as _;
                k.to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
            }
        }
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo (hex).
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.spki_der()))
    }

    /// The key's signature algorithm.
    pub(crate) fn alg(&self) -> SigAlg {
        match self {
            TenantKey::Ed25519(_) => SigAlg::Ed25519,
            TenantKey::EcdsaP256(_) => SigAlg::EcdsaP256,
        }
    }

    /// Whether `sig` is this key's signature over `msg` (Ed25519 strict; ECDSA over
    /// SHA-256(`msg`), fixed `r || s`).
    pub(crate) fn verify_sig(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            TenantKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .map(|s| k.verify_strict(msg, &s).is_ok())
                .unwrap_or(false),
            TenantKey::EcdsaP256(k) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(sig)
                    .map(|s| k.verify(msg, &s).is_ok())
                    .unwrap_or(false)
            }
        }
    }
}

impl TenantSigner {
    /// A fresh random Ed25519 key.
    pub fn generate_ed25519() -> Self {
        TenantSigner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A fresh random ECDSA P-256 key.
    pub fn generate_p256() -> Self {
        TenantSigner::EcdsaP256(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// From a PKCS#8 PEM private key (`openssl genpkey -algorithm ed25519` or
    /// `-algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, AuthzError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(TenantSigner::Ed25519(k));
        }
        p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(TenantSigner::EcdsaP256)
            .map_err(|_| {
                AuthzError::Malformed(
                    "signing key is neither an Ed25519 nor a P-256 PKCS#8 PEM private key".into(),
                )
            })
    }

    /// PKCS#8 PEM (what [`TenantSigner::from_pkcs8_pem`] and `tvpctl authorize --key`
    /// read).
    pub fn to_pkcs8_pem(&self) -> String {
        match self {
            TenantSigner::Ed25519(k) => {
                use ed25519_dalek::pkcs8::EncodePrivateKey as _;
                k.to_pkcs8_pem(Default::default())
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            }
            TenantSigner::EcdsaP256(k) => {
                use p256::pkcs8::EncodePrivateKey as _;
                k.to_pkcs8_pem(Default::default())
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            }
        }
    }

    /// The matching public key.
    pub fn public(&self) -> TenantKey {
        match self {
            TenantSigner::Ed25519(k) => TenantKey::Ed25519(k.verifying_key()),
            TenantSigner::EcdsaP256(k) => TenantKey::EcdsaP256(*k.verifying_key()),
        }
    }
}
