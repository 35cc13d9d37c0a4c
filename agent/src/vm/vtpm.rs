//! A measured VM's own TPM (`"vtpm": true`): a swtpm per VM, started by tvpd for the
//! VM's `tvp-vmm`, which serves it to the guest as a TPM 2.0 CRB device
//! (`vmm-hooks/src/tpm_crb.rs`, docs/vmm.md).
//!
//! tvpd makes a socketpair: one end goes to `swtpm chardev --tpm2 --fd 3` (raw TPM
//! commands on a connected socket), the other to `tvp-vmm --vtpm-fd`. swtpm runs under
//! the VMM's user (`vmm_user`) with its own seccomp profile, keeps its state in the VM's
//! directory (`vms/<id>/vtpm`, mode 0700), and ends when the VMM's end of the socket
//! closes: the VM's end is its end, also when a restarted tvpd re-adopted the VMM, and
//! no other process can reach it. The state is removed with the VM's directory at
//! delete.
//!
//! Not yet (issue #20): the state encrypted under a key sealed in the host TPM, the
//! vTPM's EK certificate, measured boot into the vTPM.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::VmError;

/// The swtpm binary (on `PATH`).
pub const SWTPM: &str = "swtpm";
/// The TPM socket's descriptor number in swtpm.
const SWTPM_FD: i32 = 3;
/// The state directory's name in the VM's directory.
pub const STATE_DIR: &str = "vtpm";

/// Starts the VM's swtpm with its state in `vm_dir/vtpm`, serving TPM commands on
/// `tpm` (its end of the socketpair), as `run_as` (uid, gid) if given. A thread reaps
/// it when it ends (when the VMM's end closes).
pub fn start(
    id: &str,
    vm_dir: &Path,
    tpm: UnixStream,
    run_as: Option<(u32, u32)>,
) -> Result<u32, VmError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let state = vm_dir.join(STATE_DIR);
    let spawn_err = |what: &str, e: std::io::Error| {
        VmError::Spawn(format!("vTPM: {what} {}: {e}", state.display()))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&state)
        .map_err(|e| spawn_err("cannot create", e))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| spawn_err("cannot restrict", e))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&state, Some(uid), Some(gid))
            .map_err(|e| spawn_err("cannot hand to the VMM's user", e))?;
    }
    let log = std::fs::File::create(vm_dir.join("swtpm.log"))
        .map_err(|e| spawn_err("cannot create the log beside", e))?;
    let cwd = std::ffi::CString::new(state.as_os_str().as_encoded_bytes())
        .map_err(|_| VmError::Spawn(format!("vTPM: {} has a NUL byte", state.display())))?;
    let mut cmd = Command::new(SWTPM);
    // The state directory is the working directory (`dir=.`): the child enters it
    // while still root, then becomes the VMM's user, which needs no right on the
    // directories above it (state_dir stays closed to that user).
    cmd.args(["chardev", "--tpm2", "--fd", &SWTPM_FD.to_string()])
        .args(["--tpmstate", "dir=."])
        .args(["--flags", "not-need-init", "--seccomp", "action=kill"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    super::manager::inherit_only(&mut cmd, vec![(tpm.as_raw_fd(), SWTPM_FD)]);
    // SAFETY: the closure runs in the forked child before exec and calls only chdir,
    // setgroups, setgid and setuid (async-signal-safe) with values made before the
    // fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if libc::chdir(cwd.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid, gid)) = run_as {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        VmError::Spawn(format!(
            "vTPM: cannot start {SWTPM} ({e}); install swtpm, or create the VM without \"vtpm\""
        ))
    })?;
    drop(tpm);
    let pid = child.id();
    let vm = id.to_string();
    let reaper = std::thread::Builder::new()
        .name(format!("swtpm-{id}"))
        .spawn(move || match child.wait() {
            Ok(s) => log::info!(vm = vm.as_str(), pid = pid, status = s.to_string(); "vTPM: swtpm ended"),
            Err(e) => log::warn!(vm = vm.as_str(), pid = pid, error = e.to_string(); "vTPM: cannot reap swtpm"),
        });
    if let Err(e) = reaper {
        log::warn!(vm = id, pid = pid, error = e.to_string(); "vTPM: no reaper thread; swtpm stays a zombie after it ends");
    }
    log::info!(vm = id, pid = pid, state = state.display().to_string(); "vTPM: swtpm started");
    Ok(pid)
}
