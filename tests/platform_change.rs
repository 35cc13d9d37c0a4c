//! Platform change detection: modifying or replacing a measured platform file while
//! tvpd runs is detected and reported; a restart measures the new platform.

use std::time::{Duration, Instant};

use tvp_tests::{require_tools, Swtpm, Tvpd};

fn sha256_hex(b: &[u8]) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Wait until `n` changes are reported and the last write has been seen (a write is
/// first seen truncated: the record's `current` follows the file).
fn wait_changes(
    t: &Tvpd,
    n: usize,
    settled: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = t.api_json("GET", "/v1/host", None);
        if h["platform_changes"].as_array().map(|a| a.len()) == Some(n) && settled(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "change not detected: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn modified_or_replaced_platform_files_are_detected_and_restart_remeasures() {
    require_tools!("swtpm", "sha256sum");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = dir.join("firmware.elf");
    let vmm = dir.join("tvp-vmm");
    std::fs::write(&fw, b"firmware v1").unwrap();
    std::fs::write(&vmm, b"vmm v1").unwrap();
    let list = format!("{},{}", fw.display(), vmm.display());
    let mut t = Tvpd::start(&tpm, &dir, &["--platform-artefacts", &list]);
    let h = t.api_json("GET", "/v1/host", None);
    assert_eq!(h["platform_intact"], true);
    let (code, out, _) = t.tvpctl(&["host"]);
    assert_eq!(code, 0);
    assert!(out.contains("platform:       intact"), "{out}");

    // Written in place.
    std::fs::write(&fw, b"firmware v2 (tampered)").unwrap();
    let tampered = sha256_hex(b"firmware v2 (tampered)");
    let h = wait_changes(&t, 1, |h| {
        h["platform_changes"][0]["current"] == tampered.as_str()
    });
    assert_eq!(h["platform_intact"], false);
    let c = &h["platform_changes"][0];
    assert_eq!(c["path"], fw.display().to_string());
    assert_eq!(c["measured"], sha256_hex(b"firmware v1"));
    assert_eq!(c["current"], sha256_hex(b"firmware v2 (tampered)"));
    assert!(
        t.log().contains("measured platform file changed"),
        "{}",
        t.log()
    );
    let (_, out, _) = t.tvpctl(&["host"]);
    assert!(out.contains("CHANGED"), "{out}");

    // Replaced by rename, as package managers do.
    let tmp = dir.join(".tvp-vmm.new");
    std::fs::write(&tmp, b"vmm v2").unwrap();
    std::fs::rename(&tmp, &vmm).unwrap();
    let h = wait_changes(&t, 2, |_| true);
    assert!(h["platform_changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["path"] == vmm.display().to_string() && c["current"] == sha256_hex(b"vmm v2")));

    // Restart: the new files are measured, the platform is intact again.
    t.restart();
    let h = t.api_json("GET", "/v1/host", None);
    assert_eq!(h["platform_intact"], true);
    let log = t.api_json("GET", "/v1/host/event-log", None);
    let recs = log.as_array().unwrap();
    let last_fw = recs
        .iter()
        .rev()
        .find(|r| r["content"]["description"] == fw.display().to_string())
        .unwrap();
    assert_eq!(
        last_fw["digests"][0]["digest"],
        sha256_hex(b"firmware v2 (tampered)")
    );
    assert_eq!(recs.len(), 10, "two starts of five measurements each");
}
