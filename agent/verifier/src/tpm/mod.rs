//! Bounded, validated, panic-free parsers for the TPM 2.0 wire structures in a quote:
//! TPMS_ATTEST, TPMT_SIGNATURE and TPM2B_PUBLIC (all big-endian), plus the TPM name
//! computations. All input is treated as hostile.

pub mod alg;
pub mod attest;
pub mod public;
pub mod reader;
pub mod signature;

#[cfg(test)]
pub(crate) mod fixture;

pub use attest::{Attest, ClockInfo, PcrSelection, QuoteInfo};
pub use public::{hierarchy_qualified_name, qualified_name, Public, PublicKey, Scheme, SymDef};
pub use reader::ParseError;
pub use signature::Signature;
