//! The tenant policy, set at VM creation next to the tenant's management key:
//!
//! ```json
//! { "v": 1,
//!   "allowed_operations": ["pause", "resume", "power-off"],
//!   "reported_operations": ["*"],
//!   "key_lease_secs": 86400,
//!   "on_tampering": "power-off" }
//! ```

use serde::{Deserialize, Serialize};

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
];

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
    pub key_lease_secs: Option<u64>,
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
    #[error("key_lease_secs must be at least 1 (omit it for no lease limit)")]
    ZeroLease,
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
        if self.key_lease_secs == Some(0) {
            return Err(PolicyError::ZeroLease);
        }
        Ok(())
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
        self.key_lease_secs.map(|l| key_since.saturating_add(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let p = TenantPolicy::from_json(
            br#"{"v":1,"allowed_operations":["pause"],"reported_operations":["*"],"key_lease_secs":10,"on_tampering":"power-off"}"#,
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
    }
}
