//! Streaming encryption and decryption of whole images, with bounded memory (a few
//! chunk-sized buffers whatever the image's size). Decryption authenticates each chunk
//! before handing its plaintext on, and hashes the plaintext on a second thread while
//! the next chunk is read and decrypted, as `openssl enc | openssl dgst` would in two
//! processes: SHA-256 is the slower of the two, and overlapping it with AES-GCM keeps
//! the stream at hashing speed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc;

use rand::RngCore;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use crate::chunk::TAG_LEN;
use crate::chunk::{plaintext_len, ChunkCipher};
use crate::header::{chunks_for, HeaderError, ImageHeader, FIXED_LEN};
use crate::key::{key_id, ImageKey, KeyError};

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
    /// A chunk index past the image's last chunk was asked for.
    #[error("chunk {index} does not exist: the image has {count} chunks")]
    NoSuchChunk { index: u64, count: u64 },
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

/// Encrypt `input` (read twice: once to hash, once to encrypt, one chunk in memory at a
/// time) into `out` with a fresh key wrapped to `kms`. Returns the header.
pub fn encrypt<R: Read + Seek, W: Write>(
    input: &mut R,
    out: &mut W,
    kms: &RsaPublicKey,
    chunk_size: u32,
) -> Result<ImageHeader, ImageError> {
    // The header's rules first, so a bad chunk size is refused before any reading.
    if !(crate::header::CHUNK_MIN..=crate::header::CHUNK_MAX).contains(&chunk_size) {
        return Err(HeaderError::Invalid(format!(
            "chunk size {chunk_size} outside {}..={}",
            crate::header::CHUNK_MIN,
            crate::header::CHUNK_MAX
        ))
        .into());
    }
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut buf = Zeroizing::new(vec![0u8; chunk_size as usize + TAG_LEN]);
    let size = chunk_size as usize;
    loop {
        let n = read_full(input, &mut buf[..size])?;
        hasher.update(&buf[..n]);
        len += n as u64;
        if n < size {
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
    let cipher = ChunkCipher::new(&header, &key)?;
    for index in 0..header.chunk_count {
        let want = plaintext_len(&header, index).unwrap_or(0);
        let n = read_full(input, &mut buf[..want])?;
        if n != want {
            // The input shrank between the two passes.
            return Err(ImageError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the input changed while it was being encrypted",
            )));
        }
        let tag = cipher.seal_in_place(index, &mut buf[..n])?;
        buf[n..n + TAG_LEN].copy_from_slice(&tag);
        out.write_all(&buf[..n + TAG_LEN])?;
    }
    let mut probe = [0u8; 1];
    if read_full(input, &mut probe)? != 0 {
        return Err(ImageError::Io(std::io::Error::other(
            "the input grew while it was being encrypted",
        )));
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

/// Chunk buffers in flight between the decrypting and the hashing thread.
const BUFFERS: usize = 3;

type Buf = Zeroizing<Vec<u8>>;

/// The plaintext's SHA-256, on a helper thread when one can be started (inline
/// otherwise), with the chunk buffers cycling between the two threads. Buffers are
/// wiped when dropped (`Zeroizing`).
enum PlainHasher<'scope> {
    Inline {
        hasher: Sha256,
        spare: Option<Buf>,
    },
    Thread {
        to_hash: Option<mpsc::SyncSender<(Buf, usize)>>,
        back: mpsc::Receiver<Buf>,
        allocated: usize,
        handle: std::thread::ScopedJoinHandle<'scope, [u8; 32]>,
    },
}

impl<'scope> PlainHasher<'scope> {
    fn start<'env>(scope: &'scope std::thread::Scope<'scope, 'env>) -> Self {
        let (to_hash, rx) = mpsc::sync_channel::<(Buf, usize)>(BUFFERS);
        let (back_tx, back) = mpsc::channel::<Buf>();
        let spawned = std::thread::Builder::new()
            .name("tvp-image-sha256".into())
            .spawn_scoped(scope, move || {
                let mut hasher = Sha256::new();
                for (buf, n) in rx {
                    hasher.update(&buf[..n]);
                    // The decryptor may have stopped: then the buffer is wiped here.
                    let _ = back_tx.send(buf);
                }
                hasher.finalize().into()
            });
        match spawned {
            Ok(handle) => PlainHasher::Thread {
                to_hash: Some(to_hash),
                back,
                allocated: 0,
                handle,
            },
            Err(_) => PlainHasher::Inline {
                hasher: Sha256::new(),
                spare: None,
            },
        }
    }

    /// A buffer of `size` bytes for the next chunk.
    fn buffer(&mut self, size: usize) -> Result<Buf, ImageError> {
        match self {
            PlainHasher::Inline { spare, .. } => Ok(spare
                .take()
                .unwrap_or_else(|| Zeroizing::new(vec![0u8; size]))),
            PlainHasher::Thread {
                back, allocated, ..
            } => {
                if let Ok(b) = back.try_recv() {
                    return Ok(b);
                }
                if *allocated < BUFFERS {
                    *allocated += 1;
                    return Ok(Zeroizing::new(vec![0u8; size]));
                }
                back.recv().map_err(|_| hasher_stopped())
            }
        }
    }

    /// Hash the first `n` bytes of `buf` (after the sink had them).
    fn feed(&mut self, buf: Buf, n: usize) -> Result<(), ImageError> {
        match self {
            PlainHasher::Inline { hasher, spare } => {
                hasher.update(&buf[..n]);
                *spare = Some(buf);
                Ok(())
            }
            PlainHasher::Thread { to_hash, .. } => to_hash
                .as_ref()
                .ok_or_else(hasher_stopped)?
                .send((buf, n))
                .map_err(|_| hasher_stopped()),
        }
    }

    fn finish(self) -> Result<[u8; 32], ImageError> {
        match self {
            PlainHasher::Inline { hasher, .. } => Ok(hasher.finalize().into()),
            PlainHasher::Thread {
                mut to_hash,
                handle,
                ..
            } => {
                to_hash.take();
                handle.join().map_err(|_| hasher_stopped())
            }
        }
    }
}

fn hasher_stopped() -> ImageError {
    ImageError::Io(std::io::Error::other("the image hashing thread stopped"))
}

/// Decrypt the chunks following `header` (already read from `input`), handing each
/// authenticated plaintext chunk to `sink` (in order, on the calling thread); chunk
/// buffers are wiped when decryption ends. Returns only if every chunk authenticated,
/// nothing trails, and the plaintext digest matches.
pub fn decrypt(
    input: &mut impl Read,
    header: &ImageHeader,
    key: &ImageKey,
    mut sink: impl FnMut(&[u8]) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let cipher = ChunkCipher::new(header, key)?;
    let count = header.chunk_count;
    let size = header.chunk_size as usize + TAG_LEN;
    let actual = std::thread::scope(|scope| -> Result<[u8; 32], ImageError> {
        let mut hasher = PlainHasher::start(scope);
        for index in 0..count {
            let plain_len = plaintext_len(header, index).unwrap_or(0);
            let want = plain_len + TAG_LEN;
            let mut buf = hasher.buffer(size)?;
            if read_full(input, &mut buf[..want])? < want {
                return Err(ImageError::Truncated { index, count });
            }
            let n = {
                let plain = cipher.open_in_place(index, &mut buf[..want])?;
                sink(plain)?;
                plain.len()
            };
            hasher.feed(buf, n)?;
        }
        hasher.finish()
    })?;
    let mut probe = [0u8; 1];
    if read_full(input, &mut probe)? != 0 {
        return Err(ImageError::TrailingData);
    }
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
    fn streams_images_larger_than_its_buffers() {
        // Far more chunks than the buffers cycling between the decrypting and the
        // hashing thread, and a short last chunk: byte-identical out.
        let len = 64 * 4096 + 7;
        let (plain, enc) = image(len);
        assert!(len > 16 * BUFFERS * (4096 + TAG_LEN));
        let out = open(&enc).unwrap();
        assert_eq!(out.len(), plain.len());
        assert!(out == plain, "round trip differs");
    }

    fn key_of(enc: &[u8]) -> (ImageHeader, ImageKey) {
        let h = read_header(&mut Cursor::new(enc)).unwrap();
        let k = ImageKey::unwrap(&h.wrapped_key, kms()).unwrap();
        (h, k)
    }

    #[test]
    fn any_chunk_decrypts_alone() {
        use crate::chunk::{decrypt_chunk, location};
        let (plain, enc) = image(5 * 4096 + 300);
        let (h, k) = key_of(&enc);
        for index in [4u64, 0, 3, 1, 2, 5] {
            let (off, len) = location(&h, index).unwrap();
            let ct = &enc[off as usize..off as usize + len];
            let pt = decrypt_chunk(&h, &k, index, ct).unwrap();
            let start = index as usize * 4096;
            assert_eq!(&pt[..], &plain[start..(start + 4096).min(plain.len())]);
        }
        assert_eq!(location(&h, 5).unwrap().1, 300 + TAG_LEN);
        assert_eq!(
            location(&h, 5).unwrap().0 as usize + 300 + TAG_LEN,
            enc.len()
        );
        assert!(location(&h, 6).is_none());
    }

    #[test]
    fn a_tampered_chunk_alone_is_refused_by_index() {
        use crate::chunk::{decrypt_chunk, location};
        let (_, mut enc) = image(5 * 4096 + 300);
        let (h, k) = key_of(&enc);
        let (off3, len3) = location(&h, 3).unwrap();
        enc[off3 as usize + 100] ^= 0x40;
        let ct3 = enc[off3 as usize..off3 as usize + len3].to_vec();
        let e = decrypt_chunk(&h, &k, 3, &ct3).unwrap_err();
        assert!(
            matches!(e, ImageError::ChunkTampered { index: 3, count: 6 }),
            "{e}"
        );
        assert!(e.to_string().contains("chunk 3 of 6"), "{e}");
        // Its neighbours still decrypt on their own.
        for index in [2u64, 4] {
            let (off, len) = location(&h, index).unwrap();
            decrypt_chunk(&h, &k, index, &enc[off as usize..off as usize + len]).unwrap();
        }
        // An intact chunk served at another index is refused at that index.
        let (off1, len1) = location(&h, 1).unwrap();
        let ct1 = &enc[off1 as usize..off1 as usize + len1];
        assert!(matches!(
            decrypt_chunk(&h, &k, 2, ct1),
            Err(ImageError::ChunkTampered { index: 2, .. })
        ));
        // Wrong length, past the end, wrong key.
        assert!(matches!(
            decrypt_chunk(&h, &k, 1, &ct1[..len1 - 1]),
            Err(ImageError::Truncated { index: 1, .. })
        ));
        assert!(matches!(
            decrypt_chunk(&h, &k, 6, ct1),
            Err(ImageError::NoSuchChunk { index: 6, count: 6 })
        ));
        assert!(matches!(
            decrypt_chunk(&h, &ImageKey::generate(), 1, ct1),
            Err(ImageError::ChunkTampered { index: 1, .. })
        ));
    }

    #[test]
    fn chunks_match_the_previous_aes_gcm_implementation() {
        // Images written before the switch to ring (RustCrypto's aes-gcm) still
        // decrypt, and images written now decrypt with it: the format is unchanged.
        use crate::chunk::{aad, decrypt_chunk, location, nonce};
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let (plain, enc) = image(2 * 4096 + 10);
        let (h, k) = key_of(&enc);
        let old = aes_gcm::Aes256Gcm::new_from_slice(k.as_bytes()).unwrap();
        let hd = h.digest();
        for index in 0..h.chunk_count {
            let (off, len) = location(&h, index).unwrap();
            let ct = &enc[off as usize..off as usize + len];
            let n = aes_gcm::Nonce::from(nonce(&h.nonce_prefix, index));
            let a = aad(&hd, index);
            let pt = old.decrypt(&n, Payload { msg: ct, aad: &a }).unwrap();
            let start = index as usize * 4096;
            assert_eq!(pt, &plain[start..start + pt.len()]);
            let again = old.encrypt(&n, Payload { msg: &pt, aad: &a }).unwrap();
            assert_eq!(&decrypt_chunk(&h, &k, index, &again).unwrap()[..], &pt[..]);
        }
    }

    #[test]
    fn key_never_printed() {
        assert_eq!(
            format!("{:?}", ImageKey::generate()),
            "ImageKey(<redacted>)"
        );
    }
}
