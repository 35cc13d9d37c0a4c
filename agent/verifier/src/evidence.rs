//! The evidence document `tvpd` returns for a quote (format version 1). See
//! `docs/evidence.md`. JSON shape:
//!
//! ```json
//! { "version": 1, "host_id": "<hex>", "nonce": "<hex>",
//!   "quote": { "attest": "<base64 TPMS_ATTEST>", "signature": "<base64 TPMT_SIGNATURE>" },
//!   "pcrs": { "sha256": { "15": "<hex>", "16": "<hex>", "23": "<hex>" } },
//!   "ak_public_pem": "-----BEGIN PUBLIC KEY-----...", "ak_public": "<base64 TPM2B_PUBLIC>",
//!   "event_log": [ <CEL-JSON records> ],
//!   "ima_log": "<base64 binary_runtime_measurements>" }   // optional
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::eventlog::EventLog;

/// The evidence format version this crate writes and reads.
pub const EVIDENCE_VERSION: u32 = 1;

/// PCR values of one bank, by PCR index; each value lowercase hex on the wire.
pub type PcrBank = BTreeMap<u32, HexDigest>;

/// A digest carried as hex in JSON.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
pub struct HexDigest(
    #[serde(
        serialize_with = "crate::hexbytes::ser_hex",
        deserialize_with = "crate::hexbytes::de_hex"
    )]
    pub Vec<u8>,
);

/// The TPM's signed statement and its signature, as the TPM marshals them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuoteBlobs {
    /// Marshalled TPMS_ATTEST (the signed bytes), base64.
    #[serde(
        serialize_with = "crate::hexbytes::ser_b64",
        deserialize_with = "crate::hexbytes::de_b64"
    )]
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE, base64.
    #[serde(
        serialize_with = "crate::hexbytes::ser_b64",
        deserialize_with = "crate::hexbytes::de_b64"
    )]
    pub signature: Vec<u8>,
}

/// Evidence: a quote plus everything a verifier needs to judge it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Format version; [`EVIDENCE_VERSION`].
    pub version: u32,
    /// The host's identity: lowercase hex SHA-256 of the EK public key (DER SubjectPublicKeyInfo).
    pub host_id: String,
    /// The caller's nonce, used as the quote's qualifying data, hex.
    #[serde(
        serialize_with = "crate::hexbytes::ser_hex",
        deserialize_with = "crate::hexbytes::de_hex"
    )]
    pub nonce: Vec<u8>,
    /// The quote.
    pub quote: QuoteBlobs,
    /// Values of the quoted PCRs by bank name (`"sha256"`) and index.
    pub pcrs: BTreeMap<String, PcrBank>,
    /// The attestation key's public key, PEM SubjectPublicKeyInfo.
    pub ak_public_pem: String,
    /// The attestation key's marshalled TPM2B_PUBLIC, base64 (its name is computed from it).
    #[serde(
        serialize_with = "crate::hexbytes::ser_b64",
        deserialize_with = "crate::hexbytes::de_b64"
    )]
    pub ak_public: Vec<u8>,
    /// The host event log (CEL-JSON records) covering the quoted PCRs.
    pub event_log: EventLog,
    /// The host kernel's IMA measurement list (`binary_runtime_measurements`), base64,
    /// read after the quote; present when the host has IMA and PCR 10 is quoted.
    /// Replayed against PCR 10 and judged by the `ima` check ([`crate::ima`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::hexbytes::ser_opt_b64",
        deserialize_with = "crate::hexbytes::de_opt_b64"
    )]
    pub ima_log: Option<Vec<u8>>,
}

/// Expected PCR values (`tvpctl verify --expect FILE`): `{"pcrs": {"sha256": {"15": "<hex>"}}}`.
/// Only the listed PCRs are compared.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ExpectedPcrs {
    /// Expected values by bank name and PCR index.
    pub pcrs: BTreeMap<String, PcrBank>,
}
