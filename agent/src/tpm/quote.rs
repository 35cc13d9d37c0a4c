//! Quotes with read-quote-compare: the PCR values returned with a quote always match
//! the digest the TPM signed, even if an extend races in between.
//!
//! The values of the last quote are kept: when the next quote's signed digest is the
//! SHA-256 of those same values (same PCRs, nothing extended since), they are the
//! values the TPM signed (a different set would be a SHA-256 collision), and the PCR
//! read is skipped. Any other digest falls back to reading the PCRs and comparing.

use sha2::{Digest as _, Sha256};
use tss_esapi::structures::{AttestInfo, Data};
use tss_esapi::traits::Marshall;

use super::error::{cmd, TpmError};
use super::pcr::{sha256_selection, PcrValues};
use super::Tpm;

/// Largest qualifying data (nonce) accepted, for the API and for the guest mailbox
/// alike (one definition, in the ABI shared with the firmware).
pub const MAX_NONCE: usize = tvp_abi::mailbox::NONCE_MAX;

/// How often a quote is retried when the PCRs change under it.
const ATTEMPTS: u32 = 5;

/// A quote and the PCR values that match its digest.
#[derive(Debug, Clone)]
pub struct QuoteResult {
    /// Marshalled TPMS_ATTEST.
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// SHA-256 values of the quoted PCRs.
    pub pcrs: PcrValues,
}

/// Check a nonce's length before it reaches the TPM.
pub fn check_nonce(nonce: &[u8]) -> Result<(), TpmError> {
    if nonce.is_empty() {
        return Err(TpmError::InvalidArgument(
            "nonce is empty: send 1 to 32 fresh random bytes".into(),
        ));
    }
    if nonce.len() > MAX_NONCE {
        return Err(TpmError::InvalidArgument(format!(
            "nonce is {} bytes; at most {MAX_NONCE} are allowed",
            nonce.len()
        )));
    }
    Ok(())
}

/// TPM2_Quote's pcrDigest over `values` (SHA-256 of the concatenated values, in
/// PCR order).
fn digest(values: &PcrValues) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values.values() {
        h.update(v);
    }
    h.finalize().into()
}

impl Tpm {
    /// Quote the SHA-256 values of `pcrs` with `nonce` as qualifying data, signed by the AK
    /// with its own scheme (RSASSA or ECDSA, SHA-256).
    pub fn quote(&mut self, nonce: &[u8], pcrs: &[u32]) -> Result<QuoteResult, TpmError> {
        check_nonce(nonce)?;
        if pcrs.is_empty() {
            return Err(TpmError::InvalidArgument(
                "no PCRs selected for the quote".into(),
            ));
        }
        let mut sorted: Vec<u32> = pcrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for _ in 0..ATTEMPTS {
            let selection = sha256_selection(&sorted)?;
            let data = Data::try_from(nonce.to_vec()).map_err(cmd("Quote qualifying data"))?;
            let ak = self.ak;
            let scheme = self.identity.ak_scheme.esapi();
            let (attest, signature) = self
                .ctx()?
                .quote(ak, data, scheme, selection)
                .map_err(cmd("Quote"))?;
            let AttestInfo::Quote { info } = attest.attested() else {
                return Err(TpmError::Encoding {
                    what: "quote",
                    reason: "the TPM returned a non-quote attestation".into(),
                });
            };
            let signed_digest = info.pcr_digest().value().to_vec();
            let cached = self.last_quoted.take().filter(|v| {
                v.keys().copied().eq(sorted.iter().copied())
                    && digest(v).as_slice() == signed_digest.as_slice()
            });
            let values = match cached {
                Some(v) => v,
                None => self.pcr_read(&sorted)?,
            };
            if digest(&values).as_slice() == signed_digest.as_slice() {
                self.last_quoted = Some(values.clone());
                let enc = |what: &'static str| {
                    move |e: tss_esapi::Error| TpmError::Encoding {
                        what,
                        reason: e.to_string(),
                    }
                };
                return Ok(QuoteResult {
                    attest: attest.marshall().map_err(enc("TPMS_ATTEST"))?,
                    signature: signature.marshall().map_err(enc("TPMT_SIGNATURE"))?,
                    pcrs: values,
                });
            }
            log::debug!("PCRs changed during quote; retrying");
        }
        Err(TpmError::QuoteRace { attempts: ATTEMPTS })
    }
}
