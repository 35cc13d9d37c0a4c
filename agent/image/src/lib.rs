//! Encrypted VM images (format v1, `docs/image-format.md`).
//!
//! An image is a header followed by AES-256-GCM chunks. Each chunk is authenticated on
//! its own (nonce = header nonce prefix ‖ chunk index, associated data = SHA-256 of the
//! header ‖ chunk index), so an image streams through a decryptor and
//! a tampered, reordered, dropped or appended chunk is detected exactly where it is.
//! The 256-bit image key is wrapped (RSA-OAEP-SHA-256) to the tenant's key-management
//! public key; only the key-management service can unwrap it, and it re-wraps it for an
//! attested host.

pub mod chunk;
pub mod header;
pub mod key;
pub mod stream;

pub use chunk::{decrypt_chunk, ChunkCipher};
pub use header::{ImageHeader, MAGIC};
pub use key::{ImageKey, KeyError};
pub use stream::{decrypt, encrypt, ImageError};
