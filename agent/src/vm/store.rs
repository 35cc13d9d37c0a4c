//! The VMs' records on disk: `<vms_dir>/<id>/record.json`, rewritten atomically (write
//! to a temporary file, fsync, rename) at every state change, so that a tvpd killed at
//! any point finds on restart which VMs were live, their VMM processes and their TAP
//! devices (see `Manager::recover`). A record can hold a VM's adoption secret: it is
//! written with mode 0600 in tvpd's private state directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::VmView;

/// Largest record file read back (records are small; anything bigger is not ours).
const RECORD_MAX: u64 = 1 << 20;
/// File name of a VM's record inside its directory.
pub const RECORD_FILE: &str = "record.json";

/// What is persisted of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// What the API shows.
    #[serde(flatten)]
    pub view: VmView,
    /// Start time (clock ticks since boot) of the VMM process `view.pid`, which
    /// identifies it even if the pid is reused.
    pub vmm_start_time: Option<u64>,
    /// How a restarted tvpd re-adopts the VMM while the VM runs (absent in records of
    /// an older tvpd and for VMs without an adoption socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption: Option<Adoption>,
    /// The VM's MAC and VIP, so that a restarted tvpd that re-adopts it still refuses
    /// them to another VM on the bridge (absent in records of an older tvpd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Addresses>,
}

/// A VM's addresses on the VMs' bridge: the MAC of its NIC and its VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// The NIC's MAC address.
    pub mac: [u8; 6],
    /// The VM's IPv4 address.
    pub vip: [u8; 4],
}

/// What a restarted tvpd needs to re-adopt a running VM's VMM: where it listens once
/// its channel closed, and the secret it was given over that channel at spawn.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The VMM's adoption socket (in the VM's directory under the state directory).
    pub socket: PathBuf,
    /// The 32-byte adoption secret, hex.
    secret: String,
}

impl Adoption {
    /// An adoption socket and its secret.
    pub fn new(socket: PathBuf, secret: [u8; 32]) -> Self {
        Adoption {
            socket,
            secret: hex::encode(secret),
        }
    }

    /// The secret (`None` if the record holds something else).
    pub fn secret(&self) -> Option<[u8; 32]> {
        hex::decode(&self.secret).ok()?.try_into().ok()
    }
}

impl std::fmt::Debug for Adoption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adoption")
            .field("socket", &self.socket)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Write `rec` as `<vms_dir>/<id>/record.json`, atomically.
pub fn save(vms_dir: &Path, rec: &VmRecord) -> std::io::Result<()> {
    let dir = vms_dir.join(&rec.view.id);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
    };
    // A file left by an earlier version may have other bits: the secret is not theirs.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(RECORD_FILE))
}

/// Every readable record under `vms_dir`, with the paths that could not be read and why.
pub fn load_all(vms_dir: &Path) -> (Vec<VmRecord>, Vec<(PathBuf, String)>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(vms_dir) else {
        return (ok, bad);
    };
    for e in entries.flatten() {
        let path = e.path().join(RECORD_FILE);
        if !path.exists() {
            continue;
        }
        match load(&path) {
            Ok(r) if Some(r.view.id.as_str()) == e.file_name().to_str() => ok.push(r),
            Ok(r) => bad.push((path, format!("record names VM '{}'", r.view.id))),
            Err(m) => bad.push((path, m)),
        }
    }
    ok.sort_by(|a, b| (&a.view.created_at, &a.view.id).cmp(&(&b.view.created_at, &b.view.id)));
    (ok, bad)
}

fn load(path: &Path) -> Result<VmRecord, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(RECORD_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > RECORD_MAX {
        return Err(format!("larger than {RECORD_MAX} bytes"));
    }
    serde_json::from_slice(&buf).map_err(|e| e.to_string())
}

/// Remove a VM's directory (record, configuration page, logs).
pub fn remove(vms_dir: &Path, id: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(vms_dir.join(id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::state::VmState;

    fn rec(id: &str) -> VmRecord {
        VmRecord {
            view: VmView {
                id: id.into(),
                state: VmState::Attesting,
                reason: None,
                created_at: "2026-01-01T00:00:00Z".into(),
                updated_at: "2026-01-01T00:00:01Z".into(),
                history: vec![("2026-01-01T00:00:00Z".into(), VmState::Queued)],
                lease_position: Some(0),
                leases: Vec::new(),
                pid: Some(42),
                tap: Some("tvp0123".into()),
                measurements: Vec::new(),
                pcr23: None,
                deadline: "2026-01-01T00:01:00Z".into(),
                paused: false,
                management: None,
                phases: Vec::new(),
                handover_digest: None,
                revocations: Vec::new(),
                vtpm: false,
                vtpm_keys: None,
            },
            vmm_start_time: Some(7),
            adoption: Some(Adoption::new(PathBuf::from("/s/adopt.sock"), [3; 32])),
            addresses: Some(Addresses {
                mac: [2, 0, 0, 0, 0, 9],
                vip: [10, 0, 0, 9],
            }),
        }
    }

    #[test]
    fn saved_records_load_back_and_foreign_or_broken_files_are_reported() {
        let d = tempfile::tempdir().unwrap();
        save(d.path(), &rec("a")).unwrap();
        save(d.path(), &rec("b")).unwrap();
        std::fs::create_dir_all(d.path().join("c")).unwrap();
        std::fs::write(d.path().join("c").join(RECORD_FILE), b"{not json").unwrap();
        std::fs::create_dir_all(d.path().join("d")).unwrap();
        let moved = serde_json::to_vec(&rec("a")).unwrap();
        std::fs::write(d.path().join("d").join(RECORD_FILE), moved).unwrap();
        let (ok, bad) = load_all(d.path());
        assert_eq!(ok, vec![rec("a"), rec("b")]);
        assert_eq!(ok[0].adoption.as_ref().unwrap().secret(), Some([3; 32]));
        assert_eq!(ok[0].addresses.unwrap().mac, [2, 0, 0, 0, 0, 9]);
        // The record holds the adoption secret: only tvpd (root) reads it.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("a").join(RECORD_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{:?}", ok[0]).contains(&hex::encode([3u8; 32])));
        assert_eq!(bad.len(), 2, "{bad:?}");
        remove(d.path(), "a").unwrap();
        remove(d.path(), "a").unwrap();
        assert_eq!(load_all(d.path()).0, vec![rec("b")]);
    }
}
