//! PCR read, extend and reset on the SHA-256 bank.

use std::collections::BTreeMap;

use tss_esapi::abstraction::pcr;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Digest, DigestValues, PcrSelectionList, PcrSlot};

use super::error::{cmd, TpmError};
use super::Tpm;

/// PCRs a locality-0 caller can reset (PC Client profile): the only ones tvp may reset.
pub const RESETTABLE_PCRS: [u32; 2] = [16, 23];

/// Highest PCR index of a PC Client TPM.
pub const MAX_PCR: u32 = 23;

/// SHA-256 PCR values by index.
pub type PcrValues = BTreeMap<u32, [u8; 32]>;

/// A PCR selection on the SHA-256 bank.
pub fn sha256_selection(pcrs: &[u32]) -> Result<PcrSelectionList, TpmError> {
    let mut slots = Vec::with_capacity(pcrs.len());
    for &p in pcrs {
        slots.push(slot(p)?);
    }
    PcrSelectionList::builder()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(|e| TpmError::InvalidArgument(format!("PCR selection {pcrs:?}: {e}")))
}

fn slot(pcr: u32) -> Result<PcrSlot, TpmError> {
    if pcr > MAX_PCR {
        return Err(TpmError::InvalidArgument(format!(
            "PCR {pcr} does not exist (0..={MAX_PCR})"
        )));
    }
    PcrSlot::try_from(1u32 << pcr).map_err(|e| TpmError::InvalidArgument(format!("PCR {pcr}: {e}")))
}

fn handle(pcr: u32) -> Result<PcrHandle, TpmError> {
    if pcr > MAX_PCR {
        return Err(TpmError::InvalidArgument(format!(
            "PCR {pcr} does not exist (0..={MAX_PCR})"
        )));
    }
    PcrHandle::try_from(pcr).map_err(|e| TpmError::InvalidArgument(format!("PCR {pcr}: {e}")))
}

impl Tpm {
    /// Read SHA-256 PCR values (any number; read in as many rounds as the TPM needs).
    pub fn pcr_read(&mut self, pcrs: &[u32]) -> Result<PcrValues, TpmError> {
        let selection = sha256_selection(pcrs)?;
        let data = self
            .ctx()?
            .execute_without_session(|c| pcr::read_all(c, selection))
            .map_err(cmd("PCR_Read"))?;
        let bank = data
            .pcr_bank(HashingAlgorithm::Sha256)
            .ok_or_else(|| TpmError::Refused("the TPM has no SHA-256 PCR bank".into()))?;
        let mut out = PcrValues::new();
        for &p in pcrs {
            let d = bank
                .get_digest(slot(p)?)
                .ok_or_else(|| TpmError::Refused(format!("the TPM did not return PCR {p}")))?;
            let v: [u8; 32] = d.value().try_into().map_err(|_| TpmError::Encoding {
                what: "PCR value",
                reason: format!("PCR {p} is {} bytes, expected 32", d.value().len()),
            })?;
            out.insert(p, v);
        }
        Ok(out)
    }

    /// Extend `digest` into SHA-256 PCR `pcr`.
    pub fn pcr_extend(&mut self, pcr: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        let h = handle(pcr)?;
        let mut values = DigestValues::new();
        values.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(digest.to_vec()).map_err(cmd("PCR_Extend digest"))?,
        );
        self.ctx()?.pcr_extend(h, values).map_err(cmd("PCR_Extend"))
    }

    /// Reset a PCR. Only the locality-0 resettable PCRs 16 and 23 are allowed; any
    /// other is refused here, before the TPM is asked.
    pub fn pcr_reset(&mut self, pcr: u32) -> Result<(), TpmError> {
        if !RESETTABLE_PCRS.contains(&pcr) {
            return Err(TpmError::Refused(format!(
                "PCR {pcr} cannot be reset: only PCRs 16 and 23 are resettable at locality 0"
            )));
        }
        let h = handle(pcr)?;
        self.ctx()?.pcr_reset(h).map_err(cmd("PCR_Reset"))
    }
}
