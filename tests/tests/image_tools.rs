//! The tenant's image tools at disk-image sizes: `tvpctl image encrypt|decrypt` stream
//! (a file many times larger than their buffers round-trips byte for byte, in bounded
//! memory), show progress on stderr when asked and never mix it into `--json` output,
//! and `scripts/make-tenant-disk.sh` turns a directory into an encrypted ext4 image
//! whose decryption is a clean file system holding the directory's files.

use std::path::Path;
use std::process::Command;

use tvp_tests::{bin, require};

fn tvpctl(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin("tvpctl")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Largest resident set of any waited-for child so far, in KiB.
fn children_max_rss_kib() -> i64 {
    // SAFETY: rusage is plain integers; all zeros is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    ru.ru_maxrss
}

fn keygen(d: &Path) -> (String, String) {
    let prefix = d.join("kms");
    assert_eq!(tvpctl(&["image", "keygen", prefix.to_str().unwrap()]).0, 0);
    (
        d.join("kms.pub").to_str().unwrap().to_string(),
        d.join("kms.key").to_str().unwrap().to_string(),
    )
}

#[test]
fn a_large_image_streams_in_bounded_memory_and_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let (kms_pub, kms_key) = keygen(d.path());
    // 256 MiB + a short tail, mostly sparse (zeros) with patterned islands so that a
    // chunk put in the wrong place would show; chunks of 64 KiB: 4097 of them.
    let len: u64 = (256 << 20) + 4321;
    let f = std::fs::File::create(p("big.raw")).unwrap();
    f.set_len(len).unwrap();
    let island: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    for off in [0u64, 5 << 20, 100 << 20, len - island.len() as u64] {
        std::os::unix::fs::FileExt::write_all_at(&f, &island, off).unwrap();
    }
    drop(f);
    let (c, _, e) = tvpctl(&[
        "image",
        "encrypt",
        &p("big.raw"),
        &p("big.enc"),
        "--kms-pub",
        &kms_pub,
        "--chunk-size",
        "65536",
    ]);
    assert_eq!(c, 0, "{e}");
    let (c, _, e) = tvpctl(&[
        "image",
        "decrypt",
        &p("big.enc"),
        &p("big.out"),
        "--kms-key",
        &kms_key,
    ]);
    assert_eq!(c, 0, "{e}");
    // Whole-file buffering would need at least the image's 256 MiB.
    let rss = children_max_rss_kib();
    assert!(rss < 64 * 1024, "tvpctl's largest resident set: {rss} KiB");
    let st = Command::new("cmp")
        .arg(p("big.raw"))
        .arg(p("big.out"))
        .status()
        .unwrap();
    assert!(st.success(), "decrypted image differs from the original");
    // Header (RSA-3072 wrapped key), then every chunk with its 16-byte tag.
    let enc_len = std::fs::metadata(p("big.enc")).unwrap().len();
    let header = tvp_image::header::FIXED_LEN as u64 + 384;
    assert_eq!(enc_len, header + len + 4097 * 16);
}

#[test]
fn progress_with_progress_never_in_json_output() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let (kms_pub, kms_key) = keygen(d.path());
    let plain: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
    std::fs::write(p("img.raw"), &plain).unwrap();

    // --progress on a pipe: progress lines on stderr, with bytes, rate and time left.
    let (c, out, e) = tvpctl(&[
        "image",
        "encrypt",
        &p("img.raw"),
        &p("img.enc"),
        "--kms-pub",
        &kms_pub,
        "--progress",
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(out.is_empty(), "stdout: {out}");
    assert!(e.contains("hashing: 0 B / 2.9 MiB (0%)"), "{e}");
    assert!(e.contains("ETA"), "{e}");
    assert!(
        e.contains("encrypting: 2.9 MiB / 2.9 MiB (100%)") && e.contains(" MB/s, done in "),
        "{e}"
    );
    let (c, _, e) = tvpctl(&[
        "image",
        "decrypt",
        &p("img.enc"),
        &p("a.raw"),
        "--kms-key",
        &kms_key,
        "--progress",
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("decrypting: ") && e.contains("(100%)"), "{e}");
    assert_eq!(std::fs::read(p("a.raw")).unwrap(), plain);

    // --json: one JSON document on stdout, no progress anywhere.
    let (c, out, e) = tvpctl(&[
        "--json",
        "image",
        "encrypt",
        &p("img.raw"),
        &p("j.enc"),
        "--kms-pub",
        &kms_pub,
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(
        !e.contains("MB/s") && !e.contains("ETA"),
        "progress in --json mode: {e}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON value");
    assert_eq!(v["plaintext_len"], 3_000_000);
    assert_eq!(v["chunk_count"], 3);
    let (_, inspect, _) = tvpctl(&["--json", "image", "inspect", &p("j.enc")]);
    let iv: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["image_digest"], iv["image_digest"]);
    // --json with --progress: progress still only on stderr, stdout still pure JSON.
    let (c, out, e) = tvpctl(&[
        "--json",
        "image",
        "decrypt",
        &p("j.enc"),
        &p("j.raw"),
        "--kms-key",
        &kms_key,
        "--progress",
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("decrypting: ") && e.contains("(100%)"), "{e}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON value");
    assert_eq!(v["verified"], true);
    assert_eq!(v["image_digest"], iv["image_digest"]);
    assert_eq!(std::fs::read(p("j.raw")).unwrap(), plain);
    // A refused image in --json mode: no JSON claims success, the reason on stderr.
    let mut t = std::fs::read(p("j.enc")).unwrap();
    let n = t.len();
    t[n - 100] ^= 1;
    std::fs::write(p("t.enc"), &t).unwrap();
    let (c, out, e) = tvpctl(&[
        "--json",
        "image",
        "decrypt",
        &p("t.enc"),
        &p("t.raw"),
        "--kms-key",
        &kms_key,
    ]);
    assert_eq!(c, 1, "{e}");
    assert!(out.is_empty(), "{out}");
    assert!(e.contains("chunk 2 of 3 fails authentication"), "{e}");
}

#[test]
fn make_tenant_disk_builds_an_encrypted_ext4_image() {
    require!("mke2fs", "debugfs", "e2fsck");
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let (kms_pub, kms_key) = keygen(d.path());
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("etc/app")).unwrap();
    let marker = format!("tenant marker {}", std::process::id());
    std::fs::write(tree.join("marker.txt"), &marker).unwrap();
    std::fs::write(tree.join("etc/app/big.bin"), vec![0x5a; 3 << 20]).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-tenant-disk.sh");
    let o = Command::new(&script)
        .arg(&tree)
        .arg(p("disk.enc"))
        .args(["--kms-pub", &kms_pub, "--label", "tenantdisk"])
        .env("TVPCTL", bin("tvpctl"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // No plaintext left beside the output.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tenant-disk"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let enc = std::fs::read(p("disk.enc")).unwrap();
    assert!(enc.starts_with(b"TVPENC01"));
    assert!(
        !enc.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "marker visible in the encrypted image"
    );
    let (c, _, e) = tvpctl(&[
        "image",
        "decrypt",
        &p("disk.enc"),
        &p("disk.ext4"),
        "--kms-key",
        &kms_key,
    ]);
    assert_eq!(c, 0, "{e}");
    let fsck = Command::new("e2fsck")
        .args(["-fn", &p("disk.ext4")])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let cat = Command::new("debugfs")
        .args(["-R", "cat /marker.txt", &p("disk.ext4")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cat.stdout), marker);
    let stat = Command::new("debugfs")
        .args(["-R", "stat /etc/app/big.bin", &p("disk.ext4")])
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.contains("Size: 3145728"), "{stat}");
    assert!(stat.contains("User:     0   Group:     0"), "{stat}");
    let label = Command::new("dumpe2fs")
        .args(["-h", &p("disk.ext4")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&label.stdout).contains("Filesystem volume name:   tenantdisk"));

    // Usage errors are exit code 2 with the usage text.
    let o = Command::new(&script).arg(&tree).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Usage:"));
}
