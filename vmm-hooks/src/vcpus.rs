//! The VM's vCPU threads as one set: stopping all of them when one ends the VM or a
//! stop is requested, and noticing a guest that can never run again.
//!
//! With the in-kernel LAPIC a `hlt` no longer exits to the VMM: KVM blocks the vCPU
//! until an interrupt. A guest whose every vCPU is halted with interrupts disabled, or
//! still waits for its start-up IPI, can never wake (the VMM injects no NMI), so the VM
//! ends as `Halted`. To tell, the supervisor runs a *check round* when no vCPU exited
//! for a [`CHECK_PERIOD`]: it pauses every vCPU out of KVM_RUN (kick signal), each
//! reports its KVM_GET_MP_STATE and interrupt flag, and the verdict is taken while no
//! vCPU runs, so no vCPU can wake another in between. A busy guest pays one pause of
//! well under a millisecond per period at most.

use crate::shutdown::{self, Shutdown};
use crate::vcpu::{self, VcpuEnd};
use kvm_bindings::{KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_UNINITIALIZED};
use kvm_ioctls::VcpuFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long the vCPUs must have made no exit before a check round.
pub const CHECK_PERIOD: Duration = Duration::from_millis(200);
/// The supervisor's tick: signal polling, re-kicks, round verdicts.
const TICK: Duration = Duration::from_millis(20);
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// What a paused vCPU reported in a check round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// It can only be woken by another vCPU (INIT/SIPI/NMI): halted with IF clear,
    /// or waiting for its start-up IPI.
    pub parked: bool,
    /// Its RIP (for the `Halted` reason).
    pub rip: u64,
}

#[derive(Default)]
struct Round {
    /// A check round is under way: vCPUs pause at their next loop turn.
    active: bool,
    /// Per vCPU: its report in this round.
    reports: Vec<Option<Report>>,
}

/// State shared by the supervisor and every vCPU thread.
pub struct VcpuSet {
    /// A vCPU ended the VM (or the supervisor did): every vCPU stops.
    ended: AtomicBool,
    /// Mirrors `round.active` for the vCPU loops' lock-free check.
    pausing: AtomicBool,
    /// Exits handled by any vCPU (activity, to skip check rounds on a busy guest).
    exits: AtomicU64,
    /// Per vCPU: inside (or about to enter) KVM_RUN, so a kick is needed to reach it.
    in_guest: Vec<AtomicBool>,
    round: Mutex<Round>,
    wake: Condvar,
}

/// Classifies a vCPU from its multiprocessing state and RFLAGS.
pub fn is_parked(mp_state: u32, rflags: u64) -> bool {
    match mp_state {
        KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED => true,
        KVM_MP_STATE_HALTED => rflags & RFLAGS_IF == 0,
        _ => false,
    }
}

/// A readable name of a KVM_MP_STATE value (logs).
pub fn mp_state_name(mp_state: u32) -> &'static str {
    match mp_state {
        0 => "runnable",
        KVM_MP_STATE_UNINITIALIZED => "uninitialized",
        KVM_MP_STATE_INIT_RECEIVED => "init-received",
        KVM_MP_STATE_HALTED => "halted",
        4 => "sipi-received",
        _ => "other",
    }
}

impl VcpuSet {
    /// A set of `count` vCPUs.
    pub fn new(count: usize) -> Self {
        VcpuSet {
            ended: AtomicBool::new(false),
            pausing: AtomicBool::new(false),
            exits: AtomicU64::new(0),
            in_guest: (0..count).map(|_| AtomicBool::new(false)).collect(),
            round: Mutex::new(Round {
                active: false,
                reports: vec![None; count],
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        self.round.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the VM ended: every vCPU stops at its next loop turn.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// Whether the VM ended.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Counts one exit of any vCPU.
    pub fn note_exit(&self) {
        self.exits.fetch_add(1, Ordering::Relaxed);
    }

    /// vCPU `index` is about to call KVM_RUN (after its last pause check) or has left
    /// it.
    pub fn set_in_guest(&self, index: usize, inside: bool) {
        if let Some(f) = self.in_guest.get(index) {
            f.store(inside, Ordering::SeqCst);
        }
    }

    /// Whether a check round is under way.
    pub fn round_active(&self) -> bool {
        self.pausing.load(Ordering::SeqCst)
    }

    fn set_round(&self, round: &mut Round, active: bool) {
        round.active = active;
        self.pausing.store(active, Ordering::SeqCst);
    }

    /// Called by vCPU `index` at the top of its loop when it has no exit left to
    /// complete: during a check round, reports its state and waits for the verdict
    /// (or a stop).
    pub fn pause_point(&self, index: usize, vcpu: &VcpuFd, shutdown: &Shutdown) {
        if !self.round_active() {
            return;
        }
        let report = match (vcpu.get_mp_state(), vcpu.get_regs()) {
            (Ok(mp), Ok(regs)) => Report {
                parked: is_parked(mp.mp_state, regs.rflags),
                rip: regs.rip,
            },
            // Unknown state: never counted as parked.
            _ => Report {
                parked: false,
                rip: 0,
            },
        };
        let mut round = self.lock();
        if let Some(slot) = round.reports.get_mut(index) {
            *slot = Some(report);
        }
        while round.active && !self.ended() && shutdown.requested().is_none() {
            round = self
                .wake
                .wait_timeout(round, TICK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The supervisor's view of one vCPU thread.
pub struct Thread {
    /// Its pthread id (for kicks) while it runs.
    pub pthread: libc::pthread_t,
    /// It has reported its end.
    pub done: bool,
}

/// Runs until every vCPU thread has ended; returns the VM's end: the first end a vCPU
/// reported other than `Stopped`, else `Stopped`. `done` carries (vCPU index, end).
pub fn supervise(
    set: &VcpuSet,
    threads: &mut [Thread],
    done: &Receiver<(usize, VcpuEnd)>,
    shutdown: &Shutdown,
) -> VcpuEnd {
    let mut first: Option<VcpuEnd> = None;
    let mut last_exits = set.exits.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    loop {
        shutdown::poll_signal(shutdown);
        let stopping = shutdown.requested().is_some() || set.ended();
        let round_active = set.round_active();
        if stopping || round_active {
            kick_running(set, threads, round_active && !stopping);
        }
        match done.recv_timeout(TICK) {
            Ok((index, end)) => {
                if let Some(t) = threads.get_mut(index) {
                    t.done = true;
                }
                if end != VcpuEnd::Stopped && first.is_none() {
                    log::info!(vcpu = index, end = format!("{end:?}"); "vCPU ended the VM");
                    first = Some(end);
                }
                set.end();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                first.get_or_insert(VcpuEnd::KvmError("vCPU thread died".into()));
                set.end();
                break;
            }
        }
        if threads.iter().all(|t| t.done) {
            break;
        }
        if set.ended() || shutdown.requested().is_some() {
            continue;
        }
        // Halt detection.
        let exits = set.exits.load(Ordering::Relaxed);
        if exits != last_exits {
            last_exits = exits;
            quiet_since = Instant::now();
        }
        let mut round = set.lock();
        if round.active {
            let live: Vec<usize> = (0..threads.len()).filter(|i| !threads[*i].done).collect();
            if live
                .iter()
                .all(|i| round.reports.get(*i).is_some_and(|r| r.is_some()))
            {
                let all_parked = live.iter().all(|i| {
                    round
                        .reports
                        .get(*i)
                        .is_some_and(|r| r.is_some_and(|r| r.parked))
                });
                if all_parked {
                    let rip = round
                        .reports
                        .first()
                        .and_then(|r| r.map(|r| r.rip))
                        .unwrap_or(0);
                    first.get_or_insert(VcpuEnd::Halted { rip });
                    set.ended.store(true, Ordering::SeqCst);
                }
                set.set_round(&mut round, false);
                round.reports.iter_mut().for_each(|r| *r = None);
                quiet_since = Instant::now();
                drop(round);
                set.wake.notify_all();
            }
        } else if quiet_since.elapsed() >= CHECK_PERIOD {
            set.set_round(&mut round, true);
            drop(round);
            kick_running(set, threads, true);
        }
    }
    first.unwrap_or(VcpuEnd::Stopped)
}

/// Kicks every live vCPU thread that is in (or entering) KVM_RUN; with `unreported`,
/// only those that have not reported in the current round.
fn kick_running(set: &VcpuSet, threads: &[Thread], unreported: bool) {
    let reported: Vec<bool> = if unreported {
        let round = set.lock();
        (0..threads.len())
            .map(|i| round.reports.get(i).is_some_and(|r| r.is_some()))
            .collect()
    } else {
        vec![false; threads.len()]
    };
    for (i, t) in threads.iter().enumerate() {
        let inside = set
            .in_guest
            .get(i)
            .is_some_and(|f| f.load(Ordering::SeqCst));
        if !t.done && inside && !reported.get(i).copied().unwrap_or(false) {
            vcpu::kick(t.pthread);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_halted_with_interrupts_off_or_waiting_for_sipi_is_parked() {
        assert!(is_parked(KVM_MP_STATE_HALTED, 0x2));
        assert!(
            !is_parked(KVM_MP_STATE_HALTED, 0x202),
            "IF set: a timer may wake it"
        );
        assert!(is_parked(KVM_MP_STATE_UNINITIALIZED, 0x202));
        assert!(is_parked(KVM_MP_STATE_INIT_RECEIVED, 0x2));
        assert!(!is_parked(0, 0x2), "runnable");
        assert!(!is_parked(4, 0x2), "SIPI received: about to run");
    }
}
