//! Measured VMs through tvpd's API: the spec a test creates one from ([`VmSpec`], the
//! JSON written in one place), and waiting for a VM's view to satisfy a predicate
//! ([`wait_vm`]) or for anything else to happen ([`poll`]).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{Tenant, Tvpd};

/// A CA certificate that parses as DER but trusts nothing: the tests whose VMs never
/// reach a boot server.
pub const DUMMY_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";

/// The body of `POST /v1/vms`, built from defaults that every test shares.
///
/// `VmSpec::measured("vm-1")` is: VIP 10.0.0.2/24, gateway 10.0.0.1, MAC
/// 02:00:00:00:00:01, auth code `U-vm-1`, boot server 10.0.0.1:8443 named
/// `boot.tenant.example` with [`DUMMY_CA_PEM`], 16 MiB, attestation deadline 120 s,
/// managed by [`Tenant::shared`]. Each setter changes one field.
#[derive(Clone, Debug)]
pub struct VmSpec(Value);

impl VmSpec {
    /// The defaults above for VM `id`.
    pub fn measured(id: &str) -> VmSpec {
        let mut s = json!({"id": id, "vip": "10.0.0.2/24", "gateway": "10.0.0.1",
            "mac": "02:00:00:00:00:01", "auth_code": format!("U-{id}"),
            "boot_server": "10.0.0.1:8443", "boot_server_name": "boot.tenant.example",
            "tenant_ca_pem": DUMMY_CA_PEM, "memory_mib": 16, "attestation_deadline_secs": 120});
        Tenant::shared().add_to_spec(&mut s);
        VmSpec(s)
    }

    /// The auth code U the boot server's reservation expects.
    pub fn auth_code(self, u: &str) -> VmSpec {
        self.set("auth_code", json!(u))
    }

    /// The VM's address with prefix, e.g. `10.0.0.20/24`.
    pub fn vip(self, vip: &str) -> VmSpec {
        self.set("vip", json!(vip))
    }

    /// The VM's MAC address.
    pub fn mac(self, mac: &str) -> VmSpec {
        self.set("mac", json!(mac))
    }

    /// No gateway in the spec (tvpd's default: none).
    pub fn no_gateway(mut self) -> VmSpec {
        if let Some(o) = self.0.as_object_mut() {
            o.remove("gateway");
        }
        self
    }

    /// The boot server's address, `ip:port`.
    pub fn boot_server(self, addr: &str) -> VmSpec {
        self.set("boot_server", json!(addr))
    }

    /// The tenant CA the firmware trusts for the boot server, PEM.
    pub fn tenant_ca_pem(self, pem: &str) -> VmSpec {
        self.set("tenant_ca_pem", json!(pem))
    }

    /// Guest memory.
    pub fn memory_mib(self, mib: u64) -> VmSpec {
        self.set("memory_mib", json!(mib))
    }

    /// Seconds from create to the handover before tvpd destroys the VM.
    pub fn deadline_secs(self, secs: u64) -> VmSpec {
        self.set("attestation_deadline_secs", json!(secs))
    }

    /// A deadline for one boot phase (`phase_deadlines_secs.<phase>`).
    pub fn phase_deadline_secs(mut self, phase: &str, secs: u64) -> VmSpec {
        if self.0["phase_deadlines_secs"].is_null() {
            self.0["phase_deadlines_secs"] = json!({});
        }
        self.0["phase_deadlines_secs"][phase] = json!(secs);
        self
    }

    /// An encrypted (or plaintext) image and the key-management socket to ask for it.
    pub fn image(self, path: &str, kms_socket: &std::path::Path) -> VmSpec {
        self.set("image", json!({"path": path, "kms_socket": kms_socket}))
    }

    /// An encrypted disk (served read-only over virtio-blk) and the key-management
    /// socket to ask for its key.
    pub fn disk(self, path: &str, kms_socket: &std::path::Path) -> VmSpec {
        self.set("disk", json!({"path": path, "kms_socket": kms_socket}))
    }

    /// Managed by `tenant`: its management key and policy replace the shared tenant's.
    pub fn managed_by(mut self, tenant: &Tenant) -> VmSpec {
        tenant.add_to_spec(&mut self.0);
        self
    }

    /// Fields added to the policy (e.g. `on_platform_change`, `allow_plaintext_images`).
    pub fn policy_with(mut self, extra: Value) -> VmSpec {
        if let (Some(p), Some(extra)) = (self.0["policy"].as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        self
    }

    /// Any other field (or a deliberately bad value of a known one).
    pub fn set(mut self, key: &str, value: Value) -> VmSpec {
        self.0[key] = value;
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        self.0.to_string()
    }
}

/// The view ended: `failed` or `destroyed`.
pub fn ended(v: &Value) -> bool {
    matches!(v["state"].as_str(), Some("failed" | "destroyed"))
}

/// The view's state is `state`.
pub fn state_is(state: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["state"] == state
}

/// How often [`wait_vm`] asks tvpd (each request is audited: not too often).
pub const VM_POLL: Duration = Duration::from_millis(50);

/// Polls VM `id`'s view until `until` holds; returns that view. Panics after `within`
/// with the last view and tvpd's log.
pub fn wait_vm(t: &Tvpd, id: &str, until: impl Fn(&Value) -> bool, within: Duration) -> Value {
    wait_vm_every(t, id, until, within, VM_POLL)
}

/// [`wait_vm`], asking every `every` (benchmarks that time the wait ask more often).
pub fn wait_vm_every(
    t: &Tvpd,
    id: &str,
    until: impl Fn(&Value) -> bool,
    within: Duration,
    every: Duration,
) -> Value {
    poll(within, every, || {
        let v = t.vm(id);
        if until(&v) {
            Ok(v)
        } else {
            Err(v)
        }
    })
    .unwrap_or_else(|v| {
        panic!(
            "VM {id} not as awaited within {within:?}: {v}\nlog:\n{}",
            t.log()
        )
    })
}

/// Calls `probe` every `every` until it returns `Ok`, for at most `within`; then the
/// last `Err` (what was seen, for the caller's message).
pub fn poll<T, E>(
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Whether `cond` holds within `within`, asking every `every` (for
/// `assert!(eventually(..), "what did not happen")`).
pub fn eventually(within: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll(within, every, || if cond() { Ok(()) } else { Err(()) }).is_ok()
}

/// PCR 23 as `tvpctl expected-pcrs` computes it for a VM booting `firmware` with
/// `config_page`, managed by `tenant` (what tvpd's measurement must equal).
pub fn expected_pcr23(t: &Tvpd, firmware: &Path, config_page: &Path, tenant: &Tenant) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tenant.pem");
    let policy = dir.path().join("policy.json");
    std::fs::write(&key, tenant.key_pem()).unwrap();
    std::fs::write(&policy, tenant.policy.to_string()).unwrap();
    let (code, out, err) = t.tvpctl(&[
        "expected-pcrs",
        "--firmware",
        firmware.to_str().unwrap(),
        "--config-page",
        config_page.to_str().unwrap(),
        "--management-key",
        key.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let expected: Value = serde_json::from_str(&out).unwrap();
    expected["pcrs"]["sha256"]["23"].clone()
}
