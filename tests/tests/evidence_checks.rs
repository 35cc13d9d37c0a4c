//! Quotes from tvpd checked by two verifiers that share no code: tvp's own
//! (`tvpctl verify`) and tpm2-tools' `tpm2_checkquote`. Good evidence passes both; each
//! tampering is rejected by both, and tvpctl names the failed check.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::Value;
use tvp_tests::{nonce_hex, require, Swtpm, Tvpd};

struct Case {
    dir: PathBuf,
    nonce: String,
    ak: PathBuf,
    ek_name: String,
    evidence: Value,
}

fn setup(tpm: &Swtpm, t: &Tvpd) -> Case {
    let dir = tpm.scratch("ev");
    let h = t.api_json("GET", "/v1/host", None);
    let ak = dir.join("ak.pem");
    std::fs::write(&ak, h["ak_public_pem"].as_str().unwrap()).unwrap();
    let nonce = nonce_hex(20);
    let ev_path = dir.join("evidence.json");
    let (code, _, err) = t.tvpctl(&[
        "quote",
        "--nonce",
        &nonce,
        "--pcrs",
        "15,16,23",
        "-o",
        ev_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let evidence = serde_json::from_slice(&std::fs::read(&ev_path).unwrap()).unwrap();
    Case {
        dir,
        nonce,
        ak,
        ek_name: h["ek_name"].as_str().unwrap().to_string(),
        evidence,
    }
}

/// `tvpctl verify`: (exit code, stderr).
fn ours(t: &Tvpd, ev: &Path, nonce: &str, ak: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "verify",
        ev.to_str().unwrap(),
        "--nonce",
        nonce,
        "--ak",
        ak.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, _, err) = t.tvpctl(&args);
    (code, err)
}

/// `tpm2_checkquote` on our export: success?
fn theirs(t: &Tvpd, ev: &Path, nonce: &str, ak: &Path, out: &Path) -> bool {
    let (code, cmd, err) = t.tvpctl(&[
        "export-tpm2",
        ev.to_str().unwrap(),
        out.to_str().unwrap(),
        "--nonce",
        nonce,
        "--ak",
        ak.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(cmd.starts_with("tpm2_checkquote "), "{cmd}");
    Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// What openssl makes of the AK PEM (`openssl pkey -pubin -text`).
fn openssl_text(ak: &Path) -> String {
    let o = Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-text", "-in"])
        .arg(ak)
        .output()
        .expect("run openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
    p
}

fn flip_b64(v: &mut Value, at_from_end: usize) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(v.as_str().unwrap()).unwrap();
    let i = bytes.len() - at_from_end;
    bytes[i] ^= 0x01;
    *v = Value::String(b64.encode(bytes));
}

#[test]
fn quotes_pass_both_verifiers_and_each_tampering_fails_both() {
    require!("swtpm", "tpm2_checkquote", "openssl");
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    let c = setup(&tpm, &t);
    // A new host's AK is ECC NIST P-256 (openssl reads the PEM as such).
    let text = openssl_text(&c.ak);
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    let good = write(&c.dir, "good.json", &c.evidence);
    let (code, err) = ours(&t, &good, &c.nonce, &c.ak, &["--ek-name", &c.ek_name]);
    assert_eq!(code, 0, "{err}");
    assert!(theirs(&t, &good, &c.nonce, &c.ak, &c.dir.join("x-good")));

    // A different AK: another TPM's key.
    let other = Swtpm::blank();
    let t2 = Tvpd::start(&other, &other.scratch("b"), &[]);
    let other_ak = other.scratch("k").join("ak.pem");
    std::fs::write(
        &other_ak,
        t2.api_json("GET", "/v1/host", None)["ak_public_pem"]
            .as_str()
            .unwrap(),
    )
    .unwrap();

    let mut sig = c.evidence.clone();
    flip_b64(&mut sig["quote"]["signature"], 5);
    let mut attest = c.evidence.clone();
    flip_b64(&mut attest["quote"]["attest"], 40);
    let mut pcr = c.evidence.clone();
    pcr["pcrs"]["sha256"]["23"] = Value::String("11".repeat(32));
    let cases: Vec<(&str, PathBuf, String, PathBuf, &str)> = vec![
        (
            "signature",
            write(&c.dir, "sig.json", &sig),
            c.nonce.clone(),
            c.ak.clone(),
            "signature",
        ),
        (
            "attest",
            write(&c.dir, "attest.json", &attest),
            c.nonce.clone(),
            c.ak.clone(),
            "signature",
        ),
        (
            "pcr value",
            write(&c.dir, "pcr.json", &pcr),
            c.nonce.clone(),
            c.ak.clone(),
            "pcr-digest",
        ),
        ("nonce", good.clone(), nonce_hex(20), c.ak.clone(), "nonce"),
        (
            "wrong AK",
            good.clone(),
            c.nonce.clone(),
            other_ak.clone(),
            "ak-mismatch",
        ),
    ];
    for (what, ev, nonce, ak, check) in cases {
        let (code, err) = ours(&t, &ev, &nonce, &ak, &[]);
        assert_eq!(code, 1, "{what}: tvpctl accepted or failed oddly: {err}");
        assert!(err.contains(&format!("check {check}")), "{what}: {err}");
        assert!(
            !theirs(
                &t,
                &ev,
                &nonce,
                &ak,
                &c.dir.join(format!("x-{}", what.replace(' ', "-")))
            ),
            "{what}: tpm2_checkquote accepted tampered evidence"
        );
    }

    // Wrong EK binding and wrong expected values: our verifier's extra checks.
    let (code, err) = ours(
        &t,
        &good,
        &c.nonce,
        &c.ak,
        &["--ek-name", &format!("000b{}", "22".repeat(32))],
    );
    assert_eq!(code, 1);
    assert!(err.contains("check ak-mismatch"), "{err}");
    let expect = c.dir.join("expect.json");
    std::fs::write(
        &expect,
        format!(
            "{{\"pcrs\":{{\"sha256\":{{\"16\":\"{}\"}}}}}}",
            "33".repeat(32)
        ),
    )
    .unwrap();
    let (code, err) = ours(
        &t,
        &good,
        &c.nonce,
        &c.ak,
        &["--expect", expect.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("check expected-pcrs"), "{err}");
    // A tampered event log.
    let mut log = c.evidence.clone();
    log["event_log"][1]["digests"][0]["digest"] = Value::String("44".repeat(32));
    let (code, err) = ours(&t, &write(&c.dir, "log.json", &log), &c.nonce, &c.ak, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("check event-log"), "{err}");
}

#[test]
fn expected_platform_pcr_from_tvpd_print_expected_pcrs_matches_a_fresh_tpm() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let (code, expected, err) = Tvpd::run_once(&tpm, &dir, &["--print-expected-pcrs"]);
    assert_eq!(code, 0, "{err}");
    let expect_path = dir.join("expected.json");
    std::fs::write(&expect_path, &expected).unwrap();
    let t = Tvpd::start(&tpm, &dir, &[]);
    let c = setup(&tpm, &t);
    let good = write(&c.dir, "good.json", &c.evidence);
    let (code, err) = ours(
        &t,
        &good,
        &c.nonce,
        &c.ak,
        &["--expect", expect_path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
}

/// A host without IMA (swtpm, no kernel measurement list here): a quote over PCR 10
/// carries no IMA list; `tvpctl verify` says runtime integrity was not checked (text
/// and JSON) rather than passing it silently, and given the host's IMA allowlist it
/// refuses the evidence at check `ima` (`no-list`).
#[test]
fn runtime_integrity_is_reported_not_checked_and_an_allowlist_refuses_a_host_without_ima() {
    require!("swtpm", "openssl");
    let tpm = Swtpm::blank();
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &[]);
    let dir = tpm.scratch("ima");
    let h = t.api_json("GET", "/v1/host", None);
    let ak = dir.join("ak.pem");
    std::fs::write(&ak, h["ak_public_pem"].as_str().unwrap()).unwrap();
    let nonce = nonce_hex(16);
    let ev = dir.join("evidence.json");
    let ev_s = ev.to_str().unwrap();
    let (code, _, err) = t.tvpctl(&["quote", "--nonce", &nonce, "--pcrs", "10,15", "-o", ev_s]);
    assert_eq!(code, 0, "{err}");
    let evidence: Value = serde_json::from_slice(&std::fs::read(&ev).unwrap()).unwrap();
    assert!(evidence["pcrs"]["sha256"]["10"].is_string(), "{evidence}");
    assert!(evidence.get("ima_log").is_none(), "no IMA on this host");

    let ak_s = ak.to_str().unwrap();
    let base = ["verify", ev_s, "--nonce", &nonce, "--ak", ak_s];
    let (code, out, err) = t.tvpctl(&base);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("runtime:      NOT CHECKED"), "{out}");
    let mut json = vec!["--json"];
    json.extend_from_slice(&base);
    let (code, out, err) = t.tvpctl(&json);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runtime_integrity"], "not-checked", "{v}");
    assert!(v["ima_measurements"].is_null(), "{v}");

    let allow = dir.join("allowlist.json");
    std::fs::write(
        &allow,
        format!(
            r#"{{"entries": [{{"digest": "sha256:{}", "path": "/usr/local/bin/tvpd"}}]}}"#,
            "ab".repeat(32)
        ),
    )
    .unwrap();
    json.extend_from_slice(&["--ima-allowlist", allow.to_str().unwrap()]);
    let (code, out, err) = t.tvpctl(&json);
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["check"], "ima", "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("ima: no-list"),
        "{v}"
    );
    assert!(
        err.contains("verification FAILED at check ima: no-list"),
        "{err}"
    );
}

/// A host provisioned with an RSA-2048 AK (every host before ECC AKs, or
/// `ak_algorithm = "rsa-2048"`) keeps it when tvpd restarts with the ECC default: its
/// quotes pass tvpctl and tpm2_checkquote, a tampered one fails both, and its audit log
/// verifies against the anchor the RSA AK certifies.
#[test]
fn an_rsa_ak_from_before_keeps_passing_both_verifiers_and_certifies_the_audit_anchor() {
    require!("swtpm", "tpm2_checkquote", "openssl");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let mut old = Tvpd::start(&tpm, &dir, &["--ak-algorithm", "rsa-2048"]);
    let before = old.api_json("GET", "/v1/host", None)["ak_public_pem"].clone();
    assert_eq!(old.stop(), Some(0));
    let t = Tvpd::start(&tpm, &dir, &[]);
    let c = setup(&tpm, &t);
    assert_eq!(
        std::fs::read_to_string(&c.ak).unwrap(),
        before.as_str().unwrap()
    );
    let text = openssl_text(&c.ak);
    assert!(
        text.contains("2048 bit") && text.contains("Modulus"),
        "{text}"
    );
    let good = write(&c.dir, "good.json", &c.evidence);
    let (code, err) = ours(&t, &good, &c.nonce, &c.ak, &["--ek-name", &c.ek_name]);
    assert_eq!(code, 0, "{err}");
    assert!(theirs(&t, &good, &c.nonce, &c.ak, &c.dir.join("x-good")));
    let mut sig = c.evidence.clone();
    flip_b64(&mut sig["quote"]["signature"], 5);
    let bad = write(&c.dir, "sig.json", &sig);
    let (code, err) = ours(&t, &bad, &c.nonce, &c.ak, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(!theirs(&t, &bad, &c.nonce, &c.ak, &c.dir.join("x-sig")));

    let n = nonce_hex(16);
    let anchor = c.dir.join("anchor.json");
    t.write_audit_anchor(&n, &anchor);
    let log = t.state_dir.join("audit.log");
    let (rc, out, err) = t.verify_audit_log(&log, &anchor, &c.ak, &n);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("match the TPM-certified anchor"), "{out}");
}
