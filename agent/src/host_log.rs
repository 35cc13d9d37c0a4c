//! The host event log: every extend `tvpd` makes into a non-resettable PCR, as CEL-JSON
//! records, persisted in the state directory so that the log survives `tvpd` restarts
//! within one TPM boot cycle.
//!
//! Write-ahead: a record is persisted *before* its digest is extended. After a crash
//! between the two, the log has one record the PCR lacks; [`HostEventLog::reconcile`]
//! recognises exactly that case and drops the record.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tvp_verifier::eventlog::extend_sha256;
use tvp_verifier::{CelRecord, EventKind};

/// File name of the log in the state directory.
pub const FILE_NAME: &str = "host-event-log.json";

/// Errors reading or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum HostLogError {
    /// I/O on the log file failed.
    #[error("host event log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a CEL-JSON array.
    #[error("host event log {path} is corrupt: {message}; move it aside to start a new log")]
    Corrupt { path: PathBuf, message: String },
}

/// How the persisted log relates to the PCRs at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The log replays to the current PCR values: continue it.
    Continued,
    /// The PCRs were reset (new TPM boot cycle): a new log was started.
    Restarted,
    /// The last record had not been extended before a crash: it was dropped.
    DroppedUnextended,
    /// Neither: something else extended the PCR, or the log was lost. A new log
    /// starts; quotes over the affected PCR will not replay until the next reboot.
    Diverged { pcr: u32 },
}

/// The host event log, in memory and on disk.
#[derive(Debug)]
pub struct HostEventLog {
    path: PathBuf,
    records: Vec<CelRecord>,
}

impl HostEventLog {
    /// Load the log from `state_dir` (empty if there is none yet).
    pub fn load(state_dir: &Path) -> Result<Self, HostLogError> {
        let path = state_dir.join(FILE_NAME);
        let records = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| HostLogError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(HostLogError::Io { path, source }),
        };
        Ok(HostEventLog { path, records })
    }

    /// All records.
    pub fn records(&self) -> &[CelRecord] {
        &self.records
    }

    /// Records of the given PCRs only.
    pub fn records_for(&self, pcrs: &[u32]) -> Vec<CelRecord> {
        self.records
            .iter()
            .filter(|r| pcrs.contains(&r.pcr))
            .cloned()
            .collect()
    }

    /// What the log's PCRs replay to.
    pub fn replay(records: &[CelRecord]) -> BTreeMap<u32, [u8; 32]> {
        let mut out = BTreeMap::new();
        for r in records {
            if let Some(d) = r.sha256() {
                let v = out.entry(r.pcr).or_insert([0u8; 32]);
                *v = extend_sha256(v, &d);
            }
        }
        out
    }

    /// Bring the log in line with the current values of the PCRs it covers
    /// (`current(pcr)` reads one). Persists any change.
    pub fn reconcile(
        &mut self,
        mut current: impl FnMut(u32) -> Option<[u8; 32]>,
    ) -> Result<Vec<(u32, Reconciled)>, HostLogError> {
        let pcrs: Vec<u32> = Self::replay(&self.records).keys().copied().collect();
        let mut outcome = Vec::new();
        for pcr in pcrs {
            let Some(now) = current(pcr) else { continue };
            let mine: Vec<CelRecord> = self.records_for(&[pcr]);
            let full = Self::replay(&mine).get(&pcr).copied().unwrap_or([0; 32]);
            let state = if full == now {
                Reconciled::Continued
            } else if now == [0u8; 32] {
                Reconciled::Restarted
            } else if Self::replay(&mine[..mine.len().saturating_sub(1)])
                .get(&pcr)
                .copied()
                == Some(now)
            {
                Reconciled::DroppedUnextended
            } else {
                Reconciled::Diverged { pcr }
            };
            match state {
                Reconciled::Continued => {}
                Reconciled::DroppedUnextended => {
                    if let Some(last) = mine.last() {
                        let recnum = last.recnum;
                        self.records.retain(|r| r.recnum != recnum);
                    }
                }
                Reconciled::Restarted | Reconciled::Diverged { .. } => {
                    self.records.retain(|r| r.pcr != pcr);
                }
            }
            outcome.push((pcr, state));
        }
        self.renumber();
        self.persist()?;
        Ok(outcome)
    }

    fn renumber(&mut self) {
        for (i, r) in self.records.iter_mut().enumerate() {
            r.recnum = i as u64;
        }
    }

    /// Append a record and persist it (call before extending the PCR).
    pub fn append(
        &mut self,
        pcr: u32,
        digest: [u8; 32],
        kind: EventKind,
        description: String,
    ) -> Result<CelRecord, HostLogError> {
        let rec = CelRecord::tvp(self.records.len() as u64, pcr, digest, kind, description);
        self.records.push(rec.clone());
        if let Err(e) = self.persist() {
            self.records.pop();
            return Err(e);
        }
        Ok(rec)
    }

    /// Drop the last record again (its extend failed).
    pub fn rollback_last(&mut self) -> Result<(), HostLogError> {
        self.records.pop();
        self.persist()
    }

    /// Write atomically: temp file, fsync, rename, fsync the directory.
    fn persist(&self) -> Result<(), HostLogError> {
        let io = |source| HostLogError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        let bytes =
            serde_json::to_vec_pretty(&self.records).map_err(|e| HostLogError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(dir: &Path, digests: &[[u8; 32]]) -> HostEventLog {
        let mut log = HostEventLog::load(dir).unwrap();
        for d in digests {
            log.append(15, *d, EventKind::PlatformArtefact, "x".into())
                .unwrap();
        }
        log
    }

    #[test]
    fn reconcile_recognises_each_case() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with(dir.path(), &[[1; 32], [2; 32]]);
        let full = HostEventLog::replay(log.records())[&15];
        let partial = HostEventLog::replay(&log.records()[..1])[&15];

        assert_eq!(
            log.reconcile(|_| Some(full)).unwrap()[0].1,
            Reconciled::Continued
        );
        assert_eq!(log.records().len(), 2);

        assert_eq!(
            log.reconcile(|_| Some(partial)).unwrap()[0].1,
            Reconciled::DroppedUnextended
        );
        assert_eq!(log.records().len(), 1);
        // persisted
        assert_eq!(HostEventLog::load(dir.path()).unwrap().records().len(), 1);

        assert_eq!(
            log.reconcile(|_| Some([9; 32])).unwrap()[0].1,
            Reconciled::Diverged { pcr: 15 }
        );
        assert!(log.records().is_empty());

        let mut log = log_with(dir.path(), &[[1; 32], [2; 32]]);
        assert_eq!(
            log.reconcile(|_| Some([0; 32])).unwrap()[0].1,
            Reconciled::Restarted
        );
        assert!(log.records().is_empty());
    }

    #[test]
    fn corrupt_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let e = HostEventLog::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}
