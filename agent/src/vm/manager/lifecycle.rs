//! Creating a measured VM, destroying and forgetting it, and stopping them all when
//! tvpd stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::record::Vm;
use super::registry::arm_phase_deadline;
use super::supervise::Event;
use super::{Manager, VmError, STOPPED};
use crate::lock;
use crate::vm::spec::CreateVmRequest;
use crate::vm::state::VmView;
use crate::vm::{store, tap};

/// How long a DELETE of an ended VM waits for its VMM to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(10);

impl Manager {
    /// Refuse new measured boots while a measured platform file changed on disk.
    pub(super) fn check_platform(&self) -> Result<(), VmError> {
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
    /// register its management binding, and queue it for the lease. The id is
    /// reserved while the VMM starts, so a concurrent create of the same id is
    /// refused rather than racing for its TAP device.
    pub fn create(self: &Arc<Self>, req: CreateVmRequest) -> Result<VmView, VmError> {
        req.check_kms_socket(self.kms_socket_dir())
            .map_err(VmError::Invalid)?;
        let spec = req.validate().map_err(VmError::Invalid)?;
        let id = spec.request.id.clone();
        self.check_platform()?;
        {
            let mut reg = lock(&self.registry);
            if reg.shutting_down {
                return Err(VmError::ShuttingDown);
            }
            if reg.vms.contains_key(&id) || reg.reserved.contains_key(&id) {
                return Err(VmError::Exists(id));
            }
            // On a shared bridge a second NIC with a live VM's MAC would receive that
            // VM's frames, and a second VIP would answer for its address.
            if self.cfg.bridge.is_some() {
                if let Some((holder, field)) = reg.address_holder(&spec.mac, &spec.vip) {
                    return Err(VmError::AddressInUse { field, holder });
                }
            }
            reg.reserved.insert(id.clone(), (spec.mac, spec.vip));
        }
        let unreserve = |e: VmError| {
            lock(&self.registry).reserved.remove(&id);
            e
        };
        let mut binding = spec
            .management
            .binding()
            .map_err(VmError::Invalid)
            .map_err(unreserve)?;
        let tap_name = tap::name_for(&self.cfg.tap_prefix, &id);
        tap::create(&tap_name, self.cfg.bridge.as_deref())
            .map_err(|e| unreserve(VmError::Spawn(e.to_string())))?;
        let launched = match self.launch(&id, &spec, &tap_name) {
            Ok(l) => l,
            Err(e) => {
                let _ = tap::delete(&tap_name);
                return Err(unreserve(e));
            }
        };
        // Tokens are bound to this boot's configuration page (its incarnation).
        binding.incarnation = Some(launched.incarnation());
        let (run, tx, rx) = launched.new_run(spec.deadline);
        let vm = Vm::created(&spec, tap_name, run);
        let phase_deadline = vm.phase_deadline();
        // Registered before the VM exists for the API: no window without its key.
        self.audit.register_vm(&id, binding);
        {
            let mut reg = lock(&self.registry);
            reg.reserved.remove(&id);
            reg.vms.insert(id.clone(), vm);
            self.persist(&reg, &id);
        }
        if let Some((generation, limit, events)) = phase_deadline {
            arm_phase_deadline(generation, limit, events);
        }
        info!(vm = id.as_str(), pid = launched.child.id(); "measured VM created");
        // The creation event names the management binding (key and policy digest,
        // as in PCR 23): a tenant's extract verification checks it (docs/audit.md §4).
        let created = format!("created; management {}", spec.management.digest);
        self.record_change(&id, "none", "queued", &created);
        self.supervise_launched(&id, launched, spec.deadline, tx, rx)?;
        self.get(&id)
    }

    /// Destroy a live VM (asynchronously: the supervisor stops the VMM, ends the lease
    /// and deletes the TAP device) and answer its view. A VM that has ended is
    /// forgotten instead: its record and files are removed, it is gone from list and
    /// get, and its id can be used again. If its VMM has not been reaped yet, it is
    /// stopped and the forgetting waits for the reap (at most 10 s, then
    /// [`VmError::Stopping`] and nothing is forgotten).
    pub fn destroy(&self, id: &str, reason: String) -> Result<VmView, VmError> {
        let reg = lock(&self.registry);
        let vm = reg
            .vms
            .get(id)
            .ok_or_else(|| VmError::NotFound(id.to_string()))?;
        if vm.boot.is_live() {
            let view = vm.view(id, reg.lease.position(id));
            if !Self::tell(&reg, id, Event::Destroy(reason)) {
                warn!(vm = id; "a live VM without a supervisor: nothing to stop");
            }
            return Ok(view);
        }
        let mut reg = if vm.run.vmm.is_some() {
            // Ended, but its VMM is still being stopped: make sure it is, and wait.
            Self::tell(&reg, id, Event::Destroy(reason));
            let (reg, reaped) = self.wait_reaped(reg, id, REAP_WAIT);
            if !reaped {
                return Err(VmError::Stopping(id.to_string()));
            }
            reg
        } else {
            reg
        };
        // Someone else may have forgotten it while we waited.
        let view = reg
            .view(id)
            .ok_or_else(|| VmError::NotFound(id.to_string()))?;
        store::remove(&self.cfg.vms_dir, id)
            .map_err(|e| VmError::Spawn(format!("cannot remove the VM's files: {e}")))?;
        reg.vms.remove(id);
        reg.lease.release(id);
        self.audit.unregister_vm(id);
        info!(vm = id; "ended VM forgotten");
        Ok(view)
    }

    /// Stop every live VM (SIGTERM of tvpd): each is destroyed with reason
    /// `tvpd-stopped`, its lease released and its TAP deleted; waits up to `wait`.
    /// With `keep_vms_on_stop`, running VMs (handed over, adoptable; paused ones too)
    /// are left to the next tvpd, which re-adopts them; the others are stopped.
    pub fn shutdown(&self, wait: Duration) {
        let mut reg = lock(&self.registry);
        reg.shutting_down = true;
        let keep = self.cfg.keep_vms_on_stop;
        let kept = |vm: &super::record::Vm| {
            keep && vm.boot.state() == crate::vm::state::VmState::Running
                && vm.run.vmm.as_ref().is_some_and(|v| v.adoption.is_some())
        };
        let left: Vec<String> = reg
            .vms
            .iter()
            .filter(|(_, vm)| kept(vm))
            .map(|(id, _)| id.clone())
            .collect();
        if !left.is_empty() {
            info!(vms = left.len(); "keep_vms_on_stop: running VMs left to the next tvpd");
        }
        for id in &left {
            // Their supervisors end (and with them the manager, so tvpd can exit); the
            // VMMs see their channels close when tvpd exits and wait for adoption.
            Self::tell(&reg, id, Event::Leave);
        }
        let live: Vec<String> = reg
            .vms
            .iter()
            .filter(|(_, vm)| (vm.boot.is_live() || vm.run.vmm.is_some()) && !kept(vm))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &live {
            Self::tell(&reg, id, Event::Destroy(STOPPED.into()));
        }
        if live.is_empty() {
            return;
        }
        info!(vms = live.len(); "stopping live VMs");
        let deadline = Instant::now() + wait;
        for id in &live {
            let left = deadline.saturating_duration_since(Instant::now());
            let (r, reaped) = self.wait_reaped(reg, id, left);
            reg = r;
            if !reaped {
                warn!("some VMs did not stop in time");
                return;
            }
        }
    }
}
