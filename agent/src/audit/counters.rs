//! The highest authorization counter accepted per VM, persisted (write to a temporary
//! file, fsync, rename, fsync the directory) *before* the authorized operation runs,
//! so a token cannot be replayed, not even across a crash or restart of tvpd.
//!
//! The file alone is not trusted: whoever is root while tvpd is stopped could put an
//! older copy back and make spent tokens valid again. Every accepted counter is also
//! stated by the allowed decision record that follows it in the TPM-anchored audit
//! trail, so at start [`CounterStore::check_against`] compares the two and tvpd
//! refuses to start (exit 65) if the file is behind the trail for any VM.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tvp_audit::record::{AuditRecord, Decision, Stage};

use super::authorize::accepted_counter;

/// File name in the state directory.
pub const FILE_NAME: &str = "authz-counters.json";

/// Per-VM counters.
#[derive(Debug)]
pub struct CounterStore {
    path: PathBuf,
    last: BTreeMap<String, u64>,
}

/// Why counters cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// I/O failed.
    #[error("authorization counters {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is behind the audit trail: it was rolled back (or deleted) while
    /// tvpd was stopped, which would make spent tokens valid again.
    #[error("authorization counters {path} were rolled back: VM '{vm}' has {} there, but the TPM-anchored audit trail shows counter {audit} accepted (record {seq}); spent tokens would be valid again. Restore the newest copy of the file, or set '{vm}' to at least {audit} in it", file.map_or("no counter".to_string(), |c| format!("counter {c}")))]
    RolledBack {
        path: PathBuf,
        vm: String,
        file: Option<u64>,
        audit: u64,
        seq: u64,
    },
    /// The file is not a counter map.
    #[error("authorization counters {path} are corrupt ({message}); restore them from backup: deleting them would allow replays")]
    Corrupt { path: PathBuf, message: String },
}

impl CounterStore {
    /// Load from `state_dir` (empty if absent).
    pub fn load(state_dir: &Path) -> Result<Self, CounterError> {
        let path = state_dir.join(FILE_NAME);
        let last = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| CounterError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(CounterError::Io { path, source }),
        };
        Ok(CounterStore { path, last })
    }

    /// Refuse counters that are behind `records` (the verified, TPM-anchored audit
    /// trail): for every VM, the highest counter an allowed decision record states
    /// must not exceed the file's. (The file may be ahead: its counter is persisted
    /// before the decision record is written.)
    pub fn check_against(&self, records: &[AuditRecord]) -> Result<(), CounterError> {
        let mut highest: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for r in records {
            if r.stage != Stage::Decision || r.decision != Decision::Allow {
                continue;
            }
            let (Some(vm), Some(c)) = (r.vm.as_deref(), accepted_counter(&r.reason)) else {
                continue;
            };
            let e = highest.entry(vm).or_insert((c, r.seq));
            if c > e.0 {
                *e = (c, r.seq);
            }
        }
        for (vm, (audit, seq)) in highest {
            let file = self.last(vm);
            if file.is_none_or(|f| f < audit) {
                return Err(CounterError::RolledBack {
                    path: self.path.clone(),
                    vm: vm.to_string(),
                    file,
                    audit,
                    seq,
                });
            }
        }
        Ok(())
    }

    /// The last accepted counter of `vm`.
    pub fn last(&self, vm: &str) -> Option<u64> {
        self.last.get(vm).copied()
    }

    /// Record `counter` for `vm` durably. On error nothing changes.
    pub fn accept(&mut self, vm: &str, counter: u64) -> Result<(), CounterError> {
        let mut next = self.last.clone();
        next.insert(vm.to_string(), counter);
        let io = |source| CounterError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| io(std::io::Error::other(e)))?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(d) = self.path.parent() {
                fs::File::open(d)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        self.last = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_reload() {
        let d = tempfile::tempdir().unwrap();
        let mut s = CounterStore::load(d.path()).unwrap();
        assert_eq!(s.last("a"), None);
        s.accept("a", 7).unwrap();
        assert_eq!(CounterStore::load(d.path()).unwrap().last("a"), Some(7));
        fs::write(d.path().join(FILE_NAME), b"nope").unwrap();
        assert!(matches!(
            CounterStore::load(d.path()),
            Err(CounterError::Corrupt { .. })
        ));
    }

    fn decision(seq: u64, vm: &str, decision: Decision, reason: &str) -> AuditRecord {
        AuditRecord {
            v: 1,
            seq,
            time_ms: 0,
            uid: 0,
            pid: None,
            vm: Some(vm.into()),
            op: "pause".into(),
            params_digest: String::new(),
            stage: Stage::Decision,
            decision,
            reason: reason.into(),
            status: None,
            result: None,
            state_before: None,
            state_after: None,
            request: seq,
            prev: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_file_behind_the_trail_is_named() {
        let d = tempfile::tempdir().unwrap();
        let mut s = CounterStore::load(d.path()).unwrap();
        let trail = [
            decision(
                1,
                "a",
                Decision::Allow,
                "authorized by tenant key k with counter 5",
            ),
            decision(
                2,
                "a",
                Decision::Allow,
                "authorized by tenant key k with counter 9",
            ),
            decision(3, "a", Decision::Deny, "authorized? no with counter 50"),
            decision(
                4,
                "b",
                Decision::Allow,
                "authorized by tenant key k with counter 2",
            ),
        ];
        s.accept("a", 9).unwrap();
        s.accept("b", 3).unwrap();
        s.check_against(&trail).unwrap();
        s.accept("a", 8).unwrap();
        match s.check_against(&trail) {
            Err(CounterError::RolledBack {
                vm,
                file: Some(8),
                audit: 9,
                seq: 2,
                ..
            }) if vm == "a" => {}
            other => panic!("{other:?}"),
        }
        let fresh = tempfile::tempdir().unwrap();
        let empty = CounterStore::load(fresh.path()).unwrap();
        assert!(matches!(
            empty.check_against(&trail),
            Err(CounterError::RolledBack { file: None, .. })
        ));
    }
}
