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

/// The firmware's RNG state: the configuration page's seed and a block counter.
static SEED: spinning_top::Spinlock<([u8; 32], u64)> = spinning_top::Spinlock::new(([0; 32], 0));

/// Keeps the configuration page's seed for [`fill`]. Fails without RDRAND.
pub fn init(seed: &[u8; 32]) -> bool {
    if !has_rdrand() || rdrand64().is_none() {
        return false;
    }
    SEED.lock().0 = *seed;
    true
}

/// Fills `out` with SHA-256(seed || counter || four RDRAND values) blocks: the VMM's
/// seed and the CPU's generator are both mixed in, so neither alone decides the
/// output. `false` if RDRAND failed.
pub fn fill(out: &mut [u8]) -> bool {
    let mut st = SEED.lock();
    for chunk in out.chunks_mut(32) {
        let mut input = [0u8; 72];
        input[..32].copy_from_slice(&st.0);
        input[32..40].copy_from_slice(&st.1.to_le_bytes());
        for i in 0..4 {
            let Some(r) = rdrand64() else {
                return false;
            };
            input[40 + i * 8..48 + i * 8].copy_from_slice(&r.to_le_bytes());
        }
        st.1 = st.1.wrapping_add(1);
        let block = tvp_abi::measure::sha256(&input);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    true
}

/// `getrandom(2)` for the `getrandom` crate that `ring` uses: the libc `syscall`
/// shim in [`crate::rt`] routes `SYS_getrandom` here.
///
/// # Safety
/// `buf` must be null or valid for writes of `len` bytes (the `getrandom(2)` contract).
#[no_mangle]
pub unsafe extern "C" fn tvp_getrandom(buf: *mut u8, len: usize) -> isize {
    if len == 0 {
        return 0;
    }
    if buf.is_null() || len > isize::MAX as usize {
        return -1;
    }
    // SAFETY: the caller (getrandom) passes a writable buffer of `len` bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    if fill(out) {
        len as isize
    } else {
        -1
    }
}
