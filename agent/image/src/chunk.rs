//! Random access to an encrypted image: one chunk at a time, each authenticated on its
//! own (tvp-vmm's virtio-blk disk reads the chunks a guest request touches). The
//! format is the one [`crate::stream`] writes: the encoded header, then every chunk as
//! ciphertext followed by its 16-byte GCM tag, nonce = prefix ‖ index (u32, big
//! endian), AAD = SHA-256(header) ‖ index (u64, big endian).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::header::ImageHeader;
use crate::key::{ImageKey, KeyError};
use crate::stream::{ImageError, TAG_LEN};

/// Where one chunk lies in the encrypted file and how much plaintext it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Byte offset of the chunk's ciphertext in the file.
    pub offset: u64,
    /// Plaintext bytes in the chunk (ciphertext + tag is this plus [`TAG_LEN`]).
    pub plain_len: usize,
}

/// Opens chunks of one image with its key.
pub struct ChunkOpener {
    cipher: Aes256Gcm,
    header_digest: [u8; 32],
    nonce_prefix: [u8; 8],
    data_offset: u64,
    chunk_size: u32,
    plaintext_len: u64,
    count: u64,
}

impl ChunkOpener {
    /// An opener for the image whose parsed `header` is given, with its `key`.
    pub fn new(header: &ImageHeader, key: &ImageKey) -> Result<Self, ImageError> {
        let cipher = Aes256Gcm::new_from_slice(key.as_bytes())
            .map_err(|_| KeyError::Length(key.as_bytes().len()))?;
        Ok(ChunkOpener {
            cipher,
            header_digest: header.digest(),
            nonce_prefix: header.nonce_prefix,
            data_offset: header.encode().len() as u64,
            chunk_size: header.chunk_size,
            plaintext_len: header.plaintext_len,
            count: header.chunk_count,
        })
    }

    /// Plaintext bytes per chunk (the last may hold fewer).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Total plaintext length of the image.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        self.count
    }

    /// Where chunk `index` lies; `None` past the last chunk.
    pub fn span(&self, index: u64) -> Option<ChunkSpan> {
        if index >= self.count {
            return None;
        }
        let cs = u64::from(self.chunk_size);
        let start = index.checked_mul(cs)?;
        let plain_len = self.plaintext_len.saturating_sub(start).min(cs) as usize;
        let offset = self
            .data_offset
            .checked_add(index.checked_mul(cs + TAG_LEN as u64)?)?;
        Some(ChunkSpan { offset, plain_len })
    }

    /// Authenticates and decrypts chunk `index` in place: `buf` holds its ciphertext
    /// followed by its tag (exactly `plain_len + TAG_LEN` bytes); on success its first
    /// `plain_len` bytes are the plaintext. On failure `buf` is wiped and no plaintext
    /// is released.
    pub fn open_in_place(&self, index: u64, buf: &mut [u8]) -> Result<usize, ImageError> {
        let count = self.count;
        let tampered = ImageError::ChunkTampered { index, count };
        let Some(span) = self.span(index) else {
            return Err(tampered);
        };
        if buf.len() != span.plain_len + TAG_LEN {
            return Err(ImageError::Truncated { index, count });
        }
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&self.nonce_prefix);
        nonce[8..].copy_from_slice(&(index as u32).to_be_bytes());
        let mut aad = [0u8; 40];
        aad[..32].copy_from_slice(&self.header_digest);
        aad[32..].copy_from_slice(&index.to_be_bytes());
        let (msg, tag) = buf.split_at_mut(span.plain_len);
        let tag: [u8; TAG_LEN] = (&*tag)
            .try_into()
            .map_err(|_| ImageError::Truncated { index, count })?;
        let tag = aes_gcm::Tag::from(tag);
        let ok = self
            .cipher
            .decrypt_in_place_detached(&Nonce::from(nonce), &aad, msg, &tag)
            .is_ok();
        if !ok {
            buf.fill(0);
            return Err(tampered);
        }
        Ok(span.plain_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{encrypt, read_header};
    use rsa::RsaPrivateKey;
    use std::io::Cursor;

    #[test]
    fn every_chunk_opens_alone_and_a_flipped_bit_is_refused() {
        let kms = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let plain: Vec<u8> = (0..10_000u32).map(|i| (i * 13 + 1) as u8).collect();
        let mut file = Vec::new();
        encrypt(
            &mut Cursor::new(&plain),
            &mut file,
            &kms.to_public_key(),
            4096,
        )
        .unwrap();
        let header = read_header(&mut Cursor::new(&file)).unwrap();
        let key = ImageKey::unwrap(&header.wrapped_key, &kms).unwrap();
        let opener = ChunkOpener::new(&header, &key).unwrap();
        assert_eq!(opener.chunk_count(), 3);
        // Backwards: random access, no state carried from one chunk to the next.
        for index in (0..3u64).rev() {
            let span = opener.span(index).unwrap();
            let at = span.offset as usize;
            let mut buf = file[at..at + span.plain_len + TAG_LEN].to_vec();
            let n = opener.open_in_place(index, &mut buf).unwrap();
            let start = index as usize * 4096;
            assert_eq!(&buf[..n], &plain[start..start + n]);
        }
        assert_eq!(opener.span(2).unwrap().plain_len, 10_000 - 8192);
        assert!(opener.span(3).is_none());
        let span = opener.span(1).unwrap();
        let at = span.offset as usize;
        let mut buf = file[at..at + span.plain_len + TAG_LEN].to_vec();
        buf[7] ^= 1;
        assert!(matches!(
            opener.open_in_place(1, &mut buf),
            Err(ImageError::ChunkTampered { index: 1, .. })
        ));
        assert!(buf.iter().all(|b| *b == 0), "no plaintext left behind");
        // A good chunk presented as another index fails too.
        let mut buf = file[at..at + span.plain_len + TAG_LEN].to_vec();
        assert!(opener.open_in_place(0, &mut buf).is_err());
    }
}
