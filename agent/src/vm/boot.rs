//! Where a measured VM's boot is: ONE value per VM, in the manner of rustls's
//! handshake states. Each variant carries exactly the data valid in it (the VMM's
//! reported PCR 23 while measuring, this boot's event log while the firmware attests,
//! `paused` only while live, the reason once ended), and [`Boot::step`] is the only
//! way from one to the next: an impossible transition (a second tunnel measurement, a
//! message after the end, a handover before the firmware was started) is refused with
//! a [`BootError`] and changes nothing. No state holds the PCR lease: it is taken only
//! for the TPM steps of a quote (`vm/lease.rs`).
//!
//! The API's `state` ([`VmState`]), its boot-log `phase` ([`Phase`]) and `paused` are
//! derived from it, never kept in step by hand.

use tvp_verifier::CelRecord;

use super::phase::Phase;
use super::state::VmState;

mod conversation;
mod stage;
mod step;

pub use conversation::{kind, Conversation, Reported, Violation};
pub use stage::Stage;
pub use step::{BootError, Step};

/// How a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Ended with a failure (`failed`).
    Failed,
    /// Destroyed on request, or ended normally after handover (`destroyed`).
    Destroyed,
}

/// A VM's boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The VM lives (its VMM runs or is about to).
    Live {
        /// Where its boot is.
        stage: Stage,
        /// Its VMM is stopped (SIGSTOP) by the tenant's authorization.
        paused: bool,
    },
    /// The VM is over.
    Ended {
        /// Failed or destroyed.
        how: Ending,
        /// Why (absent only in records of an older tvpd).
        reason: Option<String>,
    },
}

impl Boot {
    /// A new boot: queued, nothing granted, nothing measured.
    pub fn queued() -> Boot {
        Boot::Live {
            stage: Stage::Queued,
            paused: false,
        }
    }

    /// Take `step`: the boot moves on, or stays as it is and says why not.
    pub fn step(&mut self, step: Step) -> Result<(), BootError> {
        // A placeholder while the current state is moved into the transition.
        let current = std::mem::replace(
            self,
            Boot::Ended {
                how: Ending::Failed,
                reason: None,
            },
        );
        match current.next(step) {
            Ok(next) => {
                *self = next;
                Ok(())
            }
            Err((unchanged, e)) => {
                *self = unchanged;
                Err(e)
            }
        }
    }

    fn next(self, step: Step) -> Result<Boot, (Boot, BootError)> {
        let (stage, paused) = match self {
            Boot::Live { stage, paused } => (stage, paused),
            ended @ Boot::Ended { .. } => {
                let e = BootError::Ended {
                    step: step.name(),
                    state: ended.state().name(),
                };
                return Err((ended, e));
            }
        };
        match step {
            Step::End { how, reason } => Ok(Boot::Ended {
                how,
                reason: Some(reason),
            }),
            Step::Reboot => Ok(Boot::queued()),
            Step::Pause if paused => Err((Boot::Live { stage, paused }, BootError::AlreadyPaused)),
            Step::Resume if !paused => Err((Boot::Live { stage, paused }, BootError::NotPaused)),
            Step::Pause | Step::Resume => Ok(Boot::Live {
                stage,
                paused: !paused,
            }),
            step => match stage.next(step) {
                Ok(stage) => Ok(Boot::Live { stage, paused }),
                Err((stage, e)) => Err((Boot::Live { stage, paused }, e)),
            },
        }
    }

    /// The API state.
    pub fn state(&self) -> VmState {
        match self {
            Boot::Live { stage, .. } => stage.state(),
            Boot::Ended {
                how: Ending::Failed,
                ..
            } => VmState::Failed,
            Boot::Ended {
                how: Ending::Destroyed,
                ..
            } => VmState::Destroyed,
        }
    }

    /// The boot-log phase; `None` once ended.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Boot::Live { stage, .. } => Some(stage.phase()),
            Boot::Ended { .. } => None,
        }
    }

    /// Whether the VMM is paused (never once ended).
    pub fn paused(&self) -> bool {
        matches!(self, Boot::Live { paused: true, .. })
    }

    /// Why the VM ended; `None` while it lives.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Boot::Ended { reason, .. } => reason.as_deref(),
            Boot::Live { .. } => None,
        }
    }

    /// Whether the VM lives.
    pub fn is_live(&self) -> bool {
        matches!(self, Boot::Live { .. })
    }

    /// Whether the VM is live and not yet handed over (the attestation deadline
    /// applies).
    pub fn is_attesting(&self) -> bool {
        matches!(self, Boot::Live { stage, .. } if *stage != Stage::Running)
    }

    /// Whether the firmware runs (started, not yet handed over): the stages in which
    /// the tunnel measurement, quotes and the handover are taken.
    pub fn firmware_started(&self) -> bool {
        matches!(
            self,
            Boot::Live {
                stage: Stage::Tunnel { .. } | Stage::Attestation { .. } | Stage::Delivery { .. },
                ..
            }
        )
    }

    /// Whether the firmware waits for its tunnel measurement.
    pub fn awaits_tunnel(&self) -> bool {
        matches!(
            self,
            Boot::Live {
                stage: Stage::Tunnel { .. },
                ..
            }
        )
    }

    /// Whether the tunnel measurement is recorded and the firmware runs: the stages
    /// in which a quote (under the lease) may be taken.
    pub fn tunnel_measured(&self) -> bool {
        matches!(
            self,
            Boot::Live {
                stage: Stage::Attestation { .. } | Stage::Delivery { .. },
                ..
            }
        )
    }

    /// Whether the VMM's measurements are still coming in.
    pub fn accepts_measurements(&self) -> bool {
        matches!(
            self,
            Boot::Live {
                stage: Stage::Queued,
                ..
            }
        )
    }

    /// The VMM's own PCR 23 replay, while measuring.
    pub fn reported_pcr23(&self) -> Option<[u8; 32]> {
        match self {
            Boot::Live {
                stage: Stage::Measuring { reported_pcr23 },
                ..
            } => Some(*reported_pcr23),
            _ => None,
        }
    }

    /// This boot's PCR 23 records and, once recorded, its PCR 16 record (empty unless
    /// the firmware runs): what each quote's lease extends, and the evidence's log.
    pub fn lease_log(&self) -> &[CelRecord] {
        match self {
            Boot::Live {
                stage: Stage::Tunnel { log } | Stage::Attestation { log } | Stage::Delivery { log },
                ..
            } => log,
            _ => &[],
        }
    }

    /// The state as audit records show it: `running`, or `running, paused`.
    pub fn label(&self) -> String {
        let s = self.state().name();
        if self.paused() {
            format!("{s}, paused")
        } else {
            s.to_string()
        }
    }
}

#[cfg(test)]
mod tests;
