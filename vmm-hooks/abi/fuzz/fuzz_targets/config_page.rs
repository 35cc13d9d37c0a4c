//! Configuration pages (seed: a valid page with and without an image descriptor, and
//! with a disk descriptor after either, as tvp-vmm writes them) through `config::decode`. Invariants beyond no panic: the page
//! is canonical — an accepted page re-encodes to exactly its 4096 bytes, so each
//! configuration has one encoding and one PCR 23 value — and the decoded fields pass
//! `validate` (an image lies inside RAM, above 32 MiB, 4 KiB aligned; a disk is not
//! empty).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_abi::config::decode;
use tvp_abi::layout::IMAGE_MIN_GPA;
use tvp_abi::PAGE_SIZE;

fuzz_target!(|data: &[u8]| {
    let mut page = [0u8; PAGE_SIZE];
    let n = data.len().min(PAGE_SIZE);
    page[..n].copy_from_slice(&data[..n]);
    let Ok(c) = decode(&page) else {
        return;
    };
    assert_eq!(
        c.encode().expect("a decoded page encodes"),
        page,
        "page is not canonical"
    );
    assert_eq!(c.validate(), Ok(()));
    if let Some(i) = c.image {
        assert!(i.gpa >= IMAGE_MIN_GPA && i.gpa % 4096 == 0 && i.len > 0);
        assert!(i.gpa + i.len <= c.mem_size());
    }
    if let Some(d) = c.disk {
        assert!(d.len > 0);
    }
    assert!(!c.auth_code.is_empty() && c.encoded_len() <= PAGE_SIZE);
});
