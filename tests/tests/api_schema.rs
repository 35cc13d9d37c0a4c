//! Schema-driven fuzzing of tvpd's API through its real Unix socket: schemathesis
//! (scripts/api-fuzz.sh) generates valid and invalid requests for every operation of
//! docs/openapi.yaml, stateful sequences included. The run fails on any 5xx, on a reply
//! that the document does not describe, on a schema-valid request refused and on a
//! schema-violating request accepted. Afterwards tvpd must still answer and its audit
//! log, with every one of those requests in it, must verify against a fresh
//! TPM-certified anchor.

use std::process::Command;

use tvp_tests::{nonce_hex, require, Need, Swtpm, Tvpd};

#[test]
fn schemathesis_finds_tvpd_and_docs_openapi_in_agreement_and_tvpd_survives() {
    require!(Need::Root, "swtpm", "python3");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("api");
    let t = Tvpd::start(&tpm, &dir, &[]);
    let examples = std::env::var("TVP_API_FUZZ_EXAMPLES").unwrap_or_else(|_| "5".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/api-fuzz.sh"))
        .arg(&t.socket)
        .arg(&examples)
        .output()
        .expect("run scripts/api-fuzz.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found disagreements (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    assert!(
        stdout.contains("Tested: 16"),
        "every operation was exercised:\n{stdout}"
    );

    // tvpd is still up and serving.
    let host = t.api("GET", "/v1/host", None);
    assert_eq!(
        host.status,
        200,
        "tvpd answers after the run; log:\n{}",
        t.log()
    );
    let host: serde_json::Value = serde_json::from_slice(&host.body).expect("host JSON");

    // Every generated request is in the audit log, which verifies.
    let log = t.state_dir.join("audit.log");
    let records = std::fs::read_to_string(&log)
        .expect("audit log")
        .lines()
        .count();
    assert!(records > 100, "only {records} audit records after the run");
    let ak = dir.join("ak.pem");
    std::fs::write(&ak, host["ak_public_pem"].as_str().expect("AK PEM")).expect("write AK");
    let n = nonce_hex(16);
    let anchor = dir.join("anchor.json");
    let anchor_s = anchor.to_str().expect("path");
    let (rc, _, err) = t.tvpctl(&["audit", "anchor", "--nonce", &n, "-o", anchor_s]);
    assert_eq!(rc, 0, "{err}");
    let (rc, out, err) = t.verify_audit_log(&log, &anchor, &ak, &n);
    assert_eq!(rc, 0, "audit log after the run:\n{out}{err}");
}
