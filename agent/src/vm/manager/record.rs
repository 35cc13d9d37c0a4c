//! What the manager keeps of one VM ([`Vm`]), built in exactly one way per origin
//! (created, recovered from its record) with the per-boot part ([`Run`]) made by ONE
//! constructor for a create and a reboot alike, and every change of its boot made by
//! [`Vm::apply`]: the boot state moves on ([`Boot::step`]), and the state history, the
//! boot log and `updated_at` follow from it in the same call.

use std::sync::mpsc::Sender;
use std::time::Duration;

use super::supervise::Event;
use crate::logging::timestamp;
use crate::platform_watch::PlatformChange;
use crate::vm::boot::{Boot, BootError, Ending, Step};
use crate::vm::management::ManagementView;
use crate::vm::phase::PhaseView;
use crate::vm::spec::ValidSpec;
use crate::vm::state::{LeaseView, MeasurementView, VmState, VmView};
use crate::vm::store::{Addresses, Adoption, VmRecord};

/// Most VMM measurements kept per boot.
const MAX_MEASUREMENTS: usize = 16;

/// The running VMM of a boot, while its supervisor has not reaped it.
pub(super) struct Vmm {
    /// Its pid.
    pub pid: u32,
    /// Its start time (identifies it if the pid is reused).
    pub start_time: Option<u64>,
    /// Its supervisor's events.
    pub events: Sender<Event>,
    /// Its configuration page (for the expected PCR 23).
    pub page: Vec<u8>,
    /// The key-use digest (`tvp_kms::ParsedUse::digest`) its image key was released
    /// for; the measured VM must be exactly that one.
    pub bound: Option<[u8; 32]>,
    /// How a restarted tvpd re-adopts it (persisted in the record).
    pub adoption: Option<Adoption>,
    /// `disk-tamper` reports it sent (only the first [`MAX_DISK_TAMPER_RECORDS`]
    /// become audit records: a compromised VMM cannot flood the trail).
    pub disk_tampers: u32,
}

/// Most `disk-tamper` audit records per VMM (tvp-vmm reports each chunk once, at
/// most 64).
pub(super) const MAX_DISK_TAMPER_RECORDS: u32 = 64;

/// What one measured boot has; a reboot replaces it whole.
pub(super) struct Run {
    /// The VMM; `None` once reaped (and for VMs recovered from records).
    pub vmm: Option<Vmm>,
    /// Attestation deadline (RFC 3339).
    pub deadline: String,
    /// PCR 23 events as reported by the VMM (plus the management event once measured).
    pub measurements: Vec<MeasurementView>,
    /// The VMM's event digests, in order.
    pub digests: Vec<[u8; 32]>,
    /// PCR 23 after measurement.
    pub pcr23: Option<[u8; 32]>,
    /// What the firmware handed over to.
    pub handover_digest: Option<[u8; 32]>,
    /// Every PCR lease this boot held (one per quote).
    pub leases: Vec<LeaseView>,
}

impl Run {
    /// The VM TPM's keys this boot's configuration page names, if any.
    pub fn page_vtpm_keys(&self) -> Option<crate::vm::state::VtpmKeys> {
        self.vmm
            .as_ref()
            .and_then(|v| crate::vm::state::VtpmKeys::of_page(&v.page))
    }

    /// The boot an earlier tvpd recorded (its view's fields; hex digests that do not
    /// decode are dropped), with `vmm` if this tvpd re-adopted it.
    fn recorded(
        vmm: Option<Vmm>,
        deadline: String,
        measurements: Vec<MeasurementView>,
        pcr23: Option<String>,
        handover_digest: Option<String>,
        leases: Vec<LeaseView>,
    ) -> Run {
        let digest = |h: Option<String>| h.and_then(|h| hex::decode(h).ok()?.try_into().ok());
        Run {
            vmm,
            deadline,
            measurements,
            digests: Vec::new(),
            pcr23: digest(pcr23),
            handover_digest: digest(handover_digest),
            leases,
        }
    }

    /// A boot whose VMM (`pid`, `page`, image key released for `bound`) was just
    /// started, supervised through `events`; `adoption` is how a restarted tvpd
    /// re-adopts it.
    pub fn launched(
        pid: u32,
        page: Vec<u8>,
        bound: Option<[u8; 32]>,
        events: Sender<Event>,
        deadline: Duration,
        adoption: Option<Adoption>,
    ) -> Run {
        Run {
            vmm: Some(Vmm {
                pid,
                start_time: crate::vm::process::start_time(pid),
                events,
                page,
                bound,
                adoption,
                disk_tampers: 0,
            }),
            deadline: crate::logging::rfc3339(std::time::SystemTime::now() + deadline),
            measurements: Vec::new(),
            digests: Vec::new(),
            pcr23: None,
            handover_digest: None,
            leases: Vec::new(),
        }
    }
}

/// A managed VM.
pub(super) struct Vm {
    /// Where its boot is: the one state from which `state`, `phase` and `paused` derive.
    pub boot: Boot,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last state change.
    pub updated_at: String,
    /// Every state entered (continues across reboots).
    pub history: Vec<(String, VmState)>,
    /// The boot log (continues across reboots).
    pub phases: Vec<PhaseView>,
    /// Its TAP device while it exists.
    pub tap: Option<String>,
    /// The tenant's management key and policy (absent only in records of a tvpd
    /// before management was measured).
    pub management: Option<ManagementView>,
    /// The validated spec, for a reboot (absent for VMs recovered from records).
    pub spec: Option<ValidSpec>,
    /// Its MAC and VIP on the bridge (from the spec, or from the record of a
    /// re-adopted VM): no other VM gets them while it lives.
    pub addresses: Option<Addresses>,
    /// Measured platform files that changed while it was live.
    pub revocations: Vec<PlatformChange>,
    /// Whether it has a TPM of its own (from the spec, or the record of a re-adopted
    /// VM).
    pub vtpm: bool,
    /// Its TPM's keys as the latest boot's page names them (kept once the VM ended).
    pub vtpm_keys: Option<crate::vm::state::VtpmKeys>,
    /// The current boot.
    pub run: Run,
}

/// What [`Vm::apply`] changed, for the audit trail and the phase deadline.
pub(super) struct Change {
    /// The audit label before (`running, paused`).
    pub before: String,
    /// The audit label after.
    pub after: String,
    /// The reason recorded with it.
    pub reason: String,
    /// Whether the change is a state change the audit trail records.
    pub audited: bool,
    /// Whether anything visible changed (the record must be written).
    pub changed: bool,
    /// A phase entered with a deadline: (its generation, the deadline, where to say it
    /// ran out).
    pub phase_deadline: Option<(u64, Duration, Sender<Event>)>,
}

impl Vm {
    /// A VM just created from `spec`, its VMM launched on `tap` (queued, its boot log
    /// open at `queued`).
    pub fn created(spec: &ValidSpec, tap: String, run: Run) -> Vm {
        let now = timestamp();
        Vm {
            boot: Boot::queued(),
            created_at: now.clone(),
            updated_at: now.clone(),
            history: vec![(now.clone(), VmState::Queued)],
            phases: vec![PhaseView {
                phase: crate::vm::phase::Phase::Queued,
                started_at: now,
                ended_at: None,
            }],
            tap: Some(tap),
            management: Some(spec.management.clone()),
            spec: Some(spec.clone()),
            addresses: Some(Addresses {
                mac: spec.mac,
                vip: spec.vip,
            }),
            revocations: Vec::new(),
            vtpm: spec.request.vtpm,
            vtpm_keys: run.page_vtpm_keys(),
            run,
        }
    }

    /// A VM as an earlier tvpd recorded it, ended: a VM that was live then is marked
    /// `failed` with `live_reason` (its supervisor is gone). Its VMM and TAP device
    /// are the caller's to clean up.
    pub fn recovered(v: VmView, live_reason: &str) -> Vm {
        let was_live = !v.state.is_final();
        let boot = if was_live {
            Boot::Ended {
                how: Ending::Failed,
                reason: Some(live_reason.to_string()),
            }
        } else {
            Boot::Ended {
                how: if v.state == VmState::Failed {
                    Ending::Failed
                } else {
                    Ending::Destroyed
                },
                reason: v.reason,
            }
        };
        let mut history = v.history;
        let mut updated_at = v.updated_at;
        if was_live {
            let now = timestamp();
            history.push((now.clone(), VmState::Failed));
            updated_at = now;
        }
        Vm {
            boot,
            created_at: v.created_at,
            updated_at,
            history,
            phases: close_phases(v.phases),
            tap: None,
            management: v.management,
            spec: None,
            addresses: None,
            revocations: v.revocations,
            vtpm: v.vtpm,
            vtpm_keys: v.vtpm_keys,
            run: Run::recorded(
                None,
                v.deadline,
                v.measurements,
                v.pcr23,
                v.handover_digest,
                v.leases,
            ),
        }
    }

    /// A running VM as an earlier tvpd recorded it, whose VMM (`vmm`) this tvpd has
    /// re-adopted: it runs on (paused if it was), on its TAP device, with its history
    /// and boot log, and its recorded addresses. Its spec is not recorded, so it cannot
    /// be rebooted (create it again instead).
    pub fn adopted(v: VmView, addresses: Option<Addresses>, vmm: Vmm) -> Vm {
        Vm {
            boot: Boot::Live {
                stage: crate::vm::boot::Stage::Running,
                paused: v.paused,
            },
            created_at: v.created_at,
            updated_at: v.updated_at,
            history: v.history,
            phases: v.phases,
            tap: v.tap,
            management: v.management,
            spec: None,
            addresses,
            revocations: v.revocations,
            vtpm: v.vtpm,
            vtpm_keys: v.vtpm_keys,
            run: Run::recorded(
                Some(vmm),
                v.deadline,
                v.measurements,
                v.pcr23,
                v.handover_digest,
                v.leases,
            ),
        }
    }

    /// Take `step` and make everything that follows from it: the state history (a new
    /// state, or a reboot), `updated_at` (a new state or pause), the boot log (a new
    /// phase is opened with its deadline; an end closes the open one). Refused steps
    /// change nothing.
    pub fn apply(&mut self, step: Step) -> Result<Change, BootError> {
        let reboot = step == Step::Reboot;
        let reason = step.audit_reason().to_string();
        let (state0, phase0, label0) = (self.boot.state(), self.boot.phase(), self.boot.label());
        self.boot.step(step)?;
        let (state1, phase1, label1) = (self.boot.state(), self.boot.phase(), self.boot.label());
        let now = timestamp();
        let audited = label0 != label1 || reboot;
        if state0 != state1 || reboot {
            self.history.push((now.clone(), state1));
        }
        if audited {
            self.updated_at = now.clone();
        }
        let mut phase_deadline = None;
        match phase1 {
            None => self.phases = close_phases(std::mem::take(&mut self.phases)),
            Some(p) if phase0 != phase1 || reboot => {
                if let Some(last) = self.phases.last_mut() {
                    last.ended_at.get_or_insert(now.clone());
                }
                self.phases.push(PhaseView {
                    phase: p,
                    started_at: now,
                    ended_at: None,
                });
                log::debug!(phase = p.name(); "boot phase");
                phase_deadline = self.phase_deadline();
            }
            Some(_) => {}
        }
        Ok(Change {
            before: label0,
            after: label1,
            reason,
            audited,
            changed: audited || phase0 != phase1,
            phase_deadline,
        })
    }

    /// Start a new boot on `run` (a reboot): the history and boot log continue.
    pub fn reboot(&mut self, run: Run) -> Result<Change, BootError> {
        if !self.boot.is_live() {
            return Err(BootError::Ended {
                step: "reboot",
                state: self.boot.state().name(),
            });
        }
        if let Some(keys) = run.page_vtpm_keys() {
            self.vtpm_keys = Some(keys);
        }
        self.run = run;
        self.apply(Step::Reboot)
    }

    /// The deadline of the open phase, if it has one and a supervisor to tell.
    pub fn phase_deadline(&self) -> Option<(u64, Duration, Sender<Event>)> {
        let phase = self.phases.last()?.phase;
        let limits = self
            .spec
            .as_ref()
            .map(|s| s.request.phase_deadlines_secs)
            .unwrap_or_default();
        let limit = limits.of(phase)?;
        let events = self.run.vmm.as_ref()?.events.clone();
        Some((self.phases.len() as u64, limit, events))
    }

    /// Record one of the VMM's measurements (while they come in; at most 16).
    pub fn add_measurement(
        &mut self,
        event_type: String,
        digest: [u8; 32],
        description: String,
    ) -> Result<(), BootError> {
        if !self.boot.accepts_measurements() {
            return Err(BootError::OutOfOrder {
                step: "measurement",
                phase: self.boot.phase().map(|p| p.name()).unwrap_or("ended"),
            });
        }
        if self.run.digests.len() < MAX_MEASUREMENTS {
            self.run.digests.push(digest);
            self.run.measurements.push(MeasurementView {
                event_type,
                digest: hex::encode(digest),
                description,
            });
        }
        Ok(())
    }

    /// `policy.on_platform_change` is `power-off`.
    pub fn powers_off_on_platform_change(&self) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| s.powers_off_on_platform_change())
    }

    /// The VMM's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.run.vmm.as_ref().map(|v| v.pid)
    }

    /// What the API shows (`lease_position` comes from the lease queue).
    pub fn view(&self, id: &str, lease_position: Option<usize>) -> VmView {
        VmView {
            id: id.to_string(),
            state: self.boot.state(),
            reason: self.boot.reason().map(str::to_string),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            history: self.history.clone(),
            lease_position,
            leases: self.run.leases.clone(),
            pid: self.pid(),
            tap: self.tap.clone(),
            measurements: self.run.measurements.clone(),
            pcr23: self.run.pcr23.map(hex::encode),
            deadline: self.run.deadline.clone(),
            paused: self.boot.paused(),
            management: self.management.clone(),
            phases: self.phases.clone(),
            handover_digest: self.run.handover_digest.map(hex::encode),
            revocations: self.revocations.clone(),
            vtpm: self.vtpm,
            vtpm_keys: self.vtpm_keys.clone(),
        }
    }

    /// What is written to disk.
    pub fn record(&self, id: &str, lease_position: Option<usize>) -> VmRecord {
        VmRecord {
            view: self.view(id, lease_position),
            vmm_start_time: self.run.vmm.as_ref().and_then(|v| v.start_time),
            adoption: self.run.vmm.as_ref().and_then(|v| v.adoption.clone()),
            addresses: self.addresses,
        }
    }
}

/// A boot log whose open phase is closed now (the VM ended).
fn close_phases(mut phases: Vec<PhaseView>) -> Vec<PhaseView> {
    if let Some(last) = phases.last_mut() {
        last.ended_at.get_or_insert_with(timestamp);
    }
    phases
}

#[cfg(test)]
mod tests;
