//! The image key and its wrapping to RSA keys (RSA-OAEP with SHA-256).

use rand::RngCore;
use rsa::pkcs8::EncodePublicKey;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit AES key, wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ImageKey([u8; 32]);

impl std::fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImageKey(<redacted>)")
    }
}

/// Key wrapping errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The wrapped key does not decrypt with this private key.
    #[error("the image key does not unwrap with this key (wrong key-management key, or the wrapped key was altered)")]
    Unwrap,
    /// Wrapping failed.
    #[error("cannot wrap the image key: {0}")]
    Wrap(String),
    /// The unwrapped value is not a 256-bit key.
    #[error("the unwrapped key is {0} bytes, expected 32")]
    Length(usize),
}

impl ImageKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        ImageKey(k)
    }

    /// From raw bytes (e.g. unwrapped by a TPM).
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        let k: [u8; 32] = b.try_into().map_err(|_| KeyError::Length(b.len()))?;
        Ok(ImageKey(k))
    }

    /// The raw key; keep the borrow short.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wrap to an RSA public key with OAEP-SHA-256.
    pub fn wrap(&self, to: &RsaPublicKey) -> Result<Vec<u8>, KeyError> {
        to.encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), &self.0)
            .map_err(|e| KeyError::Wrap(e.to_string()))
    }

    /// Unwrap with the RSA private key.
    pub fn unwrap(wrapped: &[u8], with: &RsaPrivateKey) -> Result<Self, KeyError> {
        let mut raw = with
            .decrypt(Oaep::new::<Sha256>(), wrapped)
            .map_err(|_| KeyError::Unwrap)?;
        let k = Self::from_bytes(&raw);
        raw.zeroize();
        k
    }
}

/// Identifier of a wrapping key: SHA-256 of its DER SubjectPublicKeyInfo.
pub fn key_id(public: &RsaPublicKey) -> [u8; 32] {
    let der = public
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    Sha256::digest(der).into()
}
