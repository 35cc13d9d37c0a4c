//! The audit log file (`audit.log` in the state directory, JSON lines) and its TPM
//! anchor.
//!
//! Append = seal a *group* of records (one or more, [`AuditLog::append_group`]) onto
//! the chain, every one but the last marked `grouped`, reserve their space in the log,
//! write them to the write-ahead marker ([`wal`], one fsync), extend the hash of the
//! group's last record into the NV anchor (one `NV_Extend`: that hash chains over the
//! whole group), then write their lines to the log with `O_APPEND` (one write, one
//! fsync). The log therefore never holds a record the anchor does not. A failed log
//! write is cut back to the last good length, so the file never keeps part of a group;
//! a group whose extend failed or whose log write failed stays *pending* in the
//! marker, and before the next append the anchor is read to decide: a group the
//! anchor holds is written to the log, one it does not hold is dropped.
//!
//! At start the whole log is verified and must fold to the NV value. The only other
//! accepted state is a crash between an extend and its log write: the anchor then
//! holds the log followed by records of the marker, and those (exactly those) are
//! written to the log. Anything else (a record in the log the anchor does not hold, a
//! rewritten record, a removed one) refuses the start, naming the first bad record.

mod wal;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tvp_audit::chain::{self, ChainError};
use tvp_audit::record::{AuditRecord, RecordDraft, GENESIS};
use tvp_audit::{anchor, Digest32};

use crate::tpm::nv::NvAnchor;
use crate::tpm::service::TpmClient;
use crate::tpm::TpmError;
use wal::{Wal, WalFile};

/// File name in the state directory.
pub const FILE_NAME: &str = "audit.log";
/// File name of the write-ahead marker in the state directory.
pub const WAL_FILE_NAME: &str = wal::FILE_NAME;
/// Test-only fault hook: `after-wal@SEQ` or `after-extend@SEQ` makes tvpd exit with
/// [`FAULT_EXIT`] right after that step of appending the group holding record SEQ;
/// `mid-log@SEQ` after writing (and syncing) the group's log lines only up to record
/// SEQ — to reproduce a crash there exactly (docs/audit.md, "Anchor and start-up").
pub const FAULT_ENV: &str = "TVP_FAULT_AUDIT_CRASH";
/// Exit code of the fault hook.
pub const FAULT_EXIT: i32 = 86;

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
    #[error("audit log {path} ({records} records) does not match the TPM anchor at NV index {index:#010x}: record seq {seq} {why}; tvpd will not serve until an operator investigates (docs/audit.md, 'Anchor mismatch')")]
    AnchorMismatch {
        path: PathBuf,
        records: u64,
        index: u32,
        /// The first record that is not as anchored (or the first missing one).
        seq: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The file changed behind tvpd's back while it was running.
    #[error("audit log {path} was modified by someone other than tvpd ({detail}); tvpd refuses every request until an operator investigates (docs/audit.md, 'Tampering at run time')")]
    Tampered { path: PathBuf, detail: String },
    /// The TPM refused or is gone.
    #[error("audit anchor: {0}")]
    Tpm(#[from] TpmError),
    /// The commit group this record was appended with failed: the same error for
    /// every record of the group (`super::group`).
    #[error("{0}")]
    Group(std::sync::Arc<AuditError>),
    /// Events tvpd observed earlier could not be written yet and must come before
    /// any later record (`super::pending`).
    #[error("{waiting} could not be written to the audit trail yet and must be written first ({source}); the VMs' management and every other request wait until they are (docs/audit.md, 'Events kept when the log cannot be written')")]
    EventsPending {
        /// How many events of which VMs.
        waiting: String,
        /// Why the oldest could not be written.
        #[source]
        source: Box<AuditError>,
    },
}

impl AuditError {
    /// The detail of detected tampering, also when it stopped pending events.
    pub fn tampering(&self) -> Option<&str> {
        match self {
            AuditError::Tampered { detail, .. } => Some(detail),
            AuditError::EventsPending { source, .. } => source.tampering(),
            AuditError::Group(e) => e.tampering(),
            _ => None,
        }
    }

    /// The error itself, seen through a failed commit group's shared error.
    pub fn root(&self) -> &AuditError {
        match self {
            AuditError::Group(e) => e.root(),
            e => e,
        }
    }
}

/// A step of an append at which the fault hook can stop tvpd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultPoint {
    AfterWal,
    AfterExtend,
    MidLog,
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
    /// What the anchor holds when it holds exactly the log.
    anchor: Digest32,
    /// The write-ahead marker.
    wal: WalFile,
    /// Records in the marker whose extend or log write did not complete: the anchor
    /// decides before the next append whether they are written or dropped.
    pending: Option<Wal>,
    tpm: TpmClient,
    index: u32,
    fault: Option<(FaultPoint, u64)>,
}

/// What the start found beyond the verified log.
#[derive(Debug, PartialEq, Eq)]
enum Reconciled {
    /// The anchor holds exactly the log. `dropped`: records of the marker that were
    /// never extended (a crash before the extend), by seq and op.
    InSync { dropped: Vec<(u64, String)> },
    /// The anchor holds the log followed by these records of the marker (a crash
    /// between the extend and the log write): they are written to the log.
    Complete(Vec<AuditRecord>),
}

/// Whether `nv` holds exactly `records` records folding to `folded`.
fn nv_holds(nv: NvAnchor, records: usize, folded: &Digest32) -> bool {
    match nv {
        NvAnchor::Unwritten => records == 0,
        NvAnchor::Value(v) => records > 0 && v == *folded,
    }
}

/// How many of the marker's records the anchor holds after the log (`None`: neither
/// the log alone nor the log and a prefix of the marker). The marker must continue
/// the log exactly (next seq, chained from the head, every hash right).
fn extended_prefix(
    records: usize,
    head: &Digest32,
    folded: &Digest32,
    wal: &Wal,
    nv: NvAnchor,
) -> Option<usize> {
    if nv_holds(nv, records, folded) {
        return Some(0);
    }
    let next = records as u64 + 1;
    if wal.first_seq != next || wal.prev != *head {
        return None;
    }
    chain::verify_from(&wal.records, next, *head, *folded, None).ok()?;
    let mut acc = *folded;
    for (j, r) in wal.records.iter().enumerate() {
        acc = anchor::step(&acc, &r.hash_bytes()?, r.grouped);
        if !r.grouped && nv == NvAnchor::Value(acc) {
            return Some(j + 1);
        }
    }
    None
}

/// Reconcile a verified log (`records`, `head`, `folded`) with the anchor `nv` and the
/// marker found at start. `Err((seq, why))` names the first bad record.
fn reconcile(
    records: &[AuditRecord],
    head: &Digest32,
    folded: &Digest32,
    nv: NvAnchor,
    marker: Option<&Result<Wal, String>>,
) -> Result<Reconciled, (u64, String)> {
    let n = records.len();
    let wal = marker.and_then(|m| m.as_ref().ok());
    let next = n as u64 + 1;
    if let Some(w) = wal.filter(|w| w.first_seq == next) {
        return match extended_prefix(n, head, folded, w, nv) {
            Some(j) => {
                let dropped = w.records[j..]
                    .iter()
                    .map(|r| (r.seq, r.op.clone()))
                    .collect();
                if j == 0 {
                    Ok(Reconciled::InSync { dropped })
                } else {
                    Ok(Reconciled::Complete(w.records[..j].to_vec()))
                }
            }
            None => Err(diagnose(records, nv, wal)),
        };
    }
    if nv_holds(nv, n, folded) {
        return Ok(Reconciled::InSync { dropped: vec![] });
    }
    Err(diagnose(records, nv, wal))
}

/// The first record that is not as anchored, and why.
fn diagnose(records: &[AuditRecord], nv: NvAnchor, wal: Option<&Wal>) -> (u64, String) {
    let n = records.len();
    let NvAnchor::Value(v) = nv else {
        return (
            1,
            "is in the log but the anchor was never extended (the NV index is new: the TPM was cleared, the index undefined, or the log comes from elsewhere)".into(),
        );
    };
    // A prefix the anchor holds: what follows was never anchored.
    let mut acc = anchor::EMPTY;
    for (i, r) in records.iter().enumerate() {
        acc = anchor::step(&acc, &r.hash_bytes().unwrap_or(GENESIS), r.grouped);
        if !r.grouped && acc == v && i + 1 < n {
            return (
                i as u64 + 2,
                "is in the log but not in the anchor: it was added while tvpd was not running (tvpd writes a record to the log only after anchoring it)".into(),
            );
        }
    }
    // The marker keeps the last record(s) tvpd anchored: a hint at which one differs.
    if let Some(w) = wal {
        if w.first_seq == n as u64 + 1 {
            return (
                w.first_seq,
                format!("(in the write-ahead marker {}) is not the record the anchor holds after the log, and the log alone does not fold to it either: the marker or the log was rewritten", wal::FILE_NAME),
            );
        }
        for r in &w.records {
            match records.get((r.seq as usize).wrapping_sub(1)) {
                Some(l) if l != r => {
                    return (
                        r.seq,
                        format!(
                            "was rewritten: its hash is {}, the record tvpd anchored as seq {} has hash {}",
                            l.hash, r.seq, r.hash
                        ),
                    )
                }
                None if r.seq > n as u64 => {
                    return (
                        n as u64 + 1,
                        format!("is missing: the log ends at seq {n} but tvpd anchored records up to seq {}; records were removed from the end", w.last_seq()),
                    )
                }
                _ => {}
            }
        }
    }
    (
        n as u64,
        format!("or an earlier one was rewritten or removed: the log's {n} records do not fold to the anchor"),
    )
}

/// If the log ends in part of the marker's group — some of its lines, possibly the
/// last one cut short (a crash in the middle of the group's log write) — the length
/// of the log without that part. A log ending in the *whole* group (the last append
/// completed) is left alone.
fn torn_write_of_marker(text: &str, marker: Option<&Result<Wal, String>>) -> Option<usize> {
    let wal = marker?.as_ref().ok()?;
    let group: String = wal.records.iter().map(|r| r.to_line() + "\n").collect();
    // Where each of the last lines begins (a partial last line too), latest first.
    let mut starts = vec![];
    let mut end = text.len();
    while end > 0 && starts.len() <= wal.records.len() {
        let start = text[..end - 1].rfind('\n').map(|i| i + 1).unwrap_or(0);
        starts.push(start);
        end = start;
    }
    starts.into_iter().find(|&p| {
        let tail = &text[p..];
        !tail.is_empty() && tail.len() < group.len() && group.starts_with(tail)
    })
}

/// The fault hook's setting, from [`FAULT_ENV`].
fn fault_from_env() -> Option<(FaultPoint, u64)> {
    let v = std::env::var(FAULT_ENV).ok()?;
    let (point, seq) = v.split_once('@')?;
    let point = match point {
        "after-wal" => FaultPoint::AfterWal,
        "after-extend" => FaultPoint::AfterExtend,
        "mid-log" => FaultPoint::MidLog,
        _ => return None,
    };
    let seq = seq.parse().ok()?;
    ::log::warn!(hook = v.as_str(); "audit fault hook set: tvpd will exit in the middle of an append (tests only)");
    Some((point, seq))
}

impl AuditLog {
    /// Open (or create) the log in `state_dir`, verify it and reconcile it with the
    /// anchor at NV `index` and the write-ahead marker.
    pub fn open(state_dir: &Path, tpm: TpmClient, index: u32) -> Result<Self, AuditError> {
        let path = state_dir.join(FILE_NAME);
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let mut text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let (wal, marker) = WalFile::open(state_dir).map_err(|source| AuditError::Io {
            path: state_dir.join(wal::FILE_NAME),
            source,
        })?;
        if let Some(whole) = torn_write_of_marker(&text, marker.as_ref()) {
            // A crash during the log write of a record the marker holds: cut it off;
            // the reconciliation below writes it again if the anchor holds it.
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(whole as u64).and_then(|_| f.sync_data()))
                .map_err(io)?;
            ::log::warn!(bytes = text.len() - whole; "audit log: cut the part of a group written ahead that its log write left (crash during the write)");
            text.truncate(whole);
        }
        let chain_err = |source| AuditError::Chain {
            path: path.clone(),
            source,
        };
        let records = chain::parse_log(&text).map_err(chain_err)?;
        let summary = chain::verify_chain(&records, None).map_err(chain_err)?;
        let nv = tpm.call(move |t| t.nv_anchor_open(index))?;
        let reconciled = reconcile(
            &records,
            &summary.head,
            &summary.anchor,
            nv,
            marker.as_ref(),
        )
        .map_err(|(seq, why)| AuditError::AnchorMismatch {
            path: path.clone(),
            records: summary.records,
            index,
            seq,
            why,
        })?;
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
            anchor: summary.anchor,
            records,
            wal,
            pending: None,
            tpm,
            index,
            fault: fault_from_env(),
        };
        match reconciled {
            Reconciled::InSync { dropped } => {
                for (seq, op) in dropped {
                    ::log::warn!(seq = seq, op = op.as_str(); "audit log: a record written ahead was never anchored (crash before its extend): dropped; its request was not answered");
                }
            }
            Reconciled::Complete(recs) => {
                let seqs = format!(
                    "{}..={}",
                    recs.first().map(|r| r.seq).unwrap_or(0),
                    recs.last().map(|r| r.seq).unwrap_or(0)
                );
                log.write_records(&recs)?;
                ::log::warn!(seq = seqs.as_str(); "audit log: completed the anchoring interrupted by a crash: records the anchor holds but the log did not (a crash between extend and log write, or removed from the log) written back from the write-ahead marker");
            }
        }
        if let Some(Err(why)) = &marker {
            ::log::debug!(why = why.as_str(); "audit write-ahead marker not whole (torn before its extend): ignored");
        }
        ::log::info!(records = log.records.len(), nv_index = format!("{index:#010x}"); "audit log verified against its TPM anchor");
        Ok(log)
    }

    fn io_err(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Write anchored records to the log and fsync; on failure the file is cut back
    /// to the last whole record and nothing is taken as written.
    fn write_records(&mut self, recs: &[AuditRecord]) -> Result<(), AuditError> {
        let mut bytes = Vec::new();
        for r in recs {
            bytes.extend_from_slice(r.to_line().as_bytes());
            bytes.push(b'\n');
        }
        if let Err(source) = self
            .file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data())
        {
            // Cut a partial line; if that fails too, retry before the next append.
            self.needs_cut = self
                .file
                .set_len(self.good_len)
                .and_then(|_| self.file.sync_data())
                .is_err();
            return Err(self.io_err(source));
        }
        self.good_len += bytes.len() as u64;
        for r in recs {
            let h = r.hash_bytes().unwrap_or(GENESIS);
            self.head = h;
            self.anchor = anchor::step(&self.anchor, &h, r.grouped);
            self.last_line = (r.to_line() + "\n").into_bytes();
            self.records.push(r.clone());
        }
        Ok(())
    }

    /// Settle a marker left by a failed append: the anchor says which of its records
    /// it holds; those are written to the log, the others dropped.
    async fn settle_pending(&mut self) -> Result<(), AuditError> {
        let Some(w) = self.pending.clone() else {
            return Ok(());
        };
        let index = self.index;
        let nv = self
            .tpm
            .call_async(move |t| t.nv_anchor_read(index))
            .await?;
        let Some(j) = extended_prefix(self.records.len(), &self.head, &self.anchor, &w, nv) else {
            return Err(AuditError::Tampered {
                path: self.path.clone(),
                detail: format!(
                    "the TPM anchor holds neither the log nor the log followed by record seq {} written ahead",
                    w.first_seq
                ),
            });
        };
        self.write_records(&w.records[..j])?;
        self.pending = None;
        Ok(())
    }

    /// Stop here if the fault hook says so for a record of the group `first..=last`
    /// (tests only).
    fn fault(&self, at: FaultPoint, first: u64, last: u64) {
        if let Some((point, seq)) = self.fault {
            if point == at && (first..=last).contains(&seq) {
                ::log::error!(seq = seq, at = format!("{at:?}"); "audit fault hook: exiting in the middle of an append");
                std::process::exit(FAULT_EXIT);
            }
        }
    }

    /// The `mid-log` fault hook: write (and sync) the group's lines up to record SEQ
    /// only — cutting SEQ's line in half if it ends the group, so the write is always
    /// partial — then exit (tests only).
    fn fault_mid_log(&mut self, recs: &[AuditRecord]) {
        let Some((FaultPoint::MidLog, seq)) = self.fault else {
            return;
        };
        let Some(k) = recs.iter().position(|r| r.seq == seq) else {
            return;
        };
        let mut bytes: Vec<u8> = recs[..=k]
            .iter()
            .flat_map(|r| (r.to_line() + "\n").into_bytes())
            .collect();
        if k + 1 == recs.len() {
            let half = recs[k].to_line().len() / 2;
            bytes.truncate(bytes.len() - half);
        }
        let _ = self
            .file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data());
        self.fault(FaultPoint::MidLog, seq, seq);
    }

    /// Reserve `len` bytes after the log's end, so that the write after the extend
    /// does not fail for want of space (best effort: not every file system can).
    fn reserve(&self, len: usize) -> Result<(), AuditError> {
        use nix::fcntl::{fallocate, FallocateFlags};
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let at = i64::try_from(self.good_len).unwrap_or(i64::MAX);
        match fallocate(
            self.file.as_raw_fd(),
            FallocateFlags::FALLOC_FL_KEEP_SIZE,
            at,
            len,
        ) {
            Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
            Err(e) => Err(self.io_err(std::io::Error::from(e))),
        }
    }

    /// Bring the log up to date before anything is decided about it: cut back a
    /// failed write, check the file is still as tvpd left it, and settle a record
    /// left pending by a failed append (written if the anchor holds it, else
    /// dropped). [`AuditLog::append`] does this first; the pending-event queue
    /// ([`super::pending`]) calls it to learn whether a sealed event was kept.
    pub async fn settle(&mut self) -> Result<(), AuditError> {
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
        self.settle_pending().await
    }

    /// Append one record: a group of one ([`AuditLog::append_group`]).
    pub async fn append(&mut self, draft: RecordDraft) -> Result<AuditRecord, AuditError> {
        let mut recs = self.append_group(vec![draft]).await?;
        recs.pop()
            .ok_or_else(|| self.io_err(std::io::Error::other("an append of one record wrote none")))
    }

    /// Append a commit group of records, in order: seal them (every one but the last
    /// `grouped`), reserve their space, write them ahead (one fsync), extend the
    /// anchor once with the last one's hash, write them to the log (one write, one
    /// fsync). Returns the sealed records. On error nothing is kept in the log that
    /// is not a whole, anchored group; the group may still be *pending*
    /// ([`AuditLog::pending_record`]) and then be written or dropped as a whole by
    /// the next [`AuditLog::settle`]. Fails closed for every record of the group.
    pub async fn append_group(
        &mut self,
        drafts: Vec<RecordDraft>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        self.settle().await?;
        if drafts.is_empty() {
            return Ok(vec![]);
        }
        let first = self.records.len() as u64 + 1;
        let n = drafts.len();
        let mut prev = self.head;
        let mut recs = Vec::with_capacity(n);
        for (i, d) in drafts.into_iter().enumerate() {
            let mut r = AuditRecord::seal(d, first + i as u64, &prev);
            r.grouped = i + 1 < n;
            prev = r.hash_bytes().unwrap_or(GENESIS);
            recs.push(r);
        }
        let last = first + n as u64 - 1;
        let t0 = std::time::Instant::now();
        self.reserve(recs.iter().map(|r| r.to_line().len() + 1).sum())?;
        let w = Wal::new(self.head, recs.clone());
        self.wal.write(&w).map_err(|source| AuditError::Io {
            path: self.wal.path().to_path_buf(),
            source,
        })?;
        self.fault(FaultPoint::AfterWal, first, last);
        self.pending = Some(w);
        // The last record's hash chains over the whole group: one extend anchors it.
        let h = prev;
        let index = self.index;
        let t1 = std::time::Instant::now();
        self.tpm
            .call_async(move |t| t.nv_anchor_extend(index, &h))
            .await?;
        let t2 = std::time::Instant::now();
        self.fault(FaultPoint::AfterExtend, first, last);
        self.fault_mid_log(&recs);
        self.write_records(&recs)?;
        self.pending = None;
        // Where a group's time goes (debug level; `tvp-bench` prints the medians).
        ::log::debug!(records = n, wal_us = (t1 - t0).as_micros() as u64, nv_extend_us = (t2 - t1).as_micros() as u64, log_us = t2.elapsed().as_micros() as u64; "audit group timing");
        Ok(recs)
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

    /// Whether the anchor holds exactly the log (no append left pending).
    pub fn anchored(&self) -> bool {
        self.pending.is_none()
    }

    /// The record written ahead by a failed append of one record whose fate the
    /// anchor decides at the next [`AuditLog::settle`]: its seq and hash (the first
    /// of a pending group).
    pub fn pending_record(&self) -> Option<(u64, String)> {
        let w = self.pending.as_ref()?;
        w.records.first().map(|r| (r.seq, r.hash.clone()))
    }

    /// Whether record `seq` of the log is the record with hash `hash`.
    pub fn holds(&self, seq: u64, hash: &str) -> bool {
        seq >= 1
            && self
                .records
                .get((seq - 1) as usize)
                .is_some_and(|r| r.hash == hash)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tvp_audit::record::{Decision, Stage};

    fn draft(op: &str, time_ms: u64) -> RecordDraft {
        RecordDraft {
            time_ms,
            uid: 0,
            pid: None,
            vm: None,
            op: op.into(),
            params_digest: [0; 32],
            stage: Stage::Decision,
            decision: Decision::Allow,
            reason: String::new(),
            status: None,
            result: None,
            state_before: None,
            state_after: None,
            request: 0,
        }
    }

    pub(super) fn log(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|s| {
                let r = AuditRecord::seal(draft("x", s), s, &prev);
                prev = r.hash_bytes().unwrap_or_default();
                r
            })
            .collect()
    }

    fn anchor_of(l: &[AuditRecord]) -> NvAnchor {
        if l.is_empty() {
            return NvAnchor::Unwritten;
        }
        NvAnchor::Value(chain::verify_chain(l, None).unwrap().anchor)
    }

    /// Reconcile the first `n` records of `l` with `nv` and `marker`.
    fn rec(
        l: &[AuditRecord],
        n: usize,
        nv: NvAnchor,
        marker: Option<Wal>,
    ) -> Result<Reconciled, (u64, String)> {
        let s = chain::verify_chain(&l[..n], None).unwrap();
        reconcile(&l[..n], &s.head, &s.anchor, nv, marker.map(Ok).as_ref())
    }

    fn marker(l: &[AuditRecord], from: usize, to: usize) -> Wal {
        let prev = if from == 0 {
            GENESIS
        } else {
            l[from - 1].hash_bytes().unwrap()
        };
        Wal::new(prev, l[from..to].to_vec())
    }

    #[test]
    fn only_the_records_the_anchor_holds_from_the_marker_are_completed() {
        let l = log(5);
        // In sync, with the marker of the last append (stale) or none.
        let in_sync = Ok(Reconciled::InSync { dropped: vec![] });
        assert_eq!(rec(&l, 5, anchor_of(&l), Some(marker(&l, 4, 5))), in_sync);
        assert_eq!(rec(&l, 5, anchor_of(&l), None), in_sync);
        assert_eq!(rec(&l, 0, NvAnchor::Unwritten, None), in_sync);
        // Crash after the marker, before the extend: dropped.
        assert_eq!(
            rec(&l, 4, anchor_of(&l[..4]), Some(marker(&l, 4, 5))),
            Ok(Reconciled::InSync {
                dropped: vec![(5, "x".into())]
            })
        );
        // Crash after the extend, before the log write: completed.
        assert_eq!(
            rec(&l, 4, anchor_of(&l), Some(marker(&l, 4, 5))),
            Ok(Reconciled::Complete(l[4..].to_vec()))
        );
        assert_eq!(
            rec(&l, 0, anchor_of(&l[..1]), Some(marker(&l, 0, 1))),
            Ok(Reconciled::Complete(l[..1].to_vec()))
        );
        // A group of which the first two were extended.
        assert_eq!(
            rec(&l, 2, anchor_of(&l[..4]), Some(marker(&l, 2, 5))),
            Ok(Reconciled::Complete(l[2..4].to_vec()))
        );
    }

    #[test]
    fn only_a_partial_line_of_a_marker_record_is_cut() {
        let l = log(3);
        let mut text: String = l[..2].iter().map(|r| r.to_line() + "\n").collect();
        let whole = text.len();
        let m = Ok(marker(&l, 2, 3));
        assert_eq!(
            torn_write_of_marker(&text, Some(&m)),
            None,
            "no partial line"
        );
        text.push_str(&l[2].to_line()[..40]);
        assert_eq!(torn_write_of_marker(&text, Some(&m)), Some(whole));
        assert_eq!(torn_write_of_marker(&text, None), None);
        text.push('X');
        assert_eq!(
            torn_write_of_marker(&text, Some(&m)),
            None,
            "not the marker's"
        );
    }

    /// `log(5)` with records 3..=5 one commit group.
    fn grouped_log() -> Vec<AuditRecord> {
        let mut l = log(5);
        l[2].grouped = true;
        l[3].grouped = true;
        l
    }

    #[test]
    fn a_group_is_completed_or_dropped_as_a_whole() {
        let l = grouped_log();
        let before = anchor_of(&l[..2]);
        // Crash after the marker, before the group's one extend: all dropped.
        assert_eq!(
            rec(&l, 2, before, Some(marker(&l, 2, 5))),
            Ok(Reconciled::InSync {
                dropped: vec![(3, "x".into()), (4, "x".into()), (5, "x".into())]
            })
        );
        // After it: the whole group is written.
        assert_eq!(
            rec(&l, 2, anchor_of(&l), Some(marker(&l, 2, 5))),
            Ok(Reconciled::Complete(l[2..].to_vec()))
        );
        // An anchor extended with a record inside the group (not what tvpd does):
        // neither state, refused.
        let NvAnchor::Value(b) = before else {
            panic!("written")
        };
        let inside = NvAnchor::Value(anchor::extend(&b, &l[2].hash_bytes().unwrap()));
        assert!(rec(&l, 2, inside, Some(marker(&l, 2, 5))).is_err());
    }

    #[test]
    fn a_group_partly_written_to_the_log_is_cut_back_whole() {
        let l = grouped_log();
        let m = Ok(marker(&l, 2, 5));
        let line = |i: usize| l[i].to_line() + "\n";
        let base: String = (0..2).map(line).collect();
        for part in [
            line(2),
            line(2) + &line(3),
            line(2) + &line(3)[..30],
            line(2)[..10].to_string(),
        ] {
            assert_eq!(
                torn_write_of_marker(&(base.clone() + &part), Some(&m)),
                Some(base.len()),
                "{part}"
            );
        }
        // The whole group in the log: the last append completed, nothing cut.
        let all: String = (0..5).map(line).collect();
        assert_eq!(torn_write_of_marker(&all, Some(&m)), None);
        assert_eq!(torn_write_of_marker(&base, Some(&m)), None);
    }

    #[test]
    fn anything_else_names_the_first_bad_record() {
        let l = log(5);
        // One or two records added while tvpd was stopped (the marker is stale).
        let (seq, why) = rec(&l, 5, anchor_of(&l[..4]), Some(marker(&l, 3, 4))).unwrap_err();
        assert_eq!(seq, 5);
        assert!(why.contains("not in the anchor"), "{why}");
        assert_eq!(rec(&l, 5, anchor_of(&l[..3]), None).unwrap_err().0, 4);
        // ... also with a forged marker for it: the anchor does not hold it.
        assert_eq!(
            rec(&l, 4, anchor_of(&l[..3]), Some(marker(&l, 3, 5)))
                .unwrap_err()
                .0,
            4
        );
        // The last record rewritten (chain recomputed): named through the marker.
        let mut r = l.clone();
        r[4] = AuditRecord::seal(draft("forged", 5), 5, &l[3].hash_bytes().unwrap());
        let (seq, why) = rec(&r, 5, anchor_of(&l), Some(marker(&l, 4, 5))).unwrap_err();
        assert_eq!(seq, 5);
        assert!(why.contains("rewritten"), "{why}");
        // A pending record rewritten in the marker: not what the anchor holds.
        let (seq, why) = rec(&r, 4, anchor_of(&l), Some(marker(&r, 4, 5))).unwrap_err();
        assert_eq!(seq, 5);
        assert!(why.contains("write-ahead marker"), "{why}");
        // Removed from the end; the log deleted; the index new.
        let (seq, why) = rec(&l, 3, anchor_of(&l), Some(marker(&l, 4, 5))).unwrap_err();
        assert_eq!(seq, 4);
        assert!(why.contains("removed"), "{why}");
        assert!(rec(&l, 0, anchor_of(&l[..1]), None).is_err());
        assert_eq!(rec(&l, 2, NvAnchor::Unwritten, None).unwrap_err().0, 1);
    }
}
