//! A tenant for tests: a management key pair, a policy, and tokens signed with it
//! (what `tvpctl authorize` does), plus the VM spec fields that carry them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Value};
use tvp_audit::params::{self, Params};
use tvp_audit::token::TenantSigner;

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

    /// A token with an explicit counter and expiry.
    pub fn token_with(
        &self,
        vm: &str,
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
            .authorize(op, vm, &params::digest(&p), counter, expires)
            .encode()
    }
}
