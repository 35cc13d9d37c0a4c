//! The tenant bindings registry: which management key and policy each VM answers
//! to. Live bindings authorize operations; bindings of recently deleted VMs are kept
//! (bounded) so their tenants can still fetch the extract that shows the deletion.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use tvp_audit::policy::{Remediation, TenantPolicy};
use tvp_audit::token::TenantKey;
use tvp_audit::Digest32;

use crate::lock;

/// A VM's tenant management key and policy, registered at VM creation.
#[derive(Debug, Clone)]
pub struct TenantBinding {
    /// The tenant's management public key.
    pub key: TenantKey,
    /// The tenant's policy.
    pub policy: TenantPolicy,
    /// When the key was registered or last rotated or renewed (Unix seconds), the
    /// start of its lease.
    pub key_since: u64,
    /// The VM's incarnation: SHA-256 of the configuration page its current boot runs
    /// (what tokens are bound to; `None` while unknown, when no token passes).
    pub incarnation: Option<Digest32>,
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

    /// A new boot of `vm` runs the configuration page with digest `incarnation`:
    /// tokens for any earlier one stop passing.
    pub fn set_incarnation(&self, vm: &str, incarnation: Digest32) {
        if let Some(b) = lock(&self.live).get_mut(vm) {
            b.incarnation = Some(incarnation);
        }
    }

    /// The tenant's key of live VM `vm` is now `key`, its lease starting at `since`
    /// (a rotation, or a renewal with the same key). `false` if `vm` has no live
    /// binding.
    pub fn set_key(&self, vm: &str, key: TenantKey, since: u64) -> bool {
        match lock(&self.live).get_mut(vm) {
            Some(b) => {
                b.key = key;
                b.key_since = since;
                true
            }
            None => false,
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
