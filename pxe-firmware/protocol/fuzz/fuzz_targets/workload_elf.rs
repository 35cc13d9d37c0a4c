//! Workload ELF images (seed: the project's test workload `hello.elf` from
//! `scripts/build-test-workload.sh`) through `elf::parse` for the firmware's workload
//! window. Invariants beyond no panic: every accepted segment's file bytes lie inside
//! the image and its memory inside the window (so the firmware's copy cannot reach the
//! firmware, the page tables or beyond RAM), and the entry point lies in an executable
//! accepted segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_boot_protocol::elf::parse;

const W0: u64 = 0x200_0000;
const W1: u64 = 0x400_0000;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = parse(data, W0, W1) else {
        return;
    };
    let mut n = 0;
    for s in img.loads() {
        n += 1;
        assert!(s.filesz as u64 <= s.memsz);
        assert!(s
            .offset
            .checked_add(s.filesz)
            .is_some_and(|e| e <= data.len()));
        assert!(s.paddr >= W0 && s.paddr.checked_add(s.memsz).is_some_and(|e| e <= W1));
    }
    assert!(n > 0);
    assert!(img
        .loads()
        .any(|s| s.exec && img.entry >= s.paddr && img.entry - s.paddr < s.memsz));
});
