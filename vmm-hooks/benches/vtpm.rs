//! The VM's TPM seen from the guest (issue #20's benchmark), on real KVM with a real
//! swtpm: the round trip of `TPM2_PCR_Read` issued by a guest through tvp-vmm's CRB
//! device (the command written into the device's buffer, `START`, the response header
//! read: each access a VM exit), against the same command sent to a bare swtpm over a
//! socket from the host, in the same run.
//!
//! The guest side is the difference between a run of `tpmbench` (2000 reads) and one of
//! `tpmbench0` (none), each a whole `tvp-vmm run --standalone`, median of RUNS, divided
//! by 2000: the VMM's start and end cancel out.
//!
//! Run: `cargo bench -p tvp-vmm --bench vtpm [-- RUNS]` (root, /dev/kvm, swtpm, gcc,
//! ld; `scripts/bench.sh` runs it). Prints figures, never asserts them.

// Benchmark code, like test code (it shares `tests/common`): a failed set-up ends it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{build_guest, config, median, pass_fds};

/// PCR reads of the `tpmbench` guest (its `ROUNDS`).
const ROUNDS: u32 = 2000;
/// TPM2_Startup(SU_CLEAR).
const STARTUP: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
/// TPM2_PCR_Read(sha256: PCR 16).
const PCR_READ: [u8; 20] = [
    0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e, 0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 1,
];

/// A swtpm of the bench's own on one end of a socketpair (state in `dir`); the other
/// end is returned.
fn swtpm(dir: &Path) -> (Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut cmd = Command::new("swtpm");
    cmd.args(["chardev", "--tpm2", "--fd", "3", "--flags", "not-need-init"])
        .arg("--tpmstate")
        .arg(format!("dir={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    pass_fds(&mut cmd, vec![(theirs.as_raw_fd(), 3)]);
    let child = cmd.spawn().expect("swtpm");
    drop(theirs);
    (child, ours)
}

/// Sends `cmd` and reads the whole response.
fn call(s: &mut UnixStream, cmd: &[u8]) -> Vec<u8> {
    s.write_all(cmd).unwrap();
    let mut head = [0u8; 10];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut rest = vec![0u8; len - 10];
    s.read_exact(&mut rest).unwrap();
    [&head[..], &rest].concat()
}

/// One whole `tvp-vmm run --standalone` of `guest` with a fresh swtpm; seconds.
fn vm_run(dir: &Path, guest: &Path, page: &Path) -> f64 {
    let state = tempfile::tempdir_in(dir).unwrap();
    let (mut tpm, conn) = swtpm(state.path());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tvp-vmm"));
    cmd.args([
        "--log",
        "warn",
        "run",
        "--vm-id",
        "vtpm-bench",
        "--standalone",
    ])
    .arg("--firmware")
    .arg(guest)
    .arg("--config-page")
    .arg(page)
    .arg("--console-log")
    .arg(dir.join("console.log"))
    .args(["--vtpm-fd", "4"])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    pass_fds(&mut cmd, vec![(conn.as_raw_fd(), 4)]);
    let t0 = Instant::now();
    let status = cmd.status().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert!(status.success(), "tvp-vmm: {status}");
    drop(conn);
    let _ = tpm.wait();
    secs
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let bench = build_guest("tpmbench", dir.path());
    let base = build_guest("tpmbench0", dir.path());
    let mut c = config(b"U-vtpm-bench");
    c.tpm = Some(tvp_abi::config::TpmRef {
        ek_public_digest: [0; 32],
        ak_public_digest: [0; 32],
    });
    let page = dir.path().join("config.page");
    std::fs::write(&page, c.encode().unwrap()).unwrap();

    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut host = Vec::new();
    for _ in 0..runs {
        with.push(vm_run(dir.path(), &bench, &page));
        without.push(vm_run(dir.path(), &base, &page));
        // The peer: the same commands to a bare swtpm over its socket.
        let state = tempfile::tempdir_in(dir.path()).unwrap();
        let (mut tpm, mut s) = swtpm(state.path());
        call(&mut s, &STARTUP);
        let t0 = Instant::now();
        for _ in 0..ROUNDS {
            let r = call(&mut s, &PCR_READ);
            assert_eq!(&r[6..10], &[0, 0, 0, 0], "PCR_Read failed");
        }
        host.push(t0.elapsed().as_secs_f64());
        drop(s);
        let _ = tpm.wait();
    }
    let guest_us = (median(&mut with) - median(&mut without)) / f64::from(ROUNDS) * 1e6;
    let host_us = median(&mut host) / f64::from(ROUNDS) * 1e6;
    println!("vTPM TPM2_PCR_Read round trip, median of {runs} runs of {ROUNDS} (real KVM, swtpm):");
    println!("  from the guest through the CRB device   {guest_us:>8.1} us");
    println!("  bare swtpm over its socket (host)       {host_us:>8.1} us");
    println!(
        "  guest / host                            {:>8.2}x",
        guest_us / host_us
    );
}
