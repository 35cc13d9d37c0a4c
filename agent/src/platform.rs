//! Platform measurement at start: `tvpd` hashes the software it will use (its own
//! binary, its effective configuration, and the configured artefacts such as
//! `tvp-vmm` and the firmware image) and extends each digest into the platform PCR,
//! recording each event in the host event log first.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use log::info;
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

/// One thing to measure.
pub struct Measurement {
    /// Kind of event.
    pub kind: EventKind,
    /// Description recorded in the log.
    pub description: String,
    /// The digest to extend.
    pub digest: [u8; 32],
}

/// Compute the platform measurements: start marker, `tvpd` binary, configuration,
/// then each artefact in the configured order.
pub fn platform_measurements(
    tvpd_binary: &Path,
    config_json: &[u8],
    artefacts: &[PathBuf],
) -> Result<Vec<Measurement>, MeasureError> {
    let mut out = vec![
        Measurement {
            kind: EventKind::PlatformStart,
            description: format!("tvpd {}", env!("CARGO_PKG_VERSION")),
            digest: Sha256::digest(START_MARKER).into(),
        },
        Measurement {
            kind: EventKind::PlatformArtefact,
            description: format!("tvpd:{}", tvpd_binary.display()),
            digest: hash_file(tvpd_binary)?,
        },
        Measurement {
            kind: EventKind::PlatformConfig,
            description: "tvpd effective configuration (canonical JSON)".into(),
            digest: Sha256::digest(config_json).into(),
        },
    ];
    for a in artefacts {
        out.push(Measurement {
            kind: EventKind::PlatformArtefact,
            description: a.display().to_string(),
            digest: hash_file(a)?,
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
