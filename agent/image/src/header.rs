//! The image header: fixed binary layout, big-endian, bounded.
//!
//! ```text
//! magic "TVPENC01" (8) | version u16 = 1 | algorithm u16 = 1 (AES-256-GCM)
//! chunk_size u32 | plaintext_len u64 | chunk_count u64
//! image_digest [32] (SHA-256 of the plaintext) | nonce_prefix [8]
//! key_id [32] (SHA-256 of the wrapping key's SubjectPublicKeyInfo)
//! wrapped_key_len u16 | wrapped_key [wrapped_key_len]
//! ```

use sha2::{Digest, Sha256};

/// The encryption tag every encrypted image starts with.
pub const MAGIC: &[u8; 8] = b"TVPENC01";
/// Format version.
pub const VERSION: u16 = 1;
/// AES-256-GCM.
pub const ALG_AES256GCM: u16 = 1;
/// Smallest and largest chunk.
pub const CHUNK_MIN: u32 = 4096;
/// See [`CHUNK_MIN`].
pub const CHUNK_MAX: u32 = 16 << 20;
/// Largest wrapped key (RSA-8192).
pub const WRAPPED_MAX: usize = 1024;
/// Bytes before the wrapped key.
pub const FIXED_LEN: usize = 8 + 2 + 2 + 4 + 8 + 8 + 32 + 8 + 32 + 2;

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageHeader {
    /// Plaintext bytes per chunk (the last may be shorter).
    pub chunk_size: u32,
    /// Total plaintext length.
    pub plaintext_len: u64,
    /// Number of chunks (at least one, also for an empty image).
    pub chunk_count: u64,
    /// SHA-256 of the plaintext.
    pub image_digest: [u8; 32],
    /// First 8 bytes of every chunk nonce.
    pub nonce_prefix: [u8; 8],
    /// Which key-management key wrapped the image key.
    pub key_id: [u8; 32],
    /// The wrapped image key.
    pub wrapped_key: Vec<u8>,
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No encryption tag: a plaintext image (or something else entirely).
    #[error("not an encrypted tvp image (no TVPENC01 tag)")]
    NotEncrypted,
    /// Unknown version or algorithm.
    #[error("unsupported image format: {0}")]
    Unsupported(String),
    /// A field is out of range or inconsistent.
    #[error("invalid image header: {0}")]
    Invalid(String),
    /// The input ended inside the header.
    #[error("image header truncated")]
    Truncated,
}

/// Chunks needed for `len` bytes (an empty image still has one, empty, chunk).
pub fn chunks_for(len: u64, chunk_size: u32) -> u64 {
    len.div_ceil(chunk_size as u64).max(1)
}

impl ImageHeader {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED_LEN + self.wrapped_key.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&ALG_AES256GCM.to_be_bytes());
        b.extend_from_slice(&self.chunk_size.to_be_bytes());
        b.extend_from_slice(&self.plaintext_len.to_be_bytes());
        b.extend_from_slice(&self.chunk_count.to_be_bytes());
        b.extend_from_slice(&self.image_digest);
        b.extend_from_slice(&self.nonce_prefix);
        b.extend_from_slice(&self.key_id);
        b.extend_from_slice(&(self.wrapped_key.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.wrapped_key);
        b
    }

    /// SHA-256 of the encoded header: bound into every chunk.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// Parse the fixed part; returns the header (without the wrapped key filled in) and
    /// the wrapped key's length still to read.
    pub fn parse_fixed(b: &[u8; FIXED_LEN]) -> Result<(Self, usize), HeaderError> {
        if &b[..8] != MAGIC {
            return Err(HeaderError::NotEncrypted);
        }
        let u16at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
        let u32at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_be_bytes(a)
        };
        let arr32 = |o: usize| {
            let mut a = [0u8; 32];
            a.copy_from_slice(&b[o..o + 32]);
            a
        };
        if u16at(8) != VERSION {
            return Err(HeaderError::Unsupported(format!("version {}", u16at(8))));
        }
        if u16at(10) != ALG_AES256GCM {
            return Err(HeaderError::Unsupported(format!("algorithm {}", u16at(10))));
        }
        let chunk_size = u32at(12);
        if !(CHUNK_MIN..=CHUNK_MAX).contains(&chunk_size) {
            return Err(HeaderError::Invalid(format!(
                "chunk size {chunk_size} outside {CHUNK_MIN}..={CHUNK_MAX}"
            )));
        }
        let plaintext_len = u64at(16);
        let chunk_count = u64at(24);
        if chunk_count != chunks_for(plaintext_len, chunk_size) {
            return Err(HeaderError::Invalid(format!(
                "{chunk_count} chunks do not fit {plaintext_len} bytes in chunks of {chunk_size}"
            )));
        }
        let mut nonce_prefix = [0u8; 8];
        nonce_prefix.copy_from_slice(&b[64..72]);
        let wrapped_len = u16at(104) as usize;
        if wrapped_len == 0 || wrapped_len > WRAPPED_MAX {
            return Err(HeaderError::Invalid(format!(
                "wrapped key of {wrapped_len} bytes"
            )));
        }
        Ok((
            ImageHeader {
                chunk_size,
                plaintext_len,
                chunk_count,
                image_digest: arr32(32),
                nonce_prefix,
                key_id: arr32(72),
                wrapped_key: Vec::new(),
            },
            wrapped_len,
        ))
    }
}
