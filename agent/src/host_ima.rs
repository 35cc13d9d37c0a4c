//! The host kernel's IMA measurement list for evidence (`docs/evidence.md`): when the
//! kernel has IMA, tvpd quotes PCR 10 too and ships the binary list, read right after
//! the quote (so the quote covers a prefix of it; the verifier finds that prefix).
//! The list is the tenant's view of what ran on the host (`docs/threat-model.md`).

use std::io::Read;
use std::path::Path;

pub use tvp_verifier::ima::IMA_PCR;

/// Where the kernel publishes the list (securityfs).
pub const BINARY_LIST: &str = "/sys/kernel/security/ima/binary_runtime_measurements";

/// Largest list put into evidence. The attestation mailbox carries at most 61408
/// bytes of evidence and base64 grows the list by a third; the rest of the evidence
/// (quote, AK, event log) needs the remainder. A host policy that measures only
/// executables, libraries and modules stays far below this.
pub const MAX_LIST_BYTES: usize = 40 * 1024;

/// Why the list could not be put into the evidence.
#[derive(Debug, thiserror::Error)]
pub enum ImaReadError {
    /// Reading failed.
    #[error("cannot read the IMA list {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The list is larger than [`MAX_LIST_BYTES`].
    #[error("the IMA list {path} is over {MAX_LIST_BYTES} bytes, too large for the attestation mailbox: narrow the host's IMA policy (docs/host-hardening.md)")]
    TooLarge {
        /// The file.
        path: String,
    },
}

/// Whether this host's kernel publishes an IMA list (securityfs mounted, IMA built in).
pub fn present() -> bool {
    Path::new(BINARY_LIST).exists()
}

/// Read at most [`MAX_LIST_BYTES`] of `path`; more is an error, not a truncation
/// (a cut list would not replay).
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, ImaReadError> {
    let io = |source| ImaReadError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    f.take(MAX_LIST_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(io)?;
    if out.len() > MAX_LIST_BYTES {
        return Err(ImaReadError::TooLarge {
            path: path.display().to_string(),
        });
    }
    Ok(out)
}

/// The list for evidence just quoted, or `None` (logged) if it cannot be had: a
/// verifier whose inventory requires IMA then refuses the evidence as `ima: no-list`.
pub fn list_for_evidence() -> Option<Vec<u8>> {
    match read_bounded(Path::new(BINARY_LIST)) {
        Ok(l) => Some(l),
        Err(e) => {
            log::warn!("{e}; the evidence goes out without the IMA list");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_over_the_bound_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("list");
        std::fs::write(&p, vec![1u8; MAX_LIST_BYTES]).unwrap();
        assert_eq!(read_bounded(&p).unwrap().len(), MAX_LIST_BYTES);
        std::fs::write(&p, vec![1u8; MAX_LIST_BYTES + 1]).unwrap();
        let e = read_bounded(&p).unwrap_err();
        assert!(matches!(e, ImaReadError::TooLarge { .. }), "{e}");
        assert!(matches!(
            read_bounded(&dir.path().join("absent")),
            Err(ImaReadError::Io { .. })
        ));
    }
}
