//! Streaming encryption and decryption of whole images.

use std::io::{Read, Seek, SeekFrom, Write};

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::header::{chunks_for, HeaderError, ImageHeader, FIXED_LEN};
use crate::key::{key_id, ImageKey, KeyError};

/// GCM tag length.
pub const TAG_LEN: usize = 16;

/// Why an image cannot be encrypted or decrypted. Each names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The header is refused.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The key could not be (un)wrapped.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A chunk fails authentication: altered, reordered, from another image, or the
    /// header was altered (chunk 0 then fails), or the key is wrong.
    #[error("chunk {index} of {count} fails authentication (tampered, reordered, or wrong key)")]
    ChunkTampered { index: u64, count: u64 },
    /// The image ends before its last chunk.
    #[error("image truncated inside chunk {index} of {count}")]
    Truncated { index: u64, count: u64 },
    /// Bytes follow the last chunk.
    #[error("unexpected data after the last chunk")]
    TrailingData,
    /// Every chunk authenticated but the plaintext digest differs from the header's.
    #[error("decrypted image digest {actual} differs from the header's {expected}")]
    Digest { expected: String, actual: String },
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The consumer of decrypted chunks refused one.
    #[error("{0}")]
    Sink(String),
}

fn nonce(prefix: &[u8; 8], index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(prefix);
    // Chunk indexes beyond 2^32 would repeat nonces: the header limits make that
    // impossible (16 MiB chunks, u32 index covers 64 PiB).
    n[8..].copy_from_slice(&(index as u32).to_be_bytes());
    n
}

fn aad(header_digest: &[u8; 32], index: u64) -> [u8; 40] {
    let mut a = [0u8; 40];
    a[..32].copy_from_slice(header_digest);
    a[32..].copy_from_slice(&index.to_be_bytes());
    a
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Encrypt `input` (read twice: once to hash, once to encrypt) into `out` with a fresh
/// key wrapped to `kms`. Returns the header.
pub fn encrypt<R: Read + Seek, W: Write>(
    input: &mut R,
    out: &mut W,
    kms: &RsaPublicKey,
    chunk_size: u32,
) -> Result<ImageHeader, ImageError> {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut buf = Zeroizing::new(vec![0u8; chunk_size as usize]);
    loop {
        let n = read_full(input, &mut buf)?;
        hasher.update(&buf[..n]);
        len += n as u64;
        if n < buf.len() {
            break;
        }
    }
    input.seek(SeekFrom::Start(0))?;
    let key = ImageKey::generate();
    let mut nonce_prefix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut nonce_prefix);
    let header = ImageHeader {
        chunk_size,
        plaintext_len: len,
        chunk_count: chunks_for(len, chunk_size),
        image_digest: hasher.finalize().into(),
        nonce_prefix,
        key_id: key_id(kms),
        wrapped_key: key.wrap(kms)?,
    };
    // Validate what we are about to write with the same rules readers apply.
    let enc = header.encode();
    let fixed: &[u8; FIXED_LEN] = enc[..FIXED_LEN]
        .try_into()
        .map_err(|_| HeaderError::Truncated)?;
    ImageHeader::parse_fixed(fixed)?;
    out.write_all(&enc)?;
    let hd = header.digest();
    let cipher = Aes256Gcm::new_from_slice(key.as_bytes())
        .map_err(|_| KeyError::Length(key.as_bytes().len()))?;
    for index in 0..header.chunk_count {
        let n = read_full(input, &mut buf)?;
        let a = aad(&hd, index);
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce(&header.nonce_prefix, index)),
                Payload {
                    msg: &buf[..n],
                    aad: &a,
                },
            )
            .map_err(|_| ImageError::ChunkTampered {
                index,
                count: header.chunk_count,
            })?;
        out.write_all(&ct)?;
    }
    Ok(header)
}

/// Read and check the header.
pub fn read_header(input: &mut impl Read) -> Result<ImageHeader, ImageError> {
    let mut fixed = [0u8; FIXED_LEN];
    let n = read_full(input, &mut fixed)?;
    if n < 8 || &fixed[..8] != crate::header::MAGIC {
        return Err(HeaderError::NotEncrypted.into());
    }
    if n < FIXED_LEN {
        return Err(HeaderError::Truncated.into());
    }
    let (mut h, wrapped_len) = ImageHeader::parse_fixed(&fixed)?;
    let mut wrapped = vec![0u8; wrapped_len];
    if read_full(input, &mut wrapped)? < wrapped_len {
        return Err(HeaderError::Truncated.into());
    }
    h.wrapped_key = wrapped;
    Ok(h)
}

/// Decrypt the chunks following `header` (already read from `input`), handing each
/// authenticated plaintext chunk to `sink` and wiping it afterwards. Returns only if
/// every chunk authenticated, nothing trails, and the plaintext digest matches.
pub fn decrypt(
    input: &mut impl Read,
    header: &ImageHeader,
    key: &ImageKey,
    mut sink: impl FnMut(&[u8]) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let hd = header.digest();
    let cipher = Aes256Gcm::new_from_slice(key.as_bytes())
        .map_err(|_| KeyError::Length(key.as_bytes().len()))?;
    let count = header.chunk_count;
    // One buffer, decrypted in place chunk after chunk and wiped once at the end (it
    // holds plaintext between a chunk's decryption and the next read).
    let mut buf = Zeroizing::new(vec![0u8; header.chunk_size as usize + TAG_LEN]);
    let mut hasher = Sha256::new();
    let mut remaining = header.plaintext_len;
    for index in 0..count {
        let plain_len = remaining.min(header.chunk_size as u64) as usize;
        let want = plain_len + TAG_LEN;
        if read_full(input, &mut buf[..want])? < want {
            return Err(ImageError::Truncated { index, count });
        }
        let a = aad(&hd, index);
        let (msg, tag) = buf[..want].split_at_mut(plain_len);
        let tag: [u8; TAG_LEN] = (&*tag)
            .try_into()
            .map_err(|_| ImageError::ChunkTampered { index, count })?;
        cipher
            .decrypt_in_place_detached(
                &Nonce::from(nonce(&header.nonce_prefix, index)),
                &a,
                msg,
                &aes_gcm::Tag::from(tag),
            )
            .map_err(|_| ImageError::ChunkTampered { index, count })?;
        hasher.update(&*msg);
        sink(msg)?;
        remaining -= plain_len as u64;
    }
    let mut probe = [0u8; 1];
    if read_full(input, &mut probe)? != 0 {
        return Err(ImageError::TrailingData);
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != header.image_digest {
        return Err(ImageError::Digest {
            expected: hex::encode(header.image_digest),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPrivateKey;
    use std::io::Cursor;
    use std::sync::OnceLock;

    fn kms() -> &'static RsaPrivateKey {
        static K: OnceLock<RsaPrivateKey> = OnceLock::new();
        K.get_or_init(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
    }

    fn image(len: usize) -> (Vec<u8>, Vec<u8>) {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let mut out = Vec::new();
        encrypt(
            &mut Cursor::new(&plain),
            &mut out,
            &kms().to_public_key(),
            4096,
        )
        .unwrap();
        (plain, out)
    }

    fn open(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
        let mut r = Cursor::new(bytes);
        let h = read_header(&mut r)?;
        let key = ImageKey::unwrap(&h.wrapped_key, kms())?;
        let mut out = Vec::new();
        decrypt(&mut r, &h, &key, |c| {
            out.extend_from_slice(c);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn round_trips_any_length() {
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096 + 5] {
            let (plain, enc) = image(len);
            assert_eq!(open(&enc).unwrap(), plain, "len {len}");
        }
    }

    #[test]
    fn each_tampering_is_named() {
        let (_, enc) = image(3 * 4096 + 100);
        let h = read_header(&mut Cursor::new(&enc)).unwrap();
        let body = h.encode().len();
        let chunk = 4096 + TAG_LEN;
        // A byte of chunk 2.
        let mut t = enc.clone();
        t[body + 2 * chunk + 10] ^= 1;
        assert!(matches!(
            open(&t),
            Err(ImageError::ChunkTampered { index: 2, count: 4 })
        ));
        // Chunks 0 and 1 swapped.
        let mut t = enc.clone();
        let (a, b) = (body, body + chunk);
        let c0 = enc[a..a + chunk].to_vec();
        t[a..a + chunk].copy_from_slice(&enc[b..b + chunk]);
        t[b..b + chunk].copy_from_slice(&c0);
        assert!(matches!(
            open(&t),
            Err(ImageError::ChunkTampered { index: 0, .. })
        ));
        // Truncated: last chunk dropped, or cut mid-chunk.
        assert!(matches!(
            open(&enc[..enc.len() - 116]),
            Err(ImageError::Truncated { index: 3, .. })
        ));
        assert!(matches!(
            open(&enc[..body + chunk + 7]),
            Err(ImageError::Truncated { index: 1, .. })
        ));
        // Appended data.
        let mut t = enc.clone();
        t.push(0);
        assert!(matches!(open(&t), Err(ImageError::TrailingData)));
        // Header: the digest field (bound into every chunk's associated data).
        let mut t = enc.clone();
        t[40] ^= 1;
        assert!(matches!(
            open(&t),
            Err(ImageError::ChunkTampered { index: 0, .. })
        ));
        // Header: an inconsistent length.
        let mut t = enc.clone();
        t[21] ^= 0x10;
        assert!(matches!(
            open(&t),
            Err(ImageError::Header(HeaderError::Invalid(_)))
        ));
        // Wrapped key altered.
        let mut t = enc.clone();
        t[FIXED_LEN + 5] ^= 1;
        assert!(matches!(open(&t), Err(ImageError::Key(KeyError::Unwrap))));
        // A plaintext image.
        assert!(matches!(
            open(b"\x7fELF....."),
            Err(ImageError::Header(HeaderError::NotEncrypted))
        ));
        // The right structure with the wrong key-management key.
        let other = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let mut r = Cursor::new(&enc);
        let h = read_header(&mut r).unwrap();
        assert!(matches!(
            ImageKey::unwrap(&h.wrapped_key, &other),
            Err(KeyError::Unwrap)
        ));
        assert_ne!(h.key_id, crate::key::key_id(&other.to_public_key()));
    }

    #[test]
    fn key_never_printed() {
        assert_eq!(
            format!("{:?}", ImageKey::generate()),
            "ImageKey(<redacted>)"
        );
    }
}
