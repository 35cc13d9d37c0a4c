//! Where the firmware's time goes during the workload transfer: TSC cycles per phase
//! (the network stack's polls, the device polls and sends inside them, which are VM
//! exits, and the TLS record layer), printed after the transfer. Single-threaded:
//! plain counters behind relaxed atomics.

use core::arch::x86_64::_rdtsc;
use core::sync::atomic::{AtomicU64, Ordering};

/// A phase whose cycles are counted.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// smoltcp's `Interface::poll` (receive, TCP, ACKs; includes `Kick` and `Send`).
    Poll = 0,
    /// Register reads on an empty ring: a VM exit plus tvp-vmm's receive pump.
    Kick = 1,
    /// Frames handed to the device: a VM exit plus tvp-vmm's transmit.
    Send = 2,
    /// rustls' record layer: decryption of the received records.
    Tls = 3,
    /// Taking a frame from the receive ring and reposting its buffer (virtio-drivers).
    Ring = 4,
    /// Idle polls: the device had nothing; tvp-vmm waited for the TAP device.
    Idle = 5,
    /// SHA-256 of the workload's payload, taken as it arrives.
    Digest = 6,
}

const PHASES: usize = 7;
static CYCLES: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];
static COUNTS: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];

/// The TSC.
pub fn cycles() -> u64 {
    // SAFETY: RDTSC is unprivileged unless CR4.TSD is set, which the stub does not set.
    unsafe { _rdtsc() }
}

/// Runs `f`, counting its cycles under `phase`.
pub fn time<R>(phase: Phase, f: impl FnOnce() -> R) -> R {
    let t0 = cycles();
    let r = f();
    add(phase, cycles().wrapping_sub(t0));
    r
}

/// Counts one call of `phase` that took `c` cycles.
pub fn add(phase: Phase, c: u64) {
    let p = phase as usize;
    CYCLES[p].fetch_add(c, Ordering::Relaxed);
    COUNTS[p].fetch_add(1, Ordering::Relaxed);
}

/// The counters so far: (cycles, calls) per phase.
pub fn snapshot() -> [(u64, u64); PHASES] {
    core::array::from_fn(|i| {
        (
            CYCLES[i].load(Ordering::Relaxed),
            COUNTS[i].load(Ordering::Relaxed),
        )
    })
}
