//! virtio-blk on real KVM: a stand-in CPL0 guest (guests/blk.S) drives the disk's
//! queue and reads sectors of the tenant's encrypted image; each chunk is authenticated
//! and decrypted inside tvp-vmm on read. A tampered chunk is an I/O error with no data
//! (and a `disk-tamper` record naming it), a write and a read past the end are I/O
//! errors, and a disk whose key is wrong stops the VM before its first instruction.
// Test code: a failed assumption is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use std::io::Cursor;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use tvp_abi::config::DiskRef;

const CHUNK: usize = 4096;

fn kms() -> &'static rsa::RsaPrivateKey {
    static K: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
}

/// Three 4 KiB chunks and a partial one; sectors 0, 8 and 16 (the chunk starts) begin
/// with a 32-byte marker naming them.
fn plaintext() -> Vec<u8> {
    let mut p: Vec<u8> = (0..3 * CHUNK + 1000)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    for (sector, marker) in [
        (0, b"TVP-DISK-SECTOR-0-first-chunk---"),
        (8, b"TVP-DISK-SECTOR-8-second-chunk--"),
        (16, b"TVP-DISK-SECTOR-16-SECRET-chunk!"),
    ] {
        p[sector * 512..sector * 512 + 32].copy_from_slice(marker);
    }
    p
}

/// (encrypted image, its header length, its key)
fn encrypted() -> (Vec<u8>, usize, [u8; 32]) {
    let mut out = Vec::new();
    let h = tvp_image::encrypt(
        &mut Cursor::new(plaintext()),
        &mut out,
        &kms().to_public_key(),
        CHUNK as u32,
    )
    .unwrap();
    let key = tvp_image::ImageKey::unwrap(&h.wrapped_key, kms()).unwrap();
    (out, h.encode().len(), *key.as_bytes())
}

/// Runs the blk guest (guests/blk.S).
fn run(dir: &Path, disk: &[u8], key: [u8; 32]) -> (Option<i32>, String, String) {
    run_guest("blk", dir, disk, key)
}

/// The disk descriptor of the encrypted image `disk` (what tvpd writes into the page).
fn descriptor(disk: &[u8]) -> DiskRef {
    let h = tvp_image::stream::read_header(&mut Cursor::new(disk)).unwrap();
    DiskRef {
        len: h.plaintext_len,
        header_digest: h.digest(),
    }
}

/// Runs guest `name` standalone with `disk` as descriptor 4 and `key` through a pipe as
/// descriptor 5, its page naming that disk; returns (exit code, stderr, console).
fn run_guest(name: &str, dir: &Path, disk: &[u8], key: [u8; 32]) -> (Option<i32>, String, String) {
    run_guest_page(name, dir, disk, key, Some(descriptor(disk)))
}

/// [`run_guest`] with the page's disk descriptor `named` (`None`: the page names none).
fn run_guest_page(
    name: &str,
    dir: &Path,
    disk: &[u8],
    key: [u8; 32],
    named: Option<DiskRef>,
) -> (Option<i32>, String, String) {
    let fw = build_guest(name, dir);
    let page = dir.join("config.page");
    let mut c = config(b"U-disk");
    c.disk = named;
    std::fs::write(&page, c.encode().unwrap()).unwrap();
    let console = dir.join("console.log");
    let f = dir.join("disk.img");
    std::fs::write(&f, disk).unwrap();
    let file = std::fs::File::open(&f).unwrap();
    let mut p = [0i32; 2];
    // SAFETY (test code): pipe2 writes two close-on-exec descriptors into `p`.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY (test code): the write end is ours; 32 bytes fit the pipe buffer.
    unsafe {
        assert_eq!(libc::write(p[1], key.as_ptr().cast(), 32), 32);
        libc::close(p[1]);
    }
    let fds = [(file.as_raw_fd(), 4), (p[0], 5)];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tvp-vmm"));
    cmd.args(["--log", "info", "run", "--vm-id", "blk", "--standalone"])
        .arg("--firmware")
        .arg(&fw)
        .arg("--config-page")
        .arg(&page)
        .arg("--console-log")
        .arg(&console)
        .args(["--disk-fd", "4", "--disk-key-fd", "5"]);
    pass_fds(&mut cmd, fds.to_vec());
    let out = cmd.output().unwrap();
    drop(file);
    // SAFETY (test code): our read end of the key pipe, no longer needed.
    unsafe { libc::close(p[0]) };
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&console).unwrap_or_default(),
    )
}

#[test]
fn the_guest_reads_decrypted_sectors_and_gets_io_errors_for_tamper_write_and_past_end() {
    require!(Need::Kvm);
    let dir = tempfile::tempdir().unwrap();
    let (mut disk, header_len, key) = encrypted();
    // One ciphertext byte of chunk 2 (sectors 16..24).
    disk[header_len + 2 * (CHUNK + 16) + 40] ^= 0x20;
    let (code, stderr, console) = run(dir.path(), &disk, key);
    assert_eq!(code, Some(0), "{stderr}\n{console}");
    let lines: Vec<&str> = console.lines().collect();
    let dots = ".".repeat(32);
    let expected = [
        " q=00000001".to_string(),
        "R0 s=00000000 u=00000201 TVP-DISK-SECTOR-0-first-chunk---".to_string(),
        "R0 s=00000000 u=00000201 TVP-DISK-SECTOR-8-second-chunk--".to_string(),
        format!("R0 s=00000001 u=00000001 {dots}"),
        format!("R1 s=00000001 u=00000001 {dots}"),
        format!("R0 s=00000001 u=00000001 {dots}"),
        format!(
            "R8 s=00000000 u=00000015 tvp-encrypted-disk__{}",
            &dots[..12]
        ),
    ];
    for e in &expected {
        assert!(lines.contains(&e.as_str()), "missing {e:?} in\n{console}");
    }
    assert!(
        !console.contains("SECRET"),
        "tampered plaintext reached the guest"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("disk-tamper") && l.contains("chunk=2")),
        "{stderr}"
    );
    let v = |k| log_value(&stderr, "virtio-blk totals", k).unwrap_or_default();
    assert_eq!(v("ok"), "3", "{stderr}");
    assert_eq!(v("ioerr"), "3");
    assert_eq!(v("tampered"), "1");
    assert_eq!(v("bytes_read"), "1024");
}

#[test]
fn a_disk_with_the_wrong_key_stops_the_vm_before_it_starts() {
    require!(Need::Kvm);
    let dir = tempfile::tempdir().unwrap();
    let (disk, _, mut key) = encrypted();
    key[0] ^= 1;
    let (code, stderr, console) = run(dir.path(), &disk, key);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("wrong key"), "{stderr}");
    assert!(!console.contains("R0"), "{console}");
}

/// The page measures which disk the guest reads: tvp-vmm serves only the disk its
/// descriptor names, and no disk the page does not name.
#[test]
fn a_disk_the_page_does_not_name_stops_the_vm_before_it_starts() {
    require!(Need::Kvm);
    let (disk, _, key) = encrypted();
    let (other, _, _) = encrypted();
    let right = descriptor(&disk);
    for (named, want) in [
        (
            Some(descriptor(&other)),
            "not the one the configuration page's disk descriptor names",
        ),
        (
            Some(DiskRef {
                len: right.len + 1,
                ..right
            }),
            "not the one the configuration page's disk descriptor names",
        ),
        (None, "the configuration page has no disk descriptor"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (code, stderr, console) = run_guest_page("blk", dir.path(), &disk, key, named);
        assert_ne!(code, Some(0), "{stderr}");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert!(!console.contains("R0"), "{console}");
    }
}

#[test]
fn the_guests_register_window_is_the_abis() {
    // tests/guests/blk.S hard-codes it.
    assert_eq!(tvp_abi::layout::VIRTIO_BLK_MMIO_GPA, 0xd000_1000);
}

/// `micros_since_start` of milestone `code` in tvp-vmm's log.
fn milestone_micros(stderr: &str, code: u8) -> Option<u64> {
    let line = stderr
        .lines()
        .find(|l| l.contains("milestone") && l.contains(&format!(" code={code} ")))?;
    log_value(line, "milestone", "micros_since_start")?
        .parse()
        .ok()
}

/// The guest reads a whole 8 MiB disk sequentially in 1 MiB requests; every request
/// succeeds with the right plaintext (a checksum over each request's first 8 bytes).
/// Prints the guest's read throughput and, for comparison, this process decrypting
/// the same image with `tvp_image::decrypt` (what `tvpctl image decrypt` runs); the
/// figures mean something only in a release build (`cargo test --release`).
#[test]
fn the_guest_reads_the_whole_disk_sequentially() {
    require!(Need::Kvm);
    const MIB: usize = 1 << 20;
    let plain: Vec<u8> = (0..8 * MIB / 4)
        .flat_map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let mut disk = Vec::new();
    let h = tvp_image::encrypt(
        &mut Cursor::new(&plain),
        &mut disk,
        &kms().to_public_key(),
        65536,
    )
    .unwrap();
    let key = tvp_image::ImageKey::unwrap(&h.wrapped_key, kms()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr, console) = run_guest("blkread", dir.path(), &disk, *key.as_bytes());
    assert_eq!(code, Some(0), "{stderr}\n{console}");
    let word = |at: usize| u32::from_le_bytes(plain[at..at + 4].try_into().unwrap());
    let sum = (0..8)
        .map(|i| word(i * MIB).wrapping_add(word(i * MIB + 4)))
        .fold(0u32, u32::wrapping_add);
    let want = format!(" n=00000008 e=00000000 c={sum:08x}");
    assert!(console.contains(&want), "want {want:?} in\n{console}");
    let (t1, t2) = (
        milestone_micros(&stderr, 1).unwrap(),
        milestone_micros(&stderr, 2).unwrap(),
    );
    let guest_mb_s = plain.len() as f64 / (t2 - t1).max(1) as f64;
    let t = std::time::Instant::now();
    let mut r = Cursor::new(&disk);
    let header = tvp_image::stream::read_header(&mut r).unwrap();
    let mut out = 0usize;
    tvp_image::decrypt(&mut r, &header, &key, |c| {
        out += c.len();
        Ok(())
    })
    .unwrap();
    assert_eq!(out, plain.len());
    let host_mb_s = plain.len() as f64 / t.elapsed().as_micros().max(1) as f64;
    eprintln!(
        "virtio-blk sequential read in the guest: {guest_mb_s:.0} MB/s; host tvp_image::decrypt of the same image: {host_mb_s:.0} MB/s ({:.2}x)",
        guest_mb_s / host_mb_s
    );
}
