//! Tenant tokens bound to one VM on one host (issue 16, gap 1), on real tvpds, swtpms,
//! KVM and tvp-vmm: a token names the host's AK and the VM incarnation the tenant
//! attested (the digest of its configuration page, taken from the VM's evidence by
//! `tvpctl authorize --evidence`). A token for the same VM id on another host, for a
//! decoy VM created under the same id, with an expiry beyond the policy's cap, or in
//! format 1 is refused with its reason; a counter file rolled back while tvpd was
//! stopped is detected at start; the tenant rotates its key and renews its lease, and
//! the old key's tokens are refused after a rotation. The legitimate path (attest,
//! authorize, pause, resume) works.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tvp_audit::token::TenantSigner;
use tvp_tests::guests::build_guest;
use tvp_tests::tenant::now;
use tvp_tests::{require, state_is, wait_vm, Swtpm, Tenant, Tvpd, VmSpec};
use tvp_verifier::Evidence;
use tvpctl::client::HttpReply;

/// The attested VM's id: `tvp-test-vmm` runs its honest `hostile-attest` script.
const VM: &str = "hostile-attest-1";

/// How long a VM may take to reach a state.
const TO_STATE: Duration = Duration::from_secs(60);

/// A test guest's firmware: `workload` attests and runs; `spin` never attests (VMs
/// named [`VM`] run `tvp-test-vmm`'s honest `hostile-attest` script instead).
fn guest(tpm: &Swtpm, name: &str) -> String {
    build_guest(name, &tpm.scratch("guest"))
        .to_str()
        .unwrap()
        .to_string()
}

/// Creates VM `id` managed by `tenant` and waits until it is `attesting` (its tunnel
/// recorded), with deadlines far beyond the test.
fn create_attesting(t: &Tvpd, id: &str, tenant: &Tenant) -> Value {
    let spec = VmSpec::measured(id)
        .no_gateway()
        .managed_by(tenant)
        .deadline_secs(900)
        .phase_deadline_secs("tunnel", 900);
    let r = t.create_vm(&spec);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    wait_vm(t, id, state_is("attesting"), TO_STATE)
}

/// Creates VM `id` managed by `tenant` (with `policy` fields added) and waits until it
/// runs.
fn create_running(t: &Tvpd, id: &str, tenant: &Tenant, policy: Value) -> Value {
    let spec = VmSpec::measured(id)
        .no_gateway()
        .managed_by(tenant)
        .policy_with(policy);
    let r = t.create_vm(&spec);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    wait_vm(t, id, state_is("running"), TO_STATE)
}

fn operation(t: &Tvpd, id: &str, op: &str, params: Value, token: &str) -> HttpReply {
    let body = json!({"op": op, "params": params}).to_string();
    t.api_token(
        "POST",
        &format!("/v1/vms/{id}/operations"),
        Some(&body),
        token,
    )
}

fn code(r: &HttpReply) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

fn text(r: &HttpReply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// VM `id`'s genuine evidence for `nonce` (hex), as its firmware gets it on its
/// attestation mailbox: `tvp-test-vmm` (script `hostile-attest`, an honest VMM despite
/// the name) asks for one quote with the nonce it finds in the VM's directory.
fn vm_evidence(t: &Tvpd, id: &str, nonce: &str) -> Evidence {
    let dir = t.state_dir.join(format!("vms/{id}"));
    std::fs::write(dir.join("nonce"), nonce).unwrap();
    let path = dir.join("evidence.json");
    assert!(
        tvp_tests::vm::eventually(TO_STATE, Duration::from_millis(50), || path.exists()),
        "no evidence for {id}: {}",
        t.log()
    );
    std::thread::sleep(Duration::from_millis(100));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The tenant's records of a host: `GET /v1/host` (with its AK name) and its AK PEM.
fn pin_host(t: &Tvpd, dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let host = t.api_json("GET", "/v1/host", None);
    let json = dir.join(format!("{tag}-host.json"));
    std::fs::write(&json, host.to_string()).unwrap();
    let ak = dir.join(format!("{tag}-ak.pem"));
    std::fs::write(&ak, host["ak_public_pem"].as_str().unwrap()).unwrap();
    (json, ak)
}

/// `tvpctl authorize` with the tenant's key file; (exit code, token, stderr).
fn authorize(key: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["authorize", "--key", key.to_str().unwrap()];
    all.extend_from_slice(args);
    let (rc, out, err) = tvp_tests::tvpctl(None, &all);
    (rc, out.trim().to_string(), err)
}

#[test]
fn tokens_bound_to_host_and_attested_incarnation_refuse_other_hosts_and_decoys() {
    require!("swtpm", "gcc", "ld");
    let tpm_a = Swtpm::blank();
    let tpm_b = Swtpm::blank();
    let dir = tpm_a.scratch("tenant");
    let fw = guest(&tpm_a, "spin");
    let vmm = tvp_tests::bin("tvp-test-vmm");
    let args = ["--firmware", &fw, "--vmm-binary", vmm.to_str().unwrap()];
    let a = Tvpd::start(&tpm_a, &tpm_a.scratch("a"), &args);
    let b = Tvpd::start(&tpm_b, &tpm_b.scratch("b"), &args);
    let tenant = Tenant::new(&["pause", "resume", "delete"], "alert");
    let key = dir.join("tenant.key");
    std::fs::write(&key, tenant.signer.to_pkcs8_pem()).unwrap();
    let (host_a, ak_a) = pin_host(&a, &dir, "a");
    let (host_b, _) = pin_host(&b, &dir, "b");
    assert_ne!(a.ak_name(), b.ak_name(), "two TPMs, two AKs");

    // The same VM id, key and policy on both hosts.
    let v = create_attesting(&a, VM, &tenant);
    let pid_a = v["pid"].as_u64().unwrap();
    let v_b = create_attesting(&b, VM, &tenant);

    // The tenant attests vm-1 on host A: the evidence verifies against A's pinned AK.
    let nonce = tvp_tests::nonce_hex(16);
    let ev = vm_evidence(&a, VM, &nonce);
    assert_eq!(
        ev.pcrs["sha256"][&23].0,
        hex::decode(v["pcr23"].as_str().unwrap()).unwrap(),
        "the VM's own quote: PCR 23 is its"
    );
    let ev_path = dir.join("vm-1-evidence.json");
    std::fs::write(&ev_path, serde_json::to_string(&ev).unwrap()).unwrap();
    let (rc, out, err) = tvp_tests::tvpctl(
        None,
        &[
            "verify",
            ev_path.to_str().unwrap(),
            "--nonce",
            &nonce,
            "--ak",
            ak_a.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "{out}{err}");

    // Legitimate path: authorize from the evidence, pause, resume.
    // One counter sequence for every token on vm-1 (counters are per VM id, and
    // stay spent across a delete and a new VM under the same id).
    let bound = |op: &str| {
        let c = tenant.next_counter().to_string();
        let (rc, token, err) = authorize(
            &key,
            &[
                "--host",
                host_a.to_str().unwrap(),
                "--evidence",
                ev_path.to_str().unwrap(),
                "--vm",
                VM,
                "--op",
                op,
                "--counter",
                &c,
            ],
        );
        assert_eq!(rc, 0, "{err}");
        token
    };
    let pause = bound("pause");
    let t: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&pause)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(t["v"], 2);
    assert_eq!(t["host"], hex::encode(a.ak_name()));
    assert_eq!(
        t["incarnation"],
        hex::encode(tvp_tests::tenant::incarnation(&a.state_dir, VM)),
        "the incarnation is the digest of the page the VM runs"
    );
    let r = operation(&a, VM, "pause", json!({}), &pause);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(a.vm(VM)["paused"], true);
    let r = operation(&a, VM, "resume", json!({}), &bound("resume"));
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(a.vm(VM)["paused"], false);

    // Attack 1: host A's token replayed on host B, whose vm-1 has the same id, key
    // and policy and has never seen this counter.
    let r = operation(&b, VM, "pause", json!({}), &pause);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "host_mismatch"),
        "{}",
        text(&r)
    );
    assert_eq!(b.vm(VM)["paused"], false);
    assert_eq!(b.vm(VM)["pid"], v_b["pid"]);
    // ... and tvpctl will not bind host A's evidence to host B.
    let (rc, _, err) = authorize(
        &key,
        &[
            "--host",
            host_b.to_str().unwrap(),
            "--evidence",
            ev_path.to_str().unwrap(),
            "--vm",
            VM,
            "--op",
            "pause",
        ],
    );
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("not by the host you named"), "{err}");

    // Attack 2: the administrator deletes vm-1 (a genuine delete token) and creates a
    // decoy under the same id with the same key and policy. The tenant's token for
    // the VM it attested is refused for the decoy.
    let delete = |tvpd: &Tvpd| {
        let token = tenant.token_for(
            &tvpd.target(VM),
            "delete",
            &[],
            tenant.next_counter(),
            now() + 60,
        );
        let r = tvpd.api_token("DELETE", &format!("/v1/vms/{VM}"), None, &token);
        assert_eq!(r.status, 200, "{}", text(&r));
    };
    delete(&a);
    wait_vm(&a, VM, state_is("destroyed"), TO_STATE);
    delete(&a);
    let decoy = create_attesting(&a, VM, &tenant);
    assert_ne!(decoy["pid"].as_u64(), Some(pid_a));
    let attested = bound("pause");
    let r = operation(&a, VM, "pause", json!({}), &attested);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "incarnation_mismatch"),
        "{}",
        text(&r)
    );
    assert_eq!(a.vm(VM)["paused"], false);
    let recs = a.audit_records();
    let d = recs
        .iter()
        .rev()
        .find(|r| r["vm"] == VM && r["op"] == "pause" && r["stage"] == "decision")
        .unwrap();
    assert_eq!(d["decision"], "deny", "{d}");
    assert!(d["reason"].as_str().unwrap().contains("incarnation"), "{d}");

    // Attack 3: a format 1 token (bound to the VM id only) is refused as such.
    let pd = tvp_audit::params::digest(&Default::default());
    let mut v1 = serde_json::to_value(tenant.signer.authorize(
        "pause",
        &a.target(VM),
        &pd,
        tenant.next_counter(),
        now() + 60,
    ))
    .unwrap();
    v1["v"] = json!(1);
    let v1 = v1.as_object_mut().unwrap();
    v1.remove("host");
    v1.remove("incarnation");
    let v1 = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Value::from(v1.clone()).to_string());
    let r = operation(&a, VM, "pause", json!({}), &v1);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "unsupported_token_version"),
        "{}",
        text(&r)
    );

    // The decoy's own incarnation, as the harness reads it, passes: what was refused
    // was the binding, not the key.
    let own = tenant.token_for(
        &a.target(VM),
        "pause",
        &[],
        tenant.next_counter(),
        now() + 60,
    );
    let r = operation(&a, VM, "pause", json!({}), &own);
    assert_eq!(r.status, 200, "{}", text(&r));
}

#[test]
fn expiry_beyond_the_policy_cap_is_refused_and_keys_rotate_and_renew() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let fw = guest(&tpm, "workload");
    let t = Tvpd::start(&tpm, &tpm.scratch("a"), &["--firmware", &fw]);
    let old = Tenant::new(&["pause", "resume"], "alert");
    // A lease of 12 s for the management key, tokens valid at most 60 s ahead.
    let v = create_running(
        &t,
        "vm-k",
        &old,
        json!({"management_key_lease_secs": 12, "max_token_lifetime_secs": 60}),
    );
    let since = v["management"]["key_since"].as_u64().unwrap();
    // Tokens valid 30 s: within the policy's cap.
    let tok = |signer: &Tenant, op: &str, params: &[(&str, &str)]| {
        signer.token_with("vm-k", op, params, old.next_counter(), now() + 30)
    };
    let sleep_until = |at: u64| {
        let n = now();
        if at > n {
            std::thread::sleep(Duration::from_secs(at - n));
        }
    };

    // Expiry 10 minutes ahead: refused although the token is genuine and unexpired.
    let far = old.token_with("vm-k", "pause", &[], old.next_counter(), now() + 600);
    let r = operation(&t, "vm-k", "pause", json!({}), &far);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "lifetime_exceeds_policy"),
        "{}",
        text(&r)
    );
    assert!(text(&r).contains("max_token_lifetime_secs"), "{}", text(&r));
    assert_eq!(t.vm("vm-k")["paused"], false);
    let near = old.token_with("vm-k", "pause", &[], old.next_counter(), now() + 50);
    let r = operation(&t, "vm-k", "pause", json!({}), &near);
    assert_eq!(r.status, 200, "{}", text(&r));

    // Lease renewal signed by the current key, before the lease ends (at +12 s).
    sleep_until(since + 6);
    assert!(
        now() < since + 12,
        "the VM took too long to start for this test"
    );
    let r = operation(
        &t,
        "vm-k",
        "renew-key-lease",
        json!({}),
        &tok(&old, "renew-key-lease", &[]),
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    let m = &t.vm("vm-k")["management"];
    assert!(
        m["current"]["key_since"].as_u64().unwrap() >= since + 6,
        "{m}"
    );
    // Past the first lease's end, within the renewed one: the key still manages.
    sleep_until(since + 14);
    let r = operation(&t, "vm-k", "resume", json!({}), &tok(&old, "resume", &[]));
    assert_eq!(r.status, 200, "{}", text(&r));

    // Rotation to a new key, signed by the current one; the parameter carries the new
    // key (tvpctl authorize --new-key prints it).
    let new = Tenant::with_signer(TenantSigner::generate_p256(), &["pause", "resume"], "alert");
    let new_key = new.signer.public().spki_base64();
    let r = operation(
        &t,
        "vm-k",
        "rotate-key",
        json!({"public_key": new_key}),
        &tok(&old, "rotate-key", &[("public_key", new_key.as_str())]),
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    let m = &t.vm("vm-k")["management"];
    assert_eq!(m["current"]["key_id"], new.signer.public().key_id(), "{m}");
    assert_eq!(
        m["key_id"],
        old.signer.public().key_id(),
        "the measured key stays"
    );
    let recs = t.audit_records();
    assert!(
        recs.iter().any(|r| r["vm"] == "vm-k"
            && r["stage"] == "event"
            && r["reason"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("rotated from {}", old.signer.public().key_id()))),
        "the rotation is an audited VM event"
    );

    // The old key's tokens are refused now; the new key's pass.
    let target = old.target("vm-k");
    let stale = old.token_for(&target, "pause", &[], old.next_counter() + 1000, now() + 30);
    let r = operation(&t, "vm-k", "pause", json!({}), &stale);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "wrong_key"),
        "{}",
        text(&r)
    );
    let fresh = new.token_for(&target, "pause", &[], old.next_counter() + 2000, now() + 30);
    let r = operation(&t, "vm-k", "pause", json!({}), &fresh);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(t.vm("vm-k")["paused"], true);

    // A rotation to something that is not a key is refused before authorization.
    let r = operation(
        &t,
        "vm-k",
        "rotate-key",
        json!({"public_key": "AAAA"}),
        &fresh,
    );
    assert_eq!(
        (r.status, code(&r).as_str()),
        (400, "invalid_argument"),
        "{}",
        text(&r)
    );
}

#[test]
fn counter_file_rolled_back_while_tvpd_is_stopped_is_detected_and_replays_stay_refused() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = guest(&tpm, "workload");
    let mut t = Tvpd::start(&tpm, &dir, &["--firmware", &fw]);
    let tenant = Tenant::new(&["pause", "resume", "delete"], "alert");
    create_running(&t, "vm-c", &tenant, json!({}));
    let counters = t.state_dir.join("authz-counters.json");
    // The counter file as a backup taken now would have it: no counter for vm-c.
    let before = std::fs::read(&counters).unwrap_or_else(|_| b"{}".to_vec());

    let target = tenant.target("vm-c");
    let pause = tenant.token_for(&target, "pause", &[], 500, now() + 300);
    let r = operation(&t, "vm-c", "pause", json!({}), &pause);
    assert_eq!(r.status, 200, "{}", text(&r));

    // Root puts the old counter file back while tvpd is stopped.
    t.stop();
    std::fs::write(&counters, &before).unwrap();
    let rc = t.try_start_again();
    assert_eq!(rc, Some(65), "tvpd must refuse to start; log:\n{}", t.log());
    let log = t.log();
    assert!(
        log.contains("were rolled back") && log.contains("'vm-c'") && log.contains("counter 500"),
        "{log}"
    );

    // A file that sets vm-c lower than the trail is refused too.
    std::fs::write(&counters, br#"{"vm-c": 499}"#).unwrap();
    assert_eq!(t.try_start_again(), Some(65));

    // The operator restores vm-c's counter as the message says: tvpd starts, and the
    // spent pause token is still refused.
    std::fs::write(&counters, br#"{"vm-c": 500}"#).unwrap();
    assert_eq!(t.try_start_again(), None, "log:\n{}", t.log());
    let r = operation(&t, "vm-c", "pause", json!({}), &pause);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "counter_not_increasing"),
        "{}",
        text(&r)
    );
    let delete = tenant.token_for(&target, "delete", &[], 501, now() + 300);
    let r = t.api_token("DELETE", "/v1/vms/vm-c", None, &delete);
    assert_eq!(r.status, 200, "{}", text(&r));
}

#[test]
fn vm_record_rolled_back_or_edited_against_its_key_rotation_is_detected_at_start() {
    require!("swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = guest(&tpm, "workload");
    let mut t = Tvpd::start(&tpm, &dir, &["--firmware", &fw]);
    let old = Tenant::new(&["pause", "resume", "delete"], "alert");
    create_running(&t, "vm-r", &old, json!({}));
    let record = t.state_dir.join("vms/vm-r/record.json");
    let before = std::fs::read(&record).unwrap();
    let target = old.target("vm-r");
    let new = Tenant::new(&["pause", "resume", "delete"], "alert");
    let new_key = new.signer.public().spki_base64();
    let rotate = old.token_for(
        &target,
        "rotate-key",
        &[("public_key", new_key.as_str())],
        10,
        now() + 60,
    );
    let r = operation(
        &t,
        "vm-r",
        "rotate-key",
        json!({"public_key": new_key}),
        &rotate,
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    t.stop();
    let newest = std::fs::read(&record).unwrap();

    // Root puts the record from before the rotation back: the old key would manage
    // the VM again. tvpd refuses to start, naming the VM and the trail's record.
    std::fs::write(&record, &before).unwrap();
    assert_eq!(t.try_start_again(), Some(65), "log:\n{}", t.log());
    let log = t.log();
    assert!(
        log.contains("VM 'vm-r': its record names the key it was created with")
            && log.contains("rolled back or edited"),
        "{log}"
    );
    // Root writes its own key in as the key in force: refused the same way.
    let root = TenantSigner::generate_ed25519().public();
    let mut edited: Value = serde_json::from_slice(&newest).unwrap();
    edited["management"]["current"]["public_key_pem"] = json!(root.to_pem());
    edited["management"]["current"]["key_id"] = json!(root.key_id());
    std::fs::write(&record, edited.to_string()).unwrap();
    assert_eq!(t.try_start_again(), Some(65), "log:\n{}", t.log());

    // The newest record back: tvpd starts; the rotated-away key is refused, the new
    // key forgets the (ended) VM.
    std::fs::write(&record, &newest).unwrap();
    assert_eq!(t.try_start_again(), None, "log:\n{}", t.log());
    let stale = old.token_for(&target, "delete", &[], 11, now() + 60);
    let r = t.api_token("DELETE", "/v1/vms/vm-r", None, &stale);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "wrong_key"),
        "{}",
        text(&r)
    );
    let delete = new.token_for(&target, "delete", &[], 12, now() + 60);
    let r = t.api_token("DELETE", "/v1/vms/vm-r", None, &delete);
    assert_eq!(r.status, 200, "{}", text(&r));
}
