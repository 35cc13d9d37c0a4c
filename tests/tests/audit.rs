//! The management audit trail and authorization gate end to end: real swtpm, real
//! tvpd, real tvpctl (docs/audit.md).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tvp_agent::api::error::ApiError;
use tvp_agent::api::gate::{self, RequestInfo};
use tvp_agent::api::handlers::Reply;
use tvp_agent::api::peer::Caller;
use tvp_agent::audit::counters::CounterStore;
use tvp_agent::audit::{Audit, AuditLog, AuthorizeError, TenantBinding};
use tvp_agent::tpm::service::TpmService;
use tvp_audit::params::{self, Params};
use tvp_audit::policy::{Remediation, TenantPolicy};
use tvp_audit::token::{AuthzError, TenantSigner};
use tvp_tests::tmpfs::{fill, SmallTmpfs};
use tvp_tests::{nonce_hex, require, Need, Swtpm, Tvpd};

const NV_INDEX: u32 = 0x0150_0000;

fn open_dirs(tpm: &Swtpm, dir: &Path) {
    for d in [tpm.dir(), dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn every_request_is_audited_refusals_in_aggregate_read_only_once_others_before_and_after() {
    require!("swtpm", "curl", "setpriv");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    open_dirs(&tpm, &dir);
    // No periodic flush during the test: refusals are written before the next
    // allowed request's record.
    let t = Tvpd::start(
        &tpm,
        &dir,
        &[
            "--socket-mode",
            "0666",
            "--allowed-users",
            "65534",
            "--denial-flush-interval-ms",
            "600000",
        ],
    );
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    assert_eq!(t.api("GET", "/v1/no-such-path", None).status, 404);
    assert_eq!(t.api("DELETE", "/v1/host", None).status, 405);
    assert_eq!(t.api("POST", "/v1/host/quote", Some("{nonce")).status, 400);
    assert_eq!(t.api("GET", "/v1/vms/vm-1/audit", None).status, 404);
    // An allowed non-root caller may not read the whole trail; a caller who is not
    // allowed at all is refused at accept. Both are counted with their uid.
    let (code, _) = tvp_tests::curl_as(65534, &t.socket, "http://tvp/v1/audit");
    assert_eq!(code, 403);
    let (code, _) = tvp_tests::curl_as(4343, &t.socket, "http://tvp/v1/host");
    assert_eq!(code, 403);

    let recs = t.audit_records();
    // Read-only requests are recorded once, after they ran (decision and result in
    // one record, `request` 0); refused requests are counted and written as one
    // `denied-requests` record before the next allowed request's record (here: the
    // GET /v1/vms/vm-1/audit, then the GET /v1/audit that read these records, which
    // is itself recorded after its reply).
    assert_eq!(recs.len(), 4, "{recs:#?}");
    let ops: Vec<&str> = recs.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "get-host",
            "denied-requests",
            "get-vm-audit",
            "denied-requests"
        ]
    );
    for r in [&recs[0], &recs[2]] {
        assert_eq!(
            (r["uid"].as_u64(), r["decision"].as_str()),
            (Some(0), Some("allow")),
            "{r}"
        );
        assert_eq!(r["stage"], "result", "{r}");
        assert_eq!(r["request"], 0, "a lone result names no decision: {r}");
        assert!(r["pid"].as_i64().unwrap_or(0) > 0, "{r}");
    }
    assert_eq!(recs[2]["vm"], "vm-1");
    assert_eq!(recs[2]["status"], 404);
    for r in [&recs[1], &recs[3]] {
        assert_eq!(r["decision"], "deny", "{r}");
        assert_eq!(r["request"], 0, "{r}");
    }
    let first = recs[1]["reason"].as_str().unwrap();
    assert!(first.starts_with("3 requests refused"), "{first}");
    for part in [
        "uid 0 x1 404 not_found on http:GET /v1/no-such-path",
        "uid 0 x1 405 method_not_allowed on http:DELETE /v1/host",
        "uid 0 x1 400 invalid_json on http:POST /v1/host/quote",
    ] {
        assert!(first.contains(part), "{part}: {first}");
    }
    let second = recs[3]["reason"].as_str().unwrap();
    assert!(second.starts_with("2 requests refused"), "{second}");
    assert!(
        second.contains("uid 65534 x1 403 forbidden on http:GET /v1/audit"),
        "{second}"
    );
    assert!(second.contains("root only"), "{second}");
    assert!(
        second.contains("uid 4343 x1 403 forbidden on connect"),
        "{second}"
    );

    // The log file verifies against a fresh AK certification of the NV anchor.
    let n = nonce_hex(16);
    let anchor = dir.join("anchor.json");
    let (rc, _, err) = t.tvpctl(
        &["audit", "anchor", "--nonce", &n, "-o"]
            .iter()
            .copied()
            .chain([anchor.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(rc, 0, "{err}");
    let ak = t.write_ak_pem(&dir);
    let log = t.state_dir.join("audit.log");
    let (rc, out, err) = t.verify_audit_log(&log, &anchor, &ak, &n);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("match the TPM-certified anchor"), "{out}");
    // A certification for another nonce is a replay.
    let (rc, out, _) = t.verify_audit_log(&log, &anchor, &ak, "00");
    assert_eq!(rc, 1);
    assert!(out.contains("another nonce"), "{out}");
}

/// Write `lines` as a log file.
fn write_log(path: &Path, lines: &[&str]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(path, s).unwrap();
}

#[test]
fn edited_deleted_reordered_and_truncated_logs_are_named_by_tvpctl_and_refused_at_restart() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let mut t = Tvpd::start(&tpm, &dir, &[]);
    // Ten read-only requests: one record each.
    for _ in 0..10 {
        t.api("GET", "/v1/host", None);
    }
    let ak = t.write_ak_pem(&dir);
    let n = nonce_hex(8);
    let anchor = dir.join("anchor.json");
    t.write_audit_anchor(&n, &anchor);
    assert_eq!(t.stop(), Some(0));
    let log = t.state_dir.join("audit.log");
    let good = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    assert!(lines.len() >= 10);

    let edited = lines[2].replace("\"uid\":0", "\"uid\":1000");
    assert_ne!(edited, lines[2]);
    let mut deleted = lines.clone();
    deleted.remove(2);
    let mut reordered = lines.clone();
    reordered.swap(2, 3);
    let truncated = &lines[..lines.len() - 2];
    let mut with_edit = lines.clone();
    with_edit[2] = &edited;
    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("edited", with_edit, "record seq 3 (line 3) was edited"),
        ("deleted", deleted, "record seq 4 (line 3) does not follow"),
        (
            "reordered",
            reordered,
            "record seq 4 (line 3) does not follow",
        ),
        ("truncated", truncated.to_vec(), "removed from the end"),
    ];
    let tvpctl = |args: &[&str]| t.tvpctl(args);
    for (name, variant, needle) in &cases {
        let f = dir.join(format!("{name}.log"));
        write_log(&f, variant);
        let (rc, out, err) = tvpctl(&[
            "audit",
            "verify",
            f.to_str().unwrap(),
            "--anchor",
            anchor.to_str().unwrap(),
            "--ak",
            ak.to_str().unwrap(),
            "--nonce",
            &n,
        ]);
        assert_eq!(rc, 1, "{name}: {out}{err}");
        assert!(out.contains(needle), "{name}: {out}");
        // tvpd refuses to serve on the tampered log, with exit code 65.
        write_log(&log, variant);
        let (rc, _, err) = Tvpd::run_once(&tpm, &dir, &[]);
        assert_eq!(rc, 65, "{name}: {err}");
        assert!(err.contains("audit log"), "{name}: {err}");
    }
    // Back to the intact log: tvpd serves again and the chain continues.
    std::fs::write(&log, &good).unwrap();
    t.start_again();
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    let recs = t.audit_records();
    // The GET /v1/host after the restart (read-only: one record).
    assert_eq!(recs.len(), lines.len() + 1);
}

#[test]
fn full_disk_makes_requests_fail_closed_with_nothing_lost() {
    require!(Need::Tmpfs, "swtpm", "mount", "umount");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fs = SmallTmpfs::mount(&tpm.scratch("small"), "64k");
    let state = fs.path().join("state");
    let mut t = Tvpd::start(&tpm, &dir, &["--state-dir", state.to_str().unwrap()]);
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    let filler = fs.path().join("filler");
    fill(&filler);
    // The log's last page may still have room for a few records; then it fails.
    let mut refused = None;
    for _ in 0..200 {
        let r = t.api("GET", "/v1/host", None);
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a full disk must make requests fail");
    assert_eq!(r.status, 503);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be persisted"),
        "{body}"
    );
    // Nothing half-written, and the chain is intact.
    let log = state.join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.ends_with('\n'), "partial record left in the log");
    let (rc, out, err) = t.tvpctl(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(rc, 0, "{out}{err}");
    let before = text.lines().count();
    // Still full: still refused, still nothing written.
    assert_eq!(t.api("GET", "/v1/host", None).status, 503);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        before
    );

    // Space again: requests run and are audited; the log still matches its anchor,
    // also across a restart.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    t.restart();
    let recs = t.audit_records();
    assert!(recs.len() > before, "{} <= {before}", recs.len());
    t.stop();
    drop(fs);
}

fn policy() -> TenantPolicy {
    TenantPolicy {
        v: 1,
        allowed_operations: vec!["pause".into(), "resume".into()],
        reported_operations: vec!["*".into()],
        management_key_lease_secs: None,
        max_token_lifetime_secs: None,
        key_lease_secs: None,
        allow_plaintext_images: false,
        on_platform_change: None,
        on_tampering: Remediation::PowerOff,
    }
}

/// The host AK name tokens are bound to in these in-process tests.
const HOST: &[u8] = b"\x00\x0bthis-host-ak-name";
/// The incarnation (configuration page digest) of the VMs registered here.
const PAGE: [u8; 32] = [0x23; 32];

/// `vm` on this host in its current incarnation.
fn target(vm: &str) -> tvp_audit::token::Target {
    tvp_audit::token::Target {
        host: HOST.to_vec(),
        vm: vm.into(),
        incarnation: PAGE,
    }
}

fn open_audit(tpm: &Swtpm, state: &Path) -> (TpmService, Audit) {
    let svc = tpm.service();
    let log = AuditLog::open(state, svc.client(), NV_INDEX).expect("audit log");
    let counters = CounterStore::load(state).expect("counters");
    (svc, Audit::new(log, counters, HOST.to_vec()))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What lifecycle code does for a restricted operation: authorize, then gate (audit
/// before/after), running `ran` only if allowed.
fn restricted(
    audit: &Audit,
    op: &str,
    p: &Params,
    token: Option<&str>,
    ran: &Arc<AtomicBool>,
) -> Result<Reply, ApiError> {
    let decision = audit
        .authorize("vm-a", op, p, token)
        .map(|a| format!("authorized with counter {}", a.counter))
        .map_err(ApiError::from);
    let info = RequestInfo {
        caller: Caller {
            uid: 0,
            gid: 0,
            pid: Some(1),
        },
        op: op.to_string(),
        vm: Some("vm-a".into()),
        params_digest: params::digest(p),
        read_only: false,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let admission = gate::admit(audit, info, decision).await?;
        let result = admission.permit().map(|()| {
            ran.store(true, Ordering::SeqCst);
            Reply {
                status: 200,
                body: b"{}".to_vec(),
            }
        });
        gate::conclude(audit, admission, result).await
    })
}

#[test]
fn token_attacks_are_refused_with_their_reason_audited_and_never_run() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let state = tpm.scratch("state");
    let tenant = TenantSigner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng));
    let other = TenantSigner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng));
    let (svc, audit) = open_audit(&tpm, &state);
    audit.register_vm(
        "vm-a",
        TenantBinding {
            key: tenant.public(),
            policy: policy(),
            key_since: now(),
            incarnation: Some(PAGE),
        },
    );
    let p = params::parse_kv(&["reason=maintenance".into()]).unwrap();
    let pd = params::digest(&p);
    let exp = now() + 300;
    let good = tenant.authorize("pause", &target("vm-a"), &pd, 10, exp);

    let mut forged = good.clone();
    forged.counter = 11;
    let mut changed = p.clone();
    changed.insert("reason".into(), "other".into());
    let attacks: Vec<(&str, Option<String>, Params, &str)> = vec![
        ("missing token", None, p.clone(), "authorization_missing"),
        (
            "forged signature",
            Some(forged.encode()),
            p.clone(),
            "bad_signature",
        ),
        (
            "wrong key",
            Some(
                other
                    .authorize("pause", &target("vm-a"), &pd, 10, exp)
                    .encode(),
            ),
            p.clone(),
            "wrong_key",
        ),
        (
            "other VM's token",
            Some(
                tenant
                    .authorize("pause", &target("vm-b"), &pd, 10, exp)
                    .encode(),
            ),
            p.clone(),
            "other_vm",
        ),
        (
            "changed parameters",
            Some(good.encode()),
            changed,
            "params_mismatch",
        ),
        (
            "expired",
            Some(
                tenant
                    .authorize("pause", &target("vm-a"), &pd, 10, now() - 1)
                    .encode(),
            ),
            p.clone(),
            "expired",
        ),
        (
            "operation not in policy",
            Some(
                tenant
                    .authorize("delete", &target("vm-a"), &pd, 10, exp)
                    .encode(),
            ),
            p.clone(),
            "not_allowed_by_policy",
        ),
        (
            "another host's token",
            Some(
                tenant
                    .authorize(
                        "pause",
                        &tvp_audit::token::Target {
                            host: b"\x00\x0banother-host".to_vec(),
                            ..target("vm-a")
                        },
                        &pd,
                        10,
                        exp,
                    )
                    .encode(),
            ),
            p.clone(),
            "host_mismatch",
        ),
        (
            "another incarnation's token",
            Some(
                tenant
                    .authorize(
                        "pause",
                        &tvp_audit::token::Target {
                            incarnation: [0x24; 32],
                            ..target("vm-a")
                        },
                        &pd,
                        10,
                        exp,
                    )
                    .encode(),
            ),
            p.clone(),
            "incarnation_mismatch",
        ),
        (
            "expiry beyond the default cap",
            Some(
                tenant
                    .authorize("pause", &target("vm-a"), &pd, 10, now() + 7200)
                    .encode(),
            ),
            p.clone(),
            "lifetime_exceeds_policy",
        ),
    ];
    for (name, token, params, code) in &attacks {
        let op = if *code == "not_allowed_by_policy" {
            "delete"
        } else {
            "pause"
        };
        let ran = Arc::new(AtomicBool::new(false));
        let Err(e) = restricted(&audit, op, params, token.as_deref(), &ran) else {
            panic!("{name}: accepted");
        };
        assert_eq!((e.status, e.code), (403, *code), "{name}: {}", e.message);
        assert!(!ran.load(Ordering::SeqCst), "{name}: the operation ran");
    }
    // The genuine token works once...
    let ran = Arc::new(AtomicBool::new(false));
    if let Err(e) = restricted(&audit, "pause", &p, Some(&good.encode()), &ran) {
        panic!("valid token refused: {}", e.message);
    }
    assert!(ran.load(Ordering::SeqCst));
    // ...and is refused when replayed.
    let ran = Arc::new(AtomicBool::new(false));
    let Err(e) = restricted(&audit, "pause", &p, Some(&good.encode()), &ran) else {
        panic!("replay accepted");
    };
    assert_eq!(e.code, "counter_not_increasing");
    assert!(!ran.load(Ordering::SeqCst));

    // Every attempt is in the log: a deny decision with the reason, and a result.
    let recs: Vec<_> = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { audit.log().lock().await.records().to_vec() })
    };
    assert_eq!(recs.len(), (attacks.len() + 2) * 2);
    for (i, (name, _, _, code)) in attacks.iter().enumerate() {
        let d = &recs[2 * i];
        assert_eq!(d.vm.as_deref(), Some("vm-a"));
        assert!(d.reason.contains(code), "{name}: {}", d.reason);
        assert_eq!(recs[2 * i + 1].status, Some(403));
    }

    // Restart (new TPM service, log and counters reloaded): the replay is still
    // refused, a higher counter is accepted.
    drop(audit);
    svc.shutdown();
    let (_svc, audit) = open_audit(&tpm, &state);
    audit.register_vm(
        "vm-a",
        TenantBinding {
            key: tenant.public(),
            policy: policy(),
            key_since: now(),
            incarnation: Some(PAGE),
        },
    );
    match audit.authorize("vm-a", "pause", &p, Some(&good.encode())) {
        Err(AuthorizeError::Token(AuthzError::CounterNotIncreasing {
            counter: 10,
            last: 10,
        })) => {}
        other => panic!("replay after restart: {other:?}"),
    }
    let next = tenant.authorize("pause", &target("vm-a"), &pd, 11, exp);
    audit
        .authorize("vm-a", "pause", &p, Some(&next.encode()))
        .expect("higher counter");
}

/// Drop the last line of a log file.
fn drop_last_line(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    write_log(path, &lines[..lines.len() - 1]);
}

#[test]
fn log_truncated_while_tvpd_runs_refuses_every_request_and_the_restart_restores_the_anchored_record(
) {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let mut t = Tvpd::start(&tpm, &dir, &[]);
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    drop_last_line(&t.state_dir.join("audit.log"));
    for _ in 0..2 {
        let r = t.api("GET", "/v1/host", None);
        assert_eq!(r.status, 503);
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            body.contains("modified by someone other than tvpd"),
            "{body}"
        );
    }
    assert!(t.log().contains("AUDIT TAMPERING DETECTED"), "{}", t.log());
    t.stop();
    // The anchor holds the removed record and the write-ahead marker still has it
    // (indistinguishable from a crash before its log write): the restart writes it
    // back (docs/audit.md §3.3). Removing more than that is refused (exit 65).
    t.start_again();
    assert!(t.log().contains("written back"), "{}", t.log());
    let recs = t.audit_records();
    assert_eq!(recs[0]["op"], "get-host", "{recs:?}");
}

struct RecordingRemediator(std::sync::Mutex<Vec<String>>);

impl tvp_agent::audit::Remediator for RecordingRemediator {
    fn power_off(&self, vm: &str) -> Result<bool, String> {
        self.0.lock().unwrap().push(vm.to_string());
        Ok(true)
    }
}

#[test]
fn tampering_powers_off_vms_whose_policy_says_so_and_alerts_for_the_others() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let state = tpm.scratch("state");
    let (_svc, audit) = open_audit(&tpm, &state);
    let key =
        TenantSigner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)).public();
    for (vm, action) in [
        ("vm-off", Remediation::PowerOff),
        ("vm-alert", Remediation::Alert),
    ] {
        let mut p = policy();
        p.on_tampering = action;
        audit.register_vm(
            vm,
            TenantBinding {
                key: key.clone(),
                policy: p,
                key_since: now(),
                incarnation: Some(PAGE),
            },
        );
    }
    let rem = Arc::new(RecordingRemediator(std::sync::Mutex::new(Vec::new())));
    audit.set_remediator(rem.clone());
    let ran = Arc::new(AtomicBool::new(false));
    // One unrestricted request goes through; then the log is truncated behind tvpd.
    let p = Params::new();
    let _ = restricted(&audit, "pause", &p, None, &ran);
    drop_last_line(&state.join("audit.log"));
    let Err(e) = restricted(&audit, "pause", &p, None, &ran) else {
        panic!("request accepted on a tampered log");
    };
    assert_eq!((e.status, e.code), (503, "audit_unavailable"));
    assert!(audit.tampered());
    assert_eq!(*rem.0.lock().unwrap(), vec!["vm-off".to_string()]);
    assert!(!ran.load(Ordering::SeqCst));
}

/// One gated request about `vm` (as the lifecycle's VM operations will be).
fn vm_request(audit: &Audit, vm: &str, op: &str) {
    let info = RequestInfo {
        caller: Caller {
            uid: 0,
            gid: 0,
            pid: Some(1),
        },
        op: op.to_string(),
        vm: Some(vm.to_string()),
        params_digest: params::digest(&Params::new()),
        read_only: false,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(async {
        let admission = gate::admit(audit, info, Ok("test".into())).await?;
        let result = admission.permit().map(|()| Reply {
            // A creation is answered 201, as the API does.
            status: if op == "create-vm" { 201 } else { 200 },
            body: b"{}".to_vec(),
        });
        gate::conclude(audit, admission, result).await
    });
    assert!(r.is_ok());
}

#[test]
fn tenant_extract_with_tpm_certified_anchor_verifies_and_withholding_is_named() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let state = tpm.scratch("state");
    let (_svc, audit) = open_audit(&tpm, &state);
    let key =
        TenantSigner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)).public();
    let mut pol = policy();
    pol.reported_operations = vec!["pause".into(), "resume".into()];
    for vm in ["vm-a", "vm-b"] {
        audit.register_vm(
            vm,
            TenantBinding {
                key: key.clone(),
                policy: pol.clone(),
                key_since: now(),
                incarnation: Some(PAGE),
            },
        );
    }
    // The VM's creation (always in its extract in full: the verification starts there).
    for (vm, op) in [
        ("vm-a", "create-vm"),
        ("vm-a", "pause"),
        ("vm-b", "pause"),
        ("vm-a", "get-vm"),
        ("vm-a", "resume"),
    ] {
        vm_request(&audit, vm, op);
    }
    let nonce = [9u8; 16];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Ok(x) = rt.block_on(audit.extract("vm-a", 1, Some(nonce.to_vec()))) else {
        panic!("extract failed");
    };
    let dir = tpm.scratch("files");
    let pol_file = dir.join("policy.json");
    std::fs::write(&pol_file, serde_json::to_vec(&pol).unwrap()).unwrap();
    let ak = dir.join("ak.pem");
    std::fs::write(&ak, &x.anchor.as_ref().unwrap().ak_public_pem).unwrap();
    let xfile = dir.join("extract.json");
    std::fs::write(&xfile, serde_json::to_vec(&x).unwrap()).unwrap();
    let n = hex::encode(nonce);
    let verify = |f: &Path| {
        tvp_tests::tvpctl(
            None,
            &[
                "audit",
                "verify",
                f.to_str().unwrap(),
                "--policy",
                pol_file.to_str().unwrap(),
                "--ak",
                ak.to_str().unwrap(),
                "--nonce",
                &n,
            ],
        )
    };
    let (rc, out, err) = verify(&xfile);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("6 records of this VM"), "{out}");
    assert!(out.contains("TPM-certified anchor"), "{out}");

    // The host hides vm-a's resume (decision record, seq 9) as someone else's record.
    let mut v: Value = serde_json::to_value(&x).unwrap();
    let rec = v["entries"][8]["record"].clone();
    assert_eq!(rec["op"], "resume");
    let full: tvp_audit::AuditRecord = serde_json::from_value(rec).unwrap();
    v["entries"][8] = serde_json::json!({"skipped": {
        "seq": full.seq, "prev": full.prev,
        "vm_digest": hex::encode(tvp_audit::record::vm_digest(Some("vm-a"))),
        "op": full.op, "body_digest": hex::encode(full.body_digest().unwrap()),
    }});
    let bad = dir.join("withheld.json");
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let (rc, out, _) = verify(&bad);
    assert_eq!(rc, 1);
    assert!(
        out.contains("record seq 9 (resume) concerns this VM"),
        "{out}"
    );

    // Dropping the last entries (truncation) fails against the certified anchor.
    let mut v: Value = serde_json::to_value(&x).unwrap();
    v["entries"].as_array_mut().unwrap().truncate(8);
    let cut = dir.join("truncated.json");
    std::fs::write(&cut, serde_json::to_vec(&v).unwrap()).unwrap();
    let (rc, out, _) = verify(&cut);
    assert_eq!(rc, 1);
    assert!(out.contains("does not match the TPM anchor"), "{out}");
}
