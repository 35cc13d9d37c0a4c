//! tvp's management audit and authorization formats, shared by `tvpd` (which writes
//! and enforces them) and `tvpctl` (which produces tokens and verifies trails).
//!
//! Pure Rust, no I/O: [`record`] is the audit record and its hash, [`chain`] verifies a
//! log and names the first bad record, [`extract`] is a tenant's filtered view with
//! what proves inclusion, order and completeness, [`anchor`] is the TPM NV anchor
//! (fold and NV_Certify parsing), [`params`] digests an operation's parameters,
//! [`token`] is the tenant-signed authorization, [`keys`] the tenant's keys and
//! [`policy`] the tenant policy;
//! [`checkpoint`] is where a tenant's last extract verification ended.
//! The formats are specified in `docs/audit.md`.

pub mod anchor;
pub mod chain;
pub mod checkpoint;
pub mod encode;
pub mod extract;
pub mod keys;
pub mod params;
pub mod policy;
pub mod record;
pub mod token;

pub use chain::{verify_chain, ChainError, ChainSummary};
pub use extract::{Extract, ExtractEntry};
pub use policy::{Remediation, TenantPolicy};
pub use record::{AuditRecord, Decision, Stage};
pub use token::{AuthToken, AuthzError, TenantKey};

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// Decode a SHA-256 digest in its one canonical form: 64 lowercase hex digits (what
/// `hex::encode` writes). Uppercase is refused: a hashed or signed document would
/// otherwise have several spellings of the same digest, and a record that verifies
/// would not be byte-for-byte the record that was written.
pub fn digest_from_hex(s: &str) -> Option<Digest32> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing found (audit_log): a record whose `prev` had one uppercase hex digit
    /// verified, so the accepted log differed from the written one.
    #[test]
    fn digests_have_one_spelling() {
        let lower = "75c3ba22070c157eff54971ea3b87537fa451dbd58f0f527beb6534f10bdad19";
        assert!(digest_from_hex(lower).is_some());
        assert_eq!(digest_from_hex(&lower.replace('e', "E")), None);
        assert_eq!(digest_from_hex(&lower[..62]), None);
        assert_eq!(digest_from_hex(&format!("{lower}00")), None);
        assert_eq!(digest_from_hex(&format!(" {}", &lower[1..])), None);
    }
}
