//! Wire format: one JSON object per line over a Unix socket; one request and one
//! response per connection.

use serde::{Deserialize, Serialize};

use crate::key_use::KeyUse;

/// Largest request line accepted.
pub const MAX_REQUEST: usize = 256 * 1024;

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// A fresh single-use nonce.
    Nonce,
    /// Release an image key to a host.
    Release {
        /// The nonce this service issued.
        nonce: String,
        /// The host's id.
        host_id: String,
        /// What the key will be used for: the VM that receives it (or verification
        /// inside tvpd). The evidence's quote commits to it (`vm-binding`).
        key_use: Box<KeyUse>,
        /// Evidence over the platform PCRs whose quote's qualifying data is
        /// `SHA-256(nonce || key_use digest)` (docs/evidence.md, docs/kms.md). Carried as
        /// raw JSON and parsed as [`tvp_verifier::Evidence`] by the service, because
        /// serde's internally tagged enums cannot parse its integer-keyed maps.
        evidence: serde_json::Value,
        /// Marshalled TPM2B_PUBLIC of the host's binding key, base64.
        binding_public: String,
        /// TPM2_Certify of the binding key by the AK with `nonce`, base64 TPMS_ATTEST.
        binding_certify_attest: String,
        /// Its signature, base64 TPMT_SIGNATURE.
        binding_certify_signature: String,
        /// The encrypted image's header bytes, base64.
        image_header: String,
    },
}

/// A response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Response {
    /// A nonce, hex.
    Nonce {
        /// The nonce.
        nonce: String,
    },
    /// The image key wrapped (RSA-OAEP-SHA-256) to the host's binding key, base64.
    Released {
        /// Wrapped key.
        wrapped_key: String,
    },
    /// Refused, with the check that failed and why.
    Refused {
        /// Stable name of the failed check.
        check: String,
        /// Why.
        reason: String,
    },
}
