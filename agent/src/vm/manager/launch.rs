//! Starting a VM's `tvp-vmm`: the workload image and the disk prepared, a fresh
//! configuration page built (naming both), their keys released through the TPM for
//! exactly that page, firmware and management binding (docs/kms.md), the page written,
//! and the process spawned with exactly the descriptors it needs (the channel as 3, the
//! image as 4, its key pipe as 5, the disk as 6, its key pipe as 7, its TPM as 8: a
//! socket to the VM's own swtpm, `vm/vtpm.rs`) and none of tvpd's. Also stopping it again. Each VMM gets an adoption socket path and,
//! as the first message on its channel, a fresh adoption secret: with both, a restarted
//! tvpd re-adopts it while its VM runs (`recovery`).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use rand::RngCore;
use tvp_kms::KeyUse;
use tvp_vmm_channel::{write_frame, HostMessage};

use super::record::Run;
use super::supervise::Event;
use super::{Manager, VmError};
use crate::vm::image;
use crate::vm::process::VmmProcess;
use crate::vm::spec::ValidSpec;
use crate::vm::store::Adoption;

/// The channel descriptor number in the child.
const CHILD_CHANNEL_FD: i32 = 3;
/// The workload image's descriptor number in the child.
const CHILD_IMAGE_FD: i32 = 4;
/// The image key pipe's descriptor number in the child.
const CHILD_IMAGE_KEY_FD: i32 = 5;
/// The encrypted disk's descriptor number in the child.
const CHILD_DISK_FD: i32 = 6;
/// The disk key pipe's descriptor number in the child.
const CHILD_DISK_KEY_FD: i32 = 7;
/// The VM's TPM (its swtpm's socket) descriptor number in the child.
const CHILD_VTPM_FD: i32 = 8;
/// Most descriptors a child inherits (channel, image, image key, disk, disk key, TPM).
const MAX_INHERITED: usize = 6;
/// File name of a VMM's adoption socket in its VM's directory.
pub(super) const ADOPT_SOCKET: &str = "adopt.sock";
/// Longest path a Unix socket address holds (`sun_path` less its NUL).
const SUN_PATH_MAX: usize = 107;

/// A started `tvp-vmm`: the process, tvpd's end of its channel, its configuration page.
pub(super) struct Launched {
    /// The process.
    pub child: VmmProcess,
    /// tvpd's end of the channel.
    pub channel: UnixStream,
    /// The configuration page it was given.
    pub page: Vec<u8>,
    /// The key-use digest its image and disk keys were released for (`None`: no key).
    pub bound: Option<[u8; 32]>,
    /// Its adoption socket and secret (`None` if the socket path is too long).
    pub adoption: Option<Adoption>,
}

impl Launched {
    /// The VM's incarnation for this boot: SHA-256 of its configuration page, the
    /// `config-page` event of PCR 23 that tenants attest and bind tokens to.
    pub(super) fn incarnation(&self) -> tvp_audit::Digest32 {
        use sha2::Digest as _;
        sha2::Sha256::digest(&self.page).into()
    }

    /// A new boot run for this VMM (create and reboot start one the same way), with
    /// the supervisor's event channel.
    pub(super) fn new_run(&self, deadline: Duration) -> (Run, Sender<Event>, Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        let run = Run::launched(
            self.child.id(),
            self.page.clone(),
            self.bound,
            tx.clone(),
            deadline,
            self.adoption.clone(),
        );
        (run, tx, rx)
    }
}

impl Manager {
    /// Prepare the workload image and the disk (key releases through the TPM), write a
    /// fresh configuration page (current time, new seed) and start a `tvp-vmm` for it on
    /// `tap_name`.
    pub(super) fn launch(
        &self,
        id: &str,
        spec: &ValidSpec,
        tap_name: &str,
    ) -> Result<Launched, VmError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut image = match &spec.request.image {
            Some(i) => Some(image::prepare(
                i,
                &self.cfg.image_dir,
                u64::from(spec.request.memory_mib) << 20,
                spec.allows_plaintext_images(),
            )?),
            None => None,
        };
        let mut disk = match &spec.request.disk {
            Some(d) => Some(image::prepare_disk(d, &self.cfg.image_dir)?),
            None => None,
        };
        let dir = self.cfg.vms_dir.join(id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| VmError::Spawn(format!("{}: {e}", dir.display())))?;
        // The VM's own TPM: made before its first run, named in its page.
        let vtpm = if spec.request.vtpm {
            Some(crate::vm::vtpm::prepare(
                id,
                &self.releaser,
                &dir,
                self.cfg.vmm_ids,
            )?)
        } else {
            None
        };
        let page = spec
            .page(
                now_secs,
                seed,
                image.as_ref().map(|i| i.descriptor),
                disk.as_ref().map(|d| d.descriptor),
                vtpm.as_ref().map(|(_, identity)| identity.page_ref()),
            )
            .map_err(VmError::Invalid)?;
        // Each key is released for exactly this VM: this page (which names the image and
        // the disk), this firmware, this management binding; measure_boot requires the
        // VM to be that one. Both releases commit to the same description.
        let mut bound = None;
        let sealed_image = image.as_mut().filter(|i| i.sealed.is_some());
        let sealed_disk = disk.as_mut().filter(|d| d.sealed.is_some());
        if sealed_image.is_some() || sealed_disk.is_some() {
            let key_use = self.key_use(spec, &page)?;
            if let Some(img) = sealed_image {
                bound = img.obtain_key(&self.releaser, &key_use)?;
            }
            if let Some(d) = sealed_disk {
                bound = d.obtain_key(&self.releaser, &key_use)?;
            }
        }
        let page_path = dir.join("config.page");
        std::fs::write(&page_path, page)
            .map_err(|e| VmError::Spawn(format!("{}: {e}", page_path.display())))?;
        let (ours, theirs) = UnixStream::pair().map_err(|e| VmError::Spawn(e.to_string()))?;
        let vmm_log = std::fs::File::create(dir.join("vmm.log"))
            .map_err(|e| VmError::Spawn(e.to_string()))?;
        let adoption = self.adoption_for(id, &dir);
        let mut cmd = Command::new(&self.cfg.vmm_binary);
        cmd.args(["run", "--vm-id", id, "--firmware"])
            .arg(&self.cfg.firmware)
            .arg("--config-page")
            .arg(&page_path)
            .arg("--console-log")
            .arg(dir.join("console.log"))
            .args(["--tap", tap_name])
            .args(
                self.cfg
                    .vmm_ids
                    .iter()
                    .flat_map(|(u, g)| ["--run-as".to_string(), format!("{u}:{g}")]),
            )
            .args(["--channel-fd", &CHILD_CHANNEL_FD.to_string()])
            .args(adoption.iter().flat_map(|a| {
                [
                    "--adopt-socket".into(),
                    a.socket.clone().into_os_string(),
                    "--adopt-grace-secs".into(),
                    self.cfg.adoption_grace.as_secs().to_string().into(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(vmm_log);
        // Descriptors the child gets: the channel as 3, the image as 4, its key pipe as 5,
        // the disk as 6, its key pipe as 7.
        let mut inherit = vec![(theirs.as_raw_fd(), CHILD_CHANNEL_FD)];
        let mut key_pipes = Vec::new();
        if let Some(img) = &image {
            inherit.push((img.file.as_raw_fd(), CHILD_IMAGE_FD));
            cmd.args(["--image-fd", &CHILD_IMAGE_FD.to_string()]);
            if let Some(key) = &img.key {
                let r = key_pipe(key)?;
                inherit.push((r.as_raw_fd(), CHILD_IMAGE_KEY_FD));
                cmd.args(["--image-key-fd", &CHILD_IMAGE_KEY_FD.to_string()])
                    .args([
                        "--image-key-lease-ms",
                        &spec.key_lease().as_millis().to_string(),
                    ]);
                key_pipes.push(r);
            }
        }
        if let Some(d) = &disk {
            // A disk always has a key: prepare_disk accepts only encrypted images, and
            // its key was obtained above (or the launch failed).
            let key = d
                .key
                .as_ref()
                .ok_or_else(|| VmError::Spawn("the disk's key was not obtained".into()))?;
            let r = key_pipe(key)?;
            inherit.push((d.file.as_raw_fd(), CHILD_DISK_FD));
            inherit.push((r.as_raw_fd(), CHILD_DISK_KEY_FD));
            cmd.args(["--disk-fd", &CHILD_DISK_FD.to_string()])
                .args(["--disk-key-fd", &CHILD_DISK_KEY_FD.to_string()]);
            key_pipes.push(r);
        }
        // The VM's own TPM: a swtpm on one end of a socketpair, the VMM on the other;
        // swtpm ends when the VMM's end closes.
        let mut vtpm_end = None;
        if let Some((key, _)) = &vtpm {
            let (swtpm_end, vmm_end) =
                UnixStream::pair().map_err(|e| VmError::Spawn(format!("vTPM socket: {e}")))?;
            crate::vm::vtpm::start(id, &dir, swtpm_end, key, self.cfg.vmm_ids)?;
            inherit.push((vmm_end.as_raw_fd(), CHILD_VTPM_FD));
            cmd.args(["--vtpm-fd", &CHILD_VTPM_FD.to_string()]);
            vtpm_end = Some(vmm_end);
        }
        inherit_only(&mut cmd, inherit);
        let child = cmd
            .spawn()
            .map_err(|e| VmError::Spawn(format!("{}: {e}", self.cfg.vmm_binary.display())))?;
        drop(theirs);
        // Only the VMM holds the TPM's end now: if its spawn failed, swtpm ends here.
        drop(vtpm_end);
        drop(key_pipes);
        drop(image);
        drop(disk);
        let mut channel = ours;
        if let Some(secret) = adoption.as_ref().and_then(Adoption::secret) {
            // The first message: a few dozen bytes, which the socket buffer takes
            // without blocking. A VMM that never reads it is simply not adoptable.
            if let Err(e) = write_frame(&mut channel, &HostMessage::AdoptionSecret { secret }) {
                log::warn!(vm = id, error = e.to_string(); "cannot give the VMM its adoption secret: it will not survive a tvpd restart");
            }
        }
        Ok(Launched {
            child: VmmProcess::Child(child),
            channel,
            page: page.to_vec(),
            bound,
            adoption,
        })
    }

    /// What a key released for this VM is used for: its page, the firmware file's
    /// digest (as read now; the VMM's measurement must match it) and its management
    /// binding.
    fn key_use(&self, spec: &ValidSpec, page: &[u8]) -> Result<KeyUse, VmError> {
        let firmware = std::fs::read(&self.cfg.firmware).map_err(|e| {
            VmError::Spawn(format!(
                "cannot read firmware {}: {e}",
                self.cfg.firmware.display()
            ))
        })?;
        KeyUse::vm(
            page,
            tvp_abi::measure::sha256(&firmware),
            &spec.management.public_key_pem,
            &spec.management.policy,
        )
        .map_err(VmError::Invalid)
    }

    /// A fresh adoption secret and the socket path in the VM's directory `dir` (any
    /// stale socket there removed); `None` if the path does not fit a socket address.
    fn adoption_for(&self, id: &str, dir: &Path) -> Option<Adoption> {
        let socket = dir.join(ADOPT_SOCKET);
        if socket.as_os_str().len() > SUN_PATH_MAX {
            log::warn!(vm = id, path = socket.display().to_string(); "the adoption socket path is longer than a Unix socket address: this VM will not survive a tvpd restart (choose a shorter state_dir)");
            return None;
        }
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                log::warn!(vm = id, error = e.to_string(); "cannot remove a stale adoption socket");
                return None;
            }
            _ => {}
        }
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Some(Adoption::new(socket, secret))
    }
}

/// A pipe holding `key` (32 bytes, then end of file); returns its read end. The bytes
/// fit the pipe buffer, so the write never blocks; the write end closes right after.
pub(crate) fn key_pipe(key: &tvp_image::ImageKey) -> Result<std::os::fd::OwnedFd, VmError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| VmError::Spawn(format!("key pipe: {e}")))?;
    let mut w = std::fs::File::from(w);
    std::io::Write::write_all(&mut w, key.as_bytes())
        .map_err(|e| VmError::Spawn(format!("key pipe: {e}")))?;
    Ok(r)
}

/// Make the child inherit exactly `inherit` (source descriptor, number in the child;
/// at most [`MAX_INHERITED`]) and nothing else above 2.
pub(crate) fn inherit_only(cmd: &mut Command, inherit: Vec<(i32, i32)>) {
    let top = inherit
        .iter()
        .map(|(_, t)| *t)
        .max()
        .unwrap_or(CHILD_CHANNEL_FD);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // fcntl, dup2 and close, which are async-signal-safe, on a fixed-size list made
    // before the fork. Each inherited descriptor is first moved above every target
    // number (so no source is overwritten by another's dup2), then placed at its
    // target without close-on-exec; every other descriptor above 2 is closed, so
    // the VMM inherits nothing of tvpd's (not its TPM connection, not other VMs').
    unsafe {
        cmd.pre_exec(move || {
            let mut moved = [(0i32, 0i32); MAX_INHERITED];
            for (slot, (src, target)) in moved.iter_mut().zip(inherit.iter()) {
                let high = nix::libc::fcntl(*src, nix::libc::F_DUPFD_CLOEXEC, 64);
                if high < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                *slot = (high, *target);
            }
            for (high, target) in moved.iter().take(inherit.len()) {
                if nix::libc::dup2(*high, *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if nix::libc::syscall(nix::libc::SYS_close_range, top + 1, u32::MAX, 0) != 0 {
                for fd in top + 1..4096 {
                    nix::libc::close(fd);
                }
            }
            Ok(())
        });
    }
}

/// Wait up to 3 s for the VMM to exit by itself, then kill it. A paused (SIGSTOPped)
/// VMM is continued first, so it can read its stop message and scrub guest memory.
pub(super) fn stop_child(child: &mut VmmProcess) {
    if child.try_wait().is_some() {
        return;
    }
    let _ = child.signal(nix::sys::signal::Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if child.try_wait().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait(Duration::from_secs(2));
}

/// "exit code N" or "killed by signal N".
pub(super) fn describe_exit(s: std::process::ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// Default location of the VMM: next to the running tvpd.
pub fn default_vmm_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tvp-vmm")))
        .unwrap_or_else(|| Path::new("/usr/local/bin/tvp-vmm").to_path_buf())
}
