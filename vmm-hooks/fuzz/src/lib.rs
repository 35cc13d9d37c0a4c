//! Shared pieces of tvp-vmm's fuzz targets: the input layout of `image_load` (so the
//! target and its seed writer agree on it) and the plaintext its encrypted seeds carry.
//!
//! An `image_load` input describes one call of `tvp_vmm::image::load`:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | flags: bit 0 encrypted (a key pipe is passed), bit 1 the digest is given below (else the image's own: SHA-256 of a plain image, the header's digest of an encrypted one), bit 2 the length is given below (else the image's own) |
//! | 1..3 | the descriptor's guest address in units of 32 bytes (u16 LE; up to 2 MiB, past the end of the fuzzed RAM) |
//! | 3 | where the firmware ends: `FIRMWARE_MIN_GPA` + this many KiB |
//! | (bit 2) 4 | the descriptor's length (u32 LE) |
//! | (bit 1) 32 | the descriptor's digest |
//! | (bit 0) 1 + k | the key pipe's content: k (`% 48`) bytes |
//! | rest | the image file |

use sha2::{Digest, Sha256};
use tvp_abi::layout::FIRMWARE_MIN_GPA;
use tvp_image::stream::read_header;

/// Size of the guest memory `image_load` loads into: the firmware area and 256 KiB.
pub const RAM_SIZE: u64 = FIRMWARE_MIN_GPA + (256 << 10);

/// Flag: the image is encrypted (a key pipe is passed).
pub const ENCRYPTED: u8 = 1;
/// Flag: the descriptor's digest follows the fixed part.
pub const GIVEN_DIGEST: u8 = 2;
/// Flag: the descriptor's length follows the fixed part.
pub const GIVEN_LEN: u8 = 4;

/// One `image_load` input, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCase<'a> {
    /// Whether a key pipe is passed (the image is to be decrypted).
    pub encrypted: bool,
    /// The descriptor's guest-physical address.
    pub gpa: u64,
    /// Where the firmware ends (`load` refuses an image below it).
    pub firmware_end: u64,
    /// The descriptor's length, if given (else the image's own).
    pub len: Option<u32>,
    /// The descriptor's digest, if given (else the image's own).
    pub digest: Option<[u8; 32]>,
    /// The key pipe's content (encrypted only).
    pub key: &'a [u8],
    /// The image file.
    pub image: &'a [u8],
}

impl<'a> ImageCase<'a> {
    /// Decodes an input; `None` if it is shorter than its fields.
    pub fn decode(data: &'a [u8]) -> Option<Self> {
        let (head, mut rest) = data.split_first_chunk::<4>()?;
        let [flags, g0, g1, fw] = *head;
        let len = if flags & GIVEN_LEN != 0 {
            let (l, r) = rest.split_first_chunk::<4>()?;
            rest = r;
            Some(u32::from_le_bytes(*l))
        } else {
            None
        };
        let digest = if flags & GIVEN_DIGEST != 0 {
            let (d, r) = rest.split_first_chunk::<32>()?;
            rest = r;
            Some(*d)
        } else {
            None
        };
        let encrypted = flags & ENCRYPTED != 0;
        let key: &[u8] = if encrypted {
            let (&k, r) = rest.split_first()?;
            let k = usize::from(k % 48);
            if r.len() < k {
                return None;
            }
            rest = &r[k..];
            &r[..k]
        } else {
            &[]
        };
        Some(ImageCase {
            encrypted,
            gpa: u64::from(u16::from_le_bytes([g0, g1])) * 32,
            firmware_end: FIRMWARE_MIN_GPA + u64::from(fw) * 1024,
            len,
            digest,
            key,
            image: rest,
        })
    }

    /// Encodes the case (the inverse of [`ImageCase::decode`] for addresses that are
    /// multiples of 32 below 2 MiB and firmware ends a whole KiB above
    /// `FIRMWARE_MIN_GPA`, up to 255 KiB).
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.encrypted {
            flags |= ENCRYPTED;
        }
        if self.digest.is_some() {
            flags |= GIVEN_DIGEST;
        }
        if self.len.is_some() {
            flags |= GIVEN_LEN;
        }
        let g = ((self.gpa / 32) as u16).to_le_bytes();
        let fw = ((self.firmware_end - FIRMWARE_MIN_GPA) / 1024) as u8;
        let mut out = vec![flags, g[0], g[1], fw];
        if let Some(l) = self.len {
            out.extend_from_slice(&l.to_le_bytes());
        }
        if let Some(d) = self.digest {
            out.extend_from_slice(&d);
        }
        if self.encrypted {
            out.push(self.key.len() as u8);
            out.extend_from_slice(self.key);
        }
        out.extend_from_slice(self.image);
        out
    }

    /// The descriptor's length: given, or the image's own (a plain image's size, an
    /// encrypted image's header; its size when the header does not parse).
    pub fn descriptor_len(&self) -> u64 {
        if let Some(l) = self.len {
            return u64::from(l);
        }
        if self.encrypted {
            if let Ok(h) = read_header(&mut &*self.image) {
                return h.plaintext_len;
            }
        }
        self.image.len() as u64
    }

    /// The descriptor's digest: given, or the image's own (a plain image's SHA-256, an
    /// encrypted image's header digest; the file's SHA-256 when the header does not
    /// parse).
    pub fn descriptor_digest(&self) -> [u8; 32] {
        if let Some(d) = self.digest {
            return d;
        }
        if self.encrypted {
            if let Ok(h) = read_header(&mut &*self.image) {
                return h.image_digest;
            }
        }
        Sha256::digest(self.image).into()
    }
}

/// Byte `i` of every encrypted seed's plaintext (the same rule as tvp-image's fuzz
/// seeds: `7 i + 3`).
pub fn plain_byte(i: u64) -> u8 {
    (i.wrapping_mul(7).wrapping_add(3)) as u8
}

/// Writes the `image_load` seeds: `cargo test --manifest-path vmm-hooks/fuzz/Cargo.toml
/// -- --ignored write_seeds`. Encrypted seeds are real images from
/// `tvp_image::encrypt`, wrapped to tvp-image's fuzz test key
/// (`agent/image/fuzz/fixtures`), each input carrying its unwrapped key as the key
/// pipe's content (what tvpd writes into the pipe).
#[cfg(test)]
mod seeds {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::RsaPrivateKey;
    use std::io::Cursor;
    use tvp_image::ImageKey;

    /// A real encrypted image of `len` bytes of the seed plaintext, and its key.
    fn encrypted(len: usize, kms: &RsaPrivateKey) -> (Vec<u8>, [u8; 32]) {
        let plain: Vec<u8> = (0..len as u64).map(plain_byte).collect();
        let mut out = Vec::new();
        let h = tvp_image::encrypt(
            &mut Cursor::new(plain),
            &mut out,
            &kms.to_public_key(),
            4096,
        )
        .unwrap();
        let key = ImageKey::unwrap(&h.wrapped_key, kms).unwrap();
        (out, *key.as_bytes())
    }

    fn plain(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(13) ^ 0x5a) as u8)
            .collect()
    }

    #[test]
    fn cases_round_trip() {
        let img = plain(100);
        let c = ImageCase {
            encrypted: true,
            gpa: 0x10_8000,
            firmware_end: FIRMWARE_MIN_GPA + 0x4000,
            len: Some(100),
            digest: Some([7; 32]),
            key: &[1; 32],
            image: &img,
        };
        assert_eq!(ImageCase::decode(&c.encode()), Some(c));
    }

    #[test]
    #[ignore]
    fn write_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/image_load");
        std::fs::create_dir_all(&dir).unwrap();
        let kms = RsaPrivateKey::from_pkcs8_pem(include_str!(
            "../../../agent/image/fuzz/fixtures/kms-test-key.pem"
        ))
        .unwrap();
        let fw = FIRMWARE_MIN_GPA + 0x8000;
        let at = FIRMWARE_MIN_GPA + 0x1_0000;
        let base = |image: &'static [u8]| ImageCase {
            encrypted: false,
            gpa: at,
            firmware_end: fw,
            len: None,
            digest: None,
            key: &[],
            image,
        };
        let write = |name: &str, c: ImageCase| {
            std::fs::write(dir.join(name), c.encode()).unwrap();
        };
        let p100: &'static [u8] = plain(100).leak();
        let p5000: &'static [u8] = plain(5000).leak();
        write("plain-100", base(p100));
        write(
            "plain-5000-given",
            ImageCase {
                len: Some(5000),
                digest: Some(Sha256::digest(p5000).into()),
                ..base(p5000)
            },
        );
        write(
            "plain-digest-mismatch",
            ImageCase {
                digest: Some(Sha256::digest(p100).into()),
                ..base(p5000)
            },
        );
        write(
            "plain-longer-than-stated",
            ImageCase {
                len: Some(4096),
                ..base(p5000)
            },
        );
        write(
            "plain-below-firmware-end",
            ImageCase {
                gpa: fw - 0x1000,
                ..base(p100)
            },
        );
        write(
            "plain-past-ram",
            ImageCase {
                gpa: RAM_SIZE - 64,
                ..base(p100)
            },
        );
        for len in [0usize, 100, 3 * 4096 + 700] {
            let (img, key) = encrypted(len, &kms);
            let img: &'static [u8] = img.leak();
            let key: &'static [u8] = key.to_vec().leak();
            let enc = ImageCase {
                encrypted: true,
                key,
                ..base(img)
            };
            write(&format!("encrypted-{len}"), enc.clone());
            if len == 100 {
                let mut wrong = key.to_vec();
                wrong[0] ^= 1;
                write(
                    "encrypted-wrong-key",
                    ImageCase {
                        key: wrong.leak(),
                        ..enc.clone()
                    },
                );
                write(
                    "encrypted-key-short",
                    ImageCase {
                        key: &key[..31],
                        ..enc.clone()
                    },
                );
                write(
                    "encrypted-other-length",
                    ImageCase {
                        len: Some(99),
                        ..enc.clone()
                    },
                );
                write(
                    "encrypted-other-digest",
                    ImageCase {
                        digest: Some([0x42; 32]),
                        ..enc.clone()
                    },
                );
                let mut tampered = img.to_vec();
                let last = tampered.len() - 1;
                tampered[last] ^= 0x80;
                write(
                    "encrypted-tampered-chunk",
                    ImageCase {
                        image: tampered.leak(),
                        ..enc.clone()
                    },
                );
            }
        }
    }
}
