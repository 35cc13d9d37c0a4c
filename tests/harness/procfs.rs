//! What a test reads about host processes and devices from /proc and /sys: whether a
//! VM's tvp-vmm still lives, in which state, and whether a TAP device exists.

use std::path::Path;

/// The process state letter of `pid` from /proc/PID/stat (`R`, `S`, `T` = stopped,
/// `Z` = zombie); `?` when the process is gone or the line cannot be read.
pub fn proc_state(pid: impl Into<u64>) -> char {
    let pid = pid.into();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name in parentheses may hold spaces: the state follows the last ')'.
    stat.rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.chars().next())
        .unwrap_or('?')
}

/// Whether `pid` is still a live (not zombie) tvp-vmm for VM `id`: its command line
/// holds `--vm-id ID`. A reused pid running anything else does not count.
pub fn vmm_alive(pid: impl Into<u64>, id: &str) -> bool {
    let pid = pid.into();
    if matches!(proc_state(pid), '?' | 'Z') {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--vm-id" && w[1] == id.as_bytes())
        })
        .unwrap_or(false)
}

/// Whether the network device `name` (a VM's TAP) exists on this host.
pub fn net_device_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// CPU seconds of `pid` from /proc/PID/stat: (its own user+system time, the user+system
/// time of its children it has waited for). `None` when the process is gone.
pub fn cpu_seconds(pid: impl Into<u64>) -> Option<(f64, f64)> {
    let pid = pid.into();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is field 3, utime 14, stime 15, cutime 16,
    // cstime 17 (proc(5)); `rest` starts at field 3.
    let rest: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3)?.parse::<f64>().ok();
    // /proc counts in USER_HZ clock ticks, 100 per second on Linux (x86, arm64).
    let tick = 100.0;
    Some((
        (field(14)? + field(15)?) / tick,
        (field(16)? + field(17)?) / tick,
    ))
}

/// The live children of `pid` (from /proc/*/stat's parent field).
pub fn children(pid: impl Into<u64>) -> Vec<u64> {
    let pid = pid.into();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u64>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

/// All CPU seconds `pid` and its children have used so far: its own, those of the
/// children it has reaped, and those of its live children (and theirs).
pub fn tree_cpu_seconds(pid: impl Into<u64>) -> f64 {
    let pid = pid.into();
    let (own, reaped) = cpu_seconds(pid).unwrap_or_default();
    own + reaped + children(pid).into_iter().map(tree_cpu_seconds).sum::<f64>()
}
