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
