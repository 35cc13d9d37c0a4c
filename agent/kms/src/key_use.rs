//! What a released key will be used for, as the host describes it in its release
//! request and commits to in its quote (docs/kms.md, "VM binding"): either loading an
//! image into one VM — its configuration page, firmware digest, management key and
//! policy, i.e. what PCR 23 will hold for it — or authenticating the image inside
//! tvpd's memory (`POST /v1/images/verify`), with no VM at all.
//!
//! Both sides compute [`ParsedUse::digest`] with this one code: tvpd puts
//! `SHA-256(nonce || digest)` into the quote's qualifying data, and the service
//! requires exactly that, so a genuine tvpd that quoted for one VM cannot have the key
//! released for another.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tvp_abi::config::{self, DiskRef, ImageRef};
use tvp_audit::encode::Encoder;
use tvp_audit::policy::{management_digest, TenantPolicy};
use tvp_audit::TenantKey;

/// Largest management key PEM accepted in a description.
const MAX_KEY_PEM: usize = 4096;

/// The use of a released key, as sent on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "purpose", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeyUse {
    /// The key goes to the VMM of exactly this VM, which decrypts the image into it.
    Vm {
        /// The VM's configuration page (4096 bytes), base64.
        config_page: String,
        /// SHA-256 of the firmware file the VMM loads (PCR 23 event 1), hex.
        firmware_sha256: String,
        /// The tenant's management public key, PEM.
        management_public_key: String,
        /// The tenant's management policy (docs/audit.md §6).
        policy: serde_json::Value,
    },
    /// The key stays in tvpd's memory to authenticate the image; no VM receives it.
    Verify,
}

/// A [`KeyUse`] decoded and validated.
#[derive(Debug, Clone)]
pub enum ParsedUse {
    /// For one VM.
    Vm(Box<VmDescription>),
    /// For verification inside tvpd.
    Verify,
}

/// The VM a key is released to.
#[derive(Debug, Clone)]
pub struct VmDescription {
    /// The configuration page, exactly as the VMM gets it.
    pub page: Vec<u8>,
    /// SHA-256 of the firmware file.
    pub firmware_sha256: [u8; 32],
    /// The tenant's management key.
    pub management_key: TenantKey,
    /// The tenant's management policy.
    pub policy: TenantPolicy,
}

impl VmDescription {
    /// SHA-256 of the tenant CA certificate (DER) the page names.
    pub fn tenant_ca_sha256(&self) -> [u8; 32] {
        match config::decode(&self.page) {
            Ok(c) => Sha256::digest(c.ca_cert_der).into(),
            // parse() accepted only decodable pages.
            Err(_) => [0; 32],
        }
    }

    /// The image descriptor of the page (the image the VM loads), if any.
    pub fn image(&self) -> Option<ImageRef> {
        config::decode(&self.page).ok()?.image
    }

    /// The disk descriptor of the page (the encrypted disk the VM is served), if any.
    pub fn disk(&self) -> Option<DiskRef> {
        config::decode(&self.page).ok()?.disk
    }

    /// The management binding digest (the seventh PCR 23 event).
    pub fn management_digest(&self) -> [u8; 32] {
        management_digest(&self.management_key, &self.policy)
    }
}

/// SHA-256 of the canonical encoding of a tenant policy: what a release policy lists
/// in `policy_digests` (`tvp-kms --policy-digest FILE` prints it).
pub fn policy_digest(policy: &TenantPolicy) -> [u8; 32] {
    let mut e = Encoder::new("tvp-policy-v1");
    policy.encode_into(&mut e);
    e.sha256()
}

impl KeyUse {
    /// The description of a VM with this page, firmware digest, key and policy.
    pub fn vm(
        page: &[u8],
        firmware_sha256: [u8; 32],
        management_public_key: &str,
        policy: &TenantPolicy,
    ) -> Result<KeyUse, String> {
        Ok(KeyUse::Vm {
            config_page: base64::engine::general_purpose::STANDARD.encode(page),
            firmware_sha256: hex::encode(firmware_sha256),
            management_public_key: management_public_key.to_string(),
            policy: serde_json::to_value(policy).map_err(|e| format!("policy: {e}"))?,
        })
    }

    /// Decode and validate; the error names the field.
    pub fn parse(&self) -> Result<ParsedUse, String> {
        let (page_b64, fw, key, policy) = match self {
            KeyUse::Verify => return Ok(ParsedUse::Verify),
            KeyUse::Vm {
                config_page,
                firmware_sha256,
                management_public_key,
                policy,
            } => (config_page, firmware_sha256, management_public_key, policy),
        };
        if page_b64.len() > 2 * tvp_abi::PAGE_SIZE {
            return Err("config_page: longer than one page".into());
        }
        let page = base64::engine::general_purpose::STANDARD
            .decode(page_b64)
            .map_err(|e| format!("config_page: not base64: {e}"))?;
        config::decode(&page).map_err(|e| format!("config_page: {e}"))?;
        let firmware_sha256 = hex::decode(fw)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("firmware_sha256: not 32 bytes of hex")?;
        if key.len() > MAX_KEY_PEM {
            return Err(format!(
                "management_public_key: more than {MAX_KEY_PEM} bytes"
            ));
        }
        let management_key =
            TenantKey::from_pem(key).map_err(|e| format!("management_public_key: {e}"))?;
        let policy: TenantPolicy =
            serde_json::from_value(policy.clone()).map_err(|e| format!("policy: {e}"))?;
        policy.validate().map_err(|e| format!("policy: {e}"))?;
        Ok(ParsedUse::Vm(Box::new(VmDescription {
            page,
            firmware_sha256,
            management_key,
            policy,
        })))
    }
}

impl ParsedUse {
    /// The digest the host's quote commits to (with the nonce): for a VM, of its page,
    /// firmware digest and management binding — what determines its PCR 23.
    pub fn digest(&self) -> [u8; 32] {
        let mut e = Encoder::new("tvp-key-use-v1");
        match self {
            ParsedUse::Verify => {
                e.str("verify");
            }
            ParsedUse::Vm(vm) => {
                e.str("vm")
                    .fixed(&Sha256::digest(&vm.page))
                    .fixed(&vm.firmware_sha256)
                    .fixed(&vm.management_digest());
            }
        }
        e.sha256()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    /// Two minimal DER certificates (SEQUENCE { INTEGER n }): the page checks only DER.
    const CA1: [u8; 5] = [0x30, 3, 2, 1, 1];
    const CA2: [u8; 5] = [0x30, 3, 2, 1, 2];

    fn page(ca: &[u8]) -> [u8; 4096] {
        config::Config {
            vip: [10, 0, 0, 2],
            prefix_len: 24,
            gateway: [0; 4],
            mac: [2, 0, 0, 0, 0, 1],
            boot_server_ip: [10, 0, 0, 1],
            boot_server_port: 8443,
            vcpus: 1,
            mem_size_mib: 64,
            time_unix_secs: 1,
            entropy_seed: [0; 32],
            auth_code: b"u",
            server_name: "boot",
            ca_cert_der: ca,
            image: None,
            disk: None,
            tpm: None,
        }
        .encode()
        .unwrap()
    }

    fn policy() -> TenantPolicy {
        TenantPolicy::from_json(
            br#"{"v":1,"allowed_operations":["pause"],"reported_operations":[],"on_tampering":"alert"}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_digest_changes_with_every_part_and_survives_the_wire() {
        let p = policy();
        let base = KeyUse::vm(&page(&CA1), [1; 32], KEY, &p).unwrap();
        let wire: KeyUse = serde_json::from_str(&serde_json::to_string(&base).unwrap()).unwrap();
        let d = base.parse().unwrap().digest();
        assert_eq!(wire.parse().unwrap().digest(), d);
        let other_ca = KeyUse::vm(&page(&CA2), [1; 32], KEY, &p).unwrap();
        let other_fw = KeyUse::vm(&page(&CA1), [2; 32], KEY, &p).unwrap();
        let mut p2 = p.clone();
        p2.allowed_operations.clear();
        let other_policy = KeyUse::vm(&page(&CA1), [1; 32], KEY, &p2).unwrap();
        for u in [other_ca, other_fw, other_policy, KeyUse::Verify] {
            assert_ne!(u.parse().unwrap().digest(), d);
        }
        assert_ne!(policy_digest(&p), policy_digest(&p2));
    }

    #[test]
    fn the_described_vm_s_disk_is_the_page_s_and_changes_the_digest() {
        let p = policy();
        let plain = KeyUse::vm(&page(&CA1), [1; 32], KEY, &p).unwrap();
        let Ok(ParsedUse::Vm(vm)) = plain.parse() else {
            panic!("a VM")
        };
        assert_eq!(vm.disk(), None);
        let disk = DiskRef {
            len: 4096,
            header_digest: [7; 32],
        };
        let base = page(&CA1);
        let mut c = config::decode(&base).unwrap();
        c.disk = Some(disk);
        let with_disk = KeyUse::vm(&c.encode().unwrap(), [1; 32], KEY, &p).unwrap();
        let Ok(ParsedUse::Vm(vm)) = with_disk.parse() else {
            panic!("a VM")
        };
        assert_eq!(vm.disk(), Some(disk));
        assert_ne!(
            with_disk.parse().unwrap().digest(),
            plain.parse().unwrap().digest()
        );
    }

    #[test]
    fn malformed_descriptions_name_the_field() {
        let p = serde_json::to_value(policy()).unwrap();
        let cases = [
            (
                KeyUse::Vm {
                    config_page: "!".into(),
                    firmware_sha256: "00".repeat(32),
                    management_public_key: KEY.into(),
                    policy: p.clone(),
                },
                "config_page",
            ),
            (
                KeyUse::Vm {
                    config_page: base64::engine::general_purpose::STANDARD.encode([0u8; 4096]),
                    firmware_sha256: "00".repeat(32),
                    management_public_key: KEY.into(),
                    policy: p.clone(),
                },
                "config_page",
            ),
            (
                KeyUse::Vm {
                    config_page: base64::engine::general_purpose::STANDARD.encode(page(&CA1)),
                    firmware_sha256: "00".into(),
                    management_public_key: KEY.into(),
                    policy: p.clone(),
                },
                "firmware_sha256",
            ),
            (
                KeyUse::Vm {
                    config_page: base64::engine::general_purpose::STANDARD.encode(page(&CA1)),
                    firmware_sha256: "00".repeat(32),
                    management_public_key: "x".into(),
                    policy: p.clone(),
                },
                "management_public_key",
            ),
            (
                KeyUse::Vm {
                    config_page: base64::engine::general_purpose::STANDARD.encode(page(&CA1)),
                    firmware_sha256: "00".repeat(32),
                    management_public_key: KEY.into(),
                    policy: serde_json::json!({"v": 1}),
                },
                "policy",
            ),
        ];
        for (u, field) in cases {
            let e = u.parse().unwrap_err();
            assert!(e.starts_with(field), "{field}: {e}");
        }
    }
}
