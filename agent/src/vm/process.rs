//! Recognising a VM's `tvp-vmm` by pid after a tvpd restart: a pid alone can be
//! reused, so a process is the VM's only if its start time (`/proc/PID/stat` field 22)
//! and its command line (`... run --vm-id ID`) both match what tvpd recorded. And
//! killing a VMM tvpd still supervises ([`kill_child`]), whose pid cannot be reused.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::Child;
use std::time::{Duration, Instant};

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

/// SIGKILL tvpd's own child `child` (a VMM) and wait up to `wait` for it to exit,
/// reaping it. Returns whether it is gone. The pid names this very VMM and no other
/// process: a child that has not been reaped keeps its pid (as a zombie at worst), so
/// unlike [`kill_if_vmm`] nothing has to be matched, and a hostile VMM cannot escape
/// by rewriting its command line.
pub fn kill_child(child: &mut Child, wait: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    if let Err(e) = child.kill() {
        log::warn!(pid = child.id(), error = e.to_string(); "cannot signal the VMM");
    }
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
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
        let mut c = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        assert!(kill_child(&mut c, Duration::from_secs(5)));
        assert!(c.try_wait().unwrap().is_some());
        // Already gone: still true, nothing signalled.
        assert!(kill_child(&mut c, Duration::ZERO));
    }
}
