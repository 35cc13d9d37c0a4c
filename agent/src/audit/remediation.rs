//! What happens when tampering with the audit log is detected at run time: every
//! request is refused from then on (the log no longer appends), and each live VM's
//! policy `on_tampering` is applied once — power the VM off through the
//! [`Remediator`] the VM manager installs, or raise an alert (error log).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tvp_audit::policy::Remediation;

use super::bindings::TenantBindings;
use crate::lock;

/// What carries out a `power-off` remediation: the VM manager installs one with
/// [`super::Audit::set_remediator`].
pub trait Remediator: Send + Sync {
    /// Power `vm` off now; `Ok(false)` if there was nothing to power off (the VM has
    /// ended already).
    fn power_off(&self, vm: &str) -> Result<bool, String>;
}

/// What was done to one VM when tampering was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemediationOutcome {
    /// The VM.
    pub vm: String,
    /// Its policy's action.
    pub action: Remediation,
    /// `Ok` if carried out (alerts always are).
    pub result: Result<(), String>,
}

/// Whether tampering was detected, and who powers VMs off.
#[derive(Default)]
pub struct TamperResponse {
    remediator: Mutex<Option<Arc<dyn Remediator>>>,
    tampered: AtomicBool,
}

impl TamperResponse {
    /// No tampering seen, no remediator yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Install what powers VMs off.
    pub fn set_remediator(&self, r: Arc<dyn Remediator>) {
        *lock(&self.remediator) = Some(r);
    }

    /// Whether tampering was detected.
    pub fn tampered(&self) -> bool {
        self.tampered.load(Ordering::SeqCst)
    }

    /// Tampering detected (`detail` says how): the first call applies every live
    /// VM's `on_tampering` and returns what was done; later calls do nothing.
    pub fn respond(&self, bindings: &TenantBindings, detail: &str) -> Vec<RemediationOutcome> {
        if self.tampered.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        ::log::error!(detail = detail; "AUDIT TAMPERING DETECTED: refusing every request; applying the tenants' remediation");
        let remediator = lock(&self.remediator).clone();
        let mut out = Vec::new();
        for (vm, action) in bindings.tampering_actions() {
            let result = match action {
                Remediation::Alert => {
                    ::log::error!(vm = vm.as_str(), action = "alert"; "audit tampering: tenant alerted (policy on_tampering = alert)");
                    Ok(())
                }
                Remediation::PowerOff => match &remediator {
                    Some(r) => r.power_off(&vm).map(|done| {
                        if done {
                            ::log::warn!(vm = vm.as_str(), action = "power-off"; "audit tampering: VM powered off (policy on_tampering = power-off)");
                        }
                    }),
                    None => Err("no VM lifecycle to power the VM off".to_string()),
                },
            };
            if let Err(e) = &result {
                ::log::error!(vm = vm.as_str(), error = e.as_str(); "audit tampering: power-off remediation failed");
            }
            out.push(RemediationOutcome { vm, action, result });
        }
        out
    }
}
