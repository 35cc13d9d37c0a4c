//! Qualifying data that binds a quote to something besides freshness: the quote's
//! extraData is `SHA-256(nonce || digest)` instead of the bare nonce, so the AK's
//! signature commits the quoting host to `digest` (e.g. the description of the VM a
//! key-management service releases a key for, `docs/kms.md`) as well as to the nonce.
//! `digest` is fixed-length, so the concatenation is unambiguous.

use sha2::{Digest, Sha256};

/// `SHA-256(nonce || digest)`: the qualifying data of a quote bound to `digest`.
pub fn bound_qualifying_data(nonce: &[u8], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(digest);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_both_the_nonce_and_the_digest() {
        let a = bound_qualifying_data(b"nonce", &[1; 32]);
        assert_ne!(a, bound_qualifying_data(b"nonce", &[2; 32]));
        assert_ne!(a, bound_qualifying_data(b"nonc", &[1; 32]));
        assert_eq!(a, bound_qualifying_data(b"nonce", &[1; 32]));
        let mut concat = b"nonce".to_vec();
        concat.extend([1u8; 32]);
        assert_eq!(a, <[u8; 32]>::from(Sha256::digest(&concat)));
    }
}
