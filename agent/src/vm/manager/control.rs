//! Restricted operations on a measured VM (`docs/audit.md` §5). They run only after
//! the audit gate accepted the tenant's signed authorization for exactly this VM,
//! operation and parameters: pause and resume (SIGSTOP/SIGCONT of the VM's `tvp-vmm`),
//! power-off, reboot (this boot ends, its lease with PCRs 16/23 reset; a new measured
//! boot queues for the lease) and delete. Snapshots, migration, device changes,
//! resizing and the console have no engine in `tvp-vmm` yet: they are authorized and
//! audited like the others and then answer "not supported". No operation reads,
//! dumps or debugs guest memory.

use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::supervise::Event;
use super::{Manager, VmError};
use crate::audit::key_history::{renewal_reason, rotation_reason};
use crate::audit::Remediator;
use crate::lock;
use crate::vm::boot::{BootError, Step};
use crate::vm::process;
use crate::vm::state::VmView;

/// Reason of VMs powered off because the audit trail was tampered with.
pub const TAMPERING: &str = "audit-tampering";
/// How long a reboot may take to stop the old VMM and start the new one.
const REBOOT_WAIT: Duration = Duration::from_secs(30);

/// A restricted operation. `Op::ALL`'s names are exactly
/// `tvp_audit::policy::RESTRICTED_OPERATIONS` (unit test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Power the VM off: its VMM stops, state `destroyed`, reason `powered-off`.
    PowerOff,
    /// End this boot and start a new measured boot through the lease.
    Reboot,
    /// Stop the VM's vCPUs and devices (SIGSTOP of its VMM).
    Pause,
    /// Continue a paused VM.
    Resume,
    /// Not supported yet.
    SnapshotCreate,
    /// Not supported yet.
    SnapshotRevert,
    /// Not supported yet.
    SnapshotDelete,
    /// Not supported yet.
    Migrate,
    /// Not supported yet.
    DeviceAdd,
    /// Not supported yet.
    DeviceRemove,
    /// Not supported yet.
    ResizeVcpus,
    /// Not supported yet.
    ResizeMemory,
    /// Not supported yet.
    ConsoleAttach,
    /// `DELETE /v1/vms/{id}`: destroy a live VM, forget an ended one.
    Delete,
    /// Hand management to a new tenant key (parameter `public_key`), signed by the
    /// current one ([`Manager::set_management_key`]).
    RotateKey,
    /// Start the current key's lease anew, signed by it.
    RenewKeyLease,
    /// Clear the VM's TPM (TPM2_Clear: owner hierarchy, its NV and lockout reset; EK,
    /// AK and their certificates kept) and reboot the VM onto it.
    VtpmClear,
    /// Make the VM's TPM anew (state destroyed, a new EK and AK, new certificates)
    /// and reboot the VM onto it.
    VtpmReset,
    /// Export the VM's TPM state: authorized, then refused (no engine).
    VtpmExport,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 19] = [
        Op::PowerOff,
        Op::Reboot,
        Op::Pause,
        Op::Resume,
        Op::SnapshotCreate,
        Op::SnapshotRevert,
        Op::SnapshotDelete,
        Op::Migrate,
        Op::DeviceAdd,
        Op::DeviceRemove,
        Op::ResizeVcpus,
        Op::ResizeMemory,
        Op::ConsoleAttach,
        Op::Delete,
        Op::VtpmClear,
        Op::VtpmReset,
        Op::VtpmExport,
        Op::RotateKey,
        Op::RenewKeyLease,
    ];

    /// The name tokens and policies use.
    pub fn name(self) -> &'static str {
        match self {
            Op::PowerOff => "power-off",
            Op::Reboot => "reboot",
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::SnapshotCreate => "snapshot-create",
            Op::SnapshotRevert => "snapshot-revert",
            Op::SnapshotDelete => "snapshot-delete",
            Op::Migrate => "migrate",
            Op::DeviceAdd => "device-add",
            Op::DeviceRemove => "device-remove",
            Op::ResizeVcpus => "resize-vcpus",
            Op::ResizeMemory => "resize-memory",
            Op::ConsoleAttach => "console-attach",
            Op::Delete => "delete",
            Op::RotateKey => "rotate-key",
            Op::RenewKeyLease => "renew-key-lease",
            Op::VtpmClear => "vtpm-clear",
            Op::VtpmReset => "vtpm-reset",
            Op::VtpmExport => "vtpm-export",
        }
    }

    /// The operation of this name.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == name)
    }

    /// The parameters the operation takes (exactly these keys), which the tenant's
    /// token covers through their digest.
    pub fn param_keys(self) -> &'static [&'static str] {
        match self {
            Op::SnapshotCreate | Op::SnapshotRevert | Op::SnapshotDelete => &["name"],
            Op::Migrate => &["destination"],
            Op::RotateKey => &["public_key"],
            Op::DeviceAdd | Op::DeviceRemove => &["device"],
            Op::ResizeVcpus => &["vcpus"],
            Op::ResizeMemory => &["memory_mib"],
            Op::PowerOff
            | Op::Reboot
            | Op::Pause
            | Op::Resume
            | Op::ConsoleAttach
            | Op::Delete
            | Op::RenewKeyLease
            | Op::VtpmClear
            | Op::VtpmReset
            | Op::VtpmExport => &[],
        }
    }
}

/// The process state letter of `pid` (`R`, `S`, `T` for stopped, ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Send `sig` and wait up to a second until the process is (`stopped`) or is no
/// longer (`!stopped`) in the stopped state.
fn signal_and_wait(pid: u32, sig: Signal, stopped: bool) -> Result<(), VmError> {
    let raw = i32::try_from(pid).map_err(|_| VmError::State(format!("bad pid {pid}")))?;
    kill(Pid::from_raw(raw), sig)
        .map_err(|e| VmError::State(format!("cannot signal the VMM (pid {pid}): {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match proc_state(pid) {
            Some('T') | Some('t') if stopped => return Ok(()),
            Some(c) if !stopped && c != 'T' && c != 't' => return Ok(()),
            None => return Err(VmError::State(format!("the VMM (pid {pid}) is gone"))),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    Err(VmError::State(format!(
        "the VMM (pid {pid}) did not {} within 1 s",
        if stopped { "stop" } else { "continue" }
    )))
}

impl Manager {
    /// Run an authorized restricted operation. Blocking (signals, a reboot's new VMM):
    /// call it off the async runtime.
    pub fn operate(self: &Arc<Self>, id: &str, op: Op) -> Result<VmView, VmError> {
        match op {
            Op::Pause => self.set_paused(id, true),
            Op::Resume => self.set_paused(id, false),
            Op::PowerOff => self.power_off(id, "powered-off"),
            Op::Reboot => self.reboot(id),
            Op::VtpmClear => self.renew_vtpm(id, crate::vm::vtpm::Renewal::Clear),
            Op::VtpmReset => self.renew_vtpm(id, crate::vm::vtpm::Renewal::Reset),
            Op::VtpmExport => {
                self.vtpm_identity(id)?;
                Err(VmError::NotSupported(
                    "'vtpm-export' was authorized, but tvp has no engine to move a VM's TPM state off this host (its key opens only in this host's TPM); nothing was done".into(),
                ))
            }
            Op::Delete => self.destroy(id, "deleted".into()),
            Op::RenewKeyLease => self.set_management_key(id, None),
            Op::RotateKey => Err(VmError::Invalid(
                "rotate-key needs its public_key parameter (Manager::set_management_key)".into(),
            )),
            Op::SnapshotCreate
            | Op::SnapshotRevert
            | Op::SnapshotDelete
            | Op::Migrate
            | Op::DeviceAdd
            | Op::DeviceRemove
            | Op::ResizeVcpus
            | Op::ResizeMemory
            | Op::ConsoleAttach => {
                self.get(id)?;
                Err(VmError::NotSupported(format!(
                    "'{}' was authorized, but this tvp-vmm has no engine for it; nothing was done",
                    op.name()
                )))
            }
        }
    }

    /// Pause (SIGSTOP) or resume (SIGCONT) the VM's VMM; returns once the process is
    /// stopped or running again. Pausing does not stop the attestation deadline. The
    /// registry lock is not held while waiting for the process.
    fn set_paused(&self, id: &str, pause: bool) -> Result<VmView, VmError> {
        let step = if pause { Step::Pause } else { Step::Resume };
        let pid = {
            let reg = lock(&self.registry);
            let vm = reg
                .vms
                .get(id)
                .ok_or_else(|| VmError::NotFound(id.to_string()))?;
            // Would the step be taken? (Checked again when it is.)
            let mut probe = vm.boot.clone();
            probe.step(step.clone()).map_err(|e| match e {
                BootError::Ended { .. } => VmError::State(format!(
                    "VM '{id}' has ended ({}); it cannot be {}",
                    vm.boot.label(),
                    if pause { "paused" } else { "resumed" }
                )),
                _ => VmError::State(format!(
                    "VM '{id}' is {} paused",
                    if pause { "already" } else { "not" }
                )),
            })?;
            match vm.run.vmm.as_ref() {
                Some(v) if v.start_time.is_some() && process::start_time(v.pid) == v.start_time => {
                    v.pid
                }
                _ => return Err(VmError::State(format!("VM '{id}' has no running VMM"))),
            }
        };
        let sig = if pause {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        signal_and_wait(pid, sig, pause)?;
        self.advance(id, step)
            .map_err(|e| VmError::State(format!("VM '{id}': {e}")))?;
        log::info!(vm = id, paused = pause; "VM paused state changed");
        self.get(id)
    }

    /// Destroy a live VM with `reason` (asynchronous, like delete) but keep its record.
    pub fn power_off(&self, id: &str, reason: &str) -> Result<VmView, VmError> {
        let reg = lock(&self.registry);
        let view = reg
            .view(id)
            .ok_or_else(|| VmError::NotFound(id.to_string()))?;
        if view.state.is_final() {
            return Err(VmError::State(format!(
                "VM '{id}' has ended already ({})",
                view.state.name()
            )));
        }
        Self::tell(&reg, id, Event::Destroy(reason.to_string()));
        Ok(view)
    }

    /// Record that the VM's TPM is to be cleared or made anew at its next start
    /// (`vtpm::Renewal`), then reboot the VM onto it. The VM must have its own TPM
    /// and be live.
    fn renew_vtpm(&self, id: &str, what: crate::vm::vtpm::Renewal) -> Result<VmView, VmError> {
        self.vtpm_identity(id)?;
        let vm_dir = self.cfg.vms_dir.join(id);
        self.reboot_after(id, || crate::vm::vtpm::request_renewal(&vm_dir, what))
    }

    /// Ask the VM's supervisor to end this boot and start a new measured one; waits
    /// until the new VMM runs (state `queued`).
    fn reboot(&self, id: &str) -> Result<VmView, VmError> {
        self.reboot_after(id, || Ok(()))
    }

    /// [`Self::reboot`], running `before` once the VM is known to be live (under the
    /// registry's lock, so the VM cannot end in between).
    fn reboot_after(
        &self,
        id: &str,
        before: impl FnOnce() -> Result<(), VmError>,
    ) -> Result<VmView, VmError> {
        let rx = {
            let reg = lock(&self.registry);
            let vm = reg
                .vms
                .get(id)
                .ok_or_else(|| VmError::NotFound(id.to_string()))?;
            if !vm.boot.is_live() || vm.spec.is_none() {
                return Err(VmError::State(format!(
                    "VM '{id}' has ended ({}); create it again instead",
                    vm.boot.label()
                )));
            }
            before()?;
            let (tx, rx) = mpsc::channel();
            if !Self::tell(&reg, id, Event::Reboot(tx)) {
                return Err(VmError::State(format!("VM '{id}' is ending")));
            }
            rx
        };
        rx.recv_timeout(REBOOT_WAIT)
            .map_err(|_| VmError::State(format!("VM '{id}' did not reboot within 30 s")))?
    }

    /// In the supervisor, after the old VMM stopped and the lease ended: start the new
    /// boot (fresh configuration page, same TAP device) and its supervisor.
    pub(super) fn relaunch(self: &Arc<Self>, id: &str) -> Result<VmView, VmError> {
        self.check_platform()?;
        let (spec, tap) = {
            let reg = lock(&self.registry);
            let vm = reg
                .vms
                .get(id)
                .ok_or_else(|| VmError::NotFound(id.to_string()))?;
            match (vm.spec.clone(), vm.tap.clone()) {
                (Some(s), Some(t)) => (s, t),
                _ => return Err(VmError::State(format!("VM '{id}' cannot be rebooted"))),
            }
        };
        let launched = self.launch(id, &spec, &tap)?;
        let incarnation = launched.incarnation();
        let (run, tx, rx) = launched.new_run(spec.deadline);
        if let Err(e) = self.change(id, "reboot", |vm| vm.reboot(run)) {
            // Its channel closed, the new VMM exits; stop_child makes sure.
            let mut child = launched.child;
            drop(launched.channel);
            super::launch::stop_child(&mut child);
            return Err(VmError::State(format!("VM '{id}': {e}")));
        }
        // A new incarnation: tokens for the previous boot no longer pass.
        self.audit.set_incarnation(id, incarnation);
        log::info!(vm = id, pid = launched.child.id(); "VM rebooted: new measured boot queued");
        self.supervise_launched(id, launched, spec.deadline, tx, rx)?;
        self.get(id)
    }
}

impl Manager {
    /// An authorized `rotate-key` (`Some(new key)`) or `renew-key-lease` (`None`: the
    /// current key again): from now on tokens must be signed by that key, whose lease
    /// (`management_key_lease_secs`) starts now. Persisted with the VM's record and
    /// recorded as a VM event; the measured binding (PCR 23) is unchanged.
    pub fn set_management_key(
        &self,
        id: &str,
        new: Option<tvp_audit::TenantKey>,
    ) -> Result<VmView, VmError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (what, state) = {
            let mut reg = lock(&self.registry);
            let vm = reg
                .vms
                .get_mut(id)
                .ok_or_else(|| VmError::NotFound(id.to_string()))?;
            let m = vm.management.as_mut().ok_or_else(|| {
                VmError::State(format!("VM '{id}' has no management binding to change"))
            })?;
            let current = m.binding().map_err(VmError::State)?.key;
            let (key, what) = match new {
                Some(k) => {
                    let what = rotation_reason(&current.key_id(), &k.key_id(), now);
                    (k, what)
                }
                None => {
                    let what = renewal_reason(&current.key_id(), now);
                    (current, what)
                }
            };
            if !self.audit.set_key(id, key.clone(), now) {
                return Err(VmError::State(format!(
                    "VM '{id}' has no live management binding"
                )));
            }
            m.set_current(&key, now);
            let state = vm.boot.label().to_string();
            self.persist(&reg, id);
            (what, state)
        };
        self.record_change(id, &state, &state, &what);
        self.get(id)
    }
}

/// Carries out `on_tampering = power-off` for the audit trail (installed by
/// [`Manager::new`]); a VM that has ended already needs nothing.
pub struct VmRemediator(pub Weak<Manager>);

impl Remediator for VmRemediator {
    fn power_off(&self, vm: &str) -> Result<bool, String> {
        let m = self.0.upgrade().ok_or("the VM manager has stopped")?;
        match m.power_off(vm, TAMPERING) {
            Ok(_) => Ok(true),
            Err(VmError::State(_)) | Err(VmError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_exactly_the_restricted_ones() {
        let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
        let mut want = tvp_audit::policy::RESTRICTED_OPERATIONS.to_vec();
        want.extend_from_slice(tvp_audit::policy::KEY_OPERATIONS);
        assert_eq!(names, want);
        for o in Op::ALL {
            assert_eq!(Op::from_name(o.name()), Some(o));
        }
        assert_eq!(Op::from_name("memory-dump"), None);
    }
}
