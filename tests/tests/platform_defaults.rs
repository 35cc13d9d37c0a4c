//! Issue #15, item 4: the tvp-vmm binary tvpd will exec and the firmware it will load
//! are measured into the platform PCR and watched whatever `platform_artefacts` lists.
//! The attack: with the shipped configuration (no artefacts listed), root replaces
//! tvp-vmm (or the firmware) on disk while tvpd runs.

use std::time::Duration;

use serde_json::Value;
use tvp_tests::vm::poll;
use tvp_tests::{require, Swtpm, Tvpd, VmSpec};

fn sha256_hex(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The platform PCR's event-log records measuring `label:path`.
fn measured<'a>(log: &'a Value, label: &str, path: &std::path::Path) -> Vec<&'a Value> {
    let want = format!("{label}:{}", path.display());
    log.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["content"]["description"] == want.as_str())
        .collect()
}

/// Wait until `/v1/host` reports a change of `path` whose current digest is `current`.
fn wait_change(t: &Tvpd, path: &std::path::Path, current: &str) -> Value {
    poll(Duration::from_secs(15), Duration::from_millis(50), || {
        let h = t.api_json("GET", "/v1/host", None);
        let seen = h["platform_changes"].as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["path"] == path.display().to_string() && c["current"] == current)
        });
        if seen {
            Ok(h)
        } else {
            Err(h)
        }
    })
    .unwrap_or_else(|h| panic!("change of {} not detected: {h}", path.display()))
}

#[test]
fn replacing_tvp_vmm_or_the_firmware_is_seen_without_listing_them_and_new_vms_are_refused() {
    require!("swtpm", "sha256sum");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    // A real tvp-vmm and a firmware file where this host keeps them; no artefact listed.
    let vmm = dir.join("tvp-vmm");
    std::fs::copy(tvp_tests::bin("tvp-vmm"), &vmm).unwrap();
    let fw = dir.join("firmware.elf");
    std::fs::write(&fw, b"firmware v1").unwrap();
    let t = Tvpd::start(
        &tpm,
        &dir,
        &[
            "--vmm-binary",
            vmm.to_str().unwrap(),
            "--firmware",
            fw.to_str().unwrap(),
        ],
    );
    let h = t.api_json("GET", "/v1/host", None);
    assert_eq!(h["platform_intact"], true, "{h}");
    let (vmm_v1, fw_v1) = (sha256_hex(&vmm), sha256_hex(&fw));

    // Root replaces tvp-vmm by rename, as an installer would.
    let tmp = dir.join(".tvp-vmm.new");
    std::fs::write(&tmp, b"#!/bin/sh\necho implant\n").unwrap();
    std::fs::rename(&tmp, &vmm).unwrap();
    let h = wait_change(&t, &vmm, &sha256_hex(&vmm));
    assert_eq!(h["platform_intact"], false, "{h}");
    assert!(t.log().contains("measured platform file changed"));
    // A new VM is refused, naming the file.
    let r = t.create_vm(&VmSpec::measured("new"));
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 409, "{body}");
    assert!(body.contains("platform_changed"), "{body}");
    assert!(body.contains(vmm.to_str().unwrap()), "{body}");

    // The firmware written in place is seen as well.
    std::fs::write(&fw, b"firmware v2 (implant)").unwrap();
    let h = wait_change(&t, &fw, &sha256_hex(&fw));
    assert_eq!(h["platform_changes"].as_array().unwrap().len(), 2, "{h}");

    // Both were measured by content into the platform PCR's log at start.
    let log = t.api_json("GET", "/v1/host/event-log", None);
    let v = measured(&log, "tvp-vmm", &vmm);
    assert_eq!(v.len(), 1, "{log:#}");
    assert_eq!(v[0]["digests"][0]["digest"], vmm_v1);
    let f = measured(&log, "firmware", &fw);
    assert_eq!(f.len(), 1, "{log:#}");
    assert_eq!(f[0]["digests"][0]["digest"], fw_v1);
}

#[test]
fn by_default_the_vmm_next_to_tvpd_is_measured_once_even_if_listed_and_a_missing_firmware_is_measured_absent(
) {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    // vmm_binary unset: tvpd execs the tvp-vmm next to itself, so that is what it
    // measures; it is also listed (through a symbolic link) and measured only once.
    let next_to_tvpd = tvp_tests::bin("tvpd").parent().unwrap().join("tvp-vmm");
    let link = dir.join("vmm-link");
    std::os::unix::fs::symlink(&next_to_tvpd, &link).unwrap();
    let missing_fw = dir.join("no-such-dir").join("firmware.elf");
    let t = Tvpd::start(
        &tpm,
        &dir,
        &[
            "--firmware",
            missing_fw.to_str().unwrap(),
            "--platform-artefacts",
            link.to_str().unwrap(),
        ],
    );
    let log = t.api_json("GET", "/v1/host/event-log", None);
    let recs = log.as_array().unwrap();
    assert_eq!(
        recs.len(),
        5,
        "marker, tvpd, config, tvp-vmm, firmware: {log:#}"
    );
    assert_eq!(measured(&log, "tvp-vmm", &next_to_tvpd).len(), 1, "{log:#}");
    let fw = &recs[4];
    assert_eq!(
        fw["content"]["description"],
        format!("firmware:{} (absent)", missing_fw.display())
    );
    assert_eq!(fw["digests"][0]["digest"], "00".repeat(32));
    let h = t.api_json("GET", "/v1/host", None);
    assert_eq!(h["platform_intact"], true, "{h}");
    assert!(t.log().contains("measured as absent"), "{}", t.log());
}
