//! What can happen to a boot, and why a step can be refused.

use tvp_verifier::CelRecord;

use super::Ending;

/// What can happen to a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// All the VMM's measurements are in; it replayed PCR 23 to this value:
    /// measuring (by computation) starts.
    Measured {
        /// The VMM's replay.
        reported_pcr23: [u8; 32],
    },
    /// Measurements checked; the firmware was told to start.
    FirmwareStarted {
        /// This lease's PCR 23 records.
        log: Vec<CelRecord>,
    },
    /// The tunnel measurement was recorded (extended into PCR 16 under each quote's
    /// lease).
    TunnelMeasured {
        /// Its record.
        record: CelRecord,
    },
    /// Evidence went to the firmware (a quote, only after the tunnel): the delivery
    /// starts.
    EvidenceDelivered,
    /// The firmware handed over to the workload.
    HandedOver,
    /// The VMM was stopped (SIGSTOP).
    Pause,
    /// The VMM was continued (SIGCONT).
    Resume,
    /// This boot ends and a new measured boot starts, queued for the lease.
    Reboot,
    /// The VM ends.
    End {
        /// Failed or destroyed.
        how: Ending,
        /// Why.
        reason: String,
    },
}

impl Step {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Measured { .. } => "measured",
            Step::FirmwareStarted { .. } => "firmware-started",
            Step::TunnelMeasured { .. } => "tunnel-measured",
            Step::EvidenceDelivered => "evidence-delivered",
            Step::HandedOver => "handed-over",
            Step::Pause => "pause",
            Step::Resume => "resume",
            Step::Reboot => "reboot",
            Step::End { .. } => "end",
        }
    }

    /// The reason the audit trail records with the state change this step makes.
    pub fn audit_reason(&self) -> &str {
        match self {
            Step::End { reason, .. } => reason,
            Step::Pause => "pause",
            Step::Resume => "resume",
            Step::Reboot => "reboot: a new measured boot",
            _ => "",
        }
    }
}

/// A transition the boot's current state does not allow; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// The VM has ended; only forgetting it remains.
    #[error("'{step}' after the VM ended ({state})")]
    Ended {
        /// The step refused.
        step: &'static str,
        /// `failed` or `destroyed`.
        state: &'static str,
    },
    /// The step does not follow from where the boot is.
    #[error("'{step}' is out of order in boot phase '{phase}'")]
    OutOfOrder {
        /// The step refused.
        step: &'static str,
        /// The boot phase.
        phase: &'static str,
    },
    /// Pausing a paused VM.
    #[error("the VM is already paused")]
    AlreadyPaused,
    /// Resuming a VM that is not paused.
    #[error("the VM is not paused")]
    NotPaused,
}
