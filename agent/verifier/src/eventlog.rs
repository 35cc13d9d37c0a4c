//! The host event log: every extend `tvpd` performs, as TCG Canonical Event Log (CEL)
//! records in the CEL-JSON encoding (`recnum`, `pcr`, `digests`, `content_type`,
//! `content`). Our records use the vendor content type `"tvp"` (as systemd uses
//! `"systemd"`), whose content is [`EventContent`]. A generic CEL-JSON reader can replay
//! the log from the digests alone.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// CEL `content_type` of the records `tvpd` writes.
pub const TVP_CONTENT_TYPE: &str = "tvp";

/// One CEL-JSON record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CelRecord {
    /// Record number, 0-based, strictly increasing by one within a log.
    pub recnum: u64,
    /// The PCR this record was extended into.
    pub pcr: u32,
    /// One digest per bank extended (tvp extends the SHA-256 bank).
    pub digests: Vec<CelDigest>,
    /// `"tvp"` for records written by tvp.
    pub content_type: String,
    /// What was measured.
    pub content: EventContent,
}

/// A digest of one bank, as CEL-JSON writes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CelDigest {
    /// TCG algorithm name in lowercase, e.g. `"sha256"`.
    #[serde(rename = "hashAlg")]
    pub hash_alg: String,
    /// The digest extended, lowercase hex.
    #[serde(
        serialize_with = "crate::hexbytes::ser_hex",
        deserialize_with = "crate::hexbytes::de_hex"
    )]
    pub digest: Vec<u8>,
}

/// What kind of thing a record measured.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A platform binary or file (`tvpd`, `tvp-vmm`, firmware image): digest = SHA-256 of the file.
    PlatformArtefact,
    /// `tvpd`'s effective configuration: digest = SHA-256 of its canonical JSON.
    PlatformConfig,
    /// A marker separating one `tvpd` start from the next within one TPM boot cycle.
    PlatformStart,
    /// A measured VM's PCR 23 event (firmware, configuration page, boot region, vCPU
    /// state; docs/pcr-plan.md), extended at the start of its lease.
    VmMeasurement,
    /// A measured VM's TLS tunnel measurement, extended into PCR 16.
    TunnelMeasurement,
}

/// The `content` of a `"tvp"` record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventContent {
    /// What kind of thing was measured.
    pub event_type: EventKind,
    /// A human-readable name, e.g. `"tvpd"` or the file's path.
    pub description: String,
}

/// A whole log: records in order.
pub type EventLog = Vec<CelRecord>;

impl CelRecord {
    /// A `"tvp"` record with one SHA-256 digest.
    pub fn tvp(
        recnum: u64,
        pcr: u32,
        digest: [u8; 32],
        event_type: EventKind,
        description: String,
    ) -> Self {
        CelRecord {
            recnum,
            pcr,
            digests: vec![CelDigest {
                hash_alg: "sha256".into(),
                digest: digest.to_vec(),
            }],
            content_type: TVP_CONTENT_TYPE.into(),
            content: EventContent {
                event_type,
                description,
            },
        }
    }

    /// The SHA-256 digest of this record, if it has one of 32 bytes.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.digests
            .iter()
            .find(|d| d.hash_alg == "sha256")
            .and_then(|d| <[u8; 32]>::try_from(d.digest.as_slice()).ok())
    }
}

/// `new = SHA-256(old || digest)`: what TPM2_PCR_Extend does to a SHA-256 PCR.
pub fn extend_sha256(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}
