//! Platform change detection: after the platform measurement, tvpd watches every file
//! it measured (its own binary, the platform artefacts such as tvp-vmm and the firmware
//! image) and its configuration file. A change is never used silently: it is recorded
//! with the digest measured at start and the digest now, logged as an error, reported
//! by `GET /v1/host` (`platform_intact: false`), and — once measured VMs exist — the
//! changed artefact is refused for new VMs until tvpd is restarted and re-measures.
//!
//! Detection uses inotify on the files' directories, so replacing a file by rename
//! (how package managers and `install` work) is seen as well as writing into it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use log::{error, warn};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::{Deserialize, Serialize};

use crate::platform::{hash_file, ABSENT};

/// A file whose content must not change while tvpd runs.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The file.
    pub path: PathBuf,
    /// Its SHA-256 at start.
    pub measured: [u8; 32],
}

/// One detected change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformChange {
    /// The changed file.
    pub path: String,
    /// SHA-256 measured at start, hex.
    pub measured: String,
    /// SHA-256 now, hex; `None` if the file is gone or unreadable.
    pub current: Option<String>,
    /// When the change was first seen (RFC 3339).
    pub detected_at: String,
}

/// Changes detected since start.
#[derive(Debug, Default)]
pub struct PlatformState {
    changes: BTreeMap<PathBuf, PlatformChange>,
}

impl PlatformState {
    /// No measured file has changed.
    pub fn is_intact(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether this file changed since it was measured.
    pub fn changed(&self, path: &Path) -> bool {
        self.changes.contains_key(path)
    }

    /// All changes, by path.
    pub fn changes(&self) -> Vec<PlatformChange> {
        self.changes.values().cloned().collect()
    }

    /// Re-hash `w` and record a change if its content differs from the measurement.
    /// Returns the change when it is new.
    pub fn check(&mut self, w: &Watched, now: &str) -> Option<PlatformChange> {
        let current = hash_file(&w.path).ok();
        // A file measured as absent is unchanged while it stays absent.
        if current.unwrap_or(ABSENT) == w.measured {
            return None;
        }
        let current_hex = current.map(hex::encode);
        match self.changes.get_mut(&w.path) {
            Some(c) => {
                c.current = current_hex;
                None
            }
            None => {
                let c = PlatformChange {
                    path: w.path.display().to_string(),
                    measured: hex::encode(w.measured),
                    current: current_hex,
                    detected_at: now.to_string(),
                };
                self.changes.insert(w.path.clone(), c.clone());
                Some(c)
            }
        }
    }
}

/// Called once for every newly detected change (e.g. to revoke live VMs' trust).
pub type OnChange = Box<dyn Fn(&PlatformChange) + Send>;

/// Start watching `files`; changes are recorded in `state` and each new one is passed
/// to `on_change`. The watcher thread lives as long as the process.
pub fn spawn(
    files: Vec<Watched>,
    state: Arc<Mutex<PlatformState>>,
    on_change: OnChange,
) -> std::io::Result<()> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(std::io::Error::from)?;
    let mask = AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MODIFY;
    let mut by_dir: BTreeMap<nix::sys::inotify::WatchDescriptor, Vec<(OsString, Watched)>> =
        BTreeMap::new();
    for w in files {
        let (Some(dir), Some(name)) = (w.path.parent(), w.path.file_name()) else {
            continue;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let wd = match inotify.add_watch(dir, mask) {
            Ok(wd) => wd,
            // A file measured as absent whose directory does not exist either: nothing
            // to watch; it is measured again at the next start.
            Err(nix::errno::Errno::ENOENT) if w.measured == ABSENT => {
                warn!(file = w.path.display().to_string(); "platform file and its directory are absent: not watched (a file created there is seen at the next start)");
                continue;
            }
            Err(e) => return Err(std::io::Error::from(e)),
        };
        by_dir.entry(wd).or_default().push((name.to_os_string(), w));
    }
    std::thread::Builder::new()
        .name("platform-watch".into())
        .spawn(move || loop {
            let events = match inotify.read_events() {
                Ok(e) => e,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    error!(error = e.to_string(); "platform watch stopped: changes to measured files will no longer be detected");
                    return;
                }
            };
            for ev in events {
                let (Some(list), Some(name)) = (by_dir.get(&ev.wd), ev.name.as_ref()) else {
                    continue;
                };
                for (file, w) in list.iter().filter(|(f, _)| f == name) {
                    let now = crate::logging::timestamp();
                    let change = crate::lock(&state).check(w, &now);
                    if let Some(c) = change {
                        error!(path = c.path.as_str(), measured = c.measured.as_str(), current = c.current.as_deref().unwrap_or("gone"); "measured platform file changed: it will not be used until tvpd restarts and re-measures");
                        on_change(&c);
                    } else {
                        log::debug!(file = file.to_string_lossy().as_ref(); "platform file event without content change");
                    }
                }
            }
        })
        .map(|_| ())
        .inspect_err(|e| warn!(error = e.to_string(); "cannot start the platform watch thread"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_records_first_detection_and_tracks_current() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fw.bin");
        std::fs::write(&f, b"one").unwrap();
        let w = Watched {
            path: f.clone(),
            measured: hash_file(&f).unwrap(),
        };
        let mut s = PlatformState::default();
        assert!(s.check(&w, "t0").is_none());
        assert!(s.is_intact());
        std::fs::write(&f, b"two").unwrap();
        let c = s.check(&w, "t1").expect("change detected");
        assert_eq!(c.detected_at, "t1");
        assert!(!s.is_intact() && s.changed(&f));
        std::fs::remove_file(&f).unwrap();
        assert!(s.check(&w, "t2").is_none(), "already recorded");
        assert_eq!(s.changes()[0].current, None);
        assert_eq!(s.changes()[0].detected_at, "t1");

        // Measured as absent: unchanged while absent, changed once it appears.
        let g = dir.path().join("vmm");
        let absent = Watched {
            path: g.clone(),
            measured: ABSENT,
        };
        assert!(s.check(&absent, "t3").is_none());
        std::fs::write(&g, b"appeared").unwrap();
        assert!(s.check(&absent, "t4").is_some());
        assert!(s.changed(&g));
    }
}
