//! The highest authorization counter accepted per VM, persisted (write to a temporary
//! file, fsync, rename, fsync the directory) *before* the authorized operation runs,
//! so a token cannot be replayed, not even across a crash or restart of tvpd.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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
}
