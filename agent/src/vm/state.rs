//! VM states and the view the API returns.

use serde::{Deserialize, Serialize};

/// Where a measured VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// Its VMM starts and measures it.
    Queued,
    /// Its measurements are being checked against the files (by computation).
    Measuring,
    /// Running its firmware: tunnel, quote (the quote under the PCR lease).
    Attesting,
    /// Its evidence went to the boot server, which verifies it and delivers the
    /// workload; the firmware checks the workload's signature and hands over.
    BootingWorkload,
    /// Handed over to the workload.
    Running,
    /// Ended with a failure; `reason` says why.
    Failed,
    /// Destroyed on request, or ended normally after handover.
    Destroyed,
}

impl VmState {
    /// The API's name of the state (`booting-workload`).
    pub fn name(self) -> &'static str {
        match self {
            VmState::Queued => "queued",
            VmState::Measuring => "measuring",
            VmState::Attesting => "attesting",
            VmState::BootingWorkload => "booting-workload",
            VmState::Running => "running",
            VmState::Failed => "failed",
            VmState::Destroyed => "destroyed",
        }
    }

    /// Whether the VM is over.
    pub fn is_final(self) -> bool {
        matches!(self, VmState::Failed | VmState::Destroyed)
    }
}

/// One PCR 23 measurement as reported by the VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementView {
    /// Event type name.
    pub event_type: String,
    /// SHA-256, hex.
    pub digest: String,
    /// Description.
    pub description: String,
}

/// One PCR lease a VM held: when it was granted and how long it was held (grant to
/// release: the TPM steps of one quote, PCRs 16 and 23 reset at both ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Microseconds since the Unix epoch when it was granted.
    pub granted_unix_us: u64,
    /// Microseconds it was held.
    pub held_us: u64,
}

/// What `GET /v1/vms/{id}` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmView {
    /// VM id.
    pub id: String,
    /// State.
    pub state: VmState,
    /// Why it failed or was destroyed.
    pub reason: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last state change.
    pub updated_at: String,
    /// Every state change, in order: (time, state).
    pub history: Vec<(String, VmState)>,
    /// 0 = holds the lease (in a quote's TPM steps), n = n-th in the queue, absent
    /// = not waiting.
    pub lease_position: Option<usize>,
    /// Every PCR lease this boot held (one per quote), in order.
    #[serde(default)]
    pub leases: Vec<LeaseView>,
    /// The VMM's pid while it runs.
    pub pid: Option<u32>,
    /// The VM's TAP device while it exists (attach it to the tenant's network, or let
    /// tvpd attach it to `vm_bridge`).
    #[serde(default)]
    pub tap: Option<String>,
    /// PCR 23 events reported by the VMM.
    pub measurements: Vec<MeasurementView>,
    /// PCR 23 after measurement, hex.
    pub pcr23: Option<String>,
    /// Attestation deadline (RFC 3339).
    pub deadline: String,
    /// Paused by the tenant's authorization (the VMM is stopped); `state` is where
    /// its boot was.
    #[serde(default)]
    pub paused: bool,
    /// The tenant's management key and policy, measured into PCR 23.
    #[serde(default)]
    pub management: Option<super::management::ManagementView>,
    /// The boot log: every phase entered, with its start and end.
    #[serde(default)]
    pub phases: Vec<super::phase::PhaseView>,
    /// SHA-256 (hex) of the workload the firmware handed over to.
    #[serde(default)]
    pub handover_digest: Option<String>,
    /// Measured platform files that changed while this VM was live: the trust its
    /// attestation established no longer holds for them.
    #[serde(default)]
    pub revocations: Vec<crate::platform_watch::PlatformChange>,
    /// Whether the VM has a TPM of its own (`"vtpm": true`; `vm/vtpm/`).
    #[serde(default)]
    pub vtpm: bool,
    /// The TPM names of its TPM's EK and AK as the VM's current configuration page
    /// names them (docs/vtpm-identity.md); absent without a TPM or before a page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtpm_keys: Option<VtpmKeys>,
}

/// A VM TPM's keys by TPM name: `000b` ‖ SHA-256 of the TPMT_PUBLIC, hex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VtpmKeys {
    /// The endorsement key's name.
    pub ek_name: String,
    /// tvp's attestation key's name.
    pub ak_name: String,
}

impl VtpmKeys {
    /// The keys a configuration page names, if it names any.
    pub fn of_page(page: &[u8]) -> Option<Self> {
        let t = tvp_abi::config::decode(page).ok()?.tpm?;
        Some(VtpmKeys {
            ek_name: format!("000b{}", hex::encode(t.ek_public_digest)),
            ak_name: format!("000b{}", hex::encode(t.ak_public_digest)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::VmState;

    #[test]
    fn names_are_the_api_names() {
        for s in [
            VmState::Queued,
            VmState::Measuring,
            VmState::Attesting,
            VmState::BootingWorkload,
            VmState::Running,
            VmState::Failed,
            VmState::Destroyed,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }
}
