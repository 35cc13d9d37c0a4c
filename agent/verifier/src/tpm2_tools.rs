//! Export evidence as the files `tpm2_checkquote` (tpm2-tools 5.x) reads, so an
//! independent implementation can cross-check a quote.
//!
//! Formats, established against swtpm with tpm2-tools 5.4:
//! - `quote.msg`: the marshalled TPMS_ATTEST, byte for byte (`tpm2_quote -m`).
//! - `quote.sig`: the marshalled TPMT_SIGNATURE (`tpm2_quote -s`, default "tss" format).
//! - `ak.pem`: the AK as PEM SubjectPublicKeyInfo (`tpm2_checkquote -u` also takes the
//!   TPM2B_PUBLIC "tss" file).
//! - `quote.pcrs`: the PCR selection and values as `tpm2_quote -o` writes them and
//!   `tpm2_checkquote -F serialized` reads them: a dump of the C structures
//!   TPML_PCR_SELECTION, UINT32 count and `count` TPML_DIGEST of at most 8 digests each,
//!   little endian with the C compiler's padding (x86-64 and aarch64 alike), 668 bytes
//!   for up to 8 PCRs of one bank and 532 more for each further 8. (The simpler
//!   `tpm2_pcrread -o` form, the raw values read with `-l sha256:<pcrs>`, fails in
//!   tpm2-tools 5.4 for more than 8 PCRs: "Failed to hash PCR values related to
//!   quote!", which IMA quotes over PCRs 0-10 need.)
//!
//! `tpm2_checkquote` checks the signature, the nonce (`-q`) and that the values hash
//! to the quote's pcrDigest.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::evidence::Evidence;
use crate::verify::{pcr_composite_digest, Sha256Pcrs};

/// Why evidence could not be exported.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The evidence has no SHA-256 PCR values, one is not 32 bytes, or a PCR index is
    /// beyond 23.
    #[error("evidence PCRs cannot be exported: {0}")]
    Pcrs(String),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The files written and the `tpm2_checkquote` arguments that check them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckquoteFiles {
    /// `quote.msg`: TPMS_ATTEST.
    pub msg: PathBuf,
    /// `quote.sig`: TPMT_SIGNATURE.
    pub sig: PathBuf,
    /// `quote.pcrs`: the selection and SHA-256 values in `tpm2_quote -o`'s format.
    pub pcrs: PathBuf,
    /// `ak.pem`: the AK public key.
    pub ak_pem: PathBuf,
    /// Arguments for `tpm2_checkquote` (program name not included):
    /// `-u ak.pem -m quote.msg -s quote.sig -f quote.pcrs -F serialized -g sha256
    /// [-q <nonce hex>]` with the paths above.
    pub args: Vec<OsString>,
}

/// The SHA-256 PCR values of the evidence, 32 bytes each.
fn sha256_pcrs(ev: &Evidence) -> Result<Sha256Pcrs, ExportError> {
    let bank = ev
        .pcrs
        .get("sha256")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ExportError::Pcrs("no sha256 PCR values".into()))?;
    bank.iter()
        .map(|(&pcr, v)| {
            <[u8; 32]>::try_from(v.0.as_slice())
                .map(|v| (pcr, v))
                .map_err(|_| ExportError::Pcrs(format!("PCR {pcr} is not 32 bytes")))
        })
        .collect()
}

/// `sha256:16,23`: the PCR list in tpm2-tools' notation, for people.
pub fn pcr_list_arg(pcrs: &Sha256Pcrs) -> String {
    let list: Vec<String> = pcrs.keys().map(u32::to_string).collect();
    format!("sha256:{}", list.join(","))
}

/// TPM2_ALG_SHA256.
const ALG_SHA256: u16 = 0x000b;
/// Entries of TPML_PCR_SELECTION's array (TPM2_NUM_PCR_BANKS in tpm2-tss).
const SELECTION_SLOTS: usize = 16;
/// Digests per TPML_DIGEST (the TPM returns at most 8 values per PCR_Read).
const DIGESTS_PER_LIST: usize = 8;
/// TPM2B_DIGEST's buffer (sizeof(TPMU_HA)).
const DIGEST_BUFFER: usize = 64;
/// PCR indices a 3-byte select covers.
const MAX_PCR: u32 = 23;

/// The `quote.pcrs` contents in `tpm2_quote -o` (`-F serialized`) format: the C
/// structures TPML_PCR_SELECTION (u32 count, 16 × {u16 hash, u8 sizeofSelect = 3,
/// u8[4] pcrSelect, 1 pad}), u32 count, then `count` × TPML_DIGEST (u32 count,
/// 8 × {u16 size, u8[64]}), little endian; values in ascending PCR order.
pub fn pcr_values_file(pcrs: &Sha256Pcrs) -> Result<Vec<u8>, ExportError> {
    let mut select = [0u8; 4];
    for &pcr in pcrs.keys() {
        if pcr > MAX_PCR {
            return Err(ExportError::Pcrs(format!(
                "PCR {pcr} is beyond {MAX_PCR}, which tpm2-tools cannot select"
            )));
        }
        select[(pcr / 8) as usize] |= 1 << (pcr % 8);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    for slot in 0..SELECTION_SLOTS {
        if slot == 0 {
            out.extend_from_slice(&ALG_SHA256.to_le_bytes());
            out.push(3);
            out.extend_from_slice(&select);
        } else {
            out.extend_from_slice(&[0u8; 7]);
        }
        out.push(0); // padding to the u16 alignment
    }
    let values: Vec<&[u8; 32]> = pcrs.values().collect();
    let lists = values.chunks(DIGESTS_PER_LIST);
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for i in 0..DIGESTS_PER_LIST {
            let mut entry = [0u8; 2 + DIGEST_BUFFER];
            if let Some(v) = list.get(i) {
                entry[..2].copy_from_slice(&32u16.to_le_bytes());
                entry[2..34].copy_from_slice(&v[..]);
            }
            out.extend_from_slice(&entry);
        }
    }
    Ok(out)
}

fn write(path: PathBuf, data: &[u8]) -> Result<PathBuf, ExportError> {
    std::fs::write(&path, data).map_err(|source| ExportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Write `quote.msg`, `quote.sig`, `quote.pcrs` and `ak.pem` into `dir` (which must
/// exist; files are overwritten) and return the `tpm2_checkquote` arguments.
/// `ak_pem` overrides the evidence's AK: pass the *trusted* AK, since checking against
/// the key the evidence brings proves nothing about the host.
pub fn export_for_checkquote(
    ev: &Evidence,
    dir: &Path,
    ak_pem: Option<&str>,
) -> Result<CheckquoteFiles, ExportError> {
    let pcrs = sha256_pcrs(ev)?;
    let msg = write(dir.join("quote.msg"), &ev.quote.attest)?;
    let sig = write(dir.join("quote.sig"), &ev.quote.signature)?;
    let pcrs_path = write(dir.join("quote.pcrs"), &pcr_values_file(&pcrs)?)?;
    let pem = ak_pem.unwrap_or(&ev.ak_public_pem);
    let ak = write(dir.join("ak.pem"), pem.as_bytes())?;
    let mut args: Vec<OsString> = vec![
        "-u".into(),
        ak.clone().into(),
        "-m".into(),
        msg.clone().into(),
        "-s".into(),
        sig.clone().into(),
        "-f".into(),
        pcrs_path.clone().into(),
        "-F".into(),
        "serialized".into(),
        "-g".into(),
        "sha256".into(),
    ];
    if !ev.nonce.is_empty() {
        args.push("-q".into());
        args.push(hex::encode(&ev.nonce).into());
    }
    Ok(CheckquoteFiles {
        msg,
        sig,
        pcrs: pcrs_path,
        ak_pem: ak,
        args,
    })
}

/// The digest `tpm2_checkquote` will compute from the exported values (equals the
/// quote's pcrDigest for good evidence).
pub fn exported_pcr_digest(ev: &Evidence) -> Result<[u8; 32], ExportError> {
    Ok(pcr_composite_digest(&sha256_pcrs(ev)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_values() {
        let pcrs: Sha256Pcrs = [(23, [2u8; 32]), (16, [1u8; 32])].into_iter().collect();
        assert_eq!(pcr_list_arg(&pcrs), "sha256:16,23");
        let f = pcr_values_file(&pcrs).unwrap();
        assert_eq!(f.len(), 668);
        // Selection: one bank, SHA-256, 3 bytes, PCRs 16 and 23.
        assert_eq!(&f[..12], &[1, 0, 0, 0, 0x0b, 0, 3, 0, 0, 0x81, 0, 0]);
        // One TPML_DIGEST of two values.
        assert_eq!(&f[132..140], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&f[140..143], &[32, 0, 1]);
        assert_eq!(&f[206..209], &[32, 0, 2]);
        assert_eq!(f[272], 0, "third slot empty");
    }

    #[test]
    fn more_than_eight_pcrs_take_further_digest_lists() {
        let pcrs: Sha256Pcrs = (0..=10)
            .chain([16, 23])
            .map(|p| (p, [p as u8; 32]))
            .collect();
        let f = pcr_values_file(&pcrs).unwrap();
        assert_eq!(f.len(), 132 + 4 + 2 * 532);
        assert_eq!(&f[4..11], &[0x0b, 0, 3, 0xff, 0x07, 0x81, 0]);
        assert_eq!(&f[132..136], &2u32.to_le_bytes());
        assert_eq!(&f[136..140], &8u32.to_le_bytes());
        assert_eq!(&f[668..672], &5u32.to_le_bytes());
        // The ninth value (PCR 8) opens the second list.
        assert_eq!(&f[672..675], &[32, 0, 8]);
    }

    #[test]
    fn a_pcr_beyond_23_is_refused() {
        let pcrs: Sha256Pcrs = [(24, [0u8; 32])].into_iter().collect();
        assert!(matches!(pcr_values_file(&pcrs), Err(ExportError::Pcrs(_))));
    }
}
