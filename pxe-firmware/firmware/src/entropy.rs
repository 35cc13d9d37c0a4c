//! Randomness: RDRAND mixed with the VMM's seed from the configuration page. Both
//! must be present: without a working RDRAND the boot fails (NoEntropy) rather than
//! run on the seed alone.

use core::arch::x86_64::{__cpuid, _rdrand64_step};

/// Whether the CPU has RDRAND (CPUID.1:ECX bit 30).
pub fn has_rdrand() -> bool {
    __cpuid(1).ecx & (1 << 30) != 0
}

/// One RDRAND value, retried as Intel recommends; `None` if it keeps failing.
pub fn rdrand64() -> Option<u64> {
    for _ in 0..10 {
        let mut v = 0u64;
        // SAFETY: only called after `has_rdrand`; the intrinsic writes `v` only.
        if unsafe { _rdrand64_step(&mut v) } == 1 {
            return Some(v);
        }
    }
    None
}

/// A 64-bit value from RDRAND mixed with the seed (for the network stack's initial
/// sequence numbers and ports).
pub fn seed64(seed: &[u8; 32]) -> Option<u64> {
    if !has_rdrand() {
        return None;
    }
    let mut s = [0u8; 8];
    for chunk in seed.chunks_exact(8) {
        for (a, b) in s.iter_mut().zip(chunk) {
            *a ^= b;
        }
    }
    Some(rdrand64()? ^ u64::from_le_bytes(s))
}
