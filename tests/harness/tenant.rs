//! A tenant for tests: a management key pair, a policy, and tokens signed with it
//! (what `tvpctl authorize` does), plus the VM spec fields that carry them.
//!
//! Tokens are bound to a host and a VM incarnation ([`Target`]). A VM created through
//! [`crate::Tvpd::create_vm`] is remembered with its tvpd ([`remember_vm`]), and
//! [`Tenant::token`] binds to that tvpd's AK name and the configuration page the VM
//! runs now, read from tvpd's state directory: a shortcut for tests that are not about
//! the binding. A real tenant takes both from its inventory and the VM's evidence
//! (`tvpctl authorize --host --evidence`), as `tests/tests/token_binding.rs` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};
use sha2::Digest as _;
use tvp_audit::params::{self, Params};
use tvp_audit::token::{Target, TenantKey, TenantSigner};

/// Where each VM created by the harness lives: (management key id, VM id) → (its
/// tvpd's state directory, that tvpd's AK name).
type Hosts = HashMap<(String, String), (PathBuf, Vec<u8>)>;

fn hosts() -> &'static Mutex<Hosts> {
    static H: OnceLock<Mutex<Hosts>> = OnceLock::new();
    H.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Remember that VM `vm`, managed by the key `key_pem`, was created on the tvpd with
/// state directory `state_dir` and AK name `ak_name` (the latest creation wins).
pub fn remember_vm(key_pem: &str, vm: &str, state_dir: &Path, ak_name: Vec<u8>) {
    let Ok(key) = TenantKey::from_pem(key_pem) else {
        return;
    };
    hosts().lock().unwrap_or_else(|e| e.into_inner()).insert(
        (key.key_id(), vm.to_string()),
        (state_dir.to_path_buf(), ak_name),
    );
}

/// SHA-256 of the configuration page VM `vm` runs now on the tvpd with `state_dir`
/// (zeros once the VM is forgotten and its page removed).
pub fn incarnation(state_dir: &Path, vm: &str) -> [u8; 32] {
    let path = state_dir.join("vms").join(vm).join("config.page");
    match std::fs::read(&path) {
        Ok(page) => sha2::Sha256::digest(page).into(),
        Err(_) => [0; 32],
    }
}

/// A tenant's management key and policy.
pub struct Tenant {
    /// The signing key.
    pub signer: TenantSigner,
    /// The policy given at VM creation.
    pub policy: Value,
    counter: AtomicU64,
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tenant {
    /// An Ed25519 tenant allowing `allowed`, reporting everything, with this
    /// `on_tampering` (`power-off` or `alert`).
    pub fn new(allowed: &[&str], on_tampering: &str) -> Tenant {
        Tenant::with_signer(TenantSigner::generate_ed25519(), allowed, on_tampering)
    }

    /// The same with a given key.
    pub fn with_signer(signer: TenantSigner, allowed: &[&str], on_tampering: &str) -> Tenant {
        Tenant {
            signer,
            policy: json!({"v": 1, "allowed_operations": allowed,
                "reported_operations": ["*"], "on_tampering": on_tampering}),
            counter: AtomicU64::new(1),
        }
    }

    /// One tenant for tests that only need VMs to be creatable and deletable:
    /// allows pause, resume, power-off, reboot and delete.
    pub fn shared() -> &'static Tenant {
        static T: OnceLock<Tenant> = OnceLock::new();
        T.get_or_init(|| {
            Tenant::new(
                &["pause", "resume", "power-off", "reboot", "delete"],
                "power-off",
            )
        })
    }

    /// The management public key, PEM.
    pub fn key_pem(&self) -> String {
        self.signer.public().to_pem()
    }

    /// Add `management_public_key` and `policy` to a VM spec object.
    pub fn add_to_spec(&self, spec: &mut Value) {
        self.add_to_spec_with(spec, &Value::Null);
    }

    /// The same, with the fields of `extra` (an object) added to the policy (e.g.
    /// `allow_plaintext_images`, `on_platform_change`).
    pub fn add_to_spec_with(&self, spec: &mut Value, extra: &Value) {
        spec["management_public_key"] = Value::String(self.key_pem());
        spec["policy"] = self.policy.clone();
        if let (Some(p), Some(extra)) = (spec["policy"].as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
    }

    /// The next counter (strictly increasing per tenant object).
    pub fn next_counter(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }

    /// A token for `op` on `vm` with `params`, the next counter, valid for 300 s.
    pub fn token(&self, vm: &str, op: &str, params: &[(&str, &str)]) -> String {
        self.token_with(vm, op, params, self.next_counter(), now() + 300)
    }

    /// Where `vm` runs now: the host and incarnation of the VM the harness created
    /// with this tenant's key (see the module documentation). For a VM id never
    /// created so, the host of another of the tenant's VMs and a page of zeros.
    pub fn target(&self, vm: &str) -> Target {
        let key = (self.signer.public().key_id(), vm.to_string());
        let hosts = hosts().lock().unwrap_or_else(|e| e.into_inner());
        if let Some((state_dir, host)) = hosts.get(&key) {
            return Target {
                host: host.clone(),
                vm: vm.to_string(),
                incarnation: incarnation(state_dir, vm),
            };
        }
        // Not created by this tenant: the host of one of its VMs, if any (so a token
        // for a VM id it does not manage is refused for the VM id, not the host).
        let host = hosts
            .iter()
            .find(|((k, _), _)| *k == key.0)
            .map(|(_, (_, h))| h.clone())
            .unwrap_or_else(|| vec![0; 34]);
        Target {
            host,
            vm: vm.to_string(),
            incarnation: [0; 32],
        }
    }

    /// A token with an explicit counter and expiry.
    pub fn token_with(
        &self,
        vm: &str,
        op: &str,
        params: &[(&str, &str)],
        counter: u64,
        expires: u64,
    ) -> String {
        self.token_for(&self.target(vm), op, params, counter, expires)
    }

    /// A token for an explicit host and incarnation.
    pub fn token_for(
        &self,
        target: &Target,
        op: &str,
        params: &[(&str, &str)],
        counter: u64,
        expires: u64,
    ) -> String {
        let p: Params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.signer
            .authorize(op, target, &params::digest(&p), counter, expires)
            .encode()
    }
}
