//! Test harness: each test gets its own swtpm (own state directory, own ports), its
//! own tvpd (own socket, own state directory), and kills only the processes it
//! started, by pid, also when the test fails.
//!
//! A test first states what it needs from the machine: `require!(Need::Netns, "swtpm")`
//! (see `tvp_test_env`: a missing need fails the test under `CI` or
//! `TVP_REQUIRE_ALL=1`, and is a logged skip otherwise). Then it builds what it needs:
//! [`VmSpec`] for a VM, [`netboot::BootServer::builder`] for a boot server, and waits
//! with [`wait_vm`] or [`vm::poll`].

pub mod guests;
pub mod netboot;
pub mod phases;
pub mod procfs;
pub mod swtpm;
pub mod tenant;
pub mod tmpfs;
pub mod tvpd;
pub mod vm;

use std::path::PathBuf;
use std::process::Command;

pub use swtpm::Swtpm;
pub use tenant::Tenant;
pub use tvp_test_env::{require, skip_unless, Need};
pub use tvpd::Tvpd;
pub use vm::{ended, state_is, wait_vm, VmSpec};

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
    tvp_test_env::on_path(tool)
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
