//! The tenant's release policy: per image, which VMs may receive its key — the tenant
//! CA their configuration page names, their management key and policy, the firmware
//! that boots them — and whether tvpd may fetch it only to verify the image
//! (docs/kms.md, "Release policy"). Every list must be non-empty; `"any"` allows every
//! value, and only where it is written.
//!
//! ```toml
//! [[image]]
//! image_digest = "<SHA-256 of the plaintext, hex (tvpctl image inspect)>"  # or "any"
//! tenant_ca_sha256 = ["<SHA-256 of the tenant CA certificate DER, hex>"]
//! management_keys = ["<management key id: SHA-256 of its DER SPKI, hex>"]
//! policy_digests = ["<tvp-kms --policy-digest POLICY.json>"]
//! firmware_sha256 = ["<SHA-256 of the firmware file, hex>"]
//! allow_verify = false   # release for POST /v1/images/verify (the key stays in tvpd)
//! ```

use serde::Deserialize;

use crate::key_use::{policy_digest, ParsedUse};
use crate::release::Refusal;

/// The word that allows every value of a list.
pub const ANY: &str = "any";
/// Most image entries in one policy file.
pub const MAX_ENTRIES: usize = 4096;

/// A list of allowed SHA-256 digests (lowercase hex), or `["any"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Every value.
    Any,
    /// Exactly these.
    Only(Vec<[u8; 32]>),
}

impl Allowed {
    fn parse(field: &str, list: &[String]) -> Result<Allowed, String> {
        if list.is_empty() {
            return Err(format!(
                "{field}: an empty list allows nothing; list the allowed values, or write [\"{ANY}\"]"
            ));
        }
        if list.iter().any(|s| s == ANY) {
            if list.len() > 1 {
                return Err(format!("{field}: \"{ANY}\" must be the only entry"));
            }
            return Ok(Allowed::Any);
        }
        list.iter()
            .map(|s| {
                tvp_audit::digest_from_hex(s).ok_or_else(|| {
                    format!(
                        "{field}: '{s}' is not a SHA-256 (64 lowercase hex digits) or \"{ANY}\""
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Allowed::Only)
    }

    /// Whether `d` is allowed.
    pub fn allows(&self, d: &[u8; 32]) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(v) => v.contains(d),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    image_digest: String,
    tenant_ca_sha256: Vec<String>,
    management_keys: Vec<String>,
    policy_digests: Vec<String>,
    firmware_sha256: Vec<String>,
    #[serde(default)]
    allow_verify: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    image: Vec<RawEntry>,
}

/// Who may receive one image's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRule {
    /// The image's plaintext digest; `None` = any image without a rule of its own.
    pub image_digest: Option<[u8; 32]>,
    /// Allowed tenant CA certificates (SHA-256 of the DER).
    pub tenant_ca: Allowed,
    /// Allowed management keys (key ids).
    pub management_keys: Allowed,
    /// Allowed management policies ([`policy_digest`]).
    pub policies: Allowed,
    /// Allowed firmware files (SHA-256).
    pub firmware: Allowed,
    /// Whether tvpd may obtain the key to verify the image in its memory.
    pub allow_verify: bool,
}

/// The release policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleasePolicy {
    rules: Vec<ImageRule>,
}

impl ReleasePolicy {
    /// Parse a TOML release policy; the error names the entry and field.
    pub fn from_toml(text: &str) -> Result<ReleasePolicy, String> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        if raw.image.len() > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} [[image]] entries"));
        }
        let mut rules: Vec<ImageRule> = Vec::new();
        for (i, e) in raw.image.iter().enumerate() {
            let at = |f: &str| format!("[[image]] #{} {f}", i + 1);
            let image_digest = if e.image_digest == ANY {
                None
            } else {
                Some(tvp_audit::digest_from_hex(&e.image_digest).ok_or_else(|| {
                    format!(
                        "{}: not a SHA-256 (64 lowercase hex digits) or \"{ANY}\"",
                        at("image_digest")
                    )
                })?)
            };
            if rules.iter().any(|r| r.image_digest == image_digest) {
                return Err(format!(
                    "{}: a second entry for the same image",
                    at("image_digest")
                ));
            }
            rules.push(ImageRule {
                image_digest,
                tenant_ca: Allowed::parse(&at("tenant_ca_sha256"), &e.tenant_ca_sha256)?,
                management_keys: Allowed::parse(&at("management_keys"), &e.management_keys)?,
                policies: Allowed::parse(&at("policy_digests"), &e.policy_digests)?,
                firmware: Allowed::parse(&at("firmware_sha256"), &e.firmware_sha256)?,
                allow_verify: e.allow_verify,
            });
        }
        Ok(ReleasePolicy { rules })
    }

    /// The rule for the image with this plaintext digest: its own, else the `"any"` one.
    pub fn rule(&self, image_digest: &[u8; 32]) -> Option<&ImageRule> {
        self.rules
            .iter()
            .find(|r| r.image_digest.as_ref() == Some(image_digest))
            .or_else(|| self.rules.iter().find(|r| r.image_digest.is_none()))
    }

    /// Whether the image's key may be released for `key_use`; the refusal names the
    /// check (`vm-policy:<field>`).
    pub fn check(&self, image_digest: &[u8; 32], key_use: &ParsedUse) -> Result<(), Refusal> {
        let refuse = |check: &str, reason: String| Refusal {
            check: format!("vm-policy:{check}"),
            reason,
        };
        let rule = self.rule(image_digest).ok_or_else(|| {
            refuse(
                "image",
                format!(
                    "the release policy has no entry for image {} (and none for \"{ANY}\")",
                    hex::encode(image_digest)
                ),
            )
        })?;
        let vm = match key_use {
            ParsedUse::Verify if rule.allow_verify => return Ok(()),
            ParsedUse::Verify => {
                return Err(refuse(
                    "verify",
                    "the release policy does not allow releasing this image's key for verification (allow_verify)".into(),
                ))
            }
            ParsedUse::Vm(vm) => vm,
        };
        let ca = vm.tenant_ca_sha256();
        if !rule.tenant_ca.allows(&ca) {
            return Err(refuse(
                "tenant-ca",
                format!(
                    "the VM's tenant CA certificate (SHA-256 {}) is not allowed for this image",
                    hex::encode(ca)
                ),
            ));
        }
        let key = vm.management_key.key_id();
        let key_ok =
            tvp_audit::digest_from_hex(&key).is_some_and(|k| rule.management_keys.allows(&k));
        if !key_ok {
            return Err(refuse(
                "management-key",
                format!("the VM's management key {key} is not allowed for this image"),
            ));
        }
        let pd = policy_digest(&vm.policy);
        if !rule.policies.allows(&pd) {
            return Err(refuse(
                "policy",
                format!(
                    "the VM's management policy (digest {}) is not allowed for this image",
                    hex::encode(pd)
                ),
            ));
        }
        if !rule.firmware.allows(&vm.firmware_sha256) {
            return Err(refuse(
                "firmware",
                format!(
                    "the VM's firmware (SHA-256 {}) is not allowed for this image",
                    hex::encode(vm.firmware_sha256)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_explicit() {
        let entry = |ca: &str| {
            format!(
                "[[image]]\nimage_digest = \"any\"\ntenant_ca_sha256 = {ca}\nmanagement_keys = [\"any\"]\npolicy_digests = [\"any\"]\nfirmware_sha256 = [\"any\"]\n"
            )
        };
        assert!(ReleasePolicy::from_toml(&entry("[\"any\"]")).is_ok());
        let e = ReleasePolicy::from_toml(&entry("[]")).unwrap_err();
        assert!(
            e.contains("tenant_ca_sha256") && e.contains("allows nothing"),
            "{e}"
        );
        let e = ReleasePolicy::from_toml(&entry("[\"ABCD\"]")).unwrap_err();
        assert!(e.contains("not a SHA-256"), "{e}");
        let e = ReleasePolicy::from_toml(&entry(&format!("[\"any\", \"{}\"]", "a".repeat(64))))
            .unwrap_err();
        assert!(e.contains("only entry"), "{e}");
        let e = ReleasePolicy::from_toml(&format!("{}{}", entry("[\"any\"]"), entry("[\"any\"]")))
            .unwrap_err();
        assert!(e.contains("second entry"), "{e}");
        let e = ReleasePolicy::from_toml("[[image]]\nimage_digest = \"any\"\n").unwrap_err();
        assert!(e.contains("missing field"), "{e}");
    }

    #[test]
    fn an_image_s_own_rule_comes_before_the_any_rule() {
        let d = "ab".repeat(32);
        let p = ReleasePolicy::from_toml(&format!(
            "[[image]]\nimage_digest = \"any\"\ntenant_ca_sha256 = [\"any\"]\nmanagement_keys = [\"any\"]\npolicy_digests = [\"any\"]\nfirmware_sha256 = [\"any\"]\n\
             [[image]]\nimage_digest = \"{d}\"\ntenant_ca_sha256 = [\"{d}\"]\nmanagement_keys = [\"any\"]\npolicy_digests = [\"any\"]\nfirmware_sha256 = [\"any\"]\nallow_verify = true\n"
        ))
        .unwrap();
        assert!(p.rule(&[0xab; 32]).unwrap().allow_verify);
        assert!(!p.rule(&[1; 32]).unwrap().allow_verify);
        let e = p.check(&[1; 32], &ParsedUse::Verify).unwrap_err();
        assert_eq!(e.check, "vm-policy:verify");
        assert!(p.check(&[0xab; 32], &ParsedUse::Verify).is_ok());
        let none = ReleasePolicy::default();
        assert_eq!(
            none.check(&[1; 32], &ParsedUse::Verify).unwrap_err().check,
            "vm-policy:image"
        );
    }
}
