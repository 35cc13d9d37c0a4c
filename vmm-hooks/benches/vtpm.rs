//! The VM's TPM seen from the guest (issue #20's benchmark), on real KVM with a real
//! swtpm: the round trips of `TPM2_PCR_Read` and of `TPM2_Quote` (with tvp's AK, ECDSA
//! P-256) issued by a guest through tvp-vmm's CRB device (the command written into the
//! device's buffer, `START`, the response header read: each access a VM exit), against
//! the same commands sent to a bare swtpm over a socket from the host, in the same run.
//!
//! The guest side is the difference between a run of `tpmbench` (2000 reads; `tpmbenchq`:
//! 200 quotes) and one of `tpmbench0` (`tpmbenchq0`: none), each a whole
//! `tvp-vmm run --standalone`, median of RUNS, divided by the rounds: the VMM's start and
//! end (and the AK's creation) cancel out.
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
/// Quotes of the `tpmbenchq` guest (its `ROUNDS`).
const QUOTE_ROUNDS: u32 = 200;
/// TPM2_CreatePrimary(endorsement, tvp's AK template), as the guests send it.
const CREATE_AK: [u8; 65] = [
    0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x31, 0x40, 0, 0, 0x0b, 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0,
    0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 24, 0x00, 0x23, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0, 0, 0x00,
    0x10, 0x00, 0x18, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// TPM2_Quote(AK `handle`, 32-byte nonce, the key's scheme, sha256: PCR 16).
fn quote_cmd(handle: [u8; 4]) -> Vec<u8> {
    let mut c = vec![0x80, 0x02, 0, 0, 0, 73, 0, 0, 0x01, 0x58];
    c.extend(handle);
    c.extend([0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, 0, 32]);
    c.extend([0x5a; 32]);
    c.extend([0x00, 0x10, 0, 0, 0, 1, 0x00, 0x0b, 3, 0, 0, 1]);
    c
}
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

/// One guest-vs-host comparison: `guest` and its baseline `base` in tvp-vmm, and the
/// host sending `rounds` commands made by `command` (after `setup`'s) to a bare swtpm;
/// microseconds per command (guest, host).
fn compare(
    dir: &Path,
    page: &Path,
    runs: usize,
    (guest, base): (&Path, &Path),
    rounds: u32,
    setup: &[&[u8]],
    command: impl Fn(&[u8]) -> Vec<u8>,
) -> (f64, f64) {
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut host = Vec::new();
    for _ in 0..runs {
        with.push(vm_run(dir, guest, page));
        without.push(vm_run(dir, base, page));
        // The peer: the same commands to a bare swtpm over its socket.
        let state = tempfile::tempdir_in(dir).unwrap();
        let (mut tpm, mut s) = swtpm(state.path());
        call(&mut s, &STARTUP);
        let mut last = Vec::new();
        for c in setup {
            last = call(&mut s, c);
            assert_eq!(&last[6..10], &[0, 0, 0, 0], "set-up command failed");
        }
        let cmd = command(&last);
        let t0 = Instant::now();
        for _ in 0..rounds {
            let r = call(&mut s, &cmd);
            assert!(
                r[6..10] == [0, 0, 0, 0] || r[6..10] == [0, 0, 9, 0x22],
                "command failed: {:02x?}",
                &r[6..10]
            );
        }
        host.push(t0.elapsed().as_secs_f64());
        drop(s);
        let _ = tpm.wait();
    }
    let guest_us = (median(&mut with) - median(&mut without)) / f64::from(rounds) * 1e6;
    let host_us = median(&mut host) / f64::from(rounds) * 1e6;
    (guest_us, host_us)
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let guests: Vec<_> = ["tpmbench", "tpmbench0", "tpmbenchq", "tpmbenchq0"]
        .iter()
        .map(|g| build_guest(g, dir.path()))
        .collect();
    let mut c = config(b"U-vtpm-bench");
    c.tpm = Some(tvp_abi::config::TpmRef {
        ek_public_digest: [0; 32],
        ak_public_digest: [0; 32],
    });
    let page = dir.path().join("config.page");
    std::fs::write(&page, c.encode().unwrap()).unwrap();
    let read = compare(
        dir.path(),
        &page,
        runs,
        (&guests[0], &guests[1]),
        ROUNDS,
        &[],
        |_| PCR_READ.to_vec(),
    );
    let quote = compare(
        dir.path(),
        &page,
        runs,
        (&guests[2], &guests[3]),
        QUOTE_ROUNDS,
        &[&CREATE_AK],
        |created| quote_cmd([created[10], created[11], created[12], created[13]]),
    );
    println!("vTPM round trips, median of {runs} runs (real KVM, swtpm):");
    println!("  command            from the guest (CRB)   bare swtpm (host)   guest / host");
    for (name, (g, h)) in [("TPM2_PCR_Read", read), ("TPM2_Quote (ECC)", quote)] {
        println!("  {name:<18} {g:>16.1} us {h:>15.1} us {:>13.2}x", g / h);
    }
}
