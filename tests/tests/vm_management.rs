//! Locked-down management of real measured VMs (real tvpd, swtpm, KVM, tvp-vmm): every
//! restricted operation needs the tenant's signed token; each attack is refused with
//! its reason, audited, and leaves the VM running; allowed operations really pause,
//! resume, reboot, power off and delete, audited before and after; a full disk makes
//! them fail closed; tampering with the trail powers off the VMs whose policy says so.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tvp_audit::AuthToken;
use tvp_tests::guests::build_guest;
use tvp_tests::procfs::proc_state;
use tvp_tests::tenant::now;
use tvp_tests::tmpfs::{fill, SmallTmpfs};
use tvp_tests::vm::eventually;
use tvp_tests::{require, state_is, wait_vm, Need, Swtpm, Tenant, Tvpd, VmSpec};
use tvpctl::client::HttpReply;

/// How long a VM may take to reach a state.
const TO_STATE: Duration = Duration::from_secs(60);

/// Creates VM `id` managed by `tenant` (no gateway) and waits until it runs.
fn create_running(t: &Tvpd, id: &str, tenant: &Tenant) -> Value {
    let spec = VmSpec::measured(id).no_gateway().managed_by(tenant);
    let r = t.create_vm(&spec);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    wait_vm(t, id, state_is("running"), TO_STATE)
}

/// The VM is running, not paused, with the same VMM, which is not stopped.
fn assert_untouched(t: &Tvpd, id: &str, pid: u64, what: &str) {
    let v = t.vm(id);
    assert_eq!(v["state"], "running", "{what}: {v}");
    assert_eq!(v["paused"], false, "{what}: {v}");
    assert_eq!(v["pid"].as_u64(), Some(pid), "{what}: {v}");
    assert_ne!(proc_state(pid), 'T', "{what}: the VMM is stopped");
}

fn operation(t: &Tvpd, id: &str, op: &str, params: Value, token: Option<&str>) -> HttpReply {
    let body = json!({"op": op, "params": params}).to_string();
    let path = format!("/v1/vms/{id}/operations");
    match token {
        Some(tok) => t.api_token("POST", &path, Some(&body), tok),
        None => t.api("POST", &path, Some(&body)),
    }
}

fn code(r: &HttpReply) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

/// The decision and result records of the last request `op` on `vm`.
fn last_request(recs: &[Value], vm: &str, op: &str) -> (Value, Value) {
    let d = recs
        .iter()
        .rev()
        .find(|r| r["vm"] == vm && r["op"] == op && r["stage"] == "decision")
        .unwrap_or_else(|| panic!("no decision record for {op} on {vm}"))
        .clone();
    let r = recs
        .iter()
        .find(|r| r["stage"] == "result" && r["request"] == d["seq"])
        .unwrap_or_else(|| panic!("no result record for {op} on {vm}: {d}"))
        .clone();
    (d, r)
}

/// State-change events of `vm` after record `after_seq`: (before, after) pairs.
fn events_since(recs: &[Value], vm: &str, after_seq: u64) -> Vec<(String, String)> {
    recs.iter()
        .filter(|r| {
            r["vm"] == vm && r["stage"] == "event" && r["seq"].as_u64().unwrap_or(0) > after_seq
        })
        .map(|r| {
            (
                r["state_before"].as_str().unwrap_or("").to_string(),
                r["state_after"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn workload(tpm: &Swtpm) -> String {
    build_guest("workload", &tpm.scratch("guest"))
        .to_str()
        .unwrap()
        .to_string()
}

/// A token with one field changed after signing (the signature no longer covers it).
fn forged(token: &str) -> String {
    let mut t = AuthToken::decode(token).unwrap();
    t.counter += 1000;
    t.encode()
}

#[test]
fn every_attack_on_a_running_vm_is_refused_audited_and_leaves_it_running() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = workload(&tpm);
    let mut t = Tvpd::start(&tpm, &dir, &["--firmware", &fw]);
    // A P-256 tenant here (the other tests use Ed25519).
    let tenant = Tenant::with_signer(
        tvp_audit::token::TenantSigner::generate_p256(),
        &["pause", "resume", "snapshot-create", "delete"],
        "alert",
    );
    let stranger = Tenant::new(&["pause"], "alert");
    let v = create_running(&t, "vm-a", &tenant);
    let pid = v["pid"].as_u64().unwrap();
    assert_eq!(v["management"]["key_id"], tenant.signer.public().key_id());

    let snap = json!({"name": "s1"});
    let attacks: Vec<(&str, &str, Value, Option<String>, &str)> = vec![
        (
            "missing token",
            "pause",
            json!({}),
            None,
            "authorization_missing",
        ),
        (
            "forged signature",
            "pause",
            json!({}),
            Some(forged(&tenant.token("vm-a", "pause", &[]))),
            "bad_signature",
        ),
        (
            "wrong key",
            "pause",
            json!({}),
            Some(stranger.token("vm-a", "pause", &[])),
            "wrong_key",
        ),
        (
            "other VM's token",
            "pause",
            json!({}),
            Some(tenant.token("vm-b", "pause", &[])),
            "other_vm",
        ),
        (
            "other operation's token",
            "pause",
            json!({}),
            Some(tenant.token("vm-a", "resume", &[])),
            "other_operation",
        ),
        (
            "changed parameters",
            "snapshot-create",
            json!({"name": "s2"}),
            Some(tenant.token("vm-a", "snapshot-create", &[("name", "s1")])),
            "params_mismatch",
        ),
        (
            "expired token",
            "pause",
            json!({}),
            Some(tenant.token_with("vm-a", "pause", &[], tenant.next_counter(), now() - 1)),
            "expired",
        ),
        (
            "operation not in the policy",
            "power-off",
            json!({}),
            Some(tenant.token("vm-a", "power-off", &[])),
            "not_allowed_by_policy",
        ),
        (
            "malformed token",
            "pause",
            json!({}),
            Some("bm90LWEtdG9rZW4".into()),
            "authorization_malformed",
        ),
    ];
    for (name, op, params, token, want) in &attacks {
        let r = operation(&t, "vm-a", op, params.clone(), token.as_deref());
        assert_eq!((r.status, code(&r).as_str()), (403, *want), "{name}");
        assert_untouched(&t, "vm-a", pid, name);
        let (d, res) = last_request(&t.audit_records(), "vm-a", op);
        assert_eq!(d["decision"], "deny", "{name}: {d}");
        assert!(d["reason"].as_str().unwrap().contains(want), "{name}: {d}");
        assert_eq!(res["status"], 403, "{name}: {res}");
    }
    // DELETE without a token is refused the same way.
    let r = t.api("DELETE", "/v1/vms/vm-a", None);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "authorization_missing")
    );
    assert_untouched(&t, "vm-a", pid, "delete without token");

    // Allowed: pause really stops the VMM, resume continues it; each audited before
    // (decision allow) and after (result 200), with the state change between.
    let seq0 = t.audit_records().last().unwrap()["seq"].as_u64().unwrap();
    let pause = tenant.token("vm-a", "pause", &[]);
    let r = operation(&t, "vm-a", "pause", json!({}), Some(&pause));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.vm("vm-a")["paused"], true);
    assert_eq!(proc_state(pid), 'T', "paused VMM must be stopped");
    let recs = t.audit_records();
    let (d, res) = last_request(&recs, "vm-a", "pause");
    assert_eq!(
        (d["decision"].as_str(), res["status"].as_u64()),
        (Some("allow"), Some(200))
    );
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("authorized by tenant key"),
        "{d}"
    );
    assert_eq!(
        events_since(&recs, "vm-a", seq0),
        [("running".to_string(), "running, paused".to_string())]
    );
    let r = operation(
        &t,
        "vm-a",
        "resume",
        json!({}),
        Some(&tenant.token("vm-a", "resume", &[])),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_untouched(&t, "vm-a", pid, "after resume");

    // Replay of the accepted pause token: refused, VM untouched.
    let r = operation(&t, "vm-a", "pause", json!({}), Some(&pause));
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "counter_not_increasing")
    );
    assert_untouched(&t, "vm-a", pid, "replay");

    // Authorized but without an engine: 501 after a recorded allow decision.
    let r = operation(
        &t,
        "vm-a",
        "snapshot-create",
        snap.clone(),
        Some(&tenant.token("vm-a", "snapshot-create", &[("name", "s1")])),
    );
    assert_eq!((r.status, code(&r).as_str()), (501, "not_supported"));
    let (d, res) = last_request(&t.audit_records(), "vm-a", "snapshot-create");
    assert_eq!(
        (d["decision"].as_str(), res["status"].as_u64()),
        (Some("allow"), Some(501))
    );
    assert_untouched(&t, "vm-a", pid, "snapshot");

    // The tenant verifies its VM's trail end to end: an extract of the log (its own
    // records in full, the rest as hashes) with an AK-certified NV anchor.
    let nonce = tvp_tests::nonce_hex(16);
    let x = dir.join("extract.json");
    let (rc, _, err) = t.tvpctl(&[
        "audit",
        "extract",
        "--vm",
        "vm-a",
        "--nonce",
        &nonce,
        "-o",
        x.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{err}");
    let pol = dir.join("policy.json");
    std::fs::write(&pol, tenant.policy.to_string()).unwrap();
    let ak = t.write_ak_pem(&dir);
    let (rc, out, err) = tvp_tests::tvpctl(
        None,
        &[
            "audit",
            "verify",
            x.to_str().unwrap(),
            "--policy",
            pol.to_str().unwrap(),
            "--ak",
            ak.to_str().unwrap(),
            "--nonce",
            &nonce,
        ],
    );
    assert_eq!(rc, 0, "{out}{err}");
    let extract: Value = serde_json::from_slice(&std::fs::read(&x).unwrap()).unwrap();
    let full: Vec<&Value> = extract["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("record"))
        .collect();
    assert!(
        full.iter().all(|r| r["vm"] == "vm-a"),
        "other VMs' records in full"
    );
    assert!(
        full.iter()
            .any(|r| r["op"] == "pause" && r["decision"] == "deny"),
        "the refused attempts are in the tenant's extract"
    );
    assert!(full
        .iter()
        .any(|r| r["stage"] == "event" && r["state_after"] == "running, paused"));

    // Restart: the VM ends with tvpd, but its key, policy and counter persist. The
    // replayed pause token is refused also now; the record is not forgotten.
    t.restart();
    let r = operation(&t, "vm-a", "pause", json!({}), Some(&pause));
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "counter_not_increasing"),
        "after restart"
    );
    let stale_delete = tenant.token_with("vm-a", "delete", &[], 1, now() + 300);
    let r = t.api_token("DELETE", "/v1/vms/vm-a", None, &stale_delete);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "counter_not_increasing")
    );
    assert_eq!(t.api("GET", "/v1/vms/vm-a", None).status, 200);
    let r = t.delete_vm("vm-a", &tenant);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.api("GET", "/v1/vms/vm-a", None).status, 404);
    // The whole trail still verifies against the TPM anchor (fresh nonce, pinned AK).
    let log = dir.join("state/audit.log");
    let nonce = tvp_tests::nonce_hex(16);
    let anchor = dir.join("anchor.json");
    t.write_audit_anchor(&nonce, &anchor);
    let (rc, out, err) = t.verify_audit_log(&log, &anchor, &ak, &nonce);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("match the TPM-certified anchor"), "{out}");
    t.stop();
}

#[test]
fn allowed_power_off_reboot_and_delete_really_happen_and_are_audited() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = workload(&tpm);
    let t = Tvpd::start(&tpm, &dir, &["--firmware", &fw]);
    let tenant = Tenant::new(&["power-off", "reboot", "delete"], "power-off");
    let v = create_running(&t, "vm-r", &tenant);
    let old_pid = v["pid"].as_u64().unwrap();

    // Reboot: the old VMM is gone, a new measured boot went through the lease again.
    let seq0 = t.audit_records().last().unwrap()["seq"].as_u64().unwrap();
    let r = operation(
        &t,
        "vm-r",
        "reboot",
        json!({}),
        Some(&tenant.token("vm-r", "reboot", &[])),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = wait_vm(&t, "vm-r", state_is("running"), TO_STATE);
    let new_pid = v["pid"].as_u64().unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists() || proc_state(old_pid) == 'Z');
    let running = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[1] == "running")
        .count();
    assert_eq!(running, 2, "{v}");
    assert_eq!(v["measurements"].as_array().unwrap().len(), 7, "{v}");
    let ev = events_since(&t.audit_records(), "vm-r", seq0);
    assert_eq!(ev.first().map(|e| e.1.as_str()), Some("queued"), "{ev:?}");
    assert!(ev.iter().any(|e| e.1 == "running"), "{ev:?}");

    // Power-off, as a tenant and a cloud manager do it with tvpctl: the tenant signs
    // (tvpctl authorize), the manager passes the token; the VMM stops, the VM is
    // destroyed with reason powered-off.
    let key = dir.join("tenant.key");
    std::fs::write(&key, tenant.signer.to_pkcs8_pem()).unwrap();
    let (rc, token, err) = tvp_tests::tvpctl(
        None,
        &[
            "authorize",
            "--key",
            key.to_str().unwrap(),
            "--vm",
            "vm-r",
            "--op",
            "power-off",
            "--host",
            &hex::encode(t.ak_name()),
            "--incarnation",
            &hex::encode(tenant.target("vm-r").incarnation),
        ],
    );
    assert_eq!(rc, 0, "{err}");
    let (rc, out, err) = t.tvpctl(&["vm", "poweroff", "vm-r", "--token", token.trim()]);
    assert_eq!(rc, 0, "{out}{err}");
    let v = wait_vm(&t, "vm-r", state_is("destroyed"), TO_STATE);
    assert_eq!(v["reason"], "powered-off");
    let recs = t.audit_records();
    let (d, res) = last_request(&recs, "vm-r", "power-off");
    assert_eq!(
        (d["decision"].as_str(), res["status"].as_u64()),
        (Some("allow"), Some(200))
    );
    assert!(recs.iter().any(|r| r["vm"] == "vm-r"
        && r["stage"] == "event"
        && r["state_after"] == "destroyed"
        && r["reason"] == "powered-off"));
    // Delete of a live VM: destroyed; then delete again forgets it.
    create_running(&t, "vm-d", &tenant);
    let r = t.delete_vm("vm-d", &tenant);
    assert_eq!(r.status, 200);
    let v = wait_vm(&t, "vm-d", state_is("destroyed"), TO_STATE);
    assert_eq!(v["reason"], "deleted");
    let (d, res) = last_request(&t.audit_records(), "vm-d", "delete");
    assert_eq!(
        (d["decision"].as_str(), res["status"].as_u64()),
        (Some("allow"), Some(200))
    );
    // Deleting the ended VM forgets it ...
    let r = t.delete_vm("vm-d", &tenant);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.api("GET", "/v1/vms/vm-d", None).status, 404);
    // ... no operation can be authorized for it any more ...
    let r = t.delete_vm("vm-d", &tenant);
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    // ... but its tenant still gets the extract that shows both deletes.
    let x = t.api_json("GET", "/v1/vms/vm-d/audit", None);
    let deletes = x["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["record"]["op"] == "delete"
                && e["record"]["stage"] == "result"
                && e["record"]["status"] == 200
        })
        .count();
    assert_eq!(deletes, 2, "{x}");
    // The id used again, by another tenant: its extract starts at the new VM's
    // creation and shows nothing of the earlier VM.
    let other = Tenant::new(&["delete"], "alert");
    create_running(&t, "vm-d", &other);
    let x = t.api_json("GET", "/v1/vms/vm-d/audit", None);
    let records: Vec<&Value> = x["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("record"))
        .collect();
    assert_eq!(records[0]["op"], "create-vm", "{x}");
    assert!(!records.iter().any(|r| r["op"] == "delete"), "{x}");
}

#[test]
fn a_full_disk_makes_restricted_operations_fail_closed_with_nothing_lost() {
    require!(Need::Tmpfs, "swtpm", "gcc", "ld", "mount", "umount");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = workload(&tpm);
    let fs = SmallTmpfs::mount(&tpm.scratch("small"), "512k");
    let state = fs.path().join("state");
    let t = Tvpd::start(
        &tpm,
        &dir,
        &["--firmware", &fw, "--state-dir", state.to_str().unwrap()],
    );
    let tenant = Tenant::new(&["pause", "resume"], "alert");
    let pid = create_running(&t, "vm-f", &tenant)["pid"].as_u64().unwrap();
    let filler = fs.path().join("filler");
    fill(&filler);
    let log = state.join("audit.log");
    // Use up the log file's last page with unrestricted requests first.
    for _ in 0..400 {
        if t.api("GET", "/v1/host", None).status != 200 {
            break;
        }
    }
    let before = std::fs::read_to_string(&log).unwrap();
    // The token is valid; the operation must still not run without its records.
    let pause = tenant.token("vm-f", "pause", &[]);
    let r = operation(&t, "vm-f", "pause", json!({}), Some(&pause));
    assert_eq!((r.status, code(&r).as_str()), (503, "audit_unavailable"));
    // (The API refuses even reads now; look at the process.)
    assert_ne!(proc_state(pid), 'T', "the VMM was stopped on a full disk");
    let now_text = std::fs::read_to_string(&log).unwrap();
    assert!(now_text.ends_with('\n'), "partial record left in the log");
    assert!(now_text.starts_with(&before), "earlier records changed");
    // Space again: the same token works (its counter was never accepted), and the
    // whole trail verifies against the TPM anchor.
    std::fs::remove_file(&filler).unwrap();
    assert_untouched(&t, "vm-f", pid, "full disk");
    let r = operation(&t, "vm-f", "pause", json!({}), Some(&pause));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(proc_state(pid), 'T');
    let nonce = tvp_tests::nonce_hex(16);
    let anchor = dir.join("anchor.json");
    t.write_audit_anchor(&nonce, &anchor);
    let ak = t.write_ak_pem(&dir);
    let (rc, out, err) = t.verify_audit_log(&log, &anchor, &ak, &nonce);
    assert_eq!(rc, 0, "{out}{err}");
    let mut t = t;
    t.stop();
    drop(fs);
}

#[test]
fn tampering_with_the_trail_powers_off_the_vms_whose_policy_says_so() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = workload(&tpm);
    let t = Tvpd::start(&tpm, &dir, &["--firmware", &fw]);
    let strict = Tenant::new(&["pause"], "power-off");
    let relaxed = Tenant::new(&["pause"], "alert");
    let pid_p = create_running(&t, "vm-p", &strict)["pid"].as_u64().unwrap();
    let keep = create_running(&t, "vm-k", &relaxed)["pid"]
        .as_u64()
        .unwrap();
    // Someone truncates the log behind tvpd's back.
    let log = dir.join("state/audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let cut: Vec<&str> = text.lines().collect();
    std::fs::write(&log, cut[..cut.len() - 2].join("\n") + "\n").unwrap();
    let r = t.api("GET", "/v1/vms/vm-p", None);
    assert_eq!((r.status, code(&r).as_str()), (503, "audit_unavailable"));
    // vm-p's VMM is stopped (its policy: power-off); vm-k keeps running (alert).
    let gone = || !Path::new(&format!("/proc/{pid_p}")).exists() || proc_state(pid_p) == 'Z';
    assert!(
        eventually(Duration::from_secs(20), Duration::from_millis(50), gone),
        "vm-p still runs:\n{}",
        t.log()
    );
    let l = t.log();
    assert!(l.contains("AUDIT TAMPERING DETECTED"), "{l}");
    assert!(
        l.contains("VM powered off (policy on_tampering = power-off)"),
        "{l}"
    );
    assert!(
        l.contains("tenant alerted (policy on_tampering = alert)"),
        "{l}"
    );
    assert!(l.contains("audit-tampering"), "{l}");
    let s = proc_state(keep);
    assert!(
        s != '?' && s != 'T' && s != 'Z',
        "vm-k's VMM must still run ({s})"
    );
}
