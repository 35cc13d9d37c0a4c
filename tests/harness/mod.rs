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
pub mod kms;
pub mod netboot;
pub mod phases;
pub mod procfs;
pub mod swtpm;
pub mod tenant;
pub mod tmpfs;
pub mod tvpd;
pub mod vm;

use std::path::{Path, PathBuf};
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

/// A tenant's encrypted image in `dir`, made with tvpctl: the key pair `kms` and
/// `kms.pub` (`tvpctl image keygen`), the plaintext `img` (`content`) and `img.enc`
/// encrypted to `kms.pub`.
pub fn encrypted_image(dir: &Path, content: &[u8]) {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin("tvpctl"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    run(&["image", "keygen", &p("kms")]);
    std::fs::write(p("img"), content).unwrap();
    run(&[
        "image",
        "encrypt",
        &p("img"),
        &p("img.enc"),
        "--kms-pub",
        &p("kms.pub"),
    ]);
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

/// A credential for ActivateCredential made with `tpm2_makecredential` (as an inventory
/// service would): `secret` encrypted to the EK in `ek_pem`, bound to the key named
/// `name_hex`. Returns the (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) buffers.
pub fn make_credential(
    dir: &std::path::Path,
    ek_pem: &str,
    name_hex: &str,
    secret: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    std::fs::write(dir.join("ek.pem"), ek_pem).expect("write ek.pem");
    std::fs::write(dir.join("secret.bin"), secret).expect("write secret.bin");
    let o = Command::new("tpm2_makecredential")
        .args(["-T", "none", "-G", "rsa", "-u"])
        .arg(dir.join("ek.pem"))
        .arg("-s")
        .arg(dir.join("secret.bin"))
        .args(["-n", name_hex, "-o"])
        .arg(dir.join("cred.out"))
        .output()
        .expect("run tpm2_makecredential");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = std::fs::read(dir.join("cred.out")).expect("read cred.out");
    tvpctl::host::split_mkcred(&f).expect("tpm2_makecredential output")
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
