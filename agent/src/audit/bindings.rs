//! The tenant bindings registry: which management key and policy each VM answers
//! to. Live bindings authorize operations; bindings of recently deleted VMs are kept
//! (bounded) so their tenants can still fetch the extract that shows the deletion.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use tvp_audit::policy::{Remediation, TenantPolicy};
use tvp_audit::token::TenantKey;

use crate::lock;

/// A VM's tenant management key and policy, registered at VM creation.
#[derive(Debug, Clone)]
pub struct TenantBinding {
    /// The tenant's management public key.
    pub key: TenantKey,
    /// The tenant's policy.
    pub policy: TenantPolicy,
    /// When the key was registered (Unix seconds), the start of its lease.
    pub key_since: u64,
}

/// How many deleted VMs' bindings are kept for their tenants' extracts.
pub const RETIRED_BINDINGS: usize = 4096;

/// Live and retired bindings, by VM id.
#[derive(Debug, Default)]
pub struct TenantBindings {
    live: Mutex<BTreeMap<String, TenantBinding>>,
    /// Bindings of deleted VMs, oldest first (bounded: [`RETIRED_BINDINGS`]).
    retired: Mutex<VecDeque<(String, TenantBinding)>>,
}

impl TenantBindings {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a VM's binding (VM creation). A retired binding of a deleted VM with
    /// the same id is dropped.
    pub fn register(&self, vm: &str, binding: TenantBinding) {
        lock(&self.retired).retain(|(id, _)| id != vm);
        lock(&self.live).insert(vm.to_string(), binding);
    }

    /// Retire a VM's binding (after delete): no operation can be authorized against
    /// it any more, but its extract stays available until tvpd restarts, the id is
    /// reused, or [`RETIRED_BINDINGS`] later deletions push it out.
    pub fn retire(&self, vm: &str) {
        if let Some(b) = lock(&self.live).remove(vm) {
            let mut retired = lock(&self.retired);
            retired.retain(|(id, _)| id != vm);
            if retired.len() >= RETIRED_BINDINGS {
                retired.pop_front();
            }
            retired.push_back((vm.to_string(), b));
        }
    }

    /// A live VM's binding: operations are authorized against it.
    pub fn live(&self, vm: &str) -> Option<TenantBinding> {
        lock(&self.live).get(vm).cloned()
    }

    /// The binding that decides what a VM's extract reports: the live one, else that
    /// of a recently deleted VM.
    pub fn for_extract(&self, vm: &str) -> Option<TenantBinding> {
        self.live(vm).or_else(|| {
            lock(&self.retired)
                .iter()
                .rev()
                .find(|(id, _)| id == vm)
                .map(|(_, b)| b.clone())
        })
    }

    /// Every live VM with its policy's `on_tampering` action.
    pub fn tampering_actions(&self) -> Vec<(String, Remediation)> {
        lock(&self.live)
            .iter()
            .map(|(vm, b)| (vm.clone(), b.policy.on_tampering))
            .collect()
    }
}
