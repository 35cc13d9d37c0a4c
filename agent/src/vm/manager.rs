//! The VM manager: one `tvp-vmm` per measured VM, a reader and a supervisor thread per
//! VM, and the PCR lease (`lease.rs`) that lets exactly one VM at a time have its
//! firmware and tunnel measured into PCRs 23 and 16 and be quoted.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};
use rand::RngCore;
use tvp_verifier::{CelRecord, EventKind};
use tvp_vmm_channel::{read_frame, write_frame, ExitReason, HostMessage, VmmMessage};

use super::lease::Lease;
use super::phase::{Phase, PhaseDeadlines, PhaseView};
use super::spec::CreateVmRequest;
use super::state::{MeasurementView, VmState, VmView};
use super::store::{self, VmRecord};
use super::tap;
use crate::audit::gate::HostEvent;
use crate::audit::Audit;
use crate::host_log::HostEventLog;
use crate::lock;
use crate::logging::timestamp;
use crate::platform_watch::{PlatformChange, PlatformState};
use crate::tpm::service::TpmClient;
use crate::unmanaged_vms::UnmanagedVm;

pub mod control;
pub use control::Op;

/// PCR holding the leased VM's firmware and configuration.
pub const PCR_VM: u32 = 23;
/// PCR holding the leased VM's tunnel measurement.
pub const PCR_TUNNEL: u32 = 16;
/// Refusal codes sent to the guest (mailbox `detail`).
pub mod refusal {
    /// The VM does not hold the PCR lease.
    pub const NOT_LEASE_HOLDER: u32 = 1;
    /// The request is out of order for tvpd (e.g. quote before the tunnel).
    pub const OUT_OF_ORDER: u32 = 2;
    /// The TPM failed.
    pub const TPM_FAILED: u32 = 3;
}
const MAX_MEASUREMENTS: usize = 16;
/// Most revocation events kept per VM.
const MAX_REVOCATIONS: usize = 64;
/// Reason of VMs found live by a restarted tvpd.
pub const RESTARTED: &str = "tvpd-restarted";
/// Reason of VMs stopped because tvpd stops.
pub const STOPPED: &str = "tvpd-stopped";
/// Reason of VMs whose VMM made a syscall outside its seccomp allowlist.
pub const SECCOMP_KILLED: &str =
    "tvp-vmm killed by its seccomp filter (SIGSYS): a syscall outside its allowlist";
const SIGSYS: i32 = nix::libc::SIGSYS;
/// The channel descriptor number in the child.
const CHILD_CHANNEL_FD: i32 = 3;
/// The workload image's descriptor number in the child.
const CHILD_IMAGE_FD: i32 = 4;
/// The image key pipe's descriptor number in the child.
const CHILD_IMAGE_KEY_FD: i32 = 5;

/// Where the manager finds what it runs.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The `tvp-vmm` binary.
    pub vmm_binary: PathBuf,
    /// The measured VMs' firmware image.
    pub firmware: PathBuf,
    /// Directory for per-VM files (configuration page, console log, VMM log).
    pub vms_dir: PathBuf,
    /// The platform PCR (quoted with 16 and 23).
    pub platform_pcr: u32,
    /// Prefix of the VMs' TAP device names.
    pub tap_prefix: String,
    /// Bridge the VMs' TAP devices are attached to; `None` leaves them unattached.
    pub bridge: Option<String>,
    /// (uid, gid) the VMMs drop to once their devices are open; `None`: they stay root.
    pub vmm_ids: Option<(u32, u32)>,
    /// Directory VM images are opened in.
    pub image_dir: PathBuf,
}

/// Errors of VM operations, mapped to API statuses.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The request is invalid; names the field.
    #[error("{0}")]
    Invalid(String),
    /// A VM with this id exists.
    #[error("a VM with id '{0}' exists; delete it first or choose another id")]
    Exists(String),
    /// No such VM.
    #[error("no VM with id '{0}'")]
    NotFound(String),
    /// The platform refuses new measured VMs.
    #[error("{0}")]
    Refused(String),
    /// Starting the VMM failed.
    #[error("cannot start the VM: {0}")]
    Spawn(String),
    /// tvpd is stopping.
    #[error("tvpd is shutting down; create the VM after it restarts")]
    ShuttingDown,
    /// The VM is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
    /// The operation was authorized but has no engine yet.
    #[error("{0}")]
    NotSupported(String),
    /// The workload image cannot be used (or its key was not released).
    #[error(transparent)]
    Image(#[from] super::image::ImageError),
}

enum Event {
    Vmm(VmmMessage),
    ChannelClosed(String),
    LeaseGranted,
    Deadline,
    /// The phase entered as the `n`-th (generation) ran out of time.
    PhaseDeadline(u64),
    Destroy(String),
    /// Stop this boot and start a new measured boot (`control::reboot`).
    Reboot(Sender<Result<VmView, VmError>>),
}

/// The management event as extended: its description and digest.
type ManagementEvent = (String, [u8; 32]);

/// A started `tvp-vmm`: the process, tvpd's end of its channel, its configuration page.
struct Launched {
    child: Child,
    channel: UnixStream,
    page: Vec<u8>,
}

struct Vm {
    state: VmState,
    reason: Option<String>,
    created_at: String,
    updated_at: String,
    history: Vec<(String, VmState)>,
    pid: Option<u32>,
    vmm_start_time: Option<u64>,
    tap: Option<String>,
    measurements: Vec<MeasurementView>,
    digests: Vec<[u8; 32]>,
    reported_pcr23: Option<[u8; 32]>,
    pcr23: Option<[u8; 32]>,
    tunnel: bool,
    /// The lease was granted (possibly before the measurements arrived).
    lease_granted: bool,
    /// All measurements arrived.
    measured: bool,
    lease_log: Vec<CelRecord>,
    deadline: String,
    tx: Sender<Event>,
    page: Vec<u8>,
    phase_limits: PhaseDeadlines,
    phases: Vec<PhaseView>,
    handover_digest: Option<[u8; 32]>,
    /// Stopped with SIGSTOP (`control::pause`).
    paused: bool,
    /// The tenant's management key and policy (absent only in records of a tvpd
    /// before management was measured).
    management: Option<super::management::ManagementView>,
    /// The validated spec, for a reboot (absent for VMs recovered from records).
    spec: Option<super::spec::ValidSpec>,
    revocations: Vec<PlatformChange>,
    /// `policy.on_platform_change`: power the VM off when the platform changes.
    power_off_on_platform_change: bool,
}

#[derive(Default)]
struct Inner {
    vms: BTreeMap<String, Vm>,
    lease: Lease,
    shutting_down: bool,
}

/// The VM manager.
pub struct Manager {
    inner: Mutex<Inner>,
    releaser: crate::image_release::Releaser,
    tpm: TpmClient,
    cfg: ManagerConfig,
    host_log: Arc<Mutex<HostEventLog>>,
    platform: Arc<Mutex<PlatformState>>,
    audit: Arc<Audit>,
}

impl Manager {
    /// A manager with no VMs. It registers each VM's management binding with `audit`,
    /// records every VM state change there, and is `audit`'s remediator (it powers
    /// VMs off when the trail is found tampered with and their policy says so).
    pub fn new(
        releaser: crate::image_release::Releaser,
        cfg: ManagerConfig,
        platform: Arc<Mutex<PlatformState>>,
        audit: Arc<Audit>,
    ) -> Arc<Self> {
        let tpm = releaser.tpm.clone();
        let host_log = releaser.host_log.clone();
        let m = Arc::new(Manager {
            inner: Mutex::new(Inner::default()),
            releaser,
            tpm,
            cfg,
            host_log,
            platform,
            audit: audit.clone(),
        });
        audit.set_remediator(Arc::new(control::VmRemediator(Arc::downgrade(&m))));
        m
    }

    fn view(inner: &Inner, id: &str, vm: &Vm) -> VmView {
        VmView {
            id: id.to_string(),
            state: vm.state,
            reason: vm.reason.clone(),
            created_at: vm.created_at.clone(),
            updated_at: vm.updated_at.clone(),
            history: vm.history.clone(),
            lease_position: inner.lease.position(id),
            pid: vm.pid,
            tap: vm.tap.clone(),
            measurements: vm.measurements.clone(),
            pcr23: vm.pcr23.map(hex::encode),
            deadline: vm.deadline.clone(),
            phases: vm.phases.clone(),
            handover_digest: vm.handover_digest.map(hex::encode),
            paused: vm.paused,
            management: vm.management.clone(),
            revocations: vm.revocations.clone(),
        }
    }

    /// Write VM `id`'s record (under the caller's lock); failures are logged, not fatal:
    /// the VM runs on, but a crash would leave it unrecorded.
    fn persist(&self, inner: &Inner, id: &str) {
        if let Some(vm) = inner.vms.get(id) {
            let rec = VmRecord {
                view: Self::view(inner, id, vm),
                vmm_start_time: vm.vmm_start_time,
            };
            if let Err(e) = store::save(&self.cfg.vms_dir, &rec) {
                warn!(vm = id, error = e.to_string(); "cannot write the VM record");
            }
        }
    }

    /// Crash recovery at start (PCRs 16 and 23 are already reset): load the records of
    /// an earlier tvpd; a VM that was live then has lost its supervisor, so its
    /// `tvp-vmm` is killed (only if pid, start time and command line still match), its
    /// TAP device deleted, and it is marked failed with reason `tvpd-restarted`. TAP
    /// devices under our prefix that no record names are deleted too. Returns the
    /// number of VMs marked failed.
    pub fn recover(&self) -> usize {
        let (records, bad) = store::load_all(&self.cfg.vms_dir);
        for (path, why) in bad {
            warn!(path = path.display().to_string(), error = why.as_str(); "ignoring an unreadable VM record");
        }
        let mut failed = 0;
        let mut changes = Vec::new();
        let mut inner = lock(&self.inner);
        for rec in records {
            let mut v = rec.view;
            let id = v.id.clone();
            let marked = !v.state.is_final();
            if marked {
                if let (Some(pid), Some(started)) = (v.pid, rec.vmm_start_time) {
                    if super::process::kill_if_vmm(pid, started, &id) {
                        warn!(vm = id.as_str(), pid = pid; "killed the orphaned tvp-vmm of an earlier tvpd");
                    }
                }
                let now = timestamp();
                v.history.push((now.clone(), VmState::Failed));
                v.updated_at = now;
                v.state = VmState::Failed;
                v.reason = Some(RESTARTED.into());
                failed += 1;
                warn!(vm = id.as_str(); "VM was live when tvpd stopped: marked failed (tvpd-restarted)");
            }
            if let Some(t) = v.tap.take() {
                if let Err(e) = tap::delete(&t) {
                    warn!(vm = id.as_str(), tap = t.as_str(), error = e.to_string(); "cannot delete an orphaned TAP device");
                }
            }
            v.pid = None;
            v.lease_position = None;
            let (tx, _) = mpsc::channel();
            let vm = Vm {
                state: v.state,
                reason: v.reason,
                created_at: v.created_at,
                updated_at: v.updated_at,
                history: v.history,
                pid: None,
                vmm_start_time: None,
                tap: None,
                measurements: v.measurements,
                digests: Vec::new(),
                reported_pcr23: None,
                pcr23: v.pcr23.and_then(|h| hex::decode(h).ok()?.try_into().ok()),
                tunnel: false,
                lease_granted: false,
                measured: false,
                lease_log: Vec::new(),
                deadline: v.deadline,
                tx,
                page: Vec::new(),
                phase_limits: PhaseDeadlines::default(),
                phases: close_phases(v.phases),
                handover_digest: v
                    .handover_digest
                    .and_then(|h| hex::decode(h).ok()?.try_into().ok()),
                paused: false,
                management: v.management.clone(),
                spec: None,
                revocations: v.revocations,
                power_off_on_platform_change: false,
            };
            // Its key and policy stay in force: tenants read their extracts, and
            // forgetting the VM still needs their authorization.
            match v.management.as_ref().map(|m| m.binding()) {
                Some(Ok(b)) => self.audit.register_vm(&id, b),
                Some(Err(e)) => {
                    warn!(vm = id.as_str(), error = e.as_str(); "the VM record's management binding is invalid: its restricted operations stay refused")
                }
                None => {}
            }
            inner.vms.insert(id.clone(), vm);
            self.persist(&inner, &id);
            if marked {
                changes.push(id.clone());
            }
        }
        drop(inner);
        for id in changes {
            self.record_change(&id, "unknown (tvpd was not running)", "failed", RESTARTED);
        }
        for t in tap::list_with_prefix(&self.cfg.tap_prefix) {
            match tap::delete(&t) {
                Ok(()) => warn!(tap = t.as_str(); "deleted an orphaned TAP device"),
                Err(e) => {
                    warn!(tap = t.as_str(), error = e.to_string(); "cannot delete an orphaned TAP device")
                }
            }
        }
        failed
    }

    /// Stop every live VM (SIGTERM of tvpd): each is destroyed with reason
    /// `tvpd-stopped`, its lease released and its TAP deleted; waits up to `wait`.
    pub fn shutdown(&self, wait: Duration) {
        let live: Vec<String> = {
            let mut inner = lock(&self.inner);
            inner.shutting_down = true;
            inner
                .vms
                .iter()
                .filter(|(_, vm)| !vm.state.is_final() || vm.pid.is_some())
                .map(|(id, vm)| {
                    let _ = vm.tx.send(Event::Destroy(STOPPED.into()));
                    id.clone()
                })
                .collect()
        };
        if live.is_empty() {
            return;
        }
        info!(vms = live.len(); "stopping live VMs");
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let running = lock(&self.inner).vms.values().any(|v| v.pid.is_some());
            if !running {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        warn!("some VMs did not stop in time");
    }

    /// A measured platform file changed (platform watch): every live VM gets a
    /// revocation event in its record, and VMs whose policy says
    /// `"on_platform_change": "power-off"` are destroyed with reason
    /// `platform-changed: <path>`; the others are only alerted (logged, recorded).
    pub fn platform_changed(&self, change: &PlatformChange) {
        let mut off = Vec::new();
        let mut recorded = Vec::new();
        let mut inner = lock(&self.inner);
        let live: Vec<String> = inner
            .vms
            .iter()
            .filter(|(_, vm)| !vm.state.is_final())
            .map(|(id, _)| id.clone())
            .collect();
        for id in live {
            if let Some(vm) = inner.vms.get_mut(&id) {
                if vm.revocations.len() < MAX_REVOCATIONS {
                    vm.revocations.push(change.clone());
                }
                warn!(vm = id.as_str(), path = change.path.as_str(), remediation = if vm.power_off_on_platform_change { "power-off" } else { "alert" }; "revocation: a measured platform file changed while the VM runs");
                let remediation = if vm.power_off_on_platform_change {
                    off.push((id.clone(), vm.tx.clone()));
                    "power-off"
                } else {
                    "alert"
                };
                recorded.push((
                    id.clone(),
                    control::label(vm.state, vm.paused),
                    format!(
                        "platform-changed: {} (measured {}, now {}); remediation {remediation}",
                        change.path,
                        change.measured,
                        change.current.as_deref().unwrap_or("gone")
                    ),
                ));
            }
            self.persist(&inner, &id);
        }
        drop(inner);
        // In the tenants' audit trails too (not under the manager's lock).
        for (id, state, reason) in recorded {
            self.record_host_event(&id, HostEvent::PlatformRevocation, &state, &reason);
        }
        for (_, tx) in off {
            let _ = tx.send(Event::Destroy(format!("platform-changed: {}", change.path)));
        }
    }

    /// KVM VMs tvpd did not create appeared or vanished (the unmanaged-VM scan): an
    /// `out-of-context-vm` record in every live VM's trail, so each tenant on the host
    /// learns of them as they happen. Blocking (audit appends); not on a runtime thread.
    pub fn out_of_context(&self, appeared: &[UnmanagedVm], vanished: &[UnmanagedVm]) {
        let live: Vec<(String, String)> = lock(&self.inner)
            .vms
            .iter()
            .filter(|(_, vm)| !vm.state.is_final())
            .map(|(id, vm)| (id.clone(), control::label(vm.state, vm.paused)))
            .collect();
        let events = appeared
            .iter()
            .map(|v| ("appeared", v))
            .chain(vanished.iter().map(|v| ("gone", v)));
        for (what, v) in events {
            let reason = format!(
                "{what}: {} pid {} ({}, exe {}), {} KVM VM descriptor(s), first seen {}",
                v.kind.name(),
                v.pid,
                v.comm,
                v.exe.as_deref().unwrap_or("unknown"),
                v.vm_fds,
                v.first_seen
            );
            for (id, state) in &live {
                self.record_host_event(id, HostEvent::OutOfContextVm, state, &reason);
            }
        }
    }

    fn record_host_event(&self, id: &str, event: HostEvent, state: &str, reason: &str) {
        if let Err(e) = self.audit.host_event_blocking(id, event, state, reason) {
            log::error!(vm = id, event = event.op(), error = e.to_string(); "host event not recorded in the VM's audit trail");
        }
    }

    /// The directory VM images are opened in.
    pub fn image_dir(&self) -> &Path {
        &self.cfg.image_dir
    }

    /// Process ids of the VMMs this manager supervises.
    pub fn pids(&self) -> std::collections::BTreeSet<i32> {
        lock(&self.inner)
            .vms
            .values()
            .filter_map(|v| v.pid.map(|p| p as i32))
            .collect()
    }

    /// All VMs.
    pub fn list(&self) -> Vec<VmView> {
        let inner = lock(&self.inner);
        inner
            .vms
            .iter()
            .map(|(id, vm)| Self::view(&inner, id, vm))
            .collect()
    }

    /// One VM.
    pub fn get(&self, id: &str) -> Result<VmView, VmError> {
        let inner = lock(&self.inner);
        inner
            .vms
            .get(id)
            .map(|vm| Self::view(&inner, id, vm))
            .ok_or_else(|| VmError::NotFound(id.to_string()))
    }

    /// Destroy a VM (asynchronously: the supervisor stops the VMM, ends the lease and
    /// deletes the TAP device). A VM that has already ended is forgotten instead: its
    /// record and files are removed and its id can be used again.
    pub fn destroy(&self, id: &str, reason: String) -> Result<VmView, VmError> {
        let mut inner = lock(&self.inner);
        let vm = inner
            .vms
            .get(id)
            .ok_or_else(|| VmError::NotFound(id.to_string()))?;
        let view = Self::view(&inner, id, vm);
        if !vm.state.is_final() {
            let _ = vm.tx.send(Event::Destroy(reason));
        } else if vm.pid.is_none() {
            store::remove(&self.cfg.vms_dir, id)
                .map_err(|e| VmError::Spawn(format!("cannot remove the VM's files: {e}")))?;
            inner.vms.remove(id);
            self.audit.unregister_vm(id);
            info!(vm = id; "ended VM forgotten");
        }
        Ok(view)
    }

    /// Change a VM's state (never out of a final one), persist it and record it in
    /// the audit trail. Not under the manager's lock: the audit append may call the
    /// remediator, which takes it.
    fn set_state(&self, id: &str, state: VmState, reason: Option<String>) {
        let change = {
            let mut inner = lock(&self.inner);
            let Some(vm) = inner.vms.get_mut(id) else {
                return;
            };
            if vm.state.is_final() || vm.state == state {
                return;
            }
            let now = timestamp();
            info!(vm = id, from = format!("{:?}", vm.state), to = format!("{state:?}"), reason = reason.as_deref().unwrap_or(""); "VM state change");
            let before = control::label(vm.state, vm.paused);
            vm.state = state;
            vm.updated_at = now.clone();
            vm.history.push((now, state));
            if reason.is_some() {
                vm.reason = reason.clone();
            }
            if state.is_final() {
                vm.paused = false;
                vm.phases = close_phases(std::mem::take(&mut vm.phases));
            }
            let after = control::label(vm.state, vm.paused);
            self.persist(&inner, id);
            (before, after)
        };
        self.record_change(id, &change.0, &change.1, reason.as_deref().unwrap_or(""));
    }

    /// Append a VM state change to the audit trail; a failure is logged (the change
    /// has happened; the next request will find the trail unavailable and fail).
    fn record_change(&self, id: &str, before: &str, after: &str, reason: &str) {
        if let Err(e) = self.audit.vm_event_blocking(id, before, after, reason) {
            log::error!(vm = id, from = before, to = after, error = e.to_string(); "VM state change not recorded in the audit trail");
        }
    }

    /// Enter `phase` (under the caller's lock): close the current one in the boot log,
    /// open the new one, and arm its deadline.
    fn enter_phase(inner: &mut Inner, id: &str, phase: Phase) {
        let Some(vm) = inner.vms.get_mut(id) else {
            return;
        };
        if vm.state.is_final() || vm.phases.last().is_some_and(|p| p.phase == phase) {
            return;
        }
        let now = timestamp();
        if let Some(last) = vm.phases.last_mut() {
            last.ended_at.get_or_insert(now.clone());
        }
        vm.phases.push(PhaseView {
            phase,
            started_at: now,
            ended_at: None,
        });
        log::debug!(vm = id, phase = phase.name(); "boot phase");
        if let Some(limit) = vm.phase_limits.of(phase) {
            let generation = vm.phases.len() as u64;
            let tx = vm.tx.clone();
            std::thread::spawn(move || {
                std::thread::sleep(limit);
                let _ = tx.send(Event::PhaseDeadline(generation));
            });
        }
    }

    fn phase(&self, id: &str, phase: Phase) {
        let mut inner = lock(&self.inner);
        Self::enter_phase(&mut inner, id, phase);
        self.persist(&inner, id);
    }

    /// Refuse new measured boots while a measured platform file changed on disk.
    fn check_platform(&self) -> Result<(), VmError> {
        let p = lock(&self.platform);
        for f in [&self.cfg.firmware, &self.cfg.vmm_binary] {
            if p.changed(f) {
                return Err(VmError::Refused(format!(
                    "{} changed since tvpd measured it; restart tvpd to measure the new platform",
                    f.display()
                )));
            }
        }
        Ok(())
    }

    /// Create a measured VM: validate, write its configuration page, start its VMM,
    /// register its management binding, and queue it for the lease.
    pub fn create(self: &Arc<Self>, req: CreateVmRequest) -> Result<VmView, VmError> {
        let spec = req.validate().map_err(VmError::Invalid)?;
        let id = spec.request.id.clone();
        self.check_platform()?;
        {
            let inner = lock(&self.inner);
            if inner.shutting_down {
                return Err(VmError::ShuttingDown);
            }
            if inner.vms.contains_key(&id) {
                return Err(VmError::Exists(id));
            }
        }
        let binding = spec.management.binding().map_err(VmError::Invalid)?;
        let tap_name = tap::name_for(&self.cfg.tap_prefix, &id);
        tap::create(&tap_name, self.cfg.bridge.as_deref())
            .map_err(|e| VmError::Spawn(e.to_string()))?;
        let launched = match self.launch(&id, &spec, &tap_name) {
            Ok(l) => l,
            Err(e) => {
                let _ = tap::delete(&tap_name);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel();
        let now = timestamp();
        let deadline_at = std::time::SystemTime::now() + spec.deadline;
        let vm = Vm {
            state: VmState::Queued,
            reason: None,
            created_at: now.clone(),
            updated_at: now.clone(),
            history: vec![(now, VmState::Queued)],
            pid: Some(launched.child.id()),
            vmm_start_time: super::process::start_time(launched.child.id()),
            tap: Some(tap_name),
            measurements: Vec::new(),
            digests: Vec::new(),
            reported_pcr23: None,
            pcr23: None,
            tunnel: false,
            lease_granted: false,
            measured: false,
            lease_log: Vec::new(),
            deadline: crate::logging::rfc3339(deadline_at),
            tx: tx.clone(),
            page: launched.page.clone(),
            phase_limits: spec.request.phase_deadlines_secs,
            phases: Vec::new(),
            handover_digest: None,
            paused: false,
            management: Some(spec.management.clone()),
            spec: Some(spec.clone()),
            revocations: Vec::new(),
            power_off_on_platform_change: spec.powers_off_on_platform_change(),
        };
        // Registered before the VM exists for the API: no window without its key.
        self.audit.register_vm(&id, binding);
        {
            // The lease queue is FIFO in the order VMs were created.
            let mut inner = lock(&self.inner);
            inner.vms.insert(id.clone(), vm);
            Self::enter_phase(&mut inner, &id, Phase::Queued);
            if inner.lease.request(&id) {
                let _ = tx.send(Event::LeaseGranted);
            }
            self.persist(&inner, &id);
        }
        info!(vm = id.as_str(), pid = launched.child.id(); "measured VM created");
        self.record_change(&id, "none", "queued", "created");
        self.supervise_launched(&id, launched, spec.deadline, tx, rx)?;
        self.get(&id)
    }

    /// Prepare the workload image (key release through the TPM), write a fresh
    /// configuration page (current time, new seed) and start a `tvp-vmm` for it on
    /// `tap_name`.
    fn launch(
        &self,
        id: &str,
        spec: &super::spec::ValidSpec,
        tap_name: &str,
    ) -> Result<Launched, VmError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let image = match &spec.request.image {
            Some(i) => Some(super::image::prepare(
                i,
                &self.cfg.image_dir,
                u64::from(spec.request.memory_mib) << 20,
                spec.allows_plaintext_images(),
                &self.releaser,
            )?),
            None => None,
        };
        let page = spec
            .page(now_secs, seed, image.as_ref().map(|i| i.image_ref))
            .map_err(VmError::Invalid)?;
        let dir = self.cfg.vms_dir.join(id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| VmError::Spawn(format!("{}: {e}", dir.display())))?;
        let page_path = dir.join("config.page");
        std::fs::write(&page_path, page)
            .map_err(|e| VmError::Spawn(format!("{}: {e}", page_path.display())))?;
        let (ours, theirs) = UnixStream::pair().map_err(|e| VmError::Spawn(e.to_string()))?;
        let vmm_log = std::fs::File::create(dir.join("vmm.log"))
            .map_err(|e| VmError::Spawn(e.to_string()))?;
        let mut cmd = Command::new(&self.cfg.vmm_binary);
        cmd.args(["run", "--vm-id", id, "--firmware"])
            .arg(&self.cfg.firmware)
            .arg("--config-page")
            .arg(&page_path)
            .arg("--console-log")
            .arg(dir.join("console.log"))
            .args(["--tap", tap_name])
            .args(
                self.cfg
                    .vmm_ids
                    .iter()
                    .flat_map(|(u, g)| ["--run-as".to_string(), format!("{u}:{g}")]),
            )
            .args(["--channel-fd", &CHILD_CHANNEL_FD.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(vmm_log);
        // Descriptors the child gets: the channel as 3, the image as 4, the key pipe as 5.
        let mut inherit = vec![(theirs.as_raw_fd(), CHILD_CHANNEL_FD)];
        let mut key_pipe = None;
        if let Some(img) = &image {
            inherit.push((img.file.as_raw_fd(), CHILD_IMAGE_FD));
            cmd.args(["--image-fd", &CHILD_IMAGE_FD.to_string()]);
            if let Some(key) = &img.key {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| VmError::Spawn(format!("key pipe: {e}")))?;
                // 32 bytes fit the pipe buffer: the write never blocks. The write end
                // closes right after, so the VMM reads exactly the key and then EOF.
                let mut w = std::fs::File::from(w);
                std::io::Write::write_all(&mut w, key.as_bytes())
                    .map_err(|e| VmError::Spawn(format!("key pipe: {e}")))?;
                drop(w);
                inherit.push((r.as_raw_fd(), CHILD_IMAGE_KEY_FD));
                cmd.args(["--image-key-fd", &CHILD_IMAGE_KEY_FD.to_string()])
                    .args([
                        "--image-key-lease-ms",
                        &spec.key_lease().as_millis().to_string(),
                    ]);
                key_pipe = Some(r);
            }
        }
        let top = inherit
            .iter()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(CHILD_CHANNEL_FD);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // fcntl, dup2 and close, which are async-signal-safe, on a fixed-size list made
        // before the fork. Each inherited descriptor is first moved above every target
        // number (so no source is overwritten by another's dup2), then placed at its
        // target without close-on-exec; every other descriptor above 2 is closed, so
        // the VMM inherits nothing of tvpd's (not its TPM connection, not other VMs').
        unsafe {
            cmd.pre_exec(move || {
                let mut moved = [(0i32, 0i32); 3];
                for (slot, (src, target)) in moved.iter_mut().zip(inherit.iter()) {
                    let high = nix::libc::fcntl(*src, nix::libc::F_DUPFD_CLOEXEC, 64);
                    if high < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    *slot = (high, *target);
                }
                for (high, target) in moved.iter().take(inherit.len()) {
                    if nix::libc::dup2(*high, *target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if nix::libc::syscall(nix::libc::SYS_close_range, top + 1, u32::MAX, 0) != 0 {
                    for fd in top + 1..4096 {
                        nix::libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| VmError::Spawn(format!("{}: {e}", self.cfg.vmm_binary.display())))?;
        drop(theirs);
        drop(key_pipe);
        drop(image);
        Ok(Launched {
            child,
            channel: ours,
            page: page.to_vec(),
        })
    }

    /// Start the channel reader, the deadline timer and the supervisor of a launched
    /// VMM.
    fn supervise_launched(
        self: &Arc<Self>,
        id: &str,
        launched: Launched,
        deadline: Duration,
        tx: Sender<Event>,
        rx: Receiver<Event>,
    ) -> Result<(), VmError> {
        let reader = launched
            .channel
            .try_clone()
            .map_err(|e| VmError::Spawn(e.to_string()))?;
        let rtx = tx.clone();
        std::thread::spawn(move || read_loop(reader, rtx));
        std::thread::spawn(move || {
            std::thread::sleep(deadline);
            let _ = tx.send(Event::Deadline);
        });
        let me = self.clone();
        let sid = id.to_string();
        std::thread::spawn(move || me.supervise(&sid, rx, launched.channel, launched.child));
        Ok(())
    }

    fn send(&self, id: &str, w: &mut UnixStream, msg: &HostMessage) {
        if let Err(e) = write_frame(w, msg) {
            warn!(vm = id, error = e.to_string(); "cannot write to the VMM channel");
        }
    }

    /// Refuse (and log) a mailbox request from a VM that does not hold the lease;
    /// returns true if it was refused.
    fn refuse_unless_holder(
        &self,
        id: &str,
        w: &mut UnixStream,
        request_id: u64,
        what: &str,
    ) -> bool {
        if lock(&self.inner).lease.holds(id) {
            return false;
        }
        warn!(vm = id, request = what; "mailbox request refused: VM does not hold the PCR lease");
        let msg = refused(
            request_id,
            refusal::NOT_LEASE_HOLDER,
            "not the lease holder",
        );
        self.send(id, w, &msg);
        true
    }

    /// Reset PCRs 16 and 23 and pass the lease on, if `id` held it; else leave the queue.
    fn end_lease(&self, id: &str) {
        let mut inner = lock(&self.inner);
        if inner.lease.holds(id) {
            if let Err(e) = self.tpm.call(|t| {
                t.pcr_reset(PCR_TUNNEL)?;
                t.pcr_reset(PCR_VM)
            }) {
                warn!(vm = id, error = e.to_string(); "cannot reset the leased PCRs");
            }
            info!(vm = id; "PCR lease released; PCRs 16 and 23 reset");
            if let Some(next) = inner.lease.release(id) {
                if let Some(vm) = inner.vms.get(&next) {
                    let _ = vm.tx.send(Event::LeaseGranted);
                }
            }
        } else {
            inner.lease.release(id);
        }
    }

    fn begin_lease(&self, id: &str, w: &mut UnixStream) -> Result<(), String> {
        self.phase(id, Phase::Measuring);
        self.set_state(id, VmState::Measuring, None);
        let (digests, reported, page) = {
            let inner = lock(&self.inner);
            let vm = inner.vms.get(id).ok_or("VM vanished")?;
            (vm.digests.clone(), vm.reported_pcr23, vm.page.clone())
        };
        let firmware = std::fs::read(&self.cfg.firmware)
            .map_err(|e| format!("cannot read firmware {}: {e}", self.cfg.firmware.display()))?;
        let expected = tvp_abi::measure::expected_pcr23(&firmware, &page)
            .map_err(|e| format!("cannot compute the expected PCR 23: {e}"))?;
        let d = digests.clone();
        let pcr23 = self
            .tpm
            .call(move |t| {
                t.pcr_reset(PCR_TUNNEL)?;
                t.pcr_reset(PCR_VM)?;
                for digest in &d {
                    t.pcr_extend(PCR_VM, digest)?;
                }
                Ok(t.pcr_read(&[PCR_VM])?.get(&PCR_VM).copied())
            })
            .map_err(|e| format!("TPM: {e}"))?
            .ok_or("PCR 23 not returned")?;
        if Some(pcr23) != reported || pcr23 != expected {
            return Err(format!(
                "measurement mismatch: PCR 23 {} reported {} expected {}",
                hex::encode(pcr23),
                reported.map(hex::encode).unwrap_or_default(),
                hex::encode(expected)
            ));
        }
        let (pcr23, management) = self.measure_management(id, &firmware, &page)?;
        {
            let mut inner = lock(&self.inner);
            if let Some(vm) = inner.vms.get_mut(id) {
                vm.pcr23 = Some(pcr23);
                vm.lease_log = vm
                    .measurements
                    .iter()
                    .zip(&digests)
                    .map(|(m, d)| {
                        record(
                            PCR_VM,
                            *d,
                            EventKind::VmMeasurement,
                            format!("{id}: {} {}", m.event_type, m.description),
                        )
                    })
                    .collect();
                if let Some(m) = management {
                    vm.lease_log.push(record(
                        PCR_VM,
                        m.1,
                        EventKind::VmMeasurement,
                        format!("{id}: {} {}", tvp_abi::measure::MANAGEMENT_EVENT, m.0),
                    ));
                    vm.measurements.push(MeasurementView {
                        event_type: tvp_abi::measure::MANAGEMENT_EVENT.into(),
                        digest: hex::encode(m.1),
                        description: m.0,
                    });
                }
            }
        }
        self.send(id, w, &HostMessage::Start);
        self.phase(id, Phase::Tunnel);
        self.set_state(id, VmState::Attesting, None);
        Ok(())
    }

    /// After the VMM's events: extend the VM's management binding into PCR 23 and check
    /// the result against the value computed from firmware, page and binding. Returns
    /// PCR 23 and (description, digest) of the event, if the VM has a binding.
    fn measure_management(
        &self,
        id: &str,
        firmware: &[u8],
        page: &[u8],
    ) -> Result<([u8; 32], Option<ManagementEvent>), String> {
        let management = lock(&self.inner)
            .vms
            .get(id)
            .and_then(|vm| vm.management.clone());
        let Some(m) = management else {
            let v = self
                .tpm
                .call(|t| Ok(t.pcr_read(&[PCR_VM])?.get(&PCR_VM).copied()))
                .map_err(|e| format!("TPM: {e}"))?
                .ok_or("PCR 23 not returned")?;
            return Ok((v, None));
        };
        let digest = m.digest_bytes()?;
        let expected = tvp_abi::measure::expected_pcr23_managed(firmware, page, &digest)
            .map_err(|e| format!("cannot compute the expected PCR 23: {e}"))?;
        let pcr23 = self
            .tpm
            .call(move |t| {
                t.pcr_extend(PCR_VM, &digest)?;
                Ok(t.pcr_read(&[PCR_VM])?.get(&PCR_VM).copied())
            })
            .map_err(|e| format!("TPM: {e}"))?
            .ok_or("PCR 23 not returned")?;
        if pcr23 != expected {
            return Err(format!(
                "measurement mismatch: PCR 23 {} after the management event, expected {}",
                hex::encode(pcr23),
                hex::encode(expected)
            ));
        }
        let description = format!(
            "key {} policy allows [{}] on_tampering {}",
            m.key_id,
            m.policy.allowed_operations.join(","),
            m.policy.on_tampering.as_str()
        );
        Ok((pcr23, Some((description, digest))))
    }

    /// Lease held and measurements in: extend them, or abort the VM.
    fn start_measured(&self, id: &str, w: &mut UnixStream) {
        if let Err(reason) = self.begin_lease(id, w) {
            warn!(vm = id, reason = reason.as_str(); "measurement refused");
            self.send(
                id,
                w,
                &HostMessage::Abort {
                    reason: reason.clone(),
                },
            );
            self.set_state(id, VmState::Failed, Some(reason));
            self.end_lease(id);
        }
    }

    fn evidence(&self, id: &str, nonce: Vec<u8>) -> Result<Vec<u8>, String> {
        let pcrs = vec![self.cfg.platform_pcr, PCR_TUNNEL, PCR_VM];
        let log = self.host_log.clone();
        let platform = self.cfg.platform_pcr;
        let n = nonce.clone();
        let (quote, mut records) = self
            .tpm
            .call(move |t| {
                let q = t.quote(&n, &pcrs)?;
                Ok((q, lock(&log).records_for(&[platform])))
            })
            .map_err(|e| format!("TPM: {e}"))?;
        if let Some(vm) = lock(&self.inner).vms.get(id) {
            records.extend(vm.lease_log.iter().cloned());
        }
        for (i, r) in records.iter_mut().enumerate() {
            r.recnum = i as u64;
        }
        let ev = crate::evidence::build(self.tpm.identity(), &nonce, quote, records);
        serde_json::to_vec(&ev).map_err(|e| e.to_string())
    }

    fn supervise(
        self: &Arc<Self>,
        id: &str,
        rx: Receiver<Event>,
        mut w: UnixStream,
        mut child: Child,
    ) {
        for ev in rx {
            match ev {
                Event::Vmm(msg) => {
                    if self.on_message(id, msg, &mut w) {
                        break;
                    }
                }
                Event::LeaseGranted => {
                    let ready = {
                        let mut inner = lock(&self.inner);
                        inner.vms.get_mut(id).map(|vm| {
                            vm.lease_granted = true;
                            vm.measured && !vm.state.is_final()
                        })
                    };
                    if ready == Some(true) {
                        self.start_measured(id, &mut w);
                    }
                }
                Event::Deadline => {
                    let state = self.get(id).map(|v| v.state).unwrap_or(VmState::Destroyed);
                    if matches!(
                        state,
                        VmState::Queued
                            | VmState::Measuring
                            | VmState::Attesting
                            | VmState::BootingWorkload
                    ) {
                        warn!(vm = id; "attestation deadline passed: destroying the VM");
                        self.send(id, &mut w, &HostMessage::Stop);
                        self.set_state(id, VmState::Failed, Some("attestation-deadline".into()));
                        self.end_lease(id);
                        stop_child(&mut child);
                    }
                }
                Event::PhaseDeadline(generation) => {
                    let overrun = {
                        let inner = lock(&self.inner);
                        inner.vms.get(id).and_then(|vm| {
                            let current = vm.phases.last()?;
                            (vm.phases.len() as u64 == generation
                                && current.phase != Phase::Running
                                && !vm.state.is_final())
                            .then(|| {
                                let secs = vm
                                    .phase_limits
                                    .of(current.phase)
                                    .unwrap_or_default()
                                    .as_secs();
                                format!(
                                    "phase-deadline: {} exceeded {secs} s",
                                    current.phase.name()
                                )
                            })
                        })
                    };
                    if let Some(reason) = overrun {
                        warn!(vm = id, reason = reason.as_str(); "boot phase deadline passed: destroying the VM");
                        self.send(id, &mut w, &HostMessage::Stop);
                        self.set_state(id, VmState::Failed, Some(reason));
                        self.end_lease(id);
                        stop_child(&mut child);
                    }
                }
                Event::Reboot(reply) => {
                    // This boot ends here; a new supervisor takes over the new one.
                    self.send(id, &mut w, &HostMessage::Stop);
                    self.end_lease(id);
                    stop_child(&mut child);
                    let rebooted = self.relaunch(id);
                    let ok = rebooted.is_ok();
                    if let Err(e) = &rebooted {
                        self.set_state(id, VmState::Failed, Some(format!("reboot failed: {e}")));
                    }
                    let _ = reply.send(rebooted);
                    if ok {
                        return;
                    }
                    break;
                }
                Event::Destroy(reason) => {
                    self.send(id, &mut w, &HostMessage::Stop);
                    self.set_state(id, VmState::Destroyed, Some(reason));
                    self.end_lease(id);
                    stop_child(&mut child);
                }
                Event::ChannelClosed(why) => {
                    stop_child(&mut child);
                    let status = child.try_wait().ok().flatten();
                    let killed_by_filter = status.and_then(|s| s.signal()) == Some(SIGSYS);
                    let how = status
                        .map(describe_exit)
                        .unwrap_or_else(|| "not reaped".into());
                    if killed_by_filter {
                        log::error!(vm = id, pid = child.id(); "tvp-vmm was killed by its seccomp filter (SIGSYS): it made a syscall outside its allowlist; the kernel log (audit type=1326) names the syscall");
                    }
                    let state = self.get(id).map(|v| v.state).unwrap_or(VmState::Destroyed);
                    if killed_by_filter {
                        self.set_state(id, VmState::Failed, Some(SECCOMP_KILLED.into()));
                    } else if !state.is_final() {
                        let reason = if state == VmState::Running {
                            None
                        } else {
                            Some(format!("VMM ended before handover ({why}, {how})"))
                        };
                        let final_state = if reason.is_some() {
                            VmState::Failed
                        } else {
                            VmState::Destroyed
                        };
                        self.set_state(id, final_state, reason.or(Some("vm-exited".into())));
                    }
                    self.end_lease(id);
                    break;
                }
            }
        }
        stop_child(&mut child);
        let tap = lock(&self.inner)
            .vms
            .get_mut(id)
            .and_then(|vm| vm.tap.take());
        if let Some(t) = tap {
            if let Err(e) = tap::delete(&t) {
                warn!(vm = id, tap = t.as_str(), error = e.to_string(); "cannot delete the VM's TAP device");
            }
        }
        let mut inner = lock(&self.inner);
        if let Some(vm) = inner.vms.get_mut(id) {
            vm.pid = None;
            vm.vmm_start_time = None;
        }
        self.persist(&inner, id);
    }

    /// Handle one VMM message; returns true when the supervisor should stop.
    fn on_message(&self, id: &str, msg: VmmMessage, w: &mut UnixStream) -> bool {
        match msg {
            VmmMessage::Hello {
                protocol_version, ..
            } => {
                if protocol_version != tvp_vmm_channel::PROTOCOL_VERSION {
                    self.send(
                        id,
                        w,
                        &HostMessage::Abort {
                            reason: format!("unsupported protocol {protocol_version}"),
                        },
                    );
                    self.set_state(id, VmState::Failed, Some("VMM protocol mismatch".into()));
                }
            }
            VmmMessage::Measurement {
                event_type,
                digest,
                description,
                ..
            } => {
                let mut inner = lock(&self.inner);
                if let Some(vm) = inner.vms.get_mut(id) {
                    if vm.digests.len() < MAX_MEASUREMENTS {
                        vm.digests.push(digest);
                        vm.measurements.push(MeasurementView {
                            event_type,
                            digest: hex::encode(digest),
                            description,
                        });
                    }
                }
            }
            VmmMessage::MeasurementsDone { pcr23, .. } => {
                let ready = {
                    let mut inner = lock(&self.inner);
                    let position = inner.lease.position(id);
                    inner.vms.get_mut(id).map(|vm| {
                        vm.reported_pcr23 = Some(pcr23);
                        vm.measured = true;
                        (vm.lease_granted && !vm.state.is_final(), position)
                    })
                };
                match ready {
                    Some((true, _)) => self.start_measured(id, w),
                    Some((false, position)) => {
                        info!(vm = id, position = position.unwrap_or(0); "measured; waiting for the PCR lease")
                    }
                    None => {}
                }
            }
            VmmMessage::Milestone {
                code,
                micros_since_start,
                ..
            } => {
                log::debug!(vm = id, code = code, micros = micros_since_start; "boot milestone");
            }
            VmmMessage::TunnelEstablished {
                request_id,
                measurement,
            } => {
                let tunnel_done = lock(&self.inner).vms.get(id).is_some_and(|v| v.tunnel);
                if self.refuse_unless_holder(id, w, request_id, "tunnel measurement") {
                    // refused and logged
                } else if tunnel_done {
                    self.send(
                        id,
                        w,
                        &refused(request_id, refusal::OUT_OF_ORDER, "tunnel already measured"),
                    );
                } else {
                    match self
                        .tpm
                        .call(move |t| t.pcr_extend(PCR_TUNNEL, &measurement))
                    {
                        Ok(()) => {
                            if let Some(vm) = lock(&self.inner).vms.get_mut(id) {
                                vm.tunnel = true;
                                vm.lease_log.push(record(
                                    PCR_TUNNEL,
                                    measurement,
                                    EventKind::TunnelMeasurement,
                                    format!("{id}: TLS exporter EXPORTER-tvp-tunnel-measurement"),
                                ));
                            }
                            info!(vm = id; "tunnel measurement extended into PCR 16");
                            self.phase(id, Phase::Attestation);
                            self.send(id, w, &HostMessage::Ack { request_id });
                        }
                        Err(e) => self.send(
                            id,
                            w,
                            &refused(request_id, refusal::TPM_FAILED, &e.to_string()),
                        ),
                    }
                }
            }
            VmmMessage::QuoteRequest { request_id, nonce } => {
                if !self.refuse_unless_holder(id, w, request_id, "quote") {
                    match self.evidence(id, nonce) {
                        Ok(evidence) => {
                            info!(vm = id, bytes = evidence.len(); "quote for the lease holder");
                            self.send(
                                id,
                                w,
                                &HostMessage::Evidence {
                                    request_id,
                                    evidence,
                                },
                            );
                            if lock(&self.inner).vms.get(id).is_some_and(|v| v.tunnel) {
                                self.phase(id, Phase::Delivery);
                                self.set_state(id, VmState::BootingWorkload, None);
                            }
                        }
                        Err(e) => self.send(id, w, &refused(request_id, refusal::TPM_FAILED, &e)),
                    }
                }
            }
            VmmMessage::Handover { request_id, digest } => {
                if !self.refuse_unless_holder(id, w, request_id, "handover") {
                    info!(vm = id, digest = hex::encode(digest); "handover");
                    if let Some(vm) = lock(&self.inner).vms.get_mut(id) {
                        vm.handover_digest = Some(digest);
                    }
                    self.phase(id, Phase::Running);
                    self.send(id, w, &HostMessage::Ack { request_id });
                    self.set_state(id, VmState::Running, None);
                    self.end_lease(id);
                }
            }
            VmmMessage::BootFailed { request_id, reason } => {
                self.send(id, w, &HostMessage::Ack { request_id });
                self.set_state(
                    id,
                    VmState::Failed,
                    Some(format!("boot-failed: firmware reason {reason}")),
                );
                self.end_lease(id);
            }
            VmmMessage::Exited {
                reason,
                exit_code,
                detail,
            } => {
                let state = self.get(id).map(|v| v.state).unwrap_or(VmState::Destroyed);
                if state == VmState::Running && reason == ExitReason::PoweredOff {
                    self.set_state(id, VmState::Destroyed, Some("powered-off".into()));
                } else if !state.is_final() {
                    self.set_state(
                        id,
                        VmState::Failed,
                        Some(format!("{reason:?} (exit code {exit_code}) {detail}")),
                    );
                }
                self.end_lease(id);
            }
        }
        false
    }
}

fn refused(request_id: u64, code: u32, message: &str) -> HostMessage {
    HostMessage::Refused {
        request_id,
        code,
        message: message.to_string(),
    }
}

fn record(pcr: u32, digest: [u8; 32], kind: EventKind, description: String) -> CelRecord {
    // Numbered when the evidence is assembled.
    CelRecord::tvp(0, pcr, digest, kind, description)
}

fn read_loop(mut r: UnixStream, tx: Sender<Event>) {
    loop {
        match read_frame::<_, VmmMessage>(&mut r) {
            Ok(m) => {
                if tx.send(Event::Vmm(m)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Event::ChannelClosed(e.to_string()));
                return;
            }
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

/// "exit code N" or "killed by signal N".
fn describe_exit(s: std::process::ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// Wait up to 3 s for the VMM to exit by itself, then kill it. A paused (SIGSTOPped)
/// VMM is continued first, so it can read its stop message and scrub guest memory.
fn stop_child(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Default location of the VMM: next to the running tvpd.
pub fn default_vmm_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tvp-vmm")))
        .unwrap_or_else(|| Path::new("/usr/local/bin/tvp-vmm").to_path_buf())
}
