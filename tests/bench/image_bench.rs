//! Encrypted-image loading benchmark: tvp-vmm decrypting an image of SIZE MiB straight
//! into guest memory (AES-256-GCM chunks authenticated one by one, plaintext SHA-256 and
//! writes into guest RAM, as in a VM start), against, on the same bytes in the same
//! run: `openssl enc -d -aes-256-ctr` to /dev/null (raw AES, no authentication: the
//! cipher's floor), `openssl enc … | openssl dgst -sha256` (decrypt and hash, two
//! processes), and a plain copy (`cat` to /dev/null, page cache warm). Also the
//! plaintext path (copy + SHA-256 into guest memory). Prints medians and ratios.
//!
//! Usage: tvp-bench-image [SIZE_MIB] [RUNS]   (defaults 256 5)

use std::io::Cursor;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use tvp_abi::config::{Config, ImageRef};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One `tvp-vmm run` with the image (and key); returns the MB/s the VMM logged.
fn vmm_load(dir: &Path, fw: &Path, page: &Path, image: &Path, key: Option<&[u8; 32]>) -> f64 {
    let file = std::fs::File::open(image).expect("image");
    let mut inherit = vec![(file.as_raw_fd(), 4)];
    let mut cmd = Command::new(tvp_tests::bin("tvp-vmm"));
    cmd.args(["--log", "info", "run", "--vm-id", "bench", "--standalone"])
        .arg("--firmware")
        .arg(fw)
        .arg("--config-page")
        .arg(page)
        .arg("--console-log")
        .arg(dir.join("console.log"))
        .args(["--image-fd", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(k) = key {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        nix::unistd::write(&w, k).expect("key");
        drop(w);
        inherit.push((r.as_raw_fd(), 5));
        cmd.args(["--image-key-fd", "5"]);
        std::mem::forget(r);
    }
    // SAFETY (benchmark): fcntl and dup2 only; sources are moved above the targets first.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0i32; 2];
            for (h, (src, _)) in high.iter_mut().zip(&inherit) {
                *h = nix::libc::fcntl(*src, nix::libc::F_DUPFD_CLOEXEC, 64);
            }
            for (h, (_, dst)) in high.iter().zip(&inherit) {
                if nix::libc::dup2(*h, *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("tvp-vmm");
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("image loaded"))
        .unwrap_or_else(|| panic!("no load line:\n{log}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("mb_per_s="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse: {line}"))
}

/// MB/s of a shell pipeline over `bytes` bytes.
fn timed(bytes: u64, cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let st = cmd.stdout(Stdio::null()).status().expect("peer");
    assert!(st.success(), "{cmd:?} failed");
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let size_mib = args.first().copied().unwrap_or(256).clamp(1, 1400);
    let runs = args.get(1).copied().unwrap_or(5).max(1) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let len = size_mib << 20;
    println!("image: {size_mib} MiB, {runs} runs each");
    let mut plain = vec![0u8; len as usize];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut plain);
    std::fs::write(d.join("plain.img"), &plain).expect("write");
    let kms = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa");
    let mut enc = Vec::with_capacity(plain.len() + (1 << 20));
    let header = tvp_image::encrypt(
        &mut Cursor::new(&plain),
        &mut enc,
        &kms.to_public_key(),
        1 << 20,
    )
    .expect("encrypt");
    std::fs::write(d.join("img.enc"), &enc).expect("write");
    drop(enc);
    let key = tvp_image::ImageKey::unwrap(&header.wrapped_key, &kms).expect("key");
    let mem_mib = (2 * size_mib + 64).min(3072) as u32;
    let mem = u64::from(mem_mib) << 20;
    let page = {
        let c = Config {
            vip: [10, 0, 0, 2],
            prefix_len: 24,
            gateway: [10, 0, 0, 1],
            mac: [2, 0, 0, 0, 0, 1],
            boot_server_ip: [10, 0, 0, 1],
            boot_server_port: 8443,
            vcpus: 1,
            mem_size_mib: mem_mib,
            time_unix_secs: 0,
            entropy_seed: [1; 32],
            auth_code: b"U-bench",
            server_name: "boot.example",
            ca_cert_der: &[0x30, 0x03, 2, 1, 1],
            image: Some(ImageRef {
                gpa: (mem - len) & !0xfff,
                len,
                digest: header.image_digest,
            }),
            disk: None,
            tpm: None,
        };
        let p = d.join("config.page");
        std::fs::write(&p, c.encode().expect("page")).expect("write");
        p
    };
    drop(plain);
    // Standalone, the happy guest's mailbox requests fail at once and it powers off.
    let fw = tvp_tests::guests::build_guest("happy", &d.join("guest"));
    let enc_path = d.join("img.enc");
    let plain_path = d.join("plain.img");
    let decrypt: Vec<f64> = (0..runs)
        .map(|_| vmm_load(d, &fw, &page, &enc_path, Some(key.as_bytes())))
        .collect();
    let copy_in: Vec<f64> = (0..runs)
        .map(|_| vmm_load(d, &fw, &page, &plain_path, None))
        .collect();
    let key_hex = hex::encode(key.as_bytes());
    let openssl: Vec<f64> = (0..runs)
        .map(|_| {
            timed(
                len,
                Command::new("openssl")
                    .args(["enc", "-d", "-aes-256-ctr", "-nopad", "-K", &key_hex])
                    .args(["-iv", "00000000000000000000000000000000", "-in"])
                    .arg(&enc_path)
                    .args(["-out", "/dev/null"]),
            )
        })
        .collect();
    let same_work: Vec<f64> = (0..runs)
        .map(|_| {
            timed(
                len,
                Command::new("sh").arg("-c").arg(format!(
                    "openssl enc -d -aes-256-ctr -nopad -K {key_hex} -iv 00000000000000000000000000000000 -in '{}' | openssl dgst -sha256",
                    enc_path.display()
                )),
            )
        })
        .collect();
    let cat: Vec<f64> = (0..runs)
        .map(|_| timed(len, Command::new("cat").arg(&enc_path)))
        .collect();
    let (a, b, c, s2, e) = (
        median(decrypt),
        median(copy_in),
        median(openssl),
        median(same_work),
        median(cat),
    );
    println!("{:<58} {:>10}", "path", "MB/s");
    println!(
        "{:<58} {a:>10.0}",
        "tvp-vmm decrypt-while-loading into guest RAM (GCM+SHA-256)"
    );
    println!(
        "{:<58} {b:>10.0}",
        "tvp-vmm plaintext image into guest RAM (copy+SHA-256)"
    );
    println!(
        "{:<58} {c:>10.0}",
        "openssl enc -d -aes-256-ctr to /dev/null (no auth)"
    );
    println!(
        "{:<58} {s2:>10.0}",
        "openssl enc -d -aes-256-ctr | openssl dgst -sha256"
    );
    println!("{:<58} {e:>10.0}", "cat to /dev/null (plain copy)");
    println!(
        "ratios: decrypt-while-loading / openssl aes-256-ctr = {:.2}, / openssl ctr|sha256 = {:.2}, / plain copy = {:.2}",
        a / c,
        a / s2,
        a / e
    );
}
