//! Recognising a VM's `tvp-vmm` by pid after a tvpd restart: a pid alone can be
//! reused, so a process is the VM's only if its start time (`/proc/PID/stat` field 22)
//! and its command line (`... run --vm-id ID`) both match what tvpd recorded. And
//! killing a VMM tvpd still supervises ([`kill_child`]), whose pid cannot be reused.
//! A VMM adopted after a restart is not tvpd's child: [`VmmProcess`] watches and
//! signals it through a pidfd, which names that very process even once its pid is
//! reused.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// A supervised VMM: tvpd's own child, or one adopted from an earlier tvpd.
#[derive(Debug)]
pub enum VmmProcess {
    /// Spawned by this tvpd: waited for and reaped as its child.
    Child(Child),
    /// Spawned by an earlier tvpd, re-adopted: watched and signalled through a pidfd.
    Adopted(AdoptedProcess),
}

/// A VMM this tvpd did not spawn, held by a pidfd opened while its pid, start time and
/// command line were checked to be the VM's.
#[derive(Debug)]
pub struct AdoptedProcess {
    pid: u32,
    pidfd: OwnedFd,
}

/// Why a VMM cannot be held.
#[derive(Debug, thiserror::Error)]
pub enum AdoptProcessError {
    /// The pid is not (or no longer) the VM's tvp-vmm.
    #[error("pid {pid} is not VM '{vm}''s tvp-vmm any more (start time or command line differ, or it exited)")]
    NotTheVmm {
        /// The recorded pid.
        pid: u32,
        /// The VM.
        vm: String,
    },
    /// pidfd_open failed.
    #[error("pidfd_open({pid}) failed: {source}")]
    PidFd {
        /// The pid.
        pid: u32,
        /// The OS error.
        source: std::io::Error,
    },
}

impl AdoptedProcess {
    /// Hold `pid` if it is VM `vm_id`'s tvp-vmm started at `started`. The identity is
    /// checked again after the pidfd is open, so the pidfd names the checked process.
    pub fn open(pid: u32, started: u64, vm_id: &str) -> Result<Self, AdoptProcessError> {
        let not_it = || AdoptProcessError::NotTheVmm {
            pid,
            vm: vm_id.to_string(),
        };
        if !is_vmm_of(pid, started, vm_id) {
            return Err(not_it());
        }
        let raw = nix::libc::pid_t::try_from(pid).map_err(|_| not_it())?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor (or -1);
        // no memory is passed.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(AdoptProcessError::PidFd {
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        let fd = i32::try_from(fd).map_err(|_| not_it())?;
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
        if !is_vmm_of(pid, started, vm_id) {
            return Err(not_it());
        }
        Ok(AdoptedProcess { pid, pidfd })
    }

    /// Whether the process has exited (its pidfd polls readable).
    fn exited(&self) -> bool {
        let mut p = nix::libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: nix::libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { nix::libc::poll(&mut p, 1, 0) };
        rc > 0 && p.revents != 0
    }

    /// Send `sig` through the pidfd (never to a process that reused the pid).
    fn signal(&self, sig: Signal) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo and
        // no flags; no memory is passed.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig as i32,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // Already gone (ESRCH): nothing to signal.
            if e.raw_os_error() == Some(nix::libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }
}

impl VmmProcess {
    /// Its pid.
    pub fn id(&self) -> u32 {
        match self {
            VmmProcess::Child(c) => c.id(),
            VmmProcess::Adopted(a) => a.pid,
        }
    }

    /// `None` while it runs; once it exited, its status (`None` inside for an
    /// adopted VMM, whose status goes to its parent, not to tvpd).
    pub fn try_wait(&mut self) -> Option<Option<ExitStatus>> {
        match self {
            VmmProcess::Child(c) => c.try_wait().ok().flatten().map(Some),
            VmmProcess::Adopted(a) => a.exited().then_some(None),
        }
    }

    /// Send `sig` to it (to this very process: an unreaped child or a pidfd).
    pub fn signal(&mut self, sig: Signal) -> std::io::Result<()> {
        match self {
            VmmProcess::Child(c) => {
                let pid = i32::try_from(c.id()).map_err(std::io::Error::other)?;
                kill(Pid::from_raw(pid), sig).map_err(std::io::Error::from)
            }
            VmmProcess::Adopted(a) => a.signal(sig),
        }
    }

    /// SIGKILL it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        match self {
            VmmProcess::Child(c) => c.kill(),
            VmmProcess::Adopted(a) => a.signal(Signal::SIGKILL),
        }
    }

    /// Wait until it has exited (reaping a child); at most `wait` for an adopted one.
    pub fn wait(&mut self, wait: Duration) {
        if let VmmProcess::Child(c) = self {
            let _ = c.wait();
            return;
        }
        let deadline = Instant::now() + wait;
        while self.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Start time of `pid` in clock ticks since boot, if it exists and is not a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, field 22 (starttime) is index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` (started at `started`) is still the tvp-vmm of VM `vm_id`.
pub fn is_vmm_of(pid: u32, started: u64, vm_id: &str) -> bool {
    if start_time(pid) != Some(started) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.iter().any(|a| *a == b"run")
        && args
            .windows(2)
            .any(|w| w[0] == b"--vm-id" && w[1] == vm_id.as_bytes())
}

/// SIGKILL `pid` if (and only if) it is still VM `vm_id`'s tvp-vmm; waits up to two
/// seconds for it to go. Returns whether it was killed.
pub fn kill_if_vmm(pid: u32, started: u64, vm_id: &str) -> bool {
    if !is_vmm_of(pid, started, vm_id) {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && start_time(pid) == Some(started) {
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// SIGKILL a supervised VMM (tvpd's own child, or an adopted one held by its pidfd)
/// and wait up to `wait` for it to exit, reaping a child. Returns whether it is gone.
/// The signal reaches this very VMM and no other process: a child that has not been
/// reaped keeps its pid (as a zombie at worst) and a pidfd names one process, so
/// unlike [`kill_if_vmm`] nothing has to be matched, and a hostile VMM cannot escape
/// by rewriting its command line.
pub fn kill_child(child: &mut VmmProcess, wait: Duration) -> bool {
    if child.try_wait().is_some() {
        return true;
    }
    if let Err(e) = child.kill() {
        log::warn!(pid = child.id(), error = e.to_string(); "cannot signal the VMM");
    }
    let deadline = Instant::now() + wait;
    loop {
        if child.try_wait().is_some() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn own_process_is_not_a_vmm_and_a_wrong_start_time_never_matches() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert!(!is_vmm_of(me, t, "x"));
        assert!(!is_vmm_of(me, t + 1, "x"));
        assert!(!kill_if_vmm(me, t + 1, "x"));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn a_child_is_killed_and_reaped() {
        let c = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let mut c = VmmProcess::Child(c);
        assert!(kill_child(&mut c, Duration::from_secs(5)));
        assert!(c.try_wait().is_some());
        // Already gone: still true, nothing signalled.
        assert!(kill_child(&mut c, Duration::ZERO));
    }

    #[test]
    fn an_adopted_process_must_be_the_vmm_and_is_watched_and_killed_by_pidfd() {
        // A bash whose command line is `... run --vm-id x` (its arguments after the
        // script) stands for a VMM of VM x; it waits on its stdin.
        let mut c = std::process::Command::new("bash")
            .args(["-c", "read -t 60 _ || true", "run", "--vm-id", "x"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = c.id();
        // Until the exec has happened the pid shows the test binary's command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .ends_with(b"--vm-id\0x\0")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let t = start_time(pid).unwrap();
        assert!(matches!(
            AdoptedProcess::open(pid, t + 1, "x"),
            Err(AdoptProcessError::NotTheVmm { .. })
        ));
        assert!(AdoptedProcess::open(pid, t, "y").is_err());
        let mut a = VmmProcess::Adopted(AdoptedProcess::open(pid, t, "x").unwrap());
        assert_eq!(a.id(), pid);
        assert!(a.try_wait().is_none());
        // pidfd readiness needs the exit, which the zombie has; reaping is its parent's.
        assert!(kill_child(&mut a, Duration::from_secs(5)));
        assert!(c.wait().unwrap().signal().is_some());
    }
}
