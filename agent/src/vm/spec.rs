//! `POST /v1/vms`: the create request, validated completely before anything starts;
//! every error names the field.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

fn one() -> u16 {
    1
}
fn default_memory() -> u32 {
    64
}
fn default_deadline() -> u64 {
    120
}

/// A measured VM to create.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// VM id: 1-64 of `a-z 0-9 -`, starting with a letter or digit.
    pub id: String,
    /// The VM's address I with prefix length, e.g. `10.0.0.2/24`.
    pub vip: String,
    /// Default gateway, e.g. `10.0.0.1`.
    #[serde(default)]
    pub gateway: Option<String>,
    /// MAC address, e.g. `02:00:00:00:00:01`.
    pub mac: String,
    /// The authentication code U from the tenant's reservation (1-64 bytes).
    pub auth_code: String,
    /// Boot server address, `ip:port`.
    pub boot_server: String,
    /// Boot server TLS name.
    pub boot_server_name: String,
    /// The tenant CA certificate, PEM.
    pub tenant_ca_pem: String,
    /// vCPUs.
    #[serde(default = "one")]
    pub vcpus: u16,
    /// Memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Seconds from creation until the VM must have handed over; then it is destroyed
    /// with reason `attestation-deadline`.
    #[serde(default = "default_deadline")]
    pub attestation_deadline_secs: u64,
    /// Deadline of each boot phase (`vm/phase.rs`); missing phases take the defaults.
    #[serde(default)]
    pub phase_deadlines_secs: super::phase::PhaseDeadlines,
    /// A workload image the VMM loads into guest memory (`vm/image.rs`).
    #[serde(default)]
    pub image: Option<super::image::ImageSpec>,
    /// The tenant's encrypted disk, served read-only over virtio-blk (`vm/image.rs`):
    /// the same shape as `image`, an encrypted tvp image only.
    #[serde(default)]
    pub disk: Option<super::image::ImageSpec>,
    /// A TPM 2.0 of the VM's own (a swtpm per VM, `vm/vtpm.rs`), served as a CRB device
    /// and described in the measured ACPI tables (configuration page flag bit 2).
    #[serde(default)]
    pub vtpm: bool,
    /// The tenant's management public key (PEM SubjectPublicKeyInfo, Ed25519 or P-256):
    /// every restricted operation on the VM needs a token it signed.
    pub management_public_key: String,
    /// The tenant's management policy (`docs/audit.md` §6).
    pub policy: serde_json::Value,
}

/// A validated request with its configuration-page values.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    /// The request.
    pub request: CreateVmRequest,
    /// Parsed address fields.
    pub vip: [u8; 4],
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway or zeros.
    pub gateway: [u8; 4],
    /// MAC.
    pub mac: [u8; 6],
    /// Boot server.
    pub boot_server: SocketAddrV4,
    /// Tenant CA, DER.
    pub ca_der: Vec<u8>,
    /// Attestation deadline.
    pub deadline: Duration,
    /// The tenant's management key and policy.
    pub management: super::management::ManagementView,
}

fn bad(field: &str, msg: impl std::fmt::Display) -> String {
    format!("{field}: {msg}")
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
pub fn pem_certificate_der(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (der.first() == Some(&0x30)).then_some(der)
}

/// A key-management service socket must be an absolute path without `..` inside
/// `kms_socket_dir` (compared as written: tvpd connects to exactly this path), so a
/// caller cannot make tvpd connect to any other socket on the host. `field` names the
/// request field in the error.
pub fn check_kms_socket(
    field: &str,
    path: &std::path::Path,
    kms_socket_dir: &std::path::Path,
) -> Result<(), String> {
    use std::path::Component;
    if !path.is_absolute() {
        return Err(bad(
            field,
            format!("'{}' is not an absolute path", path.display()),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad(
            field,
            format!("'{}' must not contain '..' or '.'", path.display()),
        ));
    }
    if !path.starts_with(kms_socket_dir) || path == kms_socket_dir {
        return Err(bad(
            field,
            format!(
                "'{}' is outside kms_socket_dir {} (tvpd connects to key-management services only there)",
                path.display(),
                kms_socket_dir.display()
            ),
        ));
    }
    Ok(())
}

impl CreateVmRequest {
    /// `image.kms_socket` and `disk.kms_socket`, if given, against `kms_socket_dir`
    /// ([`check_kms_socket`]).
    pub fn check_kms_socket(&self, kms_socket_dir: &std::path::Path) -> Result<(), String> {
        for (field, spec) in [
            ("image.kms_socket", &self.image),
            ("disk.kms_socket", &self.disk),
        ] {
            if let Some(k) = spec.as_ref().and_then(|i| i.kms_socket.as_deref()) {
                check_kms_socket(field, std::path::Path::new(k), kms_socket_dir)?;
            }
        }
        Ok(())
    }

    /// Check every field.
    pub fn validate(self) -> Result<ValidSpec, String> {
        super::id::VmId::parse(&self.id).map_err(|e| bad("id", e))?;
        let (ip, prefix) = self
            .vip
            .split_once('/')
            .ok_or_else(|| bad("vip", "expected ADDRESS/PREFIX, e.g. 10.0.0.2/24"))?;
        let vip: Ipv4Addr = ip.parse().map_err(|e| bad("vip", e))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| bad("vip", "prefix length must be 1..=32"))?;
        let gateway = match &self.gateway {
            Some(g) => g
                .parse::<Ipv4Addr>()
                .map_err(|e| bad("gateway", e))?
                .octets(),
            None => [0; 4],
        };
        let mac_parts: Vec<u8> = self
            .mac
            .split(':')
            .map(|p| u8::from_str_radix(p, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad("mac", "expected six hex bytes separated by ':'"))?;
        let mac: [u8; 6] = mac_parts
            .try_into()
            .map_err(|_| bad("mac", "expected six hex bytes separated by ':'"))?;
        if mac[0] & 1 == 1 {
            return Err(bad("mac", "a multicast address cannot be a NIC's address"));
        }
        if self.auth_code.is_empty() || self.auth_code.len() > tvp_abi::config::AUTH_CODE_MAX {
            return Err(bad(
                "auth_code",
                format!("must be 1 to {} bytes", tvp_abi::config::AUTH_CODE_MAX),
            ));
        }
        let boot_server: SocketAddrV4 = self
            .boot_server
            .parse()
            .map_err(|e| bad("boot_server", format!("expected IPv4:PORT ({e})")))?;
        if self.boot_server_name.is_empty()
            || self.boot_server_name.len() > tvp_abi::config::SERVER_NAME_MAX
        {
            return Err(bad(
                "boot_server_name",
                "must be a DNS name of 1 to 253 bytes",
            ));
        }
        let ca_der = pem_certificate_der(&self.tenant_ca_pem).ok_or_else(|| {
            bad(
                "tenant_ca_pem",
                "no PEM CERTIFICATE block with a DER certificate",
            )
        })?;
        if !(1..=tvp_abi::config::VCPUS_MAX).contains(&self.vcpus) {
            return Err(bad(
                "vcpus",
                "must be 1..=64 (vCPU 0 runs the firmware, the others wait for the guest's start-up IPI)",
            ));
        }
        if !(16..=3072).contains(&self.memory_mib) {
            return Err(bad(
                "memory_mib",
                "must be 16..=3072 (MiB below the 32-bit PCI hole)",
            ));
        }
        if !(1..=86_400).contains(&self.attestation_deadline_secs) {
            return Err(bad("attestation_deadline_secs", "must be 1..=86400"));
        }
        let deadline = Duration::from_secs(self.attestation_deadline_secs);
        self.phase_deadlines_secs.validate()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let management = super::management::ManagementView::from_request(
            &self.management_public_key,
            &self.policy,
            now,
        )?;
        let spec = ValidSpec {
            management,
            vip: vip.octets(),
            prefix_len,
            gateway,
            mac,
            boot_server,
            ca_der,
            deadline,
            request: self,
        };
        let tpm = spec.request.vtpm.then_some(tvp_abi::config::TpmRef {
            ek_public_digest: [0; 32],
            ak_public_digest: [0; 32],
        });
        spec.page(0, [0; 32], None, None, tpm)
            .map_err(|e| bad("configuration", e))?;
        Ok(spec)
    }
}

impl ValidSpec {
    /// `policy.allow_plaintext_images`: whether the tenant accepts an unencrypted image.
    pub fn allows_plaintext_images(&self) -> bool {
        self.management.policy.allow_plaintext_images
    }

    /// `policy.on_platform_change`: `"power-off"` destroys the VM when a measured
    /// platform file changes while it runs; anything else (default `"alert"`) only
    /// records the revocation.
    pub fn powers_off_on_platform_change(&self) -> bool {
        self.management.policy.on_platform_change == Some(tvp_audit::Remediation::PowerOff)
    }

    /// `policy.key_lease_secs`: how long an image key may stay in the VMM's memory
    /// before the image is loaded (default 30 s); the VMM wipes it as soon as it is
    /// loaded, or fails the VM when the lease runs out first.
    pub fn key_lease(&self) -> Duration {
        Duration::from_secs(self.management.policy.key_lease_secs.unwrap_or(30))
    }

    /// The encoded configuration page (`docs/config-page.md`). `tpm` names the VM's
    /// own TPM's keys and must be given exactly when the spec asks for `vtpm`.
    pub fn page(
        &self,
        time_unix_secs: u64,
        seed: [u8; 32],
        image: Option<tvp_abi::config::ImageRef>,
        disk: Option<tvp_abi::config::DiskRef>,
        tpm: Option<tvp_abi::config::TpmRef>,
    ) -> Result<[u8; 4096], String> {
        if tpm.is_some() != self.request.vtpm {
            return Err("the VM's TPM keys are missing from, or not asked for in, its page".into());
        }
        let c = tvp_abi::config::Config {
            vip: self.vip,
            prefix_len: self.prefix_len,
            gateway: self.gateway,
            mac: self.mac,
            boot_server_ip: self.boot_server.ip().octets(),
            boot_server_port: self.boot_server.port(),
            vcpus: self.request.vcpus,
            mem_size_mib: self.request.memory_mib,
            time_unix_secs,
            entropy_seed: seed,
            auth_code: self.request.auth_code.as_bytes(),
            server_name: &self.request.boot_server_name,
            ca_cert_der: &self.ca_der,
            image,
            disk,
            tpm,
        };
        c.encode().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod kms_tests {
    use super::check_kms_socket;
    use std::path::Path;

    #[test]
    fn kms_socket_stays_in_its_directory() {
        let dir = Path::new("/run/tvp/kms");
        assert!(check_kms_socket("k", Path::new("/run/tvp/kms/t1.sock"), dir).is_ok());
        for bad in [
            "kms.sock",
            "/run/tvp/kms/../../x.sock",
            "/tmp/kms.sock",
            "/run/tvp/kms",
            "/run/tvp/kmsx/a",
        ] {
            let e = check_kms_socket("k", Path::new(bad), dir).unwrap_err();
            assert!(e.starts_with("k: "), "{bad}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> CreateVmRequest {
        CreateVmRequest {
            id: "vm-1".into(),
            vip: "10.0.0.2/24".into(),
            gateway: Some("10.0.0.1".into()),
            mac: "02:00:00:00:00:01".into(),
            auth_code: "U-123".into(),
            boot_server: "10.0.0.1:8443".into(),
            boot_server_name: "boot.tenant.example".into(),
            tenant_ca_pem: "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"
                .into(),
            vcpus: 1,
            memory_mib: 16,
            attestation_deadline_secs: 60,
            phase_deadlines_secs: Default::default(),
            image: None,
            disk: None,
            vtpm: false,
            management_public_key: tvp_audit::token::TenantSigner::generate_ed25519()
                .public()
                .to_pem(),
            policy: crate::vm::management::tests::policy_json(),
        }
    }

    #[test]
    fn the_disk_s_kms_socket_is_confined_and_named() {
        let dir = std::path::Path::new("/run/tvp/kms");
        let mut r = sample();
        r.disk = Some(crate::vm::image::ImageSpec {
            path: "disk.enc".into(),
            kms_socket: Some("/run/tvp/kms/t.sock".into()),
        });
        assert!(r.check_kms_socket(dir).is_ok());
        r.disk = Some(crate::vm::image::ImageSpec {
            path: "disk.enc".into(),
            kms_socket: Some("/tmp/k.sock".into()),
        });
        let e = r.check_kms_socket(dir).unwrap_err();
        assert!(e.starts_with("disk.kms_socket: "), "{e}");
        // The request carries it through serde as `disk`, unknown fields still refused.
        let v: CreateVmRequest = serde_json::from_value(serde_json::json!({
            "id": "a", "vip": "10.0.0.2/24", "mac": "02:00:00:00:00:01", "auth_code": "U",
            "boot_server": "10.0.0.1:1", "boot_server_name": "b", "tenant_ca_pem": "",
            "management_public_key": "", "policy": {},
            "disk": {"path": "d.enc", "kms_socket": "/run/tvp/kms/t.sock"}
        }))
        .unwrap();
        assert_eq!(v.disk.unwrap().path, "d.enc");
    }

    #[test]
    fn valid_and_each_bad_field_named() {
        assert!(sample().validate().is_ok());
        type Mutation = Box<dyn Fn(&mut CreateVmRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("id", Box::new(|r| r.id = "Bad_Id".into())),
            ("vip", Box::new(|r| r.vip = "10.0.0.2".into())),
            ("vip", Box::new(|r| r.vip = "10.0.0.2/40".into())),
            ("gateway", Box::new(|r| r.gateway = Some("x".into()))),
            ("mac", Box::new(|r| r.mac = "01:00:00:00:00:01".into())),
            ("mac", Box::new(|r| r.mac = "02:00".into())),
            ("auth_code", Box::new(|r| r.auth_code = String::new())),
            ("boot_server", Box::new(|r| r.boot_server = "host:1".into())),
            (
                "boot_server_name",
                Box::new(|r| r.boot_server_name = String::new()),
            ),
            (
                "tenant_ca_pem",
                Box::new(|r| r.tenant_ca_pem = "junk".into()),
            ),
            ("vcpus", Box::new(|r| r.vcpus = 0)),
            ("vcpus", Box::new(|r| r.vcpus = 65)),
            ("memory_mib", Box::new(|r| r.memory_mib = 1)),
            (
                "attestation_deadline_secs",
                Box::new(|r| r.attestation_deadline_secs = 0),
            ),
            (
                "management_public_key",
                Box::new(|r| r.management_public_key = "x".into()),
            ),
            ("policy", Box::new(|r| r.policy = serde_json::json!({}))),
        ];
        for (field, f) in cases {
            let mut r = sample();
            f(&mut r);
            let e = r.validate().unwrap_err();
            assert!(e.starts_with(&format!("{field}:")), "{field}: {e}");
        }
    }
}
