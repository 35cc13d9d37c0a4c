//! The tenant policy, set at VM creation next to the tenant's management key:
//!
//! ```json
//! { "v": 1,
//!   "allowed_operations": ["pause", "resume", "power-off"],
//!   "reported_operations": ["*"],
//!   "management_key_lease_secs": 86400,
//!   "max_token_lifetime_secs": 3600,
//!   "key_lease_secs": 30,
//!   "allow_plaintext_images": false,
//!   "on_platform_change": "alert",
//!   "on_tampering": "power-off" }
//! ```

use serde::{Deserialize, Serialize};

use crate::encode::Encoder;
use crate::token::TenantKey;
use crate::Digest32;

/// Most entries of `reported_operations`.
pub const MAX_REPORTED: usize = 64;
/// Longest operation name in a policy.
pub const MAX_OP_NAME: usize = 64;

/// Operations that need the tenant's signed authorization (DESIGN.md, issue 6). Any
/// other name in `allowed_operations` is refused when the policy is loaded. There is
/// deliberately no operation that reads or dumps guest memory.
pub const RESTRICTED_OPERATIONS: &[&str] = &[
    "power-off",
    "reboot",
    "pause",
    "resume",
    "snapshot-create",
    "snapshot-revert",
    "snapshot-delete",
    "migrate",
    "device-add",
    "device-remove",
    "resize-vcpus",
    "resize-memory",
    "console-attach",
    "delete",
    "vtpm-clear",
    "vtpm-reset",
    "vtpm-export",
];

/// Operations on the management key itself, which only its holder can authorize and
/// which every policy permits (they are not listed in `allowed_operations`):
/// `rotate-key` (parameter `public_key`: the new key's DER SubjectPublicKeyInfo,
/// standard base64) hands management to a new key, and `renew-key-lease` starts the
/// current key's `management_key_lease_secs` anew. Both must be signed by the current
/// key while its lease runs.
pub const KEY_OPERATIONS: &[&str] = &["rotate-key", "renew-key-lease"];

/// Whether `op` is one of [`KEY_OPERATIONS`].
pub fn is_key_operation(op: &str) -> bool {
    KEY_OPERATIONS.contains(&op)
}

/// How far ahead a token's expiry may lie when the policy does not say
/// (`max_token_lifetime_secs`): one hour.
pub const DEFAULT_MAX_TOKEN_LIFETIME: u64 = 3600;
/// The largest `max_token_lifetime_secs` a policy may set: 30 days.
pub const MAX_TOKEN_LIFETIME_LIMIT: u64 = 30 * 86_400;

/// What tvpd does to the VM when it detects that the audit trail was tampered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Remediation {
    /// Power the VM off (its tenant would rather lose availability than run unwatched).
    PowerOff,
    /// Keep it running; raise an alert (log + audit record).
    Alert,
}

/// A tenant's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// Format version (1).
    pub v: u32,
    /// Restricted operations the tenant may authorize at all.
    pub allowed_operations: Vec<String>,
    /// Operations whose records the tenant's extract shows in full; `"*"` = all.
    pub reported_operations: Vec<String>,
    /// Seconds after VM creation during which the management key is honoured; `None`
    /// = for the VM's life.
    #[serde(default)]
    pub management_key_lease_secs: Option<u64>,
    /// How far ahead of now a token's `expires` may lie, in seconds (1 to 30 days;
    /// `None` = [`DEFAULT_MAX_TOKEN_LIFETIME`]). A token that would stay valid longer
    /// is refused, so a token that leaks cannot be used for long.
    #[serde(default)]
    pub max_token_lifetime_secs: Option<u64>,
    /// Seconds a workload image's key may stay in the VMM before the image is loaded
    /// (1..=3600; `None` = tvpd's default, 30).
    #[serde(default)]
    pub key_lease_secs: Option<u64>,
    /// Whether the tenant accepts an unencrypted workload image.
    #[serde(default)]
    pub allow_plaintext_images: bool,
    /// What tvpd does to the VM when a measured platform file changes while it runs
    /// (`None` = alert: the change is recorded in the VM's view and logged).
    #[serde(default)]
    pub on_platform_change: Option<Remediation>,
    /// Remediation on detected tampering.
    pub on_tampering: Remediation,
}

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON of the right shape.
    #[error("tenant policy is not valid: {0}")]
    Malformed(String),
    /// Unsupported version.
    #[error("tenant policy version {0} is not supported (use 1)")]
    Version(u32),
    /// An allowed operation that does not exist.
    #[error("tenant policy allows '{0}', which is not a restricted operation ({list})", list = RESTRICTED_OPERATIONS.join(", "))]
    UnknownOperation(String),
    /// A zero lease.
    #[error("management_key_lease_secs must be at least 1 (omit it for no lease limit), key_lease_secs 1 to 3600")]
    ZeroLease,
    /// `max_token_lifetime_secs` out of range.
    #[error("max_token_lifetime_secs must be 1 to {MAX_TOKEN_LIFETIME_LIMIT} (30 days); omit it for the default of {DEFAULT_MAX_TOKEN_LIFETIME}")]
    TokenLifetime,
    /// Too many or too long entries.
    #[error("tenant policy: {0}")]
    TooLarge(String),
}

impl Remediation {
    /// Stable name (as in the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Remediation::PowerOff => "power-off",
            Remediation::Alert => "alert",
        }
    }
}

impl TenantPolicy {
    /// Parse and validate JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        let p: TenantPolicy =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Malformed(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Check version, operation names and lease.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.v != 1 {
            return Err(PolicyError::Version(self.v));
        }
        if let Some(bad) = self
            .allowed_operations
            .iter()
            .find(|o| !RESTRICTED_OPERATIONS.contains(&o.as_str()))
        {
            return Err(PolicyError::UnknownOperation(bad.clone()));
        }
        if self.management_key_lease_secs == Some(0)
            || self
                .key_lease_secs
                .is_some_and(|l| !(1..=3600).contains(&l))
        {
            return Err(PolicyError::ZeroLease);
        }
        if self
            .max_token_lifetime_secs
            .is_some_and(|l| !(1..=MAX_TOKEN_LIFETIME_LIMIT).contains(&l))
        {
            return Err(PolicyError::TokenLifetime);
        }
        if self.allowed_operations.len() > RESTRICTED_OPERATIONS.len() {
            return Err(PolicyError::TooLarge(format!(
                "allowed_operations has {} entries; list each restricted operation at most once",
                self.allowed_operations.len()
            )));
        }
        if self.reported_operations.len() > MAX_REPORTED
            || self
                .reported_operations
                .iter()
                .any(|o| o.is_empty() || o.len() > MAX_OP_NAME)
        {
            return Err(PolicyError::TooLarge(format!(
                "reported_operations: at most {MAX_REPORTED} names of 1 to {MAX_OP_NAME} bytes"
            )));
        }
        Ok(())
    }

    /// The canonical encoding (`docs/audit.md` §6): lists in the given order.
    pub fn encode_into(&self, e: &mut Encoder) {
        e.u32(self.v);
        e.u32(self.allowed_operations.len() as u32);
        for o in &self.allowed_operations {
            e.str(o);
        }
        e.u32(self.reported_operations.len() as u32);
        for o in &self.reported_operations {
            e.str(o);
        }
        e.opt_u64(self.management_key_lease_secs)
            .str(self.on_tampering.as_str())
            .opt_u64(self.key_lease_secs)
            .u8(u8::from(self.allow_plaintext_images))
            .opt_str(self.on_platform_change.map(Remediation::as_str));
        // Only when set, as `1 || u64`: a policy without it keeps the digest it had
        // before the field existed (boot servers and expected PCR 23 values stay
        // valid), and the encoding stays unambiguous (it ends the digested bytes).
        if let Some(l) = self.max_token_lifetime_secs {
            e.u8(1).u64(l);
        }
    }

    /// The longest a token may stay valid from now (seconds).
    pub fn max_token_lifetime(&self) -> u64 {
        self.max_token_lifetime_secs
            .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME)
    }

    /// Whether the tenant may authorize `op`.
    pub fn allows(&self, op: &str) -> bool {
        self.allowed_operations.iter().any(|o| o == op)
    }

    /// Whether `op`'s records appear in full in the tenant's extract.
    pub fn reports(&self, op: &str) -> bool {
        self.reported_operations.iter().any(|o| o == "*" || o == op)
    }

    /// When the key lease ends for a key registered at `key_since` (Unix seconds).
    pub fn lease_end(&self, key_since: u64) -> Option<u64> {
        self.management_key_lease_secs
            .map(|l| key_since.saturating_add(l))
    }
}

/// The digest of a VM's management binding, which tvpd extends into PCR 23 after the
/// VMM's measurements (`docs/pcr-plan.md`): SHA-256 over `tvp-management-v1\0`, the
/// key's DER SubjectPublicKeyInfo (length-prefixed) and the policy's canonical
/// encoding ([`TenantPolicy::encode_into`]). A tenant computes it from the key and
/// policy it gave (`tvpctl expected-pcrs --management-key --policy`).
pub fn management_digest(key: &TenantKey, policy: &TenantPolicy) -> Digest32 {
    let mut e = Encoder::new("tvp-management-v1");
    e.bytes(&key.spki_der());
    policy.encode_into(&mut e);
    e.sha256()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let p = TenantPolicy::from_json(
            br#"{"v":1,"allowed_operations":["pause"],"reported_operations":["*"],"management_key_lease_secs":10,"on_tampering":"power-off"}"#,
        )
        .unwrap();
        assert!(p.allows("pause") && !p.allows("delete"));
        assert!(p.reports("anything"));
        assert_eq!(p.on_tampering, Remediation::PowerOff);
        assert_eq!(p.lease_end(5), Some(15));
        let e = TenantPolicy::from_json(
            br#"{"v":1,"allowed_operations":["memory-dump"],"reported_operations":[],"on_tampering":"alert"}"#,
        )
        .unwrap_err();
        assert_eq!(e, PolicyError::UnknownOperation("memory-dump".into()));
        assert!(matches!(
            TenantPolicy::from_json(br#"{"v":1}"#),
            Err(PolicyError::Malformed(_))
        ));
        let many = format!(
            r#"{{"v":1,"allowed_operations":[],"reported_operations":[{}],"on_tampering":"alert"}}"#,
            vec!["\"x\""; MAX_REPORTED + 1].join(",")
        );
        assert!(matches!(
            TenantPolicy::from_json(many.as_bytes()),
            Err(PolicyError::TooLarge(_))
        ));
    }

    #[test]
    fn management_digest_binds_key_and_every_policy_field() {
        let key =
            crate::token::TenantSigner::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[7; 32]))
                .public();
        let other =
            crate::token::TenantSigner::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[8; 32]))
                .public();
        let p = TenantPolicy {
            v: 1,
            allowed_operations: vec!["pause".into()],
            reported_operations: vec!["*".into()],
            management_key_lease_secs: None,
            max_token_lifetime_secs: None,
            key_lease_secs: None,
            allow_plaintext_images: false,
            on_platform_change: None,
            on_tampering: Remediation::Alert,
        };
        let d = management_digest(&key, &p);
        assert_ne!(d, management_digest(&other, &p));
        let variants = [
            TenantPolicy {
                allowed_operations: vec!["resume".into()],
                ..p.clone()
            },
            TenantPolicy {
                reported_operations: vec![],
                ..p.clone()
            },
            TenantPolicy {
                management_key_lease_secs: Some(1),
                ..p.clone()
            },
            TenantPolicy {
                key_lease_secs: Some(1),
                ..p.clone()
            },
            TenantPolicy {
                max_token_lifetime_secs: Some(60),
                ..p.clone()
            },
            TenantPolicy {
                allow_plaintext_images: true,
                ..p.clone()
            },
            TenantPolicy {
                on_platform_change: Some(Remediation::Alert),
                ..p.clone()
            },
            TenantPolicy {
                on_tampering: Remediation::PowerOff,
                ..p.clone()
            },
        ];
        for v in variants {
            assert_ne!(d, management_digest(&key, &v), "{v:?}");
        }
    }
}
