//! Encrypted images, tenant side: `tvpctl image` keygen → encrypt → inspect → decrypt
//! round trip; a tampered chunk, a truncated image and the wrong key-management key
//! are refused with a reason and leave no plaintext behind.

use std::process::Command;

use tvp_tests::bin;

fn tvpctl(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin("tvpctl")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn encrypt_decrypt_and_every_refusal() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(p("img.raw"), &plain).unwrap();
    assert_eq!(tvpctl(&["image", "keygen", &p("kms")]).0, 0);
    assert_eq!(tvpctl(&["image", "keygen", &p("other")]).0, 0);
    let mode = std::fs::metadata(p("kms.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let (c, _, e) = tvpctl(&[
        "image",
        "encrypt",
        &p("img.raw"),
        &p("img.enc"),
        "--kms-pub",
        &p("kms.pub"),
        "--chunk-size",
        "65536",
    ]);
    assert_eq!(c, 0, "{e}");
    let enc = std::fs::read(p("img.enc")).unwrap();
    assert!(enc.starts_with(b"TVPENC01"));
    assert!(
        !enc.windows(64).any(|w| plain.windows(64).next() == Some(w)),
        "plaintext visible in the image"
    );
    let (c, out, _) = tvpctl(&["--json", "image", "inspect", &p("img.enc")]);
    assert_eq!(c, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["plaintext_len"], 200_000);
    assert_eq!(v["chunk_count"], 4);
    let (c, _, e) = tvpctl(&[
        "image",
        "decrypt",
        &p("img.enc"),
        &p("out.raw"),
        "--kms-key",
        &p("kms.key"),
    ]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(std::fs::read(p("out.raw")).unwrap(), plain);

    let refuse = |bytes: &[u8], key: &str, needle: &str| {
        std::fs::write(p("bad.enc"), bytes).unwrap();
        let (c, _, e) = tvpctl(&[
            "image",
            "decrypt",
            &p("bad.enc"),
            &p("bad.raw"),
            "--kms-key",
            &p(key),
        ]);
        assert_eq!(c, 1, "{needle}: {e}");
        assert!(e.contains(needle), "expected '{needle}' in: {e}");
        assert!(!d.path().join("bad.raw").exists(), "plaintext left behind");
        assert!(
            !d.path().join("bad.partial").exists(),
            "partial plaintext left behind"
        );
    };
    let mut t = enc.clone();
    let n = t.len();
    t[n - 10_000] ^= 1;
    refuse(&t, "kms.key", "chunk 2 of 4 fails authentication");
    refuse(&enc[..enc.len() - 1], "kms.key", "truncated inside chunk 3");
    refuse(&enc, "other.key", "does not unwrap");
    refuse(&plain, "kms.key", "not an encrypted tvp image");
}
