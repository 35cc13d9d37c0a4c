//! PCR checks: the quoted selection against the reported values, the quoted digest,
//! and the caller's expected values.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::error::VerifyError;
use crate::evidence::{ExpectedPcrs, PcrBank};
use crate::tpm::alg::{hash_name, ALG_SHA256};
use crate::tpm::QuoteInfo;

/// The only bank this verifier checks.
pub const SHA256_BANK: &str = "sha256";

/// SHA-256 PCR values by index.
pub type Sha256Pcrs = BTreeMap<u32, [u8; 32]>;

/// The reported SHA-256 bank as fixed-size values; other banks are refused because
/// the quote could not vouch for them.
pub fn reported_sha256(pcrs: &BTreeMap<String, PcrBank>) -> Result<Sha256Pcrs, VerifyError> {
    let mut out = Sha256Pcrs::new();
    for (bank, values) in pcrs {
        if bank != SHA256_BANK {
            if values.is_empty() {
                continue;
            }
            return Err(VerifyError::PcrSelection(format!(
                "evidence reports PCRs of bank {bank:?}; only sha256 is supported"
            )));
        }
        for (&pcr, value) in values {
            let v = <[u8; 32]>::try_from(value.0.as_slice()).map_err(|_| {
                VerifyError::Format(format!(
                    "sha256 PCR {pcr} value has {} bytes, not 32",
                    value.0.len()
                ))
            })?;
            out.insert(pcr, v);
        }
    }
    Ok(out)
}

fn list(set: &BTreeSet<u32>) -> String {
    let v: Vec<String> = set.iter().map(|p| p.to_string()).collect();
    format!("[{}]", v.join(","))
}

/// The quote must select exactly the reported PCRs, in the SHA-256 bank only.
pub fn check_selection(quote: &QuoteInfo, reported: &Sha256Pcrs) -> Result<(), VerifyError> {
    let mut sha256: Option<BTreeSet<u32>> = None;
    for sel in &quote.selections {
        let pcrs = sel.pcrs();
        if sel.hash != ALG_SHA256 {
            if pcrs.is_empty() {
                continue;
            }
            let bank = hash_name(sel.hash)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{:#06x}", sel.hash));
            return Err(VerifyError::PcrSelection(format!(
                "quote selects PCRs {} of bank {bank}; only sha256 is supported",
                list(&pcrs)
            )));
        }
        if sha256.replace(pcrs).is_some() {
            return Err(VerifyError::PcrSelection(
                "quote selects the sha256 bank more than once".into(),
            ));
        }
    }
    let quoted = sha256.unwrap_or_default();
    if quoted.is_empty() {
        return Err(VerifyError::PcrSelection("quote selects no PCRs".into()));
    }
    let reported_set: BTreeSet<u32> = reported.keys().copied().collect();
    if quoted != reported_set {
        return Err(VerifyError::PcrSelection(format!(
            "quote selects sha256 PCRs {} but the evidence reports {}",
            list(&quoted),
            list(&reported_set)
        )));
    }
    Ok(())
}

/// SHA-256 of the values concatenated in ascending PCR order (the TPM's order).
pub fn pcr_composite_digest(pcrs: &Sha256Pcrs) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in pcrs.values() {
        h.update(v);
    }
    h.finalize().into()
}

/// The quote's pcrDigest must equal the digest of the reported values.
pub fn check_digest(quote: &QuoteInfo, reported: &Sha256Pcrs) -> Result<(), VerifyError> {
    let computed = pcr_composite_digest(reported);
    if quote.pcr_digest.as_slice() != computed.as_slice() {
        return Err(VerifyError::PcrDigest {
            quoted: hex::encode(&quote.pcr_digest),
            computed: hex::encode(computed),
        });
    }
    Ok(())
}

/// Every listed expected PCR must be quoted and equal.
pub fn check_expected(expected: &ExpectedPcrs, quoted: &Sha256Pcrs) -> Result<(), VerifyError> {
    for (bank, values) in &expected.pcrs {
        for (&pcr, want) in values {
            let have = if bank == SHA256_BANK {
                quoted.get(&pcr)
            } else {
                None
            };
            let Some(have) = have else {
                return Err(VerifyError::ExpectedPcrMissing {
                    bank: bank.clone(),
                    pcr,
                });
            };
            if have.as_slice() != want.0.as_slice() {
                return Err(VerifyError::ExpectedPcrMismatch {
                    bank: bank.clone(),
                    pcr,
                    expected: hex::encode(&want.0),
                    actual: hex::encode(have),
                });
            }
        }
    }
    Ok(())
}
