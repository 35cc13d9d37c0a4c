//! The audit log file (`audit.log` in the state directory, JSON lines) and its TPM
//! anchor.
//!
//! Append = seal the record onto the chain, write its line with `O_APPEND`, `fsync`,
//! then extend the record hash into the NV anchor. A failed write is cut back to the
//! last good length, so the file never keeps half a record; a record whose extend
//! failed stays *pending* and is extended before the next append (which fails, and so
//! refuses its request, if that is still impossible). At start the whole log is
//! verified and must fold to the NV value; a tail of at most [`MAX_UNANCHORED`]
//! records written but not extended before a crash is extended then.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use tvp_audit::chain::{self, ChainError};
use tvp_audit::record::{AuditRecord, RecordDraft, GENESIS};
use tvp_audit::{anchor, Digest32};

use crate::tpm::nv::NvAnchor;
use crate::tpm::service::TpmClient;
use crate::tpm::TpmError;

/// File name in the state directory.
pub const FILE_NAME: &str = "audit.log";
/// Most records that may be in the log but not in the anchor after a crash (one
/// record is written ahead of its extend; a second may follow before tvpd notices).
pub const MAX_UNANCHORED: usize = 2;

/// Why the audit log cannot be opened or appended to.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// I/O on the file.
    #[error(
        "audit log {path}: {source} (free space or fix permissions; the request was not executed)"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was tampered with or damaged.
    #[error("audit log {path} does not verify: {source}")]
    Chain {
        path: PathBuf,
        #[source]
        source: ChainError,
    },
    /// The log and the TPM anchor disagree.
    #[error("audit log {path} ({records} records) does not match the TPM anchor at NV index {index:#010x}: the log was truncated or rewritten, or the TPM was cleared; tvpd will not serve until an operator investigates (docs/audit.md, 'Anchor mismatch')")]
    AnchorMismatch {
        path: PathBuf,
        records: u64,
        index: u32,
    },
    /// The file changed behind tvpd's back while it was running.
    #[error("audit log {path} was modified by someone other than tvpd ({detail}); tvpd refuses every request until an operator investigates (docs/audit.md, 'Tampering at run time')")]
    Tampered { path: PathBuf, detail: String },
    /// The TPM refused or is gone.
    #[error("audit anchor: {0}")]
    Tpm(#[from] TpmError),
}

/// The open audit log.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// Length of the file up to the last complete record.
    good_len: u64,
    /// The last record's line as written (to detect edits behind tvpd's back).
    last_line: Vec<u8>,
    /// A failed write could not be cut back yet (retried before the next append,
    /// so that our own partial write is never mistaken for tampering).
    needs_cut: bool,
    records: Vec<AuditRecord>,
    head: Digest32,
    /// Hashes written but not yet extended into the anchor, oldest first.
    pending: Vec<Digest32>,
    tpm: TpmClient,
    index: u32,
}

impl AuditLog {
    /// Open (or create) the log in `state_dir`, verify it and reconcile it with the
    /// anchor at NV `index`.
    pub fn open(state_dir: &Path, tpm: TpmClient, index: u32) -> Result<Self, AuditError> {
        let path = state_dir.join(FILE_NAME);
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let chain_err = |source| AuditError::Chain {
            path: path.clone(),
            source,
        };
        let records = chain::parse_log(&text).map_err(chain_err)?;
        let summary = chain::verify_chain(&records, None).map_err(chain_err)?;
        let nv = tpm.call(move |t| t.nv_anchor_open(index))?;
        let unanchored = unanchored_tail(&records, nv).ok_or(AuditError::AnchorMismatch {
            path: path.clone(),
            records: summary.records,
            index,
        })?;
        let pending: Vec<Digest32> = records[records.len() - unanchored..]
            .iter()
            .filter_map(|r| r.hash_bytes())
            .collect();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let good_len = file.metadata().map_err(io)?.len();
        if good_len != text.len() as u64 {
            return Err(io(std::io::Error::other(
                "the file changed while being opened",
            )));
        }
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        let last_line = records
            .last()
            .map(|r| (r.to_line() + "\n").into_bytes())
            .unwrap_or_default();
        let mut log = AuditLog {
            path,
            file,
            good_len,
            last_line,
            needs_cut: false,
            head: summary.head,
            records,
            pending,
            tpm,
            index,
        };
        if !log.pending.is_empty() {
            ::log::warn!(records = log.pending.len(); "audit log: extending records written before a crash into the TPM anchor");
            log.flush_pending_blocking()?;
        }
        ::log::info!(records = log.records.len(), nv_index = format!("{index:#010x}"); "audit log verified against its TPM anchor");
        Ok(log)
    }

    fn flush_pending_blocking(&mut self) -> Result<(), AuditError> {
        while let Some(h) = self.pending.first().copied() {
            let index = self.index;
            self.tpm.call(move |t| t.nv_anchor_extend(index, &h))?;
            self.pending.remove(0);
        }
        Ok(())
    }

    async fn flush_pending(&mut self) -> Result<(), AuditError> {
        while let Some(h) = self.pending.first().copied() {
            let index = self.index;
            self.tpm
                .call_async(move |t| t.nv_anchor_extend(index, &h))
                .await?;
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Append a record: persist (fsync), then anchor. Returns the sealed record. On
    /// error nothing is kept in the file that is not a whole record.
    pub async fn append(&mut self, draft: RecordDraft) -> Result<AuditRecord, AuditError> {
        if self.needs_cut {
            self.file
                .set_len(self.good_len)
                .and_then(|_| self.file.sync_data())
                .map_err(|source| AuditError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            self.needs_cut = false;
        }
        self.check_file()?;
        self.flush_pending().await?;
        let seq = self.records.len() as u64 + 1;
        let rec = AuditRecord::seal(draft, seq, &self.head);
        let mut line = rec.to_line();
        line.push('\n');
        if let Err(source) = self
            .file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
        {
            // Cut a partial line; if that fails too, retry before the next append.
            self.needs_cut = self
                .file
                .set_len(self.good_len)
                .and_then(|_| self.file.sync_data())
                .is_err();
            return Err(AuditError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.good_len += line.len() as u64;
        self.last_line = line.into_bytes();
        let h = rec.hash_bytes().unwrap_or(GENESIS);
        self.head = h;
        self.records.push(rec.clone());
        self.pending.push(h);
        self.flush_pending().await?;
        Ok(rec)
    }

    /// Check that the file still ends with what tvpd wrote last: its length and its
    /// last record. Catches truncation, appends and edits of the tail at run time;
    /// earlier records are covered by the chain check at start and by verifiers.
    pub fn check_file(&self) -> Result<(), AuditError> {
        use std::os::unix::fs::FileExt;
        let tampered = |detail: String| AuditError::Tampered {
            path: self.path.clone(),
            detail,
        };
        let len = std::fs::metadata(&self.path)
            .map_err(|e| tampered(format!("cannot stat it: {e}")))?
            .len();
        if len != self.good_len {
            return Err(tampered(format!(
                "its length is {len} bytes, tvpd wrote {}",
                self.good_len
            )));
        }
        let mut tail = vec![0u8; self.last_line.len()];
        let at = self.good_len - self.last_line.len() as u64;
        // The path, not our descriptor: a replaced file must be noticed too.
        let same = File::open(&self.path)
            .and_then(|f| f.read_exact_at(&mut tail, at))
            .map(|_| tail == self.last_line)
            .unwrap_or(false);
        if !same {
            return Err(tampered(format!(
                "record seq {} differs from what tvpd wrote",
                self.records.len()
            )));
        }
        Ok(())
    }

    /// All records.
    pub fn records(&self) -> &[AuditRecord] {
        &self.records
    }

    /// Hash of the last record.
    pub fn head(&self) -> Digest32 {
        self.head
    }

    /// Whether every record is in the anchor.
    pub fn anchored(&self) -> bool {
        self.pending.is_empty()
    }

    /// The NV index.
    pub fn nv_index(&self) -> u32 {
        self.index
    }

    /// The TPM client (for certification under the log's lock).
    pub fn tpm(&self) -> &TpmClient {
        &self.tpm
    }
}

/// How many trailing records are not yet in the anchor `nv` (0 = in sync), or `None`
/// if no prefix of at least `len - MAX_UNANCHORED` records folds to it.
fn unanchored_tail(records: &[AuditRecord], nv: NvAnchor) -> Option<usize> {
    let hashes: Vec<Digest32> = records.iter().filter_map(|r| r.hash_bytes()).collect();
    let mut prefix = Vec::with_capacity(hashes.len() + 1);
    let mut acc = anchor::EMPTY;
    prefix.push(None);
    for h in &hashes {
        acc = anchor::extend(&acc, h);
        prefix.push(Some(acc));
    }
    let want = match nv {
        NvAnchor::Unwritten => None,
        NvAnchor::Value(v) => Some(v),
    };
    (0..=MAX_UNANCHORED.min(hashes.len())).find(|&k| prefix[hashes.len() - k] == want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvp_audit::record::{Decision, Stage};

    fn log(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|s| {
                let r = AuditRecord::seal(
                    RecordDraft {
                        time_ms: s,
                        uid: 0,
                        pid: None,
                        vm: None,
                        op: "x".into(),
                        params_digest: [0; 32],
                        stage: Stage::Decision,
                        decision: Decision::Allow,
                        reason: String::new(),
                        status: None,
                        result: None,
                        state_before: None,
                        state_after: None,
                        request: 0,
                    },
                    s,
                    &prev,
                );
                prev = r.hash_bytes().unwrap_or_default();
                r
            })
            .collect()
    }

    #[test]
    fn reconciliation_accepts_only_a_short_unanchored_tail() {
        let l = log(5);
        let at = |n: usize| NvAnchor::Value(chain::verify_chain(&l[..n], None).unwrap().anchor);
        assert_eq!(unanchored_tail(&l, at(5)), Some(0));
        assert_eq!(unanchored_tail(&l, at(4)), Some(1));
        assert_eq!(unanchored_tail(&l, at(3)), Some(2));
        assert_eq!(unanchored_tail(&l, at(2)), None);
        assert_eq!(unanchored_tail(&l[..3], at(5)), None, "truncated log");
        assert_eq!(unanchored_tail(&[], NvAnchor::Unwritten), Some(0));
        assert_eq!(unanchored_tail(&l[..1], NvAnchor::Unwritten), Some(1));
        assert_eq!(unanchored_tail(&[], at(1)), None, "log deleted");
    }
}
