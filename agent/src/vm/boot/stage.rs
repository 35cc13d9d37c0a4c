//! The stages of a live VM's measured boot and the steps between them.

use tvp_verifier::CelRecord;

use super::{BootError, Step};
use crate::vm::phase::Phase;
use crate::vm::state::VmState;

/// A live VM's place in its measured boot. No stage holds the PCR lease: it is taken
/// only for the TPM steps of one quote (`Manager::quote`), from `Attestation` or
/// `Delivery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The VMM starts, places and measures the VM into its own event log.
    Queued,
    /// All the VMM's events are in; tvpd checks them by computation against the
    /// firmware file and the page.
    Measuring {
        /// PCR 23 as the VMM replayed it.
        reported_pcr23: [u8; 32],
    },
    /// Firmware started; waiting for the tunnel measurement.
    Tunnel {
        /// This boot's PCR 23 records (for the lease's extends and the evidence).
        log: Vec<CelRecord>,
    },
    /// Tunnel measurement recorded (for PCR 16); waiting for the boot server's quote.
    Attestation {
        /// This boot's PCR 23 records and its PCR 16 record, last.
        log: Vec<CelRecord>,
    },
    /// Evidence delivered; waiting for the workload's handover. A second quote takes
    /// the lease again.
    Delivery {
        /// This boot's PCR 23 records and its PCR 16 record, last.
        log: Vec<CelRecord>,
    },
    /// Handed over to the workload.
    Running,
}

impl Stage {
    /// The boot-log phase of this stage.
    pub fn phase(&self) -> Phase {
        match self {
            Stage::Queued => Phase::Queued,
            Stage::Measuring { .. } => Phase::Measuring,
            Stage::Tunnel { .. } => Phase::Tunnel,
            Stage::Attestation { .. } => Phase::Attestation,
            Stage::Delivery { .. } => Phase::Delivery,
            Stage::Running => Phase::Running,
        }
    }

    /// The API state of this stage.
    pub fn state(&self) -> VmState {
        match self {
            Stage::Queued => VmState::Queued,
            Stage::Measuring { .. } => VmState::Measuring,
            Stage::Tunnel { .. } | Stage::Attestation { .. } => VmState::Attesting,
            Stage::Delivery { .. } => VmState::BootingWorkload,
            Stage::Running => VmState::Running,
        }
    }

    /// The next stage after `step`, or why there is none. `Pause`, `Resume`, `Reboot`
    /// and `End` concern the whole boot and are handled by [`Boot::step`].
    pub(super) fn next(self, step: Step) -> Result<Stage, (Stage, BootError)> {
        let refuse = |stage: Stage, step: &Step| {
            let e = BootError::OutOfOrder {
                step: step.name(),
                phase: stage.phase().name(),
            };
            Err((stage, e))
        };
        match (self, step) {
            (Stage::Queued, Step::Measured { reported_pcr23 }) => {
                Ok(Stage::Measuring { reported_pcr23 })
            }
            (Stage::Measuring { .. }, Step::FirmwareStarted { log }) => Ok(Stage::Tunnel { log }),
            (Stage::Tunnel { mut log }, Step::TunnelMeasured { record }) => {
                log.push(record);
                Ok(Stage::Attestation { log })
            }
            (Stage::Attestation { log } | Stage::Delivery { log }, Step::EvidenceDelivered) => {
                Ok(Stage::Delivery { log })
            }
            (
                Stage::Tunnel { .. } | Stage::Attestation { .. } | Stage::Delivery { .. },
                Step::HandedOver,
            ) => Ok(Stage::Running),
            (stage, step) => refuse(stage, &step),
        }
    }
}
