//! Encrypted images (seeds: real images from `tvp_image::encrypt`, wrapped to a fixed
//! test key) through `read_header`, key unwrap and `decrypt`. Invariants beyond no
//! panic:
//! - an accepted header re-encodes to exactly the bytes it was read from;
//! - every plaintext byte handed out is the original plaintext at that position (a
//!   mutated image may fail at any point, but never yields other plaintext), and a
//!   decryption that succeeds yields the whole original, of the header's length.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use tvp_image::stream::read_header;
use tvp_image::{decrypt, ImageKey};
use tvp_image_fuzz::{kms, plain_byte};

thread_local! {
    /// Unwrapped keys by wrapped key: RSA decryption is the slow part.
    static KEYS: RefCell<HashMap<Vec<u8>, Option<ImageKey>>> = RefCell::new(seed_keys());
}

/// The keys of the seed images, unwrapped once.
fn seed_keys() -> HashMap<Vec<u8>, Option<ImageKey>> {
    let seeds: [&[u8]; 3] = [
        include_bytes!("../corpus/image_decrypt/image-0"),
        include_bytes!("../corpus/image_decrypt/image-100"),
        include_bytes!("../corpus/image_decrypt/image-12988"),
    ];
    seeds
        .iter()
        .map(|s| {
            let h = read_header(&mut Cursor::new(s)).unwrap();
            let k = ImageKey::unwrap(&h.wrapped_key, kms()).unwrap();
            (h.wrapped_key, Some(k))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut r = Cursor::new(data);
    let Ok(h) = read_header(&mut r) else {
        return;
    };
    let used = r.position() as usize;
    assert_eq!(
        h.encode(),
        data[..used],
        "header does not re-encode to its bytes"
    );
    let key = KEYS.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() > 64 {
            k.retain(|_, v| v.is_some());
        }
        if let Some(key) = k.get(&h.wrapped_key) {
            return key.clone();
        }
        // RSA decryption under coverage instrumentation takes milliseconds: try only
        // one in 16 unseen wrapped keys of the right size (the seeds' keys are known) (any other size fails at once).
        let sum = h.wrapped_key.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        if h.wrapped_key.len() == 256 && sum % 16 != 0 {
            return None;
        }
        let key = ImageKey::unwrap(&h.wrapped_key, kms()).ok();
        k.insert(h.wrapped_key.clone(), key.clone());
        key
    });
    let Some(key) = key else {
        return;
    };
    let mut at = 0u64;
    let result = decrypt(&mut r, &h, &key, |chunk| {
        for b in chunk {
            assert_eq!(
                *b,
                plain_byte(at),
                "decryption yielded foreign plaintext at {at}"
            );
            at += 1;
        }
        Ok(())
    });
    if result.is_ok() {
        assert_eq!(at, h.plaintext_len, "accepted image of the wrong length");
    }
});
