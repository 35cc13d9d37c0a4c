//! Boot phases of a measured VM and their deadlines. Every measured boot goes through
//! `queued` → `measuring` → `tunnel` → `attestation` → `delivery` → `running`; each
//! phase but the last has its own deadline (per VM, from the create request), on top
//! of the overall attestation deadline. A phase that overruns aborts the boot cleanly
//! (out of the lease queue if it waited, VM destroyed) with reason
//! `phase-deadline: <phase> exceeded <n> s`. The phases with their timestamps are the
//! VM's boot log in `GET /v1/vms/{id}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A boot phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The VMM starts and measures the VM into its own event log.
    Queued,
    /// The VMM's measurements are checked by computation against the files.
    Measuring,
    /// Firmware running; waiting for the TLS tunnel's measurement.
    Tunnel,
    /// Tunnel measurement recorded; waiting for the boot server's attestation request
    /// (the quote takes the PCR lease for its TPM steps).
    Attestation,
    /// Evidence delivered; waiting for the workload's handover.
    Delivery,
    /// Handed over to the workload.
    Running,
}

impl Phase {
    /// The name used in reasons and the API.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Measuring => "measuring",
            Phase::Tunnel => "tunnel",
            Phase::Attestation => "attestation",
            Phase::Delivery => "delivery",
            Phase::Running => "running",
        }
    }
}

fn d_queued() -> u64 {
    3600
}
fn d_measuring() -> u64 {
    30
}
fn d_tunnel() -> u64 {
    60
}
fn d_attestation() -> u64 {
    60
}
fn d_delivery() -> u64 {
    300
}

/// Per-phase deadlines in seconds (`phase_deadlines_secs` of the create request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseDeadlines {
    /// Longest VMM start and measurement (an image included) [3600].
    #[serde(default = "d_queued")]
    pub queued: u64,
    /// Longest measurement check [30].
    #[serde(default = "d_measuring")]
    pub measuring: u64,
    /// Longest time from start to the tunnel measurement [60].
    #[serde(default = "d_tunnel")]
    pub tunnel: u64,
    /// Longest time from the tunnel to the delivered evidence [60].
    #[serde(default = "d_attestation")]
    pub attestation: u64,
    /// Longest time from the evidence to the handover [300].
    #[serde(default = "d_delivery")]
    pub delivery: u64,
}

impl Default for PhaseDeadlines {
    fn default() -> Self {
        PhaseDeadlines {
            queued: d_queued(),
            measuring: d_measuring(),
            tunnel: d_tunnel(),
            attestation: d_attestation(),
            delivery: d_delivery(),
        }
    }
}

impl PhaseDeadlines {
    /// Every deadline must be 1..=86400 s; the error names the phase.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("queued", self.queued),
            ("measuring", self.measuring),
            ("tunnel", self.tunnel),
            ("attestation", self.attestation),
            ("delivery", self.delivery),
        ] {
            if !(1..=86_400).contains(&v) {
                return Err(format!("phase_deadlines_secs.{name}: must be 1..=86400"));
            }
        }
        Ok(())
    }

    /// The deadline of `phase`; `None` for `running`.
    pub fn of(&self, phase: Phase) -> Option<Duration> {
        let s = match phase {
            Phase::Queued => self.queued,
            Phase::Measuring => self.measuring,
            Phase::Tunnel => self.tunnel,
            Phase::Attestation => self.attestation,
            Phase::Delivery => self.delivery,
            Phase::Running => return None,
        };
        Some(Duration::from_secs(s))
    }
}

/// One phase in the VM's boot log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseView {
    /// The phase.
    pub phase: Phase,
    /// RFC 3339 start.
    pub started_at: String,
    /// RFC 3339 end; `None` while current.
    pub ended_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_phases_and_bad_values_name_the_phase() {
        let d: PhaseDeadlines = serde_json::from_str(r#"{"tunnel": 5}"#).unwrap();
        assert_eq!(d.tunnel, 5);
        assert_eq!(d.delivery, 300);
        assert_eq!(d.of(Phase::Tunnel), Some(Duration::from_secs(5)));
        assert_eq!(d.of(Phase::Running), None);
        let bad = PhaseDeadlines {
            delivery: 0,
            ..PhaseDeadlines::default()
        };
        assert!(bad.validate().unwrap_err().contains("delivery"));
        assert!(serde_json::from_str::<PhaseDeadlines>(r#"{"tunel": 5}"#).is_err());
    }
}
