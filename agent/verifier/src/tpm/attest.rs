//! TPMS_ATTEST (the bytes a TPM signs in a quote) and the TPML_PCR_SELECTION in it.

use std::collections::BTreeSet;

use super::alg::{ST_ATTEST_QUOTE, TPM_GENERATED_VALUE};
use super::reader::{ParseError, Reader, Writer};

/// Largest TPM2B_NAME payload (a hash algorithm id plus a SHA-512 digest, or a handle).
pub const MAX_NAME: usize = 2 + 64;
/// Largest TPM2B_DATA / TPM2B_DIGEST payload accepted (SHA-512 size).
pub const MAX_DIGEST: usize = 64;
/// Largest `sizeofSelect` (TPM2_PCR_SELECT_MAX in the TSS: 32 PCRs).
pub const MAX_PCR_SELECT: usize = 4;
/// Most selections in a TPML_PCR_SELECTION (TPM2_NUM_PCR_BANKS in the TSS).
pub const MAX_PCR_BANKS: usize = 16;

/// TPMS_CLOCK_INFO: the TPM's clock at signing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since its last clear.
    pub clock: u64,
    /// Number of TPM resets (reboots) since the last clear.
    pub reset_count: u32,
    /// Number of TPM restarts/resumes since the last reset.
    pub restart_count: u32,
    /// Whether `clock` is known not to have gone backwards.
    pub safe: bool,
}

/// One TPMS_PCR_SELECTION: a hash bank and a bitmap of PCRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash algorithm (TPM_ALG_ID).
    pub hash: u16,
    /// The `pcrSelect` bitmap: bit `j` of byte `i` selects PCR `8*i + j`.
    pub bitmap: Vec<u8>,
}

impl PcrSelection {
    /// A selection of `pcrs` in bank `hash`, with the minimal standard 3-byte bitmap
    /// (grown if a PCR above 23 is selected).
    pub fn new(hash: u16, pcrs: &BTreeSet<u32>) -> Self {
        let max = pcrs.iter().next_back().copied().unwrap_or(0);
        let len = ((max / 8 + 1) as usize).max(3);
        let mut bitmap = vec![0u8; len];
        for &p in pcrs {
            if let Some(b) = bitmap.get_mut((p / 8) as usize) {
                *b |= 1 << (p % 8);
            }
        }
        PcrSelection { hash, bitmap }
    }

    /// The selected PCR indices, ascending.
    pub fn pcrs(&self) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for (i, byte) in self.bitmap.iter().enumerate() {
            for bit in 0..8u32 {
                if byte & (1 << bit) != 0 {
                    out.insert(i as u32 * 8 + bit);
                }
            }
        }
        out
    }
}

/// TPMS_QUOTE_INFO: which PCRs were quoted and the digest of their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    /// TPML_PCR_SELECTION.
    pub selections: Vec<PcrSelection>,
    /// Hash of the selected PCR values, concatenated in selection order.
    pub pcr_digest: Vec<u8>,
}

/// A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// Qualified name of the signing key (TPM2B_NAME payload).
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (the nonce), TPM2B_DATA payload.
    pub extra_data: Vec<u8>,
    /// TPMS_CLOCK_INFO.
    pub clock_info: ClockInfo,
    /// Vendor-specific firmware version.
    pub firmware_version: u64,
    /// The quote body.
    pub quote: QuoteInfo,
}

/// The fields every TPMS_ATTEST starts with: magic, type (must be `want`),
/// qualifiedSigner, extraData, clockInfo, firmwareVersion.
pub(crate) fn parse_header(
    r: &mut Reader<'_>,
    want: u16,
    want_name: &'static str,
) -> Result<(Vec<u8>, Vec<u8>, ClockInfo, u64), ParseError> {
    let magic = r.u32("magic")?;
    if magic != TPM_GENERATED_VALUE {
        return Err(ParseError::invalid(
            "magic",
            format!("{magic:#010x} is not TPM_GENERATED_VALUE"),
        ));
    }
    let ty = r.u16("type")?;
    if ty != want {
        return Err(ParseError::invalid(
            "type",
            format!("{ty:#06x} is not {want_name}"),
        ));
    }
    let qualified_signer = r.tpm2b(MAX_NAME, "qualifiedSigner")?.to_vec();
    let extra_data = r.tpm2b(MAX_DIGEST, "extraData")?.to_vec();
    let clock_info = ClockInfo {
        clock: r.u64("clockInfo.clock")?,
        reset_count: r.u32("clockInfo.resetCount")?,
        restart_count: r.u32("clockInfo.restartCount")?,
        safe: match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            v => return Err(ParseError::invalid("clockInfo.safe", format!("{v}"))),
        },
    };
    let firmware_version = r.u64("firmwareVersion")?;
    Ok((qualified_signer, extra_data, clock_info, firmware_version))
}

impl Attest {
    /// Parse a marshalled TPMS_ATTEST that must be a quote; trailing bytes are rejected.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let (qualified_signer, extra_data, clock_info, firmware_version) =
            parse_header(&mut r, ST_ATTEST_QUOTE, "TPM_ST_ATTEST_QUOTE")?;
        let count = r.u32("pcrSelect.count")? as usize;
        if count > MAX_PCR_BANKS {
            return Err(ParseError::invalid(
                "pcrSelect.count",
                format!("{count} exceeds {MAX_PCR_BANKS}"),
            ));
        }
        let mut selections = Vec::with_capacity(count);
        for _ in 0..count {
            let hash = r.u16("pcrSelections.hash")?;
            let size = usize::from(r.u8("pcrSelections.sizeofSelect")?);
            if size > MAX_PCR_SELECT {
                return Err(ParseError::invalid(
                    "pcrSelections.sizeofSelect",
                    format!("{size} exceeds {MAX_PCR_SELECT}"),
                ));
            }
            let bitmap = r.bytes(size, "pcrSelections.pcrSelect")?.to_vec();
            selections.push(PcrSelection { hash, bitmap });
        }
        let pcr_digest = r.tpm2b(MAX_DIGEST, "pcrDigest")?.to_vec();
        r.finish("TPMS_ATTEST")?;
        Ok(Attest {
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            quote: QuoteInfo {
                selections,
                pcr_digest,
            },
        })
    }

    /// Marshal back to TPMS_ATTEST wire bytes (inverse of [`Attest::parse`]).
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(TPM_GENERATED_VALUE).u16(ST_ATTEST_QUOTE);
        w.tpm2b(&self.qualified_signer).tpm2b(&self.extra_data);
        let c = &self.clock_info;
        w.u64(c.clock)
            .u32(c.reset_count)
            .u32(c.restart_count)
            .u8(u8::from(c.safe));
        w.u64(self.firmware_version);
        w.u32(self.quote.selections.len() as u32);
        for s in &self.quote.selections {
            w.u16(s.hash).u8(s.bitmap.len() as u8).bytes(&s.bitmap);
        }
        w.tpm2b(&self.quote.pcr_digest);
        w.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tpm::fixture::QUOTE_MSG as SWTPM_QUOTE;

    #[test]
    fn parses_real_quote_and_round_trips() {
        let bytes = hex::decode(SWTPM_QUOTE).unwrap();
        let a = Attest::parse(&bytes).unwrap();
        assert_eq!(a.extra_data, hex::decode("0011223344556677").unwrap());
        assert_eq!(a.clock_info.reset_count, 1);
        assert!(a.clock_info.safe);
        assert_eq!(a.quote.selections.len(), 1);
        assert_eq!(a.quote.selections[0].hash, 0x000b);
        assert_eq!(
            a.quote.selections[0].pcrs().into_iter().collect::<Vec<_>>(),
            vec![16, 23]
        );
        assert_eq!(a.marshal(), bytes);
    }

    #[test]
    fn rejects_every_truncation_and_trailing_bytes() {
        let bytes = hex::decode(SWTPM_QUOTE).unwrap();
        for n in 0..bytes.len() {
            assert!(Attest::parse(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Attest::parse(&long),
            Err(ParseError::Trailing { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random garbage plus every single-byte corruption.
        let bytes = hex::decode(SWTPM_QUOTE).unwrap();
        for i in 0..bytes.len() {
            for v in [0x00, 0xff, 0x7f, 0x80] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = Attest::parse(&b);
            }
        }
        let mut x: u32 = 12345;
        for len in 0..300 {
            let g: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = Attest::parse(&g);
        }
    }

    #[test]
    fn selection_bitmap() {
        let s = PcrSelection::new(0x000b, &[16, 23].into_iter().collect());
        assert_eq!(s.bitmap, vec![0, 0, 0x81]);
        assert_eq!(s.pcrs(), [16, 23].into_iter().collect());
    }
}
