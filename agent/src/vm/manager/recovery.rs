//! Crash recovery at start: the records of an earlier tvpd are loaded; a VM that was
//! live then has lost its supervisor (its channel died with that tvpd), so its
//! `tvp-vmm` is killed (only if pid, start time and command line still match), its TAP
//! device deleted, and it is marked failed with reason `tvpd-restarted`. VMs are not
//! adopted.

use log::warn;

use super::record::Vm;
use super::{Manager, RESTARTED};
use crate::lock;
use crate::vm::{process, store, tap};

impl Manager {
    /// Load the records of an earlier tvpd (PCRs 16 and 23 are already reset) and end
    /// the VMs that were live then; TAP devices under our prefix that no VM has are
    /// deleted too. Returns the number of VMs marked failed. Refused (nothing done)
    /// if a record's management key in force disagrees with the key changes the audit
    /// trail records for the VM: the record was rolled back or edited.
    pub fn recover(&self) -> Result<usize, String> {
        let (records, bad) = store::load_all(&self.cfg.vms_dir);
        for (path, why) in bad {
            warn!(path = path.display().to_string(), error = why.as_str(); "ignoring an unreadable VM record");
        }
        for rec in &records {
            if let Some(m) = &rec.view.management {
                let current = m.current.as_ref().map(|c| (c.key_id.as_str(), c.key_since));
                self.audit.check_recorded_key(&rec.view.id, current)?;
            }
        }
        let mut marked = Vec::new();
        let mut reg = lock(&self.registry);
        for rec in records {
            let id = rec.view.id.clone();
            let was_live = !rec.view.state.is_final();
            if was_live {
                if let (Some(pid), Some(started)) = (rec.view.pid, rec.vmm_start_time) {
                    if process::kill_if_vmm(pid, started, &id) {
                        warn!(vm = id.as_str(), pid = pid; "killed the orphaned tvp-vmm of an earlier tvpd");
                    }
                }
                warn!(vm = id.as_str(); "VM was live when tvpd stopped: marked failed (tvpd-restarted)");
                marked.push(id.clone());
            }
            if let Some(t) = &rec.view.tap {
                if let Err(e) = tap::delete(t) {
                    warn!(vm = id.as_str(), tap = t.as_str(), error = e.to_string(); "cannot delete an orphaned TAP device");
                }
            }
            let vm = Vm::recovered(rec.view, RESTARTED);
            // Its key and policy stay in force: tenants read their extracts, and
            // forgetting the VM still needs their authorization.
            match vm.management.as_ref().map(|m| m.binding()) {
                Some(Ok(mut b)) => {
                    // Its last boot's page, which the tenant attested.
                    b.incarnation = std::fs::read(self.cfg.vms_dir.join(&id).join("config.page"))
                        .ok()
                        .map(|p| {
                            use sha2::Digest as _;
                            sha2::Sha256::digest(p).into()
                        });
                    self.audit.register_vm(&id, b)
                }
                Some(Err(e)) => {
                    warn!(vm = id.as_str(), error = e.as_str(); "the VM record's management binding is invalid: its restricted operations stay refused")
                }
                None => {}
            }
            reg.vms.insert(id.clone(), vm);
            self.persist(&reg, &id);
        }
        drop(reg);
        for id in &marked {
            self.record_change(id, "unknown (tvpd was not running)", "failed", RESTARTED);
        }
        for t in tap::list_with_prefix(&self.cfg.tap_prefix) {
            match tap::delete(&t) {
                Ok(()) => warn!(tap = t.as_str(); "deleted an orphaned TAP device"),
                Err(e) => {
                    warn!(tap = t.as_str(), error = e.to_string(); "cannot delete an orphaned TAP device")
                }
            }
        }
        Ok(marked.len())
    }
}
