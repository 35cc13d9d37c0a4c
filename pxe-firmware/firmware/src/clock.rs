//! Time for the network stack and deadlines: the TSC, scaled by its frequency from
//! CPUID (leaf 0x15, or KVM's leaf 0x40000010), else an assumed 2 GHz. Only relative
//! times are used (retransmission timers, timeouts); wall-clock time for certificate
//! checks comes from the configuration page.

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
const ASSUMED_KHZ: u64 = 2_000_000;

fn detect_khz() -> u64 {
    let max = __cpuid(0).eax;
    if max >= 0x15 {
        let l = __cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax) / 1000;
        }
    }
    let hv = __cpuid(0x4000_0000);
    if hv.eax >= 0x4000_0010 {
        let l = __cpuid(0x4000_0010);
        if l.eax != 0 {
            return u64::from(l.eax);
        }
    }
    ASSUMED_KHZ
}

/// Reads the TSC frequency once.
pub fn init() -> u64 {
    let khz = detect_khz();
    TSC_KHZ.store(khz, Ordering::Relaxed);
    khz
}

/// The TSC frequency in kHz (detected by [`init`], else the assumed one).
pub fn khz() -> u64 {
    match TSC_KHZ.load(Ordering::Relaxed) {
        0 => ASSUMED_KHZ,
        k => k,
    }
}

/// Milliseconds since the TSC started (roughly, since VM start).
pub fn now_ms() -> u64 {
    let khz = match TSC_KHZ.load(Ordering::Relaxed) {
        0 => ASSUMED_KHZ,
        k => k,
    };
    // SAFETY: RDTSC is unprivileged unless CR4.TSD is set, which the stub does not set.
    let tsc = unsafe { _rdtsc() };
    tsc / khz
}

/// Wall-clock seconds: the configuration page's time plus the time since boot.
pub fn wall_secs(cfg: &tvp_abi::config::Config<'_>) -> u64 {
    cfg.time_unix_secs.saturating_add(now_ms() / 1000)
}
