//! tvp evidence: the documented JSON wire format of a TPM-signed attestation, the
//! host event log (TCG Canonical Event Log, JSON encoding), and a verifier that needs
//! no TPM and no C library, so tenants' boot servers and `tvpctl` can use it anywhere.
//!
//! The formats are specified in `docs/evidence.md`; this crate is their one definition.
//!
//! - [`tpm`]: bounded parsers for the TPM 2.0 structures in a quote, TPM names.
//! - [`verify()`]: the verifier; each step is a named [`Check`].
//! - [`ima`]: the host's IMA measurement list, its PCR 10 replay and allowlist.
//! - [`replay`]: event log replay (also for computing expected PCR values).
//! - [`tpm2_tools`]: export evidence for an independent check with `tpm2_checkquote`.
//! - [`vtpm`]: a measured VM's own TPM: its certified identity and its quotes.

pub mod eventlog;
pub mod evidence;
pub mod hexbytes;
pub mod ima;
pub mod replay;
pub mod tpm;
pub mod tpm2_tools;
pub mod verify;
pub mod vtpm;

pub use eventlog::{CelDigest, CelRecord, EventContent, EventKind, EventLog};
pub use evidence::{Evidence, ExpectedPcrs, HexDigest, PcrBank, QuoteBlobs, EVIDENCE_VERSION};
pub use ima::{Allowlist, RuntimeIntegrity, RuntimeIntegrityReport};
pub use replay::{replay_sha256, ReplayError, ReplayedPcrs};
pub use verify::{verify, verify_json, AkKey, Check, VerifiedEvidence, VerifyError, VerifyOptions};
