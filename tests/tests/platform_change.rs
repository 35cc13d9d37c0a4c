//! Platform change detection: modifying or replacing a measured platform file while
//! tvpd runs is detected and reported; a restart measures the new platform.

use std::time::Duration;

use tvp_tests::vm::poll;
use tvp_tests::{require, state_is, wait_vm, Swtpm, Tvpd, VmSpec};

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
    poll(Duration::from_secs(15), Duration::from_millis(50), || {
        let h = t.api_json("GET", "/v1/host", None);
        if h["platform_changes"].as_array().map(|a| a.len()) == Some(n) && settled(&h) {
            Ok(h)
        } else {
            Err(h)
        }
    })
    .unwrap_or_else(|h| panic!("change not detected: {h}"))
}

#[test]
fn modified_or_replaced_platform_files_are_detected_and_restart_remeasures() {
    require!("swtpm", "sha256sum");
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
    // Marker, tvpd, config, tvp-vmm and firmware (always), then the two listed files.
    assert_eq!(recs.len(), 14, "two starts of seven measurements each");
}

/// A VM managed by the shared tenant, with this test's platform-change setting.
fn vm_spec(id: &str, policy: serde_json::Value) -> VmSpec {
    VmSpec::measured(id).policy_with(policy)
}

#[test]
fn a_platform_change_while_vms_run_revokes_them_and_applies_each_tenants_remediation() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let built = tvp_tests::guests::build_guest("spin", &tpm.scratch("guest"));
    // The firmware every VM boots, measured and watched.
    let fw = dir.join("firmware.elf");
    std::fs::copy(&built, &fw).unwrap();
    let t = Tvpd::start(
        &tpm,
        &dir,
        &[
            "--firmware",
            fw.to_str().unwrap(),
            "--platform-artefacts",
            fw.to_str().unwrap(),
        ],
    );
    let alert = serde_json::json!({});
    let off = serde_json::json!({"on_platform_change": "power-off"});
    assert_eq!(t.create_vm(&vm_spec("alert", alert)).status, 201);
    assert_eq!(t.create_vm(&vm_spec("off", off)).status, 201);
    // Both past their measurements (a VMM still loading the firmware while it is
    // rewritten measures another file and fails `measurement mismatch` instead).
    wait_vm(&t, "alert", state_is("attesting"), Duration::from_secs(20));
    wait_vm(&t, "off", state_is("attesting"), Duration::from_secs(20));
    // Root replaces the firmware on disk while both VMs are live.
    let mut bytes = std::fs::read(&fw).unwrap();
    bytes.extend_from_slice(b"implant");
    std::fs::write(&fw, &bytes).unwrap();
    let (a, o) = poll(Duration::from_secs(15), Duration::from_millis(50), || {
        let a = t.vm("alert");
        let o = t.vm("off");
        if o["state"] == "destroyed" && !a["revocations"].as_array().unwrap().is_empty() {
            Ok((a, o))
        } else {
            Err(format!("{a}\n{o}"))
        }
    })
    .unwrap_or_else(|seen| panic!("no revocation: {seen}"));
    for v in [&a, &o] {
        assert_eq!(v["revocations"][0]["path"], fw.to_str().unwrap(), "{v}");
    }
    // Remediation per tenant: alert keeps the VM, power-off destroys it.
    assert_eq!(a["state"], "attesting", "{a}");
    assert_eq!(
        o["reason"],
        format!("platform-changed: {}", fw.display()),
        "{o}"
    );
    assert!(t
        .log()
        .contains("revocation: a measured platform file changed"));
    // Both revocations are in the tenants' audit trails (their extracts), with the
    // remediation each policy chose.
    for (id, remediation) in [("alert", "alert"), ("off", "power-off")] {
        let x = t.api_json("GET", &format!("/v1/vms/{id}/audit"), None);
        let rev: Vec<&serde_json::Value> = x["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.get("record"))
            .filter(|r| r["op"] == "platform-revocation")
            .collect();
        assert_eq!(rev.len(), 1, "{x}");
        let reason = rev[0]["reason"].as_str().unwrap();
        assert!(
            reason.contains(fw.to_str().unwrap())
                && reason.ends_with(&format!("remediation {remediation}")),
            "{reason}"
        );
    }
    // The changed firmware is never used for a new VM.
    let r = t.create_vm(&vm_spec("new", serde_json::json!({})));
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("platform_changed"));
}
