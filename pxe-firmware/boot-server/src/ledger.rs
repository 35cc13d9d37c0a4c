//! The reservation ledger: what has happened to the reservations, on disk, so that a
//! restarted boot server neither hands a spent reservation's workload out again nor
//! forgets the failed attempts it has counted (`docs/boot-server.md`, "Ledger").
//!
//! An append-only file of JSON lines, one per event, each written and fsynced before
//! the boot server acts on it:
//!
//! ```text
//! {"u_sha256":"<hex>","event":"spent","at":1764849600}
//! {"u_sha256":"<hex>","event":"failed","at":1764849601}
//! ```
//!
//! `spent` is written *before* the first byte of the workload goes out (write-ahead: a
//! crash between the two leaves the reservation spent, never a workload delivered twice);
//! `failed` after a failed attempt. The auth code is recorded as its SHA-256 only: the
//! ledger says what happened to a reservation without holding the code itself.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest ledger read at start (a line is ~100 bytes: about 10 million events).
const LEDGER_MAX: u64 = 1 << 30;

/// What happened to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// Its workload was (about to be) sent: the reservation is spent.
    Spent,
    /// An attempt failed: one more failure counted.
    Failed,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// SHA-256 of the auth code U, hex.
    pub u_sha256: String,
    /// What happened.
    pub event: Event,
    /// When, seconds since the Unix epoch.
    pub at: u64,
}

/// Why the ledger cannot be used; the boot server does not start (or, for a write,
/// does not deliver).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file cannot be opened, read or written.
    #[error("reservation ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a ledger entry (the file is not a ledger, or was edited).
    #[error("reservation ledger {path}, line {line}: {why}; not starting with a ledger it cannot read (move it away only if its reservations are all new)")]
    BadLine {
        /// The ledger file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The file is larger than any ledger this server writes.
    #[error("reservation ledger {path}: larger than {LEDGER_MAX} bytes")]
    TooLarge {
        /// The ledger file.
        path: PathBuf,
    },
}

/// The open ledger, appended to under the reservations' lock.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
}

/// SHA-256 of an auth code, hex: how the ledger names a reservation.
pub fn code_digest(code: &[u8]) -> String {
    hex::encode(Sha256::digest(code))
}

impl Ledger {
    /// Opens (creating, mode 0600) the ledger at `path` and reads every entry in it.
    pub fn open(path: &Path) -> Result<(Ledger, Vec<Entry>), LedgerError> {
        let io = |source| LedgerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?
        };
        if file.metadata().map_err(io)?.len() > LEDGER_MAX {
            return Err(LedgerError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let entries = parse(&text).map_err(|(line, why)| LedgerError::BadLine {
            path: path.to_path_buf(),
            line,
            why,
        })?;
        Ok((
            Ledger {
                path: path.to_path_buf(),
                file,
            },
            entries,
        ))
    }

    /// Appends `event` for `code` and makes it durable (fsync) before returning.
    pub fn append(&mut self, code: &[u8], event: Event) -> Result<(), LedgerError> {
        let entry = Entry {
            u_sha256: code_digest(code),
            event,
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let mut line = serde_json::to_vec(&entry).map_err(|e| LedgerError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| LedgerError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The entries of a ledger's text. A last line without its newline is a write that a
/// crash cut short: it never took effect (its fsync did not return) and is ignored.
/// Any other bad line is an error with its 1-based number.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    let mut entries = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
        if e.u_sha256.len() != 64 || hex::decode(&e.u_sha256).is_err() {
            return Err((i + 1, "u_sha256 is not 64 hex digits".into()));
        }
        entries.push(e);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_written_are_read_back_and_a_torn_last_line_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        let (mut l, e) = Ledger::open(&p).unwrap();
        assert!(e.is_empty());
        l.append(b"U-1", Event::Failed).unwrap();
        l.append(b"U-1", Event::Spent).unwrap();
        drop(l);
        // A crash in the middle of the next write.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"u_sha256\":\"ab").unwrap();
        let (_, e) = Ledger::open(&p).unwrap();
        assert_eq!(
            e.iter().map(|e| e.event).collect::<Vec<_>>(),
            [Event::Failed, Event::Spent]
        );
        assert_eq!(e[0].u_sha256, code_digest(b"U-1"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!std::fs::read_to_string(&p).unwrap().contains("U-1"));
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let good = format!(
            "{{\"u_sha256\":\"{}\",\"event\":\"spent\",\"at\":1}}\n",
            code_digest(b"x")
        );
        assert_eq!(parse(&good).unwrap().len(), 1);
        let bad = format!("{good}{{\"u_sha256\":\"zz\",\"event\":\"spent\",\"at\":1}}\n");
        assert_eq!(parse(&bad).unwrap_err().0, 2);
        let unknown = format!(
            "{good}{good}{{\"u_sha256\":\"{}\",\"event\":\"gone\",\"at\":1}}\n",
            code_digest(b"y")
        );
        assert_eq!(parse(&unknown).unwrap_err().0, 3);
        assert!(parse("not json\n").is_err());
    }
}
