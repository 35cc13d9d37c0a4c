//! The stages of a live VM's measured boot and the steps between them.

use tvp_verifier::CelRecord;

use super::{BootError, Step};
use crate::vm::phase::Phase;
use crate::vm::state::VmState;

/// A live VM's place in its measured boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the PCR lease (`lease`: granted) and for the VMM's measurements
    /// (`reported_pcr23`: the VMM's own replay, once all its events are in).
    Queued {
        /// The lease was granted to this VM.
        lease: bool,
        /// PCR 23 as the VMM replayed it, once its measurements are complete.
        reported_pcr23: Option<[u8; 32]>,
    },
    /// Holding the lease; the measurements are being extended and checked.
    Measuring {
        /// PCR 23 as the VMM replayed it.
        reported_pcr23: [u8; 32],
    },
    /// Firmware started, holding the lease; waiting for the tunnel measurement.
    Tunnel {
        /// This lease's PCR 23 records (for the evidence).
        log: Vec<CelRecord>,
    },
    /// Tunnel measured into PCR 16; waiting for the boot server's quote.
    Attestation {
        /// This lease's PCR 23 and PCR 16 records.
        log: Vec<CelRecord>,
    },
    /// Evidence delivered; waiting for the workload's handover (still holding the
    /// lease).
    Delivery {
        /// This lease's PCR 23 and PCR 16 records.
        log: Vec<CelRecord>,
    },
    /// Handed over to the workload (lease released).
    Running,
}

impl Stage {
    /// The boot-log phase of this stage.
    pub fn phase(&self) -> Phase {
        match self {
            Stage::Queued { .. } => Phase::Queued,
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
            Stage::Queued { .. } => VmState::Queued,
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
            (
                Stage::Queued {
                    lease: false,
                    reported_pcr23,
                },
                Step::LeaseGranted,
            ) => Ok(Stage::Queued {
                lease: true,
                reported_pcr23,
            }),
            (
                Stage::Queued {
                    lease,
                    reported_pcr23: None,
                },
                Step::Measured { reported_pcr23 },
            ) => Ok(Stage::Queued {
                lease,
                reported_pcr23: Some(reported_pcr23),
            }),
            (
                Stage::Queued {
                    lease: true,
                    reported_pcr23: Some(r),
                },
                Step::StartMeasuring,
            ) => Ok(Stage::Measuring { reported_pcr23: r }),
            (Stage::Measuring { .. }, Step::FirmwareStarted { log }) => Ok(Stage::Tunnel { log }),
            (Stage::Tunnel { mut log }, Step::TunnelMeasured { record }) => {
                log.push(record);
                Ok(Stage::Attestation { log })
            }
            (Stage::Tunnel { log }, Step::EvidenceDelivered) => Ok(Stage::Tunnel { log }),
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
