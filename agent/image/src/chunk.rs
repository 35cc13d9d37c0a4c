//! One chunk at a time: the AES-256-GCM cipher of an image (ring's, hardware-accelerated
//! with AES-NI/VAES and carry-less multiplication where the CPU has them), the nonce and
//! associated data of chunk `i`, and where chunk `i` lies in the file. Random access for
//! a reader that serves the image in pieces (a virtio-blk disk) goes through
//! [`decrypt_chunk`] or [`ChunkCipher::open_in_place`]; whole images stream through
//! [`crate::stream`].

use std::mem::MaybeUninit;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::header::ImageHeader;
use crate::key::ImageKey;
use crate::stream::ImageError;

/// GCM tag length: every chunk's ciphertext is its plaintext plus this.
pub const TAG_LEN: usize = 16;

/// Nonce of chunk `index`: the header's prefix ‖ u32(index).
pub fn nonce(prefix: &[u8; 8], index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(prefix);
    // Chunk indexes beyond 2^32 would repeat nonces: the header limits make that
    // impossible (16 MiB chunks, u32 index covers 64 PiB).
    n[8..].copy_from_slice(&(index as u32).to_be_bytes());
    n
}

/// Associated data of chunk `index`: SHA-256(header) ‖ u64(index).
pub fn aad(header_digest: &[u8; 32], index: u64) -> [u8; 40] {
    let mut a = [0u8; 40];
    a[..32].copy_from_slice(header_digest);
    a[32..].copy_from_slice(&index.to_be_bytes());
    a
}

/// Plaintext length of chunk `index` (the last may be shorter, an empty image's only
/// chunk is empty); `None` if the image has no such chunk.
pub fn plaintext_len(header: &ImageHeader, index: u64) -> Option<usize> {
    if index >= header.chunk_count {
        return None;
    }
    let start = index.checked_mul(u64::from(header.chunk_size))?;
    let left = header.plaintext_len.saturating_sub(start);
    Some(left.min(u64::from(header.chunk_size)) as usize)
}

/// Where chunk `index`'s ciphertext starts in the image file, and its length (plaintext
/// plus tag); `None` if the image has no such chunk.
pub fn location(header: &ImageHeader, index: u64) -> Option<(u64, usize)> {
    let len = plaintext_len(header, index)?;
    let stride = u64::from(header.chunk_size) + TAG_LEN as u64;
    let start = (header.encode().len() as u64).checked_add(index.checked_mul(stride)?)?;
    Some((start, len + TAG_LEN))
}

/// The cipher of one image: its key, bound to its header (nonce prefix, header digest,
/// chunk count). The expanded key is wiped when this is dropped.
pub struct ChunkCipher {
    // MaybeUninit: initialised in `new`, read only while `self` lives, and overwritten
    // with zeros in `drop` (ring does not wipe its key schedule itself).
    key: MaybeUninit<LessSafeKey>,
    header_digest: [u8; 32],
    nonce_prefix: [u8; 8],
    count: u64,
}

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkCipher(<redacted>)")
    }
}

impl Drop for ChunkCipher {
    fn drop(&mut self) {
        // SAFETY: `self.key` is exclusively ours; a MaybeUninit holds no drop obligation
        // and any bit pattern, including zeros, is valid for it; ring's key types own no
        // heap memory, so the expanded AES key and GHASH table lie inside it.
        unsafe { zeroize::zeroize_flat_type(&mut self.key as *mut MaybeUninit<LessSafeKey>) }
    }
}

impl ChunkCipher {
    /// The cipher for `header`'s chunks under `key`.
    pub fn new(header: &ImageHeader, key: &ImageKey) -> Result<Self, ImageError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key.as_bytes())
            .map_err(|_| crate::key::KeyError::Length(key.as_bytes().len()))?;
        Ok(ChunkCipher {
            key: MaybeUninit::new(LessSafeKey::new(unbound)),
            header_digest: header.digest(),
            nonce_prefix: header.nonce_prefix,
            count: header.chunk_count,
        })
    }

    fn key(&self) -> &LessSafeKey {
        // SAFETY: initialised in `new`, only overwritten in `drop`.
        unsafe { self.key.assume_init_ref() }
    }

    /// Authenticate and decrypt chunk `index` in place: `chunk` is its ciphertext
    /// followed by its tag; returns the plaintext (the front of `chunk`). A chunk that
    /// is altered, from another position or image, or under another key is refused
    /// with its index, and `chunk` then holds no plaintext.
    pub fn open_in_place<'a>(
        &self,
        index: u64,
        chunk: &'a mut [u8],
    ) -> Result<&'a mut [u8], ImageError> {
        let count = self.count;
        if index >= count {
            return Err(ImageError::NoSuchChunk { index, count });
        }
        if chunk.len() < TAG_LEN {
            return Err(ImageError::Truncated { index, count });
        }
        let a = aad(&self.header_digest, index);
        self.key()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(&self.nonce_prefix, index)),
                Aad::from(&a),
                chunk,
            )
            .map_err(|_| ImageError::ChunkTampered { index, count })
    }

    /// Encrypt chunk `index` in place and return its tag (written after it).
    pub(crate) fn seal_in_place(
        &self,
        index: u64,
        chunk: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ImageError> {
        let count = self.count;
        let a = aad(&self.header_digest, index);
        let tag = self
            .key()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(&self.nonce_prefix, index)),
                Aad::from(&a),
                chunk,
            )
            .map_err(|_| ImageError::ChunkTampered { index, count })?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }
}

/// Random access: authenticate and decrypt chunk `index` of the image described by
/// `header` on its own. `ciphertext` is exactly that chunk as stored (see
/// [`location`]). The plaintext is wiped when the returned buffer is dropped. A wrong
/// length is reported as truncation, an index past the end as
/// [`ImageError::NoSuchChunk`], a failed tag as [`ImageError::ChunkTampered`]
/// naming `index`. For many chunks, build one [`ChunkCipher`] and use
/// [`ChunkCipher::open_in_place`] instead (the key schedule is then expanded once).
pub fn decrypt_chunk(
    header: &ImageHeader,
    key: &ImageKey,
    index: u64,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ImageError> {
    let count = header.chunk_count;
    let want = plaintext_len(header, index).ok_or(ImageError::NoSuchChunk { index, count })?;
    if ciphertext.len() != want + TAG_LEN {
        return Err(ImageError::Truncated { index, count });
    }
    let cipher = ChunkCipher::new(header, key)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let n = cipher.open_in_place(index, &mut buf)?.len();
    buf.truncate(n);
    Ok(buf)
}
