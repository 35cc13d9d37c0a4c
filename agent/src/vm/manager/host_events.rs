//! Events of the host that every live VM's tenant learns of: a measured platform file
//! changed (a revocation; VMs whose policy says so are powered off), and KVM VMs that
//! tvpd did not create appeared or vanished (out-of-context VMs).

use log::warn;

use super::supervise::Event;
use super::Manager;
use crate::audit::HostEvent;
use crate::lock;
use crate::platform_watch::PlatformChange;
use crate::unmanaged_vms::UnmanagedVm;

/// Most revocation events kept per VM.
const MAX_REVOCATIONS: usize = 64;

impl Manager {
    /// A measured platform file changed (platform watch): every live VM gets a
    /// revocation event in its record, and VMs whose policy says
    /// `"on_platform_change": "power-off"` are destroyed with reason
    /// `platform-changed: <path>`; the others are only alerted (logged, recorded).
    pub fn platform_changed(&self, change: &PlatformChange) {
        let mut recorded = Vec::new();
        let mut off = Vec::new();
        {
            let mut reg = lock(&self.registry);
            let live: Vec<String> = reg
                .vms
                .iter()
                .filter(|(_, vm)| vm.boot.is_live())
                .map(|(id, _)| id.clone())
                .collect();
            for id in live {
                let Some(vm) = reg.vms.get_mut(&id) else {
                    continue;
                };
                if vm.revocations.len() < MAX_REVOCATIONS {
                    vm.revocations.push(change.clone());
                }
                let power_off = vm.powers_off_on_platform_change();
                let remediation = if power_off { "power-off" } else { "alert" };
                warn!(vm = id.as_str(), path = change.path.as_str(), remediation = remediation; "revocation: a measured platform file changed while the VM runs");
                recorded.push((
                    id.clone(),
                    vm.boot.label(),
                    format!(
                        "platform-changed: {} (measured {}, now {}); remediation {remediation}",
                        change.path,
                        change.measured,
                        change.current.as_deref().unwrap_or("gone")
                    ),
                ));
                self.persist(&reg, &id);
                if power_off {
                    off.push(id);
                }
            }
        }
        // In the tenants' audit trails too (not under the manager's lock).
        for (id, state, reason) in recorded {
            self.record_host_event(&id, HostEvent::PlatformRevocation, &state, &reason);
        }
        let reg = lock(&self.registry);
        for id in off {
            let reason = format!("platform-changed: {}", change.path);
            Self::tell(&reg, &id, Event::Destroy(reason));
        }
    }

    /// KVM VMs tvpd did not create appeared or vanished (the unmanaged-VM scan): an
    /// `out-of-context-vm` record in every live VM's trail, so each tenant on the host
    /// learns of them as they happen. Blocking (audit appends); not on a runtime thread.
    pub fn out_of_context(&self, appeared: &[UnmanagedVm], vanished: &[UnmanagedVm]) {
        let live: Vec<(String, String)> = lock(&self.registry)
            .vms
            .iter()
            .filter(|(_, vm)| vm.boot.is_live())
            .map(|(id, vm)| (id.clone(), vm.boot.label()))
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

    pub(super) fn record_host_event(&self, id: &str, event: HostEvent, state: &str, reason: &str) {
        if let Err(e) = self.audit.host_event_blocking(id, event, state, reason) {
            log::error!(vm = id, event = event.op(), error = e.to_string(); "host event not written to the VM's audit trail yet: kept, and written before any later record");
        }
    }
}
