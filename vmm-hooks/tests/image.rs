//! The workload image: tvp-vmm decrypts an encrypted image straight into guest memory
//! (or copies a plaintext one), checks it against the configuration page's descriptor,
//! and refuses before the guest's first instruction on a wrong key, a digest mismatch,
//! a missing image or an expired key lease.
// Test code: a failed assumption is a failed test ([workspace.lints] deny these
// outside tests; clippy.toml cannot reach an integration test's helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use std::io::Cursor;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use tvp_abi::config::ImageRef;

const HEAD: &[u8; 32] = b"HELLO-FROM-THE-ENCRYPTED-IMAGE!!";

fn kms() -> &'static rsa::RsaPrivateKey {
    static K: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
}

fn plaintext() -> Vec<u8> {
    let mut p = HEAD.to_vec();
    p.extend((0..200_000u32).map(|i| (i % 251) as u8));
    p
}

/// (encrypted image, its key)
fn encrypted() -> (Vec<u8>, [u8; 32]) {
    let mut out = Vec::new();
    let h = tvp_image::encrypt(
        &mut Cursor::new(plaintext()),
        &mut out,
        &kms().to_public_key(),
        65536,
    )
    .unwrap();
    let key = tvp_image::ImageKey::unwrap(&h.wrapped_key, kms()).unwrap();
    (out, *key.as_bytes())
}

/// A configuration page describing `plain` at the top of RAM.
fn page_for(dir: &Path, plain: &[u8]) -> std::path::PathBuf {
    let mut c = config(b"U-image");
    c.mem_size_mib = 64;
    let len = plain.len() as u64;
    c.image = Some(ImageRef {
        gpa: ((64u64 << 20) - len) & !0xfff,
        len,
        digest: tvp_abi::measure::sha256(plain),
    });
    let p = dir.join("config.page");
    std::fs::write(&p, c.encode().unwrap()).unwrap();
    p
}

/// Runs the image guest standalone with `image` as descriptor 4 and `key` through a
/// pipe as descriptor 5; returns (exit code, stderr, console).
fn run(
    dir: &Path,
    page: &Path,
    image: Option<&[u8]>,
    key: Option<[u8; 32]>,
    lease_ms: u64,
) -> (Option<i32>, String, String) {
    let fw = build_guest("image", dir);
    let console = dir.join("console.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tvp-vmm"));
    cmd.args([
        "--log",
        "info",
        "run",
        "--vm-id",
        "img",
        "--standalone",
        "--firmware",
    ])
    .arg(&fw)
    .arg("--config-page")
    .arg(page)
    .arg("--console-log")
    .arg(&console)
    .args(["--image-key-lease-ms", &lease_ms.to_string()]);
    let mut fds = Vec::new();
    let mut keep = Vec::new();
    if let Some(bytes) = image {
        let f = dir.join("image.bin");
        std::fs::write(&f, bytes).unwrap();
        let file = std::fs::File::open(&f).unwrap();
        fds.push((file.as_raw_fd(), 4));
        keep.push(file);
        cmd.args(["--image-fd", "4"]);
    }
    if let Some(k) = key {
        let mut p = [0i32; 2];
        // SAFETY (test code): pipe2 writes two close-on-exec descriptors into `p`, so
        // children of parallel tests do not inherit them.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY (test code): the write end is ours; 32 bytes fit the pipe buffer.
        unsafe {
            assert_eq!(libc::write(p[1], k.as_ptr().cast(), 32), 32);
            libc::close(p[1]);
        }
        fds.push((p[0], 5));
        cmd.args(["--image-key-fd", "5"]);
    }
    let fds_to_close = fds.clone();
    pass_fds(&mut cmd, fds);
    let out = cmd.output().unwrap();
    drop(keep);
    for (src, dst) in fds_to_close {
        if dst == 5 {
            // SAFETY (test code): our read end of the key pipe, no longer needed.
            unsafe { libc::close(src) };
        }
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&console).unwrap_or_default(),
    )
}

#[test]
fn an_encrypted_image_is_decrypted_into_guest_memory_and_the_guest_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let (enc, key) = encrypted();
    let page = page_for(dir.path(), &plaintext());
    let (code, stderr, console) = run(dir.path(), &page, Some(&enc), Some(key), 30_000);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        console.contains("IMG:HELLO-FROM-THE-ENCRYPTED-IMAGE!!"),
        "{console}"
    );
    assert!(stderr.contains("decrypted"), "{stderr}");
    // The same image in plaintext (tvpd allows it only by the tenant's policy).
    let dir = tempfile::tempdir().unwrap();
    let page = page_for(dir.path(), &plaintext());
    let (code, stderr, console) = run(dir.path(), &page, Some(&plaintext()), None, 30_000);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        console.contains("IMG:HELLO-FROM-THE-ENCRYPTED-IMAGE!!"),
        "{console}"
    );
}

#[test]
fn every_image_problem_stops_the_vm_before_its_first_instruction() {
    let (enc, key) = encrypted();
    let mut wrong = key;
    wrong[0] ^= 1;
    let mut other = plaintext();
    other[100] ^= 1;
    // (case, image file, key, key lease in ms, expected reason)
    type Case = (
        &'static str,
        Option<Vec<u8>>,
        Option<[u8; 32]>,
        u64,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "wrong key",
            Some(enc.clone()),
            Some(wrong),
            30_000,
            "chunk 0 of 4 fails authentication",
        ),
        ("lease", Some(enc.clone()), Some(key), 0, "lease"),
        (
            "other plaintext",
            Some(other),
            None,
            30_000,
            "differs from the configuration page",
        ),
        ("no image", None, None, 30_000, "none was passed"),
        (
            "encrypted as plain",
            Some(enc),
            None,
            30_000,
            "longer than the 200032 bytes the configuration page states",
        ),
    ];
    for (name, image, k, lease, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let page = page_for(dir.path(), &plaintext());
        let (code, stderr, console) = run(dir.path(), &page, image.as_deref(), k, lease);
        assert_eq!(
            code,
            Some(tvp_vmm::vm::exit_code::SETUP_FAILED),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(why), "{name}: {stderr}");
        assert!(console.is_empty(), "{name}: the guest ran: {console}");
    }
}
