//! Time for the network stack and deadlines: the TSC, scaled by its frequency as the
//! platform's mailbox says it (GET_VERSION), else from CPUID (leaf 0x15, or the
//! hypervisor timing leaf 0x40000010), else an assumed 2 GHz. A wrong frequency scales
//! every timeout: on a 2.6 GHz host the assumed 2 GHz made a 10 s timeout run out after
//! 7.7 s (under nested KVM, CPUID at CPL 3 is answered without the VMM's timing leaf). Only relative
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

/// Sets the TSC frequency once: `platform_khz` (from the mailbox) if given, else
/// CPUID's; returns it and where it came from.
pub fn init(platform_khz: Option<u32>) -> (u64, &'static str) {
    let (khz, source) = match platform_khz {
        Some(k) => (u64::from(k), "platform"),
        None => match detect_khz() {
            ASSUMED_KHZ => (ASSUMED_KHZ, "assumed"),
            k => (k, "cpuid"),
        },
    };
    TSC_KHZ.store(khz, Ordering::Relaxed);
    (khz, source)
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
