//! tvp's management audit and authorization formats, shared by `tvpd` (which writes
//! and enforces them) and `tvpctl` (which produces tokens and verifies trails).
//!
//! Pure Rust, no I/O: [`record`] is the audit record and its hash, [`chain`] verifies a
//! log and names the first bad record, [`extract`] is a tenant's filtered view with
//! what proves inclusion, order and completeness, [`anchor`] is the TPM NV anchor
//! (fold and NV_Certify parsing), [`params`] digests an operation's parameters,
//! [`token`] is the tenant-signed authorization and [`policy`] the tenant policy.
//! The formats are specified in `docs/audit.md`.

pub mod anchor;
pub mod chain;
pub mod encode;
pub mod extract;
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

/// Decode a lowercase/uppercase hex SHA-256 digest.
pub fn digest_from_hex(s: &str) -> Option<Digest32> {
    hex::decode(s).ok()?.try_into().ok()
}
