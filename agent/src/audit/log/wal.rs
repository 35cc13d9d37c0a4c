//! The anchor's write-ahead marker (`audit.wal` in the state directory): the records
//! tvpd is about to extend into the NV anchor, persisted (fsynced) *before* the extend
//! and written to the log only *after* it. So the log never holds a record the anchor
//! does not, and after a crash between the extend and the log write the marker holds
//! exactly the records whose anchoring must be completed; the TPM decides which of
//! them (those the anchor already holds), never the file.
//!
//! Format (docs/audit.md, "Anchor and start-up"): one JSON header line
//! `{"tvp_audit_wal":1,"first_seq":N,"prev":"<hex>","records":K}` followed by K
//! record lines exactly as they go into the log (seq N.., chained from `prev`): one
//! commit group, whose records but the last are marked `grouped`; the anchor is
//! extended once for it, with its last record's hash.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tvp_audit::record::AuditRecord;
use tvp_audit::Digest32;

/// File name in the state directory.
pub const FILE_NAME: &str = "audit.wal";
/// Marker format version.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    tvp_audit_wal: u32,
    first_seq: u64,
    prev: String,
    records: u64,
}

/// Records written ahead of their extend, oldest first, chained from `prev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wal {
    /// Sequence number of the first record.
    pub first_seq: u64,
    /// Hash of the record before the first (the log's head when written).
    pub prev: Digest32,
    /// The records.
    pub records: Vec<AuditRecord>,
}

impl Wal {
    /// A marker for `records` (at least one), which follow `prev`.
    pub fn new(prev: Digest32, records: Vec<AuditRecord>) -> Wal {
        let first_seq = records.first().map(|r| r.seq).unwrap_or(0);
        Wal {
            first_seq,
            prev,
            records,
        }
    }

    /// Sequence number of the last record.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + (self.records.len() as u64).saturating_sub(1)
    }

    /// The bytes of the file.
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            tvp_audit_wal: VERSION,
            first_seq: self.first_seq,
            prev: hex::encode(self.prev),
            records: self.records.len() as u64,
        };
        let mut out = serde_json::to_string(&header).unwrap_or_default();
        out.push('\n');
        for r in &self.records {
            out.push_str(&r.to_line());
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Parse a marker file's text; `Err` says why it is not a whole marker (a marker
    /// torn by a crash while it was written is such a file).
    pub fn decode(text: &str) -> Result<Wal, String> {
        let mut lines = text.lines();
        let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
            .map_err(|e| format!("header: {e}"))?;
        if header.tvp_audit_wal != VERSION {
            return Err(format!("version {} is not {VERSION}", header.tvp_audit_wal));
        }
        let prev = hex::decode(&header.prev)
            .ok()
            .and_then(|v| Digest32::try_from(v).ok())
            .ok_or("prev is not a SHA-256 digest in hex")?;
        let records = lines
            .map(|l| serde_json::from_str::<AuditRecord>(l).map_err(|e| format!("record: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if records.len() as u64 != header.records || records.is_empty() {
            return Err(format!(
                "{} records, the header says {}",
                records.len(),
                header.records
            ));
        }
        Ok(Wal {
            first_seq: header.first_seq,
            prev,
            records,
        })
    }
}

/// The marker file, kept open.
pub struct WalFile {
    path: PathBuf,
    file: File,
}

impl WalFile {
    /// Open (or create) the marker in `state_dir` and read what it holds: `None` if
    /// empty, else the marker or why it does not parse.
    pub fn open(state_dir: &Path) -> std::io::Result<(WalFile, Option<Result<Wal, String>>)> {
        let path = state_dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let mut text = String::new();
        let content = match file.read_to_string(&mut text) {
            Ok(0) => None,
            Ok(_) => Some(Wal::decode(&text)),
            Err(e) => Some(Err(e.to_string())),
        };
        Ok((WalFile { path, file }, content))
    }

    /// Replace the marker by `wal` and make it durable (in place: a torn write is only
    /// possible before the extend, when the marker is not needed).
    pub fn write(&mut self, wal: &Wal) -> std::io::Result<()> {
        let bytes = wal.encode();
        self.file.write_all_at(&bytes, 0)?;
        self.file.set_len(bytes.len() as u64)?;
        self.file.sync_data()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvp_audit::record::GENESIS;

    #[test]
    fn a_marker_round_trips_and_a_torn_one_does_not_parse() {
        let w = Wal::new(GENESIS, super::super::tests::log(1));
        let bytes = w.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(Wal::decode(&text), Ok(w.clone()));
        assert_eq!(w.last_seq(), 1);
        assert!(Wal::decode(&text[..text.len() - 20]).is_err());
        assert!(Wal::decode(text.lines().next().unwrap()).is_err());

        let dir = tempfile::tempdir().unwrap();
        let (mut f, content) = WalFile::open(dir.path()).unwrap();
        assert!(content.is_none());
        f.write(&w).unwrap();
        let (_, content) = WalFile::open(dir.path()).unwrap();
        assert_eq!(content, Some(Ok(w)));
    }
}
