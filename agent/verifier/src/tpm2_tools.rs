//! Export evidence as the files `tpm2_checkquote` (tpm2-tools 5.x) reads, so an
//! independent implementation can cross-check a quote.
//!
//! Formats, established against swtpm with tpm2-tools 5.4:
//! - `quote.msg`: the marshalled TPMS_ATTEST, byte for byte (`tpm2_quote -m`).
//! - `quote.sig`: the marshalled TPMT_SIGNATURE (`tpm2_quote -s`, default "tss" format).
//! - `ak.pem`: the AK as PEM SubjectPublicKeyInfo (`tpm2_checkquote -u` also takes the
//!   TPM2B_PUBLIC "tss" file).
//! - `quote.pcrs`: the PCR values without selection, i.e. the raw 32-byte SHA-256 values
//!   concatenated in ascending PCR order (what `tpm2_pcrread -o` writes), read with
//!   `-l sha256:<pcrs>`. (`tpm2_quote -o` instead writes a host-endian dump of the C
//!   structs TPML_PCR_SELECTION + UINT32 count + TPML_DIGEST[], 668 bytes for one
//!   bank, for both `-F values` and `-F serialized` in 5.4; we avoid that format.)
//!
//! `tpm2_checkquote` checks the signature, the nonce (`-q`) and that the values hash
//! to the quote's pcrDigest; it does not compare `-l` with the quote's selection.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::evidence::Evidence;
use crate::verify::{pcr_composite_digest, Sha256Pcrs};

/// Why evidence could not be exported.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The evidence has no SHA-256 PCR values, or one is not 32 bytes.
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
    /// `quote.pcrs`: concatenated SHA-256 PCR values, ascending PCR order.
    pub pcrs: PathBuf,
    /// `ak.pem`: the AK public key.
    pub ak_pem: PathBuf,
    /// Arguments for `tpm2_checkquote` (program name not included):
    /// `-u ak.pem -m quote.msg -s quote.sig -f quote.pcrs -l sha256:<list> -g sha256
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

/// `sha256:16,23`: the `-l` selection for these PCRs.
pub fn pcr_list_arg(pcrs: &Sha256Pcrs) -> String {
    let list: Vec<String> = pcrs.keys().map(u32::to_string).collect();
    format!("sha256:{}", list.join(","))
}

/// The `quote.pcrs` contents: values concatenated in ascending PCR order.
pub fn pcr_values_file(pcrs: &Sha256Pcrs) -> Vec<u8> {
    pcrs.values().flat_map(|v| v.iter().copied()).collect()
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
    let pcrs_path = write(dir.join("quote.pcrs"), &pcr_values_file(&pcrs))?;
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
        "-l".into(),
        pcr_list_arg(&pcrs).into(),
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
        let f = pcr_values_file(&pcrs);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1);
        assert_eq!(f[32], 2);
    }
}
