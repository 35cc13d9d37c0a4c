//! Create, delete, list and get measured VMs from several threads at once (real tvpd,
//! swtpm, KVM, tvp-vmm): a cloud manager that deletes and lists must never see a
//! forgotten VM come back. A DELETE that answered 200 with an ended VM means the VM
//! is gone from list and get right after and its id can be created again; nothing
//! answers 5xx; no VMM process is left behind; PCRs 16 and 23 are free at the end.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tvp_tests::guests::build_guest;
use tvp_tests::{require, Need, Swtpm, Tenant, Tvpd, VmSpec};
use tvpctl::client::HttpReply;

/// Worker threads, each creating and deleting VMs under its own id.
const WORKERS: usize = 4;
/// Create/delete rounds per worker (the same id each round: it must be free again).
const ROUNDS: usize = 5;

fn spec(id: &str, tenant: &Tenant) -> String {
    VmSpec::measured(id)
        .no_gateway()
        .managed_by(tenant)
        .to_json()
}

fn body(r: &HttpReply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn text(r: &HttpReply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn no_5xx(r: &HttpReply, what: &str) {
    assert!(r.status < 500, "{what}: {} {}", r.status, text(r));
}

fn is_final(state: &Value) -> bool {
    matches!(state.as_str(), Some("failed" | "destroyed"))
}

fn listed(t: &Tvpd, id: &str) -> bool {
    let r = t.api("GET", "/v1/vms", None);
    no_5xx(&r, "list");
    assert_eq!(r.status, 200, "list: {}", text(&r));
    body(&r)
        .as_array()
        .is_some_and(|vms| vms.iter().any(|v| v["id"] == id))
}

/// One worker: create `id`, let it get somewhere (how far depends on the round),
/// delete it until a DELETE forgets it, check that it is gone, and again.
fn worker(t: &Tvpd, id: &str, pids: &Mutex<BTreeSet<u64>>) {
    let tenant = Tenant::new(&["delete"], "alert");
    for round in 0..ROUNDS {
        let r = t.create_vm_json(&spec(id, &tenant));
        no_5xx(&r, "create");
        assert_eq!(r.status, 201, "round {round}: create {id}: {}", text(&r));
        if let Some(p) = body(&r)["pid"].as_u64() {
            pids.lock().unwrap().insert(p);
        }
        // Round 0 deletes at once (queued), later rounds a little later, the last
        // once the VM runs: deletes land in every boot stage.
        let settle = Instant::now() + Duration::from_millis(150 * round as u64);
        let wait_running = round + 1 == ROUNDS;
        loop {
            let r = t.api("GET", &format!("/v1/vms/{id}"), None);
            no_5xx(&r, "get");
            assert_eq!(r.status, 200, "round {round}: {id} vanished: {}", text(&r));
            let v = body(&r);
            if let Some(p) = v["pid"].as_u64() {
                pids.lock().unwrap().insert(p);
            }
            let ready = if wait_running {
                v["state"] == "running" || is_final(&v["state"])
            } else {
                Instant::now() >= settle
            };
            if ready {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = t.api_token(
                "DELETE",
                &format!("/v1/vms/{id}"),
                None,
                &tenant.token(id, "delete", &[]),
            );
            no_5xx(&r, "delete");
            let v = body(&r);
            if r.status == 200 && is_final(&v["state"]) {
                // The DELETE of an ended VM said it forgot it: it must be gone now.
                let g = t.api("GET", &format!("/v1/vms/{id}"), None);
                assert_eq!(
                    g.status,
                    404,
                    "round {round}: DELETE of ended {id} answered 200, but GET still finds it: {}",
                    text(&g)
                );
                assert!(
                    !listed(t, id),
                    "round {round}: DELETE of ended {id} answered 200, but the list shows it"
                );
                break;
            }
            // 200 with a live VM: its destruction started. 409: it is still stopping.
            assert!(
                r.status == 200 || r.status == 409,
                "round {round}: DELETE {id}: {} {}",
                r.status,
                text(&r)
            );
            assert!(
                Instant::now() < deadline,
                "round {round}: {id} was never forgotten: {}\n{}",
                text(&r),
                t.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether `pid` is still a tvp-vmm process (not a zombie).
fn vmm_alive(pid: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    state != "Z" && String::from_utf8_lossy(&cmdline).contains("--vm-id")
}

#[test]
fn concurrent_create_delete_list_and_get_never_show_a_forgotten_vm() {
    require!(Need::Kvm, "swtpm", "gcc", "ld");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    let fw = build_guest("workload", &tpm.scratch("guest"));
    let t = Arc::new(Tvpd::start(
        &tpm,
        &dir,
        &["--firmware", fw.to_str().unwrap()],
    ));
    let pids = Arc::new(Mutex::new(BTreeSet::new()));
    let done = Arc::new(AtomicBool::new(false));
    let ids: Vec<String> = (0..WORKERS).map(|w| format!("churn-{w}")).collect();

    // Readers: list and get all the time; only 200 and 404 are right answers.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (t, done, ids) = (t.clone(), done.clone(), ids.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !done.load(Ordering::SeqCst) {
                    let r = t.api("GET", "/v1/vms", None);
                    no_5xx(&r, "list");
                    assert_eq!(r.status, 200, "list: {}", text(&r));
                    let r = t.api("GET", &format!("/v1/vms/{}", ids[n % ids.len()]), None);
                    no_5xx(&r, "get");
                    assert!(r.status == 200 || r.status == 404, "get: {}", text(&r));
                    n += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                n
            })
        })
        .collect();
    let workers: Vec<_> = ids
        .iter()
        .map(|id| {
            let (t, id, pids) = (t.clone(), id.clone(), pids.clone());
            std::thread::spawn(move || worker(&t, &id, &pids))
        })
        .collect();
    let mut failures = Vec::new();
    for w in workers {
        if let Err(e) = w.join() {
            failures.push(e);
        }
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        let n = r.join().expect("reader");
        assert!(n > 0);
    }
    if let Some(e) = failures.pop() {
        std::panic::resume_unwind(e);
    }

    // Everything was forgotten, nothing runs, the lease is free.
    let vms = t.api_json("GET", "/v1/vms", None);
    assert_eq!(vms.as_array().map(Vec::len), Some(0), "{vms}");
    let pids = pids.lock().unwrap().clone();
    assert!(!pids.is_empty());
    let left: Vec<u64> = pids.iter().copied().filter(|p| vmm_alive(*p)).collect();
    assert!(left.is_empty(), "VMMs left behind: {left:?}");
    t.assert_leased_pcrs_free();
}
