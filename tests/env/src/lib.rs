//! What a test needs from the machine (root, KVM, network namespaces, a tmpfs, tools on
//! `PATH`), and the one way a test ends that cannot have it.
//!
//! A test states its needs first: `require!(Need::Kvm, Need::Netns, "swtpm", "ip")`
//! (a string is a tool on `PATH`). When one is missing:
//! - with `CI` set (not empty, `0` or `false`) or `TVP_REQUIRE_ALL=1`, the test FAILS,
//!   naming what is missing: a suite that cannot run its environment never passes;
//! - otherwise it prints one line `tvp-skip: <test>: <why>` to stderr, appends the same
//!   line to the file named by `TVP_SKIP_LOG` (scripts/test.sh counts and lists them),
//!   and returns.
//!
//! `skip_unless!(condition, "why {}", ..)` is the same for a condition found during the
//! test (e.g. how the kernel writes core files).
//!
//! To see the mechanism work on a machine that has everything,
//! `TVP_SIMULATE_MISSING=netns,kvm,tool:ip` makes those needs count as missing.

// Failing the test is this crate's job: `unavailable` panics on purpose.
#![allow(clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

/// One thing a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0.
    Root,
    /// `/dev/kvm`, open read-write.
    Kvm,
    /// Network namespaces: root, `ip`, and `ip netns add` works (probed once).
    Netns,
    /// A tmpfs can be mounted: root, `mount`, `umount`, and a mount works (probed once).
    Tmpfs,
    /// An executable of this name on `PATH`.
    Tool(&'static str),
}

impl From<&'static str> for Need {
    fn from(tool: &'static str) -> Need {
        Need::Tool(tool)
    }
}

impl Need {
    /// The name `TVP_SIMULATE_MISSING` uses: `root`, `kvm`, `netns`, `tmpfs`, `tool:<name>`.
    pub fn name(&self) -> String {
        match self {
            Need::Root => "root".into(),
            Need::Kvm => "kvm".into(),
            Need::Netns => "netns".into(),
            Need::Tmpfs => "tmpfs".into(),
            Need::Tool(t) => format!("tool:{t}"),
        }
    }

    /// Why this need is not met here; `None` when it is.
    pub fn missing(&self) -> Option<String> {
        if simulated_missing(self) {
            return Some(format!(
                "{} (simulated by TVP_SIMULATE_MISSING)",
                self.name()
            ));
        }
        match self {
            Need::Root => (!is_root()).then(|| "not root".to_string()),
            Need::Kvm => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .err()
                .map(|e| format!("cannot open /dev/kvm: {e}")),
            Need::Tool(t) => (!on_path(t))
                .then(|| format!("{t} is not installed (scripts/test.sh installs the packages)")),
            Need::Netns => probe_once(&NETNS, || {
                requires_root_and(&["ip"])?;
                probe_netns()
            })
            .map(|e| format!("no network namespaces: {e}")),
            Need::Tmpfs => probe_once(&TMPFS, || {
                requires_root_and(&["mount", "umount"])?;
                probe_tmpfs()
            })
            .map(|e| format!("no tmpfs: {e}")),
        }
    }
}

/// `Ok` when every need is met, else why not (all that is missing).
pub fn check(needs: &[Need]) -> Result<(), String> {
    let missing: Vec<String> = needs.iter().filter_map(Need::missing).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Whether a missing environment fails the test: `CI` set, or `TVP_REQUIRE_ALL=1`.
pub fn strict() -> bool {
    let set = |k: &str| {
        std::env::var(k)
            .map(|v| !matches!(v.trim(), "" | "0" | "false"))
            .unwrap_or(false)
    };
    set("TVP_REQUIRE_ALL") || set("CI")
}

/// The test cannot run here because of `why`: panics under [`strict`], else records
/// the skip (stderr, `TVP_SKIP_LOG`). `fallback` names the test when the thread does not
/// (the macros pass `module_path!()`).
pub fn unavailable(fallback: &str, why: &str) {
    let test = test_name(fallback);
    if strict() {
        panic!(
            "tvp-require: {test} cannot run here: {why} \
             (CI or TVP_REQUIRE_ALL=1: a missing environment fails the test)"
        );
    }
    let line = format!("tvp-skip: {test}: {why}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("TVP_SKIP_LOG") {
        // One short append per line: lines of tests running in parallel never mix.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// Return from the test unless every need is met; see the crate docs.
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if let Err(why) = $crate::check(&[$($crate::Need::from($need)),+]) {
            $crate::unavailable(module_path!(), &why);
            return;
        }
    };
}

/// Return from the test unless `cond` holds; the rest is the reason, as in `format!`.
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            $crate::unavailable(module_path!(), &format!($($why)+));
            return;
        }
    };
}

/// Whether an executable `tool` is on `PATH`.
pub fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p).any(|d| {
                std::fs::metadata(d.join(tool))
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// `<test binary>::<test>`: libtest names each test's thread after the test.
fn test_name(fallback: &str) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        });
    let thread = std::thread::current().name().map(str::to_string);
    match (binary, thread) {
        (Some(b), Some(t)) if t != "main" => format!("{b}::{t}"),
        (_, _) => fallback.to_string(),
    }
}

fn simulated_missing(need: &Need) -> bool {
    let Ok(list) = std::env::var("TVP_SIMULATE_MISSING") else {
        return false;
    };
    let name = need.name();
    list.split(',')
        .map(str::trim)
        .any(|n| n == name || matches!(need, Need::Tool(t) if n == *t))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn requires_root_and(tools: &[&str]) -> Result<(), String> {
    if !is_root() {
        return Err("not root".into());
    }
    match tools.iter().find(|t| !on_path(t)) {
        Some(t) => Err(format!("{t} is not installed")),
        None => Ok(()),
    }
}

static NETNS: OnceLock<Option<String>> = OnceLock::new();
static TMPFS: OnceLock<Option<String>> = OnceLock::new();

/// Runs a probe once per test process (tests share the answer).
fn probe_once(
    cell: &'static OnceLock<Option<String>>,
    probe: impl FnOnce() -> Result<(), String>,
) -> Option<String> {
    cell.get_or_init(|| probe().err()).clone()
}

/// A name no other probe or test uses at the same time.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("tvp-probe-{tag}-{}-{nanos:x}", std::process::id())
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn probe_netns() -> Result<(), String> {
    let name = unique("ns");
    run("ip", &["netns", "add", &name])
        .map_err(|e| format!("cannot create a network namespace: {e}"))?;
    run("ip", &["netns", "del", &name])
}

fn probe_tmpfs() -> Result<(), String> {
    let dir = std::env::temp_dir().join(unique("tmpfs"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let at = dir.to_string_lossy().into_owned();
    let mounted = run("mount", &["-t", "tmpfs", "-o", "size=64k", "tmpfs", &at]);
    if mounted.is_ok() {
        let _ = run("umount", &[&at]);
    }
    let _ = std::fs::remove_dir(Path::new(&at));
    mounted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_is_found_on_path_and_a_missing_one_is_named() {
        assert_eq!(Need::from("sh").missing(), None);
        let why = check(&[Need::Tool("sh"), Need::Tool("tvp-no-such-tool")]).unwrap_err();
        assert!(why.contains("tvp-no-such-tool is not installed"), "{why}");
        assert!(!why.contains("sh is"), "{why}");
    }

    #[test]
    fn need_names_are_the_ones_tvp_simulate_missing_takes() {
        let names: Vec<String> = [
            Need::Root,
            Need::Kvm,
            Need::Netns,
            Need::Tmpfs,
            Need::Tool("ip"),
        ]
        .iter()
        .map(Need::name)
        .collect();
        assert_eq!(names, ["root", "kvm", "netns", "tmpfs", "tool:ip"]);
    }
}
