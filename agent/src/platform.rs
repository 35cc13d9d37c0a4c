//! Platform measurement at start: `tvpd` hashes the software it will use (its own
//! binary, its effective configuration, the `tvp-vmm` binary it will exec and the
//! firmware image it will load, then any further configured artefacts) and extends
//! each digest into the platform PCR, recording each event in the host event log
//! first. The VMM and the firmware are measured whatever `platform_artefacts` lists:
//! they are what a measured VM's trust rests on.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use log::{info, warn};
use sha2::{Digest, Sha256};
use tvp_verifier::EventKind;

use crate::host_log::{HostEventLog, HostLogError};
use crate::tpm::service::TpmClient;
use crate::tpm::TpmError;

/// Digest of the start marker: SHA-256 of this constant string.
pub const START_MARKER: &[u8] = b"tvp platform measurement start v1";

/// Errors of the platform measurement.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// A file to measure could not be read.
    #[error("cannot measure {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The event log could not be written (nothing was extended).
    #[error(transparent)]
    Log(#[from] HostLogError),
    /// The TPM refused the extend.
    #[error(transparent)]
    Tpm(#[from] TpmError),
}

/// SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<[u8; 32], MeasureError> {
    let err = |source| MeasureError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// The digest measured (and watched for) when a required platform file does not
/// exist: no file has this SHA-256, so any file appearing there is a change.
pub const ABSENT: [u8; 32] = [0; 32];

/// One thing to measure.
pub struct Measurement {
    /// Kind of event.
    pub kind: EventKind,
    /// Description recorded in the log.
    pub description: String,
    /// The digest to extend.
    pub digest: [u8; 32],
    /// The measured file, which must not change while tvpd runs (`None` for the start
    /// marker and the configuration, which are not files).
    pub file: Option<PathBuf>,
}

/// A platform file to measure after the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFile {
    /// What it is (`tvp-vmm`, `firmware`), recorded as `label:path`; `None` for a
    /// configured artefact, recorded as its path.
    pub label: Option<&'static str>,
    /// Where it is.
    pub path: PathBuf,
}

/// The files measured after the configuration, in order: the VMM binary tvpd will
/// exec and the firmware image it will load (always), then each configured artefact
/// that is not one of those two (compared after resolving symbolic links).
pub fn platform_files(vmm: &Path, firmware: &Path, listed: &[PathBuf]) -> Vec<PlatformFile> {
    let mut out = vec![
        PlatformFile {
            label: Some("tvp-vmm"),
            path: vmm.to_path_buf(),
        },
        PlatformFile {
            label: Some("firmware"),
            path: firmware.to_path_buf(),
        },
    ];
    for a in listed {
        if !out.iter().any(|f| same_file(&f.path, a)) {
            out.push(PlatformFile {
                label: None,
                path: a.clone(),
            });
        }
    }
    out
}

/// The same path, or two paths that resolve to the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || resolve(a) == resolve(b)
}

/// Compute the platform measurements: start marker, `tvpd` binary, configuration,
/// then each of `files` in order. A configured artefact that cannot be read is an
/// error; a missing VMM or firmware is measured as [`ABSENT`] (tvpd can still serve
/// the host API; measured VMs fail until the file exists and tvpd re-measures).
pub fn platform_measurements(
    tvpd_binary: &Path,
    config_json: &[u8],
    files: &[PlatformFile],
) -> Result<Vec<Measurement>, MeasureError> {
    let mut out = vec![
        Measurement {
            kind: EventKind::PlatformStart,
            description: format!("tvpd {}", env!("CARGO_PKG_VERSION")),
            digest: Sha256::digest(START_MARKER).into(),
            file: None,
        },
        Measurement {
            kind: EventKind::PlatformArtefact,
            description: format!("tvpd:{}", tvpd_binary.display()),
            digest: hash_file(tvpd_binary)?,
            file: Some(tvpd_binary.to_path_buf()),
        },
        Measurement {
            kind: EventKind::PlatformConfig,
            description: "tvpd effective configuration (canonical JSON)".into(),
            digest: Sha256::digest(config_json).into(),
            file: None,
        },
    ];
    for f in files {
        let (digest, absent) = match (hash_file(&f.path), f.label) {
            (Ok(d), _) => (d, false),
            (Err(MeasureError::Read { source, .. }), Some(label))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                warn!(file = f.path.display().to_string(), what = label; "platform file does not exist: measured as absent; measured VMs cannot start until it exists and tvpd restarts");
                (ABSENT, true)
            }
            (Err(e), _) => return Err(e),
        };
        let mut description = match f.label {
            Some(label) => format!("{label}:{}", f.path.display()),
            None => f.path.display().to_string(),
        };
        if absent {
            description.push_str(" (absent)");
        }
        out.push(Measurement {
            kind: EventKind::PlatformArtefact,
            description,
            digest,
            file: Some(f.path.clone()),
        });
    }
    Ok(out)
}

/// Log then extend each measurement into `pcr`. Both happen in one TPM-thread job,
/// so a concurrent quote never sees a log that disagrees with the PCR.
pub fn extend_all(
    tpm: &TpmClient,
    log: &Arc<Mutex<HostEventLog>>,
    pcr: u32,
    measurements: Vec<Measurement>,
) -> Result<(), MeasureError> {
    for m in measurements {
        let log = log.clone();
        let digest = m.digest;
        let rec = tpm.call(move |t| {
            let mut log = crate::lock(&log);
            let rec = match log.append(pcr, m.digest, m.kind, m.description) {
                Ok(r) => r,
                Err(e) => return Ok(Err(MeasureError::Log(e))),
            };
            if let Err(e) = t.pcr_extend(pcr, &m.digest) {
                if let Err(le) = log.rollback_last() {
                    return Ok(Err(MeasureError::Log(le)));
                }
                return Ok(Err(MeasureError::Tpm(e)));
            }
            Ok(Ok(rec))
        })??;
        info!(pcr = pcr, recnum = rec.recnum, digest = hex::encode(digest), what = rec.content.description.as_str(); "measured");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_and_firmware_come_first_and_are_not_measured_twice() {
        let dir = tempfile::tempdir().unwrap();
        let vmm = dir.path().join("tvp-vmm");
        let fw = dir.path().join("fw.elf");
        let other = dir.path().join("other");
        std::fs::write(&vmm, b"vmm").unwrap();
        std::fs::write(&other, b"other").unwrap();
        let link = dir.path().join("vmm-link");
        std::os::unix::fs::symlink(&vmm, &link).unwrap();
        let files = platform_files(&vmm, &fw, &[other.clone(), link, fw.clone()]);
        let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, [vmm.clone(), fw.clone(), other]);
        assert_eq!(files[0].label, Some("tvp-vmm"));

        let tvpd = dir.path().join("other");
        let m = platform_measurements(&tvpd, b"{}", &files).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[3].description, format!("tvp-vmm:{}", vmm.display()));
        assert_eq!(
            m[4].digest, ABSENT,
            "a missing firmware is measured as absent"
        );
        assert!(m[4].description.ends_with("(absent)"));
        assert_eq!(m[4].file.as_deref(), Some(fw.as_path()));

        let missing_listed = [PlatformFile {
            label: None,
            path: dir.path().join("gone"),
        }];
        assert!(platform_measurements(&tvpd, b"{}", &missing_listed).is_err());
    }
}
