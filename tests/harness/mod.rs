//! Test harness: each test gets its own swtpm (own state directory, own ports), its
//! own tvpd (own socket, own state directory), and kills only the processes it
//! started, by pid, also when the test fails.

pub mod guests;
pub mod netboot;
pub mod phases;
pub mod swtpm;
pub mod tenant;
pub mod tmpfs;
pub mod tvpd;

use std::path::PathBuf;
use std::process::Command;

pub use swtpm::Swtpm;
pub use tenant::Tenant;
pub use tvpd::Tvpd;

/// Directory holding the workspace's built binaries (`cargo build --bins`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TVP_BIN_DIR") {
        return PathBuf::from(d);
    }
    // Tests live in target/<profile>/deps/, binaries (tvp-bench) in target/<profile>/.
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

/// Path of a workspace binary; panics with a hint when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Whether an external tool is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Skip (return early, printing why) unless every tool is installed.
#[macro_export]
macro_rules! require_tools {
    ($($t:expr),+) => {
        for t in [$($t),+] {
            if !$crate::have(t) {
                eprintln!("skipped: {t} is not installed (scripts/test.sh installs it)");
                return;
            }
        }
    };
}

/// A fresh random nonce, hex.
pub fn nonce_hex(len: usize) -> String {
    let v: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

/// Run tvpctl (against the socket, if given; without one for offline commands such as
/// `audit verify`); returns (exit code, stdout, stderr).
pub fn tvpctl(socket: Option<&std::path::Path>, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(bin("tvpctl"));
    if let Some(s) = socket {
        c.arg("--socket").arg(s);
    }
    let out = c.args(args).output().expect("run tvpctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `curl` on the socket as another user (setpriv), returning (status, body).
pub fn curl_as(uid: u32, socket: &std::path::Path, url: &str) -> (u16, String) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(socket)
        .arg(url)
        .output()
        .expect("setpriv curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
