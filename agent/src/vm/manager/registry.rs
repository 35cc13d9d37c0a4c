//! The map of VMs and the lease queue behind one lock, the API's views of them, and
//! the one way a VM's boot changes ([`Manager::advance`]): one lock, one record write,
//! and the audit record after the lock is released.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::record::{Change, Vm};
use super::supervise::Event;
use super::{Manager, VmError};
use crate::lock;
use crate::vm::boot::{BootError, Step};
use crate::vm::lease::Lease;
use crate::vm::state::VmView;
use crate::vm::store;

/// The VMs and the PCR lease, guarded together by the manager's lock.
#[derive(Default)]
pub(super) struct Registry {
    /// Every VM by id.
    pub vms: BTreeMap<String, Vm>,
    /// Who holds PCRs 16 and 23, and who waits.
    pub lease: Lease,
    /// VMs being created (their VMM starting), by id, with their MAC and VIP: taken,
    /// not yet visible.
    pub reserved: BTreeMap<String, ([u8; 6], [u8; 4])>,
    /// tvpd is stopping: no new VMs.
    pub shutting_down: bool,
}

impl Registry {
    /// A live or starting VM that already has `mac` or `vip` on the bridge: its id and
    /// which of the two it holds. VMs re-adopted from an earlier tvpd count with the
    /// addresses their record kept.
    pub fn address_holder(&self, mac: &[u8; 6], vip: &[u8; 4]) -> Option<(String, &'static str)> {
        let live = self
            .vms
            .iter()
            .filter(|(_, vm)| vm.boot.is_live())
            .filter_map(|(id, vm)| vm.addresses.map(|a| (id, (a.mac, a.vip))));
        live.chain(self.reserved.iter().map(|(id, a)| (id, *a)))
            .find_map(|(id, (m, v))| {
                if m == *mac {
                    Some((id.clone(), "mac"))
                } else if v == *vip {
                    Some((id.clone(), "vip"))
                } else {
                    None
                }
            })
    }

    /// The API's view of VM `id`.
    pub fn view(&self, id: &str) -> Option<VmView> {
        self.vms
            .get(id)
            .map(|vm| vm.view(id, self.lease.position(id)))
    }
}

impl Manager {
    /// All VMs.
    pub fn list(&self) -> Vec<VmView> {
        let reg = lock(&self.registry);
        reg.vms
            .iter()
            .map(|(id, vm)| vm.view(id, reg.lease.position(id)))
            .collect()
    }

    /// One VM.
    pub fn get(&self, id: &str) -> Result<VmView, VmError> {
        lock(&self.registry)
            .view(id)
            .ok_or_else(|| VmError::NotFound(id.to_string()))
    }

    /// The identity of VM `id`'s own TPM (its EK, AK and their certificates), as
    /// made before its first run.
    pub fn vtpm_identity(&self, id: &str) -> Result<crate::vm::vtpm::Identity, VmError> {
        let view = self.get(id)?;
        if !view.vtpm {
            return Err(VmError::State(format!(
                "VM '{id}' has no TPM of its own (it was created without \"vtpm\": true)"
            )));
        }
        crate::vm::vtpm::Identity::load(&self.cfg.vms_dir.join(id))?.ok_or_else(|| {
            VmError::State(format!(
                "VM '{id}''s TPM has not been made yet (its first start failed before it); delete and create the VM again"
            ))
        })
    }

    /// Process ids of the VMMs this manager supervises.
    pub fn pids(&self) -> BTreeSet<i32> {
        lock(&self.registry)
            .vms
            .values()
            .filter_map(|v| v.pid().and_then(|p| i32::try_from(p).ok()))
            .collect()
    }

    /// Write VM `id`'s record (under the caller's lock, so records are written in the
    /// order of the changes); failures are logged, not fatal: the VM runs on, but a
    /// crash would leave it unrecorded.
    pub(super) fn persist(&self, reg: &Registry, id: &str) {
        if let Some(vm) = reg.vms.get(id) {
            let rec = vm.record(id, reg.lease.position(id));
            if let Err(e) = store::save(&self.cfg.vms_dir, &rec) {
                warn!(vm = id, error = e.to_string(); "cannot write the VM record");
            }
        }
    }

    /// Take `step` on VM `id`'s boot. See [`Manager::advance_with`].
    pub(super) fn advance(&self, id: &str, step: Step) -> Result<(), BootError> {
        self.advance_with(id, step, |_| {})
    }

    /// Take `step` on VM `id`'s boot and, if it is taken, `then` on the VM (data that
    /// comes with the step: PCR 23, the handover digest), all under one lock with one
    /// record write; then, without the lock (the audit append may call the remediator,
    /// which takes it), the audit record of the state change and the new phase's
    /// deadline. A refused step changes nothing and is logged; a VM that is gone
    /// (forgotten) refuses every step.
    pub(super) fn advance_with(
        &self,
        id: &str,
        step: Step,
        then: impl FnOnce(&mut Vm),
    ) -> Result<(), BootError> {
        self.change(id, step.name(), |vm| {
            let c = vm.apply(step)?;
            then(vm);
            Ok(c)
        })
    }

    /// Make change `f` (a step named `step`) on VM `id` under one lock with one
    /// record write, then the audit record and the phase deadline without the lock.
    pub(super) fn change(
        &self,
        id: &str,
        step: &'static str,
        f: impl FnOnce(&mut Vm) -> Result<Change, BootError>,
    ) -> Result<(), BootError> {
        let change: Result<Change, BootError> = {
            let mut reg = lock(&self.registry);
            let Some(vm) = reg.vms.get_mut(id) else {
                return Err(BootError::Ended {
                    step,
                    state: "forgotten",
                });
            };
            let c = f(vm);
            if let Ok(c) = &c {
                if c.audited {
                    info!(vm = id, from = c.before.as_str(), to = c.after.as_str(), reason = c.reason.as_str(); "VM state change");
                }
                if c.changed {
                    self.persist(&reg, id);
                }
            }
            c
        };
        match change {
            Ok(c) => {
                if let Some((generation, limit, events)) = c.phase_deadline {
                    arm_phase_deadline(generation, limit, events);
                }
                if c.audited {
                    self.record_change(id, &c.before, &c.after, &c.reason);
                }
                Ok(())
            }
            Err(e) => {
                match &e {
                    // A second end (an exit after a stop, say) and a lease passed to
                    // a VM that is ending are the normal course.
                    BootError::Ended {
                        step: "end" | "lease-granted",
                        ..
                    } => log::debug!(vm = id, error = e.to_string(); "boot step refused"),
                    _ => warn!(vm = id, error = e.to_string(); "boot step refused"),
                }
                Err(e)
            }
        }
    }

    /// Append a VM state change to the audit trail; a failure is logged (the change
    /// has happened; its record is kept and written before any later record, and
    /// until then every request is refused).
    pub(super) fn record_change(&self, id: &str, before: &str, after: &str, reason: &str) {
        if let Err(e) = self.audit.vm_event_blocking(id, before, after, reason) {
            log::error!(vm = id, from = before, to = after, error = e.to_string(); "VM state change not written to the audit trail yet: kept, and written before any later record");
        }
    }

    /// Wait until VM `id`'s VMM is reaped (or the VM is gone), at most `wait`; returns
    /// the registry lock again and whether it was reaped.
    pub(super) fn wait_reaped<'a>(
        &'a self,
        mut reg: std::sync::MutexGuard<'a, Registry>,
        id: &str,
        wait: Duration,
    ) -> (std::sync::MutexGuard<'a, Registry>, bool) {
        let deadline = Instant::now() + wait;
        loop {
            let reaped = match reg.vms.get(id) {
                Some(vm) => vm.run.vmm.is_none(),
                None => true,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if reaped || left.is_zero() {
                return (reg, reaped);
            }
            reg = match self.reaped.wait_timeout(reg, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Tell VM `id`'s supervisor `event`; false if it has none (reaped).
    pub(super) fn tell(reg: &Registry, id: &str, event: Event) -> bool {
        reg.vms
            .get(id)
            .and_then(|vm| vm.run.vmm.as_ref())
            .is_some_and(|v| v.events.send(event).is_ok())
    }
}

/// After `limit`, tell the supervisor that the phase entered as the `generation`-th
/// may have overrun (it checks whether that phase is still the open one).
pub(super) fn arm_phase_deadline(
    generation: u64,
    limit: Duration,
    events: std::sync::mpsc::Sender<Event>,
) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = events.send(Event::PhaseDeadline(generation));
    });
}
