//! No lost audit events, refusals attributed to their VM (issue #16, item 3): real
//! swtpm, real tvpd with real VMs, a real tmpfs filled up, tvpctl as a process.
//!
//! The attack: any local user fills the file system of tvpd's state directory. Before,
//! a VM state change that happened then (here: the attestation deadline, which needs
//! no request) was dropped while the chain stayed consistent, so the tenant's extract
//! verified "OK" without it. Now the event is kept, every request is refused `503
//! audit_pending` until it is written, tvpd writes it as soon as space returns, and the
//! tenant's extract shows it. Refused and unparseable requests naming the VM are
//! counted for it (a `denied-requests` record of the VM), so hiding them from its
//! extract is `withheld`, while another tenant's extract shows only the hashed id.
//! Past the queue's bound, the loss is stated in the trail and `tvpctl audit verify`
//! reports the gap (exit 6), never "OK" (docs/audit.md §1 "Refused requests", §8.1).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tvp_agent::api::gate::{self, RequestInfo};
use tvp_agent::api::handlers::Reply;
use tvp_agent::api::peer::Caller;
use tvp_agent::audit::counters::CounterStore;
use tvp_agent::audit::pending::MAX_PENDING_EVENTS;
use tvp_agent::audit::{Audit, AuditLog, HostEvent, TenantBinding};
use tvp_audit::extract::{Extract, ExtractEntry, SkippedRecord, EVENTS_LOST_OP};
use tvp_audit::params::{self, Params};
use tvp_audit::policy::{Remediation, TenantPolicy};
use tvp_audit::record;
use tvp_audit::token::TenantSigner;
use tvp_tests::guests::build_guest;
use tvp_tests::tmpfs::{fill, SmallTmpfs};
use tvp_tests::vm::eventually;
use tvp_tests::{nonce_hex, require, Need, Swtpm, Tenant, Tvpd, VmSpec};
use tvp_tests::{state_is, wait_vm};

/// The VM whose state change happens while the disk is full.
const VM: &str = "vm-g";
/// Another tenant's VM on the same host.
const OTHER: &str = "vm-o";
/// The VM's attestation deadline: long enough to fill the disk before it passes.
const DEADLINE: u64 = 25;

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).unwrap().lines().count()
}

fn code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

/// A tenant's files and its verification (bound: pinned AK, fresh nonce).
struct TenantFiles {
    policy: PathBuf,
    key: PathBuf,
}

impl TenantFiles {
    fn write(dir: &Path, name: &str, t: &Tenant) -> TenantFiles {
        let policy = dir.join(format!("{name}.policy.json"));
        std::fs::write(&policy, t.policy.to_string()).unwrap();
        let key = dir.join(format!("{name}.pub.pem"));
        std::fs::write(&key, t.key_pem()).unwrap();
        TenantFiles { policy, key }
    }
}

/// `tvpctl audit extract --vm vm --nonce N -o FILE`; the file and N.
fn extract(t: &Tvpd, dir: &Path, vm: &str) -> (PathBuf, String) {
    let nonce = nonce_hex(16);
    let f = dir.join(format!("{vm}.extract.json"));
    let (rc, out, err) = t.tvpctl(&[
        "audit",
        "extract",
        "--vm",
        vm,
        "--nonce",
        &nonce,
        "-o",
        f.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    (f, nonce)
}

fn verify(file: &Path, tf: &TenantFiles, ak: &Path, nonce: &str) -> (i32, String, String) {
    tvp_tests::tvpctl(
        None,
        &[
            "audit",
            "verify",
            file.to_str().unwrap(),
            "--policy",
            tf.policy.to_str().unwrap(),
            "--management-key",
            tf.key.to_str().unwrap(),
            "--ak",
            ak.to_str().unwrap(),
            "--nonce",
            nonce,
        ],
    )
}

fn read_extract(f: &Path) -> Extract {
    serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()
}

#[test]
fn a_state_change_on_a_full_disk_is_kept_written_when_space_returns_and_refusals_count_for_their_vm(
) {
    require!(
        Need::Kvm,
        Need::Root,
        Need::Tmpfs,
        "swtpm",
        "gcc",
        "ld",
        "mount",
        "umount"
    );
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fs = SmallTmpfs::mount(&tpm.scratch("small"), "4m");
    let state = fs.path().join("state");
    // A guest that spins: it never attests, so its deadline ends it.
    let fw = build_guest("spin", &tpm.scratch("guest"));
    let mut t = Tvpd::start(
        &tpm,
        &dir,
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--firmware",
            fw.to_str().unwrap(),
            // Refusals are written before the next allowed request, not on a timer.
            "--denial-flush-interval-ms",
            "600000",
        ],
    );
    let host = t.api_json("GET", "/v1/host", None);
    let ak = dir.join("ak.pem");
    std::fs::write(&ak, host["ak_public_pem"].as_str().unwrap()).unwrap();
    let tenant = Tenant::new(&["pause", "resume"], "alert");
    let r = t.create_vm(
        &VmSpec::measured(VM)
            .no_gateway()
            .deadline_secs(DEADLINE)
            .managed_by(&tenant),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // It attests (spinning, no quote, no lease) until its deadline.
    wait_vm(&t, VM, state_is("attesting"), Duration::from_secs(20));
    let other = Tenant::new(&["delete"], "alert");
    let r = t.create_vm(
        &VmSpec::measured(OTHER)
            .no_gateway()
            .mac("02:00:00:00:00:02")
            .deadline_secs(DEADLINE + 30)
            .managed_by(&other),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let mine = TenantFiles::write(&dir, VM, &tenant);
    let theirs = TenantFiles::write(&dir, OTHER, &other);

    // Refused and unparseable requests naming the VM, and one naming no VM of this
    // host; an allowed request writes their counts.
    let ops = format!("/v1/vms/{VM}/operations");
    assert_eq!(t.api("POST", &ops, Some("{not json")).status, 400);
    assert_eq!(
        t.api("GET", &format!("/v1/vms/{VM}/memory"), None).status,
        404
    );
    assert_eq!(t.api("PUT", &format!("/v1/vms/{VM}"), None).status, 405);
    assert_eq!(
        t.api("POST", "/v1/vms/no-such-vm/operations", Some("{"))
            .status,
        400
    );
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    let recs = t.audit_records();
    let denied: Vec<&Value> = recs
        .iter()
        .filter(|r| r["op"] == "denied-requests")
        .collect();
    assert_eq!(
        denied.len(),
        2,
        "one for the VM, one for the host: {denied:?}"
    );
    let for_vm = denied
        .iter()
        .find(|r| r["vm"] == VM)
        .expect("the VM's record");
    let reason = for_vm["reason"].as_str().unwrap();
    assert!(reason.starts_with("3 requests refused"), "{reason}");
    assert!(
        reason.contains("400 invalid_json on http:POST /v1/vms/vm-g/operations"),
        "{reason}"
    );
    assert!(reason.contains("404"), "{reason}");
    let for_host = denied.iter().find(|r| r["vm"].is_null()).unwrap();
    assert!(for_host["reason"].as_str().unwrap().contains("no-such-vm"));
    assert!(!for_host["reason"].as_str().unwrap().contains(VM));

    let v = t.vm(VM);
    assert_eq!(
        v["state"], "attesting",
        "the VM ended before the disk was full (raise DEADLINE if its deadline passed): {v}"
    );
    // A local user fills the file system; the log's last page may still take a few
    // records, so requests run until the first is refused.
    let filler = fs.path().join("filler");
    fill(&filler);
    let mut refused = false;
    for _ in 0..200 {
        if t.api("GET", "/v1/host", None).status == 503 {
            refused = true;
            break;
        }
    }
    assert!(refused, "a full disk must make requests fail");
    let log = state.join("audit.log");
    let before = lines(&log);
    // The VM's deadline passes: its state change cannot be written, and is kept.
    assert!(
        eventually(Duration::from_secs(60), Duration::from_millis(250), || {
            t.log()
                .contains("VM state change not written to the audit trail yet: kept")
        }),
        "the deadline's state change was not attempted; log:\n{}",
        t.log()
    );
    // Nothing runs past the unwritten event: 503 audit_pending, naming the VM.
    let r = t.api("GET", "/v1/host", None);
    assert_eq!((r.status, code(&r.body).as_str()), (503, "audit_pending"));
    assert!(String::from_utf8_lossy(&r.body).contains(VM));
    let r = t.api("GET", &format!("/v1/vms/{VM}/audit"), None);
    assert_eq!((r.status, code(&r.body).as_str()), (503, "audit_pending"));
    assert_eq!(
        lines(&log),
        before,
        "nothing written while the disk is full"
    );

    // Space returns: tvpd writes the kept event by itself (no request needed).
    std::fs::remove_file(&filler).unwrap();
    assert!(
        eventually(Duration::from_secs(10), Duration::from_millis(200), || {
            lines(&log) > before
        }),
        "the kept event was not written when space returned"
    );
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    // The kept events come first, in order, before any later record.
    let text = std::fs::read_to_string(&log).unwrap();
    let new: Vec<Value> = text
        .lines()
        .skip(before)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kept: Vec<&Value> = new.iter().take_while(|r| r["stage"] == "event").collect();
    let failed = kept
        .iter()
        .find(|r| r["vm"] == VM && r["op"] == "vm-state-change")
        .unwrap_or_else(|| {
            panic!("the VM's state change is not among the first new records: {new:?}")
        });
    assert!(
        failed["state_after"]
            .as_str()
            .unwrap()
            .starts_with("failed"),
        "{failed}"
    );
    let changed_at = failed["seq"].as_u64().unwrap();

    // The tenant's extract shows the state change and verifies.
    let (x, nonce) = extract(&t, &dir, VM);
    let (rc, out, err) = verify(&x, &mine, &ak, &nonce);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.starts_with("OK: "), "{out}");
    let ext = read_extract(&x);
    let shown = |seq: u64| {
        ext.entries.iter().find_map(|e| match e {
            ExtractEntry::Record(r) if r.seq == seq => Some(r.clone()),
            _ => None,
        })
    };
    let change = shown(changed_at).expect("the state change is in the extract in full");
    assert_eq!(change.op, "vm-state-change");
    let denied_seq = for_vm["seq"].as_u64().unwrap();
    let d = shown(denied_seq).expect("the VM's refusals are in its extract in full");
    assert_eq!(d.op, "denied-requests");

    // The host hides the VM's refusals: its completeness check names it.
    let mut cut = ext.clone();
    for e in cut.entries.iter_mut() {
        if let ExtractEntry::Record(r) = e {
            if r.seq == denied_seq {
                *e = ExtractEntry::Skipped(SkippedRecord {
                    seq: r.seq,
                    prev: r.prev.clone(),
                    vm_digest: hex::encode(record::vm_digest(Some(VM))),
                    op: r.op.clone(),
                    body_digest: hex::encode(r.body_digest().unwrap()),
                    grouped: r.grouped,
                });
            }
        }
    }
    let hidden = dir.join("hidden.json");
    std::fs::write(&hidden, serde_json::to_vec(&cut).unwrap()).unwrap();
    let (rc, out, _) = verify(&hidden, &mine, &ak, &nonce);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("FAILED (withheld)"), "{out}");
    assert!(
        out.contains(&format!("record seq {denied_seq} (denied-requests)")),
        "{out}"
    );

    // The other tenant sees the VM's refusals and state change only as heads: the
    // hashed id, never the id, the callers or the paths; its extract verifies.
    let (y, ynonce) = extract(&t, &dir, OTHER);
    let (rc, out, err) = verify(&y, &theirs, &ak, &ynonce);
    assert_eq!(rc, 0, "{out}{err}");
    let ytext = std::fs::read_to_string(&y).unwrap();
    assert!(!ytext.contains(VM), "another tenant's extract names {VM}");
    let yx = read_extract(&y);
    let hashed = hex::encode(record::vm_digest(Some(VM)));
    let head = yx
        .entries
        .iter()
        .find_map(|e| match e {
            ExtractEntry::Skipped(s) if s.seq == denied_seq => Some(s.clone()),
            _ => None,
        })
        .expect("the VM's refusals as a head");
    assert_eq!(
        (head.op.as_str(), head.vm_digest.as_str()),
        ("denied-requests", hashed.as_str())
    );
    assert_eq!(t.delete_vm(OTHER, &other).status, 200);
    t.stop();
    drop(fs);
}

fn policy() -> TenantPolicy {
    TenantPolicy {
        v: 1,
        allowed_operations: vec!["pause".into()],
        reported_operations: vec!["*".into()],
        management_key_lease_secs: None,
        key_lease_secs: None,
        allow_plaintext_images: false,
        on_platform_change: None,
        on_tampering: Remediation::Alert,
        max_token_lifetime_secs: None,
    }
}

/// One gated request about `vm` (decision, then result), as the API runs it.
fn vm_request(audit: &Audit, vm: &str, op: &str) -> Result<Reply, tvp_agent::api::error::ApiError> {
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
    block(async {
        let admission = gate::admit(audit, info, Ok("test".into())).await?;
        let result = admission.permit().map(|()| Reply {
            status: if op == "create-vm" { 201 } else { 200 },
            body: b"{}".to_vec(),
        });
        gate::conclude(audit, admission, result).await
    })
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn events_past_the_bound_are_stated_as_lost_and_the_verifier_reports_the_gap() {
    require!(Need::Tmpfs, "swtpm", "mount", "umount");
    let tpm = Swtpm::blank();
    let fs = SmallTmpfs::mount(&tpm.scratch("small"), "2m");
    let state = fs.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let svc = tpm.service();
    let log = AuditLog::open(&state, svc.client(), 0x0150_0000).expect("audit log");
    let audit = Audit::new(
        log,
        CounterStore::load(&state).expect("counters"),
        b"host-ak-name".to_vec(),
    );
    let pol = policy();
    let key = TenantSigner::generate_ed25519().public();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    audit.register_vm(
        VM,
        TenantBinding {
            key: key.clone(),
            policy: pol.clone(),
            key_since: now,
            incarnation: None,
        },
    );
    vm_request(&audit, VM, "create-vm").expect("create");

    let filler = fs.path().join("filler");
    fill(&filler);
    // The log's last page may take a few events; then they are kept.
    let mut i = 0u64;
    while audit
        .vm_event_blocking(VM, "running", "running", &format!("event {i}"))
        .is_ok()
    {
        i += 1;
        assert!(i < 200, "a full disk must make appends fail");
    }
    assert_eq!(audit.pending_events(), 1);
    assert!(audit.events_pending_for(VM));
    // The VM's management waits for the event: 503 audit_pending.
    let Err(e) = vm_request(&audit, VM, "pause") else {
        panic!("the VM's management ran past an unwritten event");
    };
    assert_eq!((e.status, e.code), (503, "audit_pending"));
    // A host event is kept the same way, behind it.
    assert!(audit
        .host_event_blocking(
            VM,
            HostEvent::PlatformRevocation,
            "running",
            "platform file changed"
        )
        .is_err());
    // More events than the bound: the excess is counted as lost.
    let extra = 5u64;
    for j in 2..(MAX_PENDING_EVENTS as u64 + extra) {
        assert!(audit
            .vm_event_blocking(VM, "running", "running", &format!("event {}", i + j))
            .is_err());
    }
    assert_eq!(audit.pending_events(), MAX_PENDING_EVENTS + extra as usize);
    let kept_from = audit.log().try_lock().map(|l| l.records().len()).unwrap();

    std::fs::remove_file(&filler).unwrap();
    let written = block(audit.flush_pending_events()).expect("written once space returned");
    assert_eq!(written, MAX_PENDING_EVENTS as u64 + 1);
    assert_eq!(audit.pending_events(), 0);
    let (records, last) = {
        let l = audit.log().try_lock().unwrap();
        (l.records().len(), l.records().last().cloned().unwrap())
    };
    assert_eq!(records, kept_from + MAX_PENDING_EVENTS + 1);
    {
        let l = audit.log().try_lock().unwrap();
        let kept = &l.records()[kept_from..];
        assert_eq!(kept[0].reason, format!("event {i}"));
        assert_eq!(kept[1].op, "platform-revocation");
        assert_eq!(kept[2].reason, format!("event {}", i + 2));
    }
    assert_eq!(
        (last.op.as_str(), last.vm.as_deref()),
        (EVENTS_LOST_OP, Some(VM))
    );
    assert!(
        last.reason
            .starts_with(&format!("{extra} event(s) of this VM")),
        "{}",
        last.reason
    );

    // The tenant's extract shows the loss, and the verifier reports it: not "OK".
    let nonce = [7u8; 16];
    let x = block(audit.extract(VM, 1, Some(nonce.to_vec()))).unwrap_or_else(|_| panic!("extract"));
    let dir = tpm.scratch("files");
    let pf = dir.join("policy.json");
    std::fs::write(&pf, serde_json::to_vec(&pol).unwrap()).unwrap();
    let ak = dir.join("ak.pem");
    std::fs::write(&ak, &x.anchor.as_ref().unwrap().ak_public_pem).unwrap();
    let xf = dir.join("x.json");
    std::fs::write(&xf, serde_json::to_vec(&x).unwrap()).unwrap();
    let cp = dir.join("cp.json");
    let verify = |f: &Path, n: &[u8], extra: &[&str]| {
        let n = hex::encode(n);
        let mut a = vec![
            "audit",
            "verify",
            f.to_str().unwrap(),
            "--policy",
            pf.to_str().unwrap(),
            "--ak",
            ak.to_str().unwrap(),
            "--nonce",
            &n,
        ];
        a.extend_from_slice(extra);
        tvp_tests::tvpctl(None, &a)
    };
    let (rc, out, err) = verify(&xf, &nonce, &["--save-checkpoint", cp.to_str().unwrap()]);
    assert_eq!(rc, 6, "{out}{err}");
    assert!(out.starts_with("GAPS (events-lost): "), "{out}");
    assert!(!out.contains("OK:"), "{out}");
    assert!(
        out.contains(&format!(
            "record seq {}: {extra} event(s) of this VM",
            last.seq
        )),
        "{out}"
    );
    let (rc, out, _) = tvp_tests::tvpctl(
        None,
        &[
            "audit",
            "verify",
            xf.to_str().unwrap(),
            "--policy",
            pf.to_str().unwrap(),
            "--ak",
            ak.to_str().unwrap(),
            "--nonce",
            &hex::encode(nonce),
            "--json",
        ],
    );
    assert_eq!(rc, 6);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["ok"].clone(), j["reason"].clone()),
        (Value::Bool(false), Value::from("events-lost"))
    );
    assert_eq!(j["gaps"].as_array().unwrap().len(), 1);

    // The chain is sound: from the saved checkpoint, what follows verifies "OK".
    vm_request(&audit, VM, "pause").expect("management resumes");
    let n2 = [8u8; 16];
    let y = block(audit.extract(VM, last.seq + 1, Some(n2.to_vec())))
        .unwrap_or_else(|_| panic!("extract"));
    let yf = dir.join("y.json");
    std::fs::write(&yf, serde_json::to_vec(&y).unwrap()).unwrap();
    let (rc, out, err) = verify(&yf, &n2, &["--checkpoint", cp.to_str().unwrap()]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.starts_with("OK: "), "{out}");
    drop(audit);
    drop(svc);
    drop(fs);
}
