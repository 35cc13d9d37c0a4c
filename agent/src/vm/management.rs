//! A measured VM's management binding: the tenant's management public key (Ed25519 or
//! ECDSA P-256) and policy, given at creation, validated here, measured into PCR 23
//! after the VMM's events (`docs/pcr-plan.md`), registered with the authorization gate
//! and persisted with the VM's record so a restarted tvpd keeps honouring them.

use serde::{Deserialize, Serialize};
use tvp_audit::policy::{management_digest, TenantPolicy};
use tvp_audit::TenantKey;

use crate::audit::TenantBinding;

/// Largest accepted management key PEM.
pub const MAX_KEY_PEM: usize = 4096;

/// The binding as the API shows it and the VM record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementView {
    /// The tenant's management public key, PEM SubjectPublicKeyInfo.
    pub public_key_pem: String,
    /// SHA-256 of its DER SubjectPublicKeyInfo, hex (the tokens' `key_id`).
    pub key_id: String,
    /// The tenant's policy.
    pub policy: TenantPolicy,
    /// When the key was registered (Unix seconds): the start of its lease.
    pub key_since: u64,
    /// `tvp_audit::policy::management_digest`, hex: the seventh PCR 23 event (after the six of tvp-vmm).
    pub digest: String,
    /// The key that manages the VM now, if the tenant rotated the key or renewed its
    /// lease since creation (`rotate-key`, `renew-key-lease`); the measured key and
    /// digest above stay as they were measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<CurrentKey>,
}

/// The management key in force after a rotation or renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentKey {
    /// PEM SubjectPublicKeyInfo.
    pub public_key_pem: String,
    /// SHA-256 of its DER SubjectPublicKeyInfo, hex.
    pub key_id: String,
    /// When it took over or its lease was renewed (Unix seconds): its lease start.
    pub key_since: u64,
}

impl ManagementView {
    /// Validate the create request's `management_public_key` and `policy`; errors
    /// name the field.
    pub fn from_request(
        key_pem: &str,
        policy: &serde_json::Value,
        now_unix: u64,
    ) -> Result<Self, String> {
        if key_pem.len() > MAX_KEY_PEM {
            return Err(format!(
                "management_public_key: {} bytes; at most {MAX_KEY_PEM}",
                key_pem.len()
            ));
        }
        let key = TenantKey::from_pem(key_pem)
            .map_err(|_| "management_public_key: not an Ed25519 or P-256 PEM public key (-----BEGIN PUBLIC KEY-----)".to_string())?;
        let policy: TenantPolicy = serde_json::from_value(policy.clone())
            .map_err(|e| format!("policy: {e} (docs/audit.md §6)"))?;
        policy.validate().map_err(|e| format!("policy: {e}"))?;
        Ok(ManagementView {
            public_key_pem: key.to_pem(),
            key_id: key.key_id(),
            digest: hex::encode(management_digest(&key, &policy)),
            policy,
            key_since: now_unix,
            current: None,
        })
    }

    /// The digest extended into PCR 23.
    pub fn digest_bytes(&self) -> Result<[u8; 32], String> {
        tvp_audit::digest_from_hex(&self.digest)
            .ok_or_else(|| format!("management digest '{}' is not a SHA-256", self.digest))
    }

    /// What the authorization gate needs (checked again, as records are files).
    pub fn binding(&self) -> Result<TenantBinding, String> {
        let key = TenantKey::from_pem(&self.public_key_pem).map_err(|e| e.to_string())?;
        self.policy.validate().map_err(|e| e.to_string())?;
        if hex::encode(management_digest(&key, &self.policy)) != self.digest {
            return Err("the recorded management digest does not match key and policy".into());
        }
        let (key, key_since) = match &self.current {
            None => (key, self.key_since),
            Some(c) => {
                let k = TenantKey::from_pem(&c.public_key_pem).map_err(|e| e.to_string())?;
                if k.key_id() != c.key_id {
                    return Err("the recorded current management key does not match its id".into());
                }
                (k, c.key_since)
            }
        };
        Ok(TenantBinding {
            key,
            policy: self.policy.clone(),
            key_since,
            incarnation: None,
        })
    }

    /// Hand management to `key` (a rotation, or the same key for a lease renewal)
    /// with its lease starting at `since`; the measured key and digest stay.
    pub fn set_current(&mut self, key: &TenantKey, since: u64) {
        self.current = Some(CurrentKey {
            public_key_pem: key.to_pem(),
            key_id: key.key_id(),
            key_since: since,
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tvp_audit::token::TenantSigner;

    /// A policy allowing pause, resume, power-off, reboot and delete.
    pub(crate) fn policy_json() -> serde_json::Value {
        serde_json::json!({"v": 1,
            "allowed_operations": ["pause", "resume", "power-off", "reboot", "delete"],
            "reported_operations": ["*"], "on_tampering": "power-off"})
    }

    #[test]
    fn valid_binding_round_trips_and_bad_fields_are_named() {
        let key = TenantSigner::generate_p256().public().to_pem();
        let m = ManagementView::from_request(&key, &policy_json(), 5).unwrap();
        let b = m.binding().unwrap();
        assert_eq!(b.key.key_id(), m.key_id);
        assert_eq!(b.key_since, 5);
        let e = ManagementView::from_request("junk", &policy_json(), 5).unwrap_err();
        assert!(e.starts_with("management_public_key:"), "{e}");
        let bad = serde_json::json!({"v": 1, "allowed_operations": ["memory-dump"],
            "reported_operations": [], "on_tampering": "alert"});
        let e = ManagementView::from_request(&key, &bad, 5).unwrap_err();
        assert!(e.starts_with("policy:") && e.contains("memory-dump"), "{e}");
        let next = TenantSigner::generate_ed25519().public();
        let mut rotated = m.clone();
        rotated.set_current(&next, 9);
        let b = rotated.binding().unwrap();
        assert_eq!((b.key.key_id(), b.key_since), (next.key_id(), 9));
        assert_eq!(rotated.digest, m.digest, "the measured binding stays");
        let mut forged = m.clone();
        forged.policy.allowed_operations.push("migrate".into());
        assert!(
            forged.binding().is_err(),
            "a record edited on disk is refused"
        );
    }
}
