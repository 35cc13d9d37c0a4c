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
//! The state is encrypted at rest (swtpm `--key`, AES-256-CBC) with a per-VM key that
//! exists on disk only wrapped (RSA-OAEP-SHA-256) to the host's binding key
//! (`tpm/binding.rs`): a TPM-resident key whose use the TPM allows only while the
//! platform PCR holds its value from the key's creation. So the state opens on this
//! host, unchanged, only: copied to another host, or after a platform change, the key
//! cannot be unwrapped and the VM's TPM does not start. The key reaches swtpm through
//! a pipe, never a file.
//!
//! Before its first run the VM's TPM is made (`provision.rs`): its EK and AK derived,
//! certified by the host's vTPM CA (`tpm/vtpm_ca.rs`), the EK certificate stored in
//! it. Both keys' digests go into the VM's configuration page (docs/vtpm-identity.md).

pub mod provision;
pub mod wire;

pub use provision::Identity;

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
/// The state key, wrapped to the binding key, in the VM's directory.
pub const WRAPPED_KEY: &str = "vtpm.key";
/// The state key pipe's descriptor number in swtpm.
const SWTPM_KEY_FD: i32 = 4;

/// The VM's state key: unwrapped by the TPM from `vm_dir/vtpm.key` if the VM has one
/// (its TPM existed before: a reboot), else a new random key, written there wrapped.
pub fn state_key(
    releaser: &crate::image_release::Releaser,
    vm_dir: &Path,
) -> Result<tvp_image::ImageKey, VmError> {
    let path = vm_dir.join(WRAPPED_KEY);
    let binding = releaser.binding_key.clone();
    match std::fs::read(&path) {
        Ok(wrapped) => {
            let raw = releaser
                .tpm
                .call(move |t| t.binding_unwrap(&binding, &wrapped))
                .map_err(|e| {
                    VmError::Spawn(format!(
                        "vTPM: the TPM will not unwrap this VM's state key ({e}): the platform changed since the VM's TPM was made, or its state comes from another host"
                    ))
                })?;
            tvp_image::ImageKey::from_bytes(&raw)
                .map_err(|e| VmError::Spawn(format!("vTPM: state key: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = tvp_image::ImageKey::generate();
            let public = crate::tpm::keys::public_to_rsa(&binding.public)
                .map_err(|e| VmError::Spawn(format!("vTPM: binding key: {e}")))?;
            let wrapped = key
                .wrap(&public)
                .map_err(|e| VmError::Spawn(format!("vTPM: wrapping the state key: {e}")))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&wrapped).and_then(|()| f.sync_all()))
                .map_err(|e| VmError::Spawn(format!("vTPM: {}: {e}", path.display())))?;
            Ok(key)
        }
        Err(e) => Err(VmError::Spawn(format!("vTPM: {}: {e}", path.display()))),
    }
}

/// A change to a VM's TPM the tenant authorized (`vtpm-clear`, `vtpm-reset`), made
/// before the VM's next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// TPM2_Clear: the owner hierarchy anew; EK, AK and certificates stay.
    Clear,
    /// A new TPM: the state and its key destroyed, a new EK and AK certified.
    Reset,
}

/// The pending renewal's file in the VM's directory (`clear` or `reset`).
const RENEWAL: &str = "vtpm.renew";

/// Record `what` for the VM's next start (replacing any earlier request).
pub fn request_renewal(vm_dir: &Path, what: Renewal) -> Result<(), VmError> {
    let path = vm_dir.join(RENEWAL);
    let word = match what {
        Renewal::Clear => "clear",
        Renewal::Reset => "reset",
    };
    std::fs::write(&path, word)
        .map_err(|e| VmError::Spawn(format!("vTPM: {}: {e}", path.display())))
}

fn pending_renewal(vm_dir: &Path) -> Result<Option<Renewal>, VmError> {
    let path = vm_dir.join(RENEWAL);
    match std::fs::read_to_string(&path) {
        Ok(s) if s == "clear" => Ok(Some(Renewal::Clear)),
        Ok(s) if s == "reset" => Ok(Some(Renewal::Reset)),
        Ok(s) => Err(VmError::Spawn(format!(
            "vTPM: {}: '{}' is neither clear nor reset; remove the file to boot the VM's TPM unchanged",
            path.display(),
            s.chars().take(16).collect::<String>()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(VmError::Spawn(format!("vTPM: {}: {e}", path.display()))),
    }
}

/// Destroy the VM's TPM: its wrapped state key first (without it the encrypted state
/// is noise), then its identity and state.
fn destroy(vm_dir: &Path) -> Result<(), VmError> {
    let err = |p: &Path, e: std::io::Error| {
        VmError::Spawn(format!("vTPM: destroying {}: {e}", p.display()))
    };
    for f in [WRAPPED_KEY, provision::IDENTITY_FILE] {
        let p = vm_dir.join(f);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&p, e)),
        }
    }
    let state = vm_dir.join(STATE_DIR);
    match std::fs::remove_dir_all(&state) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(&state, e)),
    }
}

/// What a VM's launch needs of its TPM: the state key and the TPM's identity, made
/// now if the VM has none yet (its first run, or after `vtpm-reset`); a pending
/// `vtpm-clear` is carried out first.
pub fn prepare(
    id: &str,
    releaser: &crate::image_release::Releaser,
    vm_dir: &Path,
    run_as: Option<(u32, u32)>,
) -> Result<(tvp_image::ImageKey, Identity), VmError> {
    let renewal = pending_renewal(vm_dir)?;
    if renewal == Some(Renewal::Reset) {
        destroy(vm_dir)?;
        log::info!(vm = id; "vTPM: destroyed the VM's TPM (vtpm-reset); a new one is made");
    }
    let key = state_key(releaser, vm_dir)?;
    let identity = match Identity::load(vm_dir)? {
        Some(i) => {
            if renewal == Some(Renewal::Clear) {
                provision::clear(id, vm_dir, &key, run_as)?;
            }
            i
        }
        None => provision::provision(id, vm_dir, &key, run_as, &releaser.tpm)?,
    };
    if renewal.is_some() {
        let _ = std::fs::remove_file(vm_dir.join(RENEWAL));
    }
    Ok((key, identity))
}

/// Starts the VM's swtpm with its state in `vm_dir/vtpm` encrypted with `key`, serving
/// TPM commands on `tpm` (its end of the socketpair), as `run_as` (uid, gid) if given.
/// A thread reaps it when it ends (when the VMM's end closes).
pub fn start(
    id: &str,
    vm_dir: &Path,
    tpm: UnixStream,
    key: &tvp_image::ImageKey,
    run_as: Option<(u32, u32)>,
) -> Result<(), VmError> {
    let mut child = spawn(vm_dir, tpm, key, run_as)?;
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
    log::info!(vm = id, pid = pid, state = vm_dir.join(STATE_DIR).display().to_string(); "vTPM: swtpm started");
    Ok(())
}

/// Spawns swtpm on `tpm` for the state in `vm_dir/vtpm` (made, mode 0700, owned by
/// `run_as`), its key through a pipe; the caller reaps it.
fn spawn(
    vm_dir: &Path,
    tpm: UnixStream,
    key: &tvp_image::ImageKey,
    run_as: Option<(u32, u32)>,
) -> Result<std::process::Child, VmError> {
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
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(vm_dir.join("swtpm.log"))
        .map_err(|e| spawn_err("cannot create the log beside", e))?;
    let cwd = std::ffi::CString::new(state.as_os_str().as_encoded_bytes())
        .map_err(|_| VmError::Spawn(format!("vTPM: {} has a NUL byte", state.display())))?;
    let mut cmd = Command::new(SWTPM);
    // The state directory is the working directory (`dir=.`): the child enters it
    // while still root, then becomes the VMM's user, which needs no right on the
    // directories above it (state_dir stays closed to that user).
    cmd.args(["chardev", "--tpm2", "--fd", &SWTPM_FD.to_string()])
        .args(["--tpmstate", "dir=."])
        .arg("--key")
        .arg(format!(
            "fd={SWTPM_KEY_FD},mode=aes-256-cbc,format=binary,remove=false"
        ))
        .args(["--flags", "not-need-init", "--seccomp", "action=kill"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let key_pipe = super::manager::key_pipe(key)?;
    super::manager::inherit_only(
        &mut cmd,
        vec![
            (tpm.as_raw_fd(), SWTPM_FD),
            (key_pipe.as_raw_fd(), SWTPM_KEY_FD),
        ],
    );
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
    let child = cmd.spawn().map_err(|e| {
        VmError::Spawn(format!(
            "vTPM: cannot start {SWTPM} ({e}); install swtpm, or create the VM without \"vtpm\""
        ))
    })?;
    drop(tpm);
    drop(key_pipe);
    Ok(child)
}
