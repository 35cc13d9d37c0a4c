//! Shared pieces of the tvp-image fuzz targets: a fixed key-management key (a test key,
//! `fixtures/kms-test-key.pem`, never used for anything else) and the plaintext every
//! seed image encrypts (byte `i` is `7 i + 3`), so a target knows what the only
//! acceptable plaintext of any length is.

use std::sync::OnceLock;

use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;

/// The test key-management key the seed images are wrapped to.
pub fn kms() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| {
        RsaPrivateKey::from_pkcs8_pem(include_str!("../fixtures/kms-test-key.pem")).unwrap()
    })
}

/// Byte `i` of every seed image's plaintext.
pub fn plain_byte(i: u64) -> u8 {
    (i.wrapping_mul(7).wrapping_add(3)) as u8
}

/// The first `len` bytes of the seed plaintext.
pub fn plaintext(len: usize) -> Vec<u8> {
    (0..len as u64).map(plain_byte).collect()
}

/// Writes the seed corpus (real encrypted images made by `tvp_image::encrypt`):
/// `cargo test --manifest-path agent/image/fuzz/Cargo.toml -- --ignored write_seeds`.
#[cfg(test)]
mod seeds {
    use super::*;
    use std::io::Cursor;

    #[test]
    #[ignore]
    fn write_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/image_decrypt");
        std::fs::create_dir_all(&dir).unwrap();
        for len in [0usize, 100, 3 * 4096 + 700] {
            let mut out = Vec::new();
            tvp_image::encrypt(
                &mut Cursor::new(plaintext(len)),
                &mut out,
                &kms().to_public_key(),
                4096,
            )
            .unwrap();
            std::fs::write(dir.join(format!("image-{len}")), out).unwrap();
        }
    }
}
