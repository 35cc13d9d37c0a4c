//! Out-of-context VMs: KVM virtual machines on this host that tvpd did not create.
//!
//! Every process holding a KVM VM file descriptor (`anon_inode:kvm-vm` in
//! `/proc/PID/fd`) is found by a periodic scan. Those that are not one of tvpd's own
//! supervised `tvp-vmm` processes are recorded with when they were first seen, logged,
//! and reported by `GET /v1/host/unmanaged-vms`, so tenants and operators learn of VMs
//! running beside theirs outside the platform's control. A `tvp-vmm` binary running
//! without tvpd is reported as its own kind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A process holding KVM VM file descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmProcess {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): with the pid,
    /// identifies the process even if the pid is reused.
    pub start_ticks: u64,
    /// Command name.
    pub comm: String,
    /// Executable, if readable.
    pub exe: Option<PathBuf>,
    /// How many KVM VM descriptors it holds.
    pub vm_fds: u32,
}

/// What kind of unmanaged VM a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnmanagedKind {
    /// A KVM VM created by some other program (QEMU, a test, anything).
    ForeignKvm,
    /// A `tvp-vmm` process that tvpd did not start.
    TvpVmmOutsideTvpd,
}

impl UnmanagedKind {
    /// The API's name (`foreign-kvm`, `tvp-vmm-outside-tvpd`).
    pub fn name(self) -> &'static str {
        match self {
            UnmanagedKind::ForeignKvm => "foreign-kvm",
            UnmanagedKind::TvpVmmOutsideTvpd => "tvp-vmm-outside-tvpd",
        }
    }
}

/// An unmanaged VM as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmanagedVm {
    /// Process id.
    pub pid: i32,
    /// Command name.
    pub comm: String,
    /// Executable path, if readable.
    pub exe: Option<String>,
    /// Kind.
    pub kind: UnmanagedKind,
    /// KVM VM descriptors held.
    pub vm_fds: u32,
    /// When tvpd first saw it (RFC 3339).
    pub first_seen: String,
}

/// Scan `proc_root` (normally `/proc`) for processes holding KVM VM descriptors.
/// Processes that vanish or cannot be read mid-scan are skipped.
pub fn scan(proc_root: &Path) -> Vec<KvmProcess> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let dir = e.path();
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let vm_fds = fds
            .flatten()
            .filter(|fd| {
                fs::read_link(fd.path())
                    .map(|t| t.as_os_str() == "anon_inode:kvm-vm")
                    .unwrap_or(false)
            })
            .count() as u32;
        if vm_fds == 0 {
            continue;
        }
        let Some(start_ticks) = start_ticks(&dir) else {
            continue;
        };
        out.push(KvmProcess {
            pid,
            start_ticks,
            comm: fs::read_to_string(dir.join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            exe: fs::read_link(dir.join("exe")).ok(),
            vm_fds,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command, which may contain
/// spaces and parentheses: parse from the last ')').
pub fn start_ticks(proc_pid_dir: &Path) -> Option<u64> {
    let stat = fs::read_to_string(proc_pid_dir.join("stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come fields 3.. ; starttime is field 22 → index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The set of unmanaged VMs seen so far, updated by each scan.
#[derive(Debug, Default)]
pub struct Census {
    seen: BTreeMap<(i32, u64), UnmanagedVm>,
}

/// What changed in one update.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CensusChange {
    /// Newly seen unmanaged VMs.
    pub appeared: Vec<UnmanagedVm>,
    /// Unmanaged VMs that are gone.
    pub vanished: Vec<UnmanagedVm>,
}

impl Census {
    /// Fold one scan in. `managed` are the pids tvpd supervises now (a VMM tvpd gave
    /// up on, because it survived SIGKILL after its VM ended, is not among them: it
    /// is reported like any other); `vmm_name` is the
    /// file name of the tvp-vmm binary; `now` is the timestamp for new entries.
    pub fn update(
        &mut self,
        scan: &[KvmProcess],
        managed: &BTreeSet<i32>,
        vmm_name: &str,
        now: &str,
    ) -> CensusChange {
        let mut change = CensusChange::default();
        let mut current = BTreeSet::new();
        for p in scan.iter().filter(|p| !managed.contains(&p.pid)) {
            let key = (p.pid, p.start_ticks);
            current.insert(key);
            if self.seen.contains_key(&key) {
                continue;
            }
            let is_vmm = p
                .exe
                .as_ref()
                .and_then(|e| e.file_name())
                .is_some_and(|n| n == vmm_name)
                || p.comm == vmm_name;
            let vm = UnmanagedVm {
                pid: p.pid,
                comm: p.comm.clone(),
                exe: p.exe.as_ref().map(|e| e.display().to_string()),
                kind: if is_vmm {
                    UnmanagedKind::TvpVmmOutsideTvpd
                } else {
                    UnmanagedKind::ForeignKvm
                },
                vm_fds: p.vm_fds,
                first_seen: now.to_string(),
            };
            change.appeared.push(vm.clone());
            self.seen.insert(key, vm);
        }
        let gone: Vec<(i32, u64)> = self
            .seen
            .keys()
            .filter(|k| !current.contains(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(v) = self.seen.remove(&k) {
                change.vanished.push(v);
            }
        }
        change
    }

    /// The unmanaged VMs present at the last update.
    pub fn current(&self) -> Vec<UnmanagedVm> {
        self.seen.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, comm: &str, exe: &str) -> KvmProcess {
        KvmProcess {
            pid,
            start_ticks: 100 + pid as u64,
            comm: comm.into(),
            exe: Some(PathBuf::from(exe)),
            vm_fds: 1,
        }
    }

    #[test]
    fn census_classifies_and_tracks_appearance() {
        let mut c = Census::default();
        let scan1 = vec![
            p(10, "qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
            p(11, "tvp-vmm", "/usr/local/bin/tvp-vmm"),
            p(12, "tvp-vmm", "/usr/local/bin/tvp-vmm"),
        ];
        let managed = BTreeSet::from([12]);
        let ch = c.update(&scan1, &managed, "tvp-vmm", "t1");
        assert_eq!(ch.appeared.len(), 2);
        assert_eq!(ch.appeared[0].kind, UnmanagedKind::ForeignKvm);
        assert_eq!(ch.appeared[1].kind, UnmanagedKind::TvpVmmOutsideTvpd);
        // Same scan again: nothing new; first_seen kept.
        let ch = c.update(&scan1, &managed, "tvp-vmm", "t2");
        assert_eq!(ch, CensusChange::default());
        assert!(c.current().iter().all(|v| v.first_seen == "t1"));
        // The foreign one exits.
        let ch = c.update(&scan1[1..], &managed, "tvp-vmm", "t3");
        assert_eq!(ch.vanished.len(), 1);
        assert_eq!(ch.vanished[0].pid, 10);
        assert_eq!(c.current().len(), 1);
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let dir = tempfile::tempdir().unwrap();
        let fields: Vec<String> = (3..=22).map(|i| i.to_string()).collect();
        fs::write(
            dir.path().join("stat"),
            format!("42 (a) b) (c) {} 23 24", fields.join(" ")),
        )
        .unwrap();
        assert_eq!(start_ticks(dir.path()), Some(22));
        fs::write(dir.path().join("stat"), "42 (x").unwrap();
        assert_eq!(start_ticks(dir.path()), None);
    }

    #[test]
    fn scan_finds_this_process_only_if_it_holds_a_vm() {
        let me = std::process::id() as i32;
        assert!(scan(Path::new("/proc")).iter().all(|p| p.pid != me));
    }
}
