//! Issue #19, audit group commit: concurrent appends share one write-ahead marker
//! fsync, one `NV_Extend` (of the group's last record) and one log write + fsync.
//! Every answered request's record is durable and anchored: after a kill -9 at each
//! point of a group's commit (the fault hook `TVP_FAULT_AUDIT_CRASH`: after the
//! marker, after the extend, in the middle of the log write) and at random moments,
//! tvpd starts cleanly, the records of every answered request are in the log, in
//! order, and the log verifies against a fresh AK certification of the anchor with
//! `tvpctl audit verify`. A full disk still fails every record of a group closed.
//! Real tvpd, real swtpm, a real tmpfs (docs/audit.md, "Group commit").

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tvp_agent::audit::counters::CounterStore;
use tvp_agent::audit::{Audit, AuditLog};
use tvp_audit::record::{AuditRecord, Decision, RecordDraft, Stage};
use tvp_tests::tmpfs::{fill, SmallTmpfs};
use tvp_tests::{nonce_hex, require, Need, Swtpm, Tvpd};

const FAULT: &str = "TVP_FAULT_AUDIT_CRASH";
const FAULT_EXIT: i32 = 86;
const CLIENTS: u64 = 16;

fn records_in(state_dir: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(state_dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn get_hosts(recs: &[AuditRecord]) -> u64 {
    recs.iter().filter(|r| r.op == "get-host").count() as u64
}

/// `CLIENTS` clients at once, each sending up to `per` requests one after the other
/// until one is not answered (tvpd gone); how many were answered 200.
fn burst(t: &Tvpd, per: u64, kill_after: Option<Duration>) -> u64 {
    let answered = AtomicU64::new(0);
    let pid = t.pid();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                for _ in 0..per {
                    match tvpctl::client::request(&t.socket, "GET", "/v1/host", None) {
                        Ok(r) if r.status == 200 => answered.fetch_add(1, Ordering::SeqCst),
                        _ => break,
                    };
                }
            });
        }
        if let (Some(after), Some(pid)) = (kill_after, pid) {
            std::thread::sleep(after);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    });
    answered.into_inner()
}

/// The whole log verifies against a fresh AK certification of the NV anchor, with
/// the tenant-side verifier (`tvpctl audit verify`).
fn verified_against_the_anchor(t: &Tvpd, dir: &Path) {
    let n = nonce_hex(16);
    let anchor = dir.join("anchor.json");
    t.write_audit_anchor(&n, &anchor);
    let ak = t.write_ak_pem(dir);
    let log = t.state_dir.join("audit.log");
    let (rc, out, err) = t.verify_audit_log(&log, &anchor, &ak, &n);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("match the TPM-certified anchor"), "{out}");
}

#[test]
fn a_kill_at_any_point_of_a_group_keeps_every_answered_record_in_order_and_anchored() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let dir = tpm.scratch("a");
    // 16 clients of one uid at once (the default allows 16 connections per uid,
    // and a closing one may still hold its slot).
    let mut t = Tvpd::start(&tpm, &dir, &["--max-connections-per-uid", "64"]);

    // 16 clients at once: every answered request is recorded, and they share groups.
    let before = get_hosts(&records_in(&t.state_dir));
    assert_eq!(burst(&t, 8, None), CLIENTS * 8);
    let recs = records_in(&t.state_dir);
    assert_eq!(get_hosts(&recs) - before, CLIENTS * 8);
    assert!(
        recs.iter().any(|r| r.grouped),
        "16 concurrent clients formed no commit group"
    );
    verified_against_the_anchor(&t, &dir);
    assert_eq!(t.stop(), Some(0));

    // A kill -9 at each point of the commit of the group holding record S.
    for point in ["after-wal", "after-extend", "mid-log"] {
        let recs = records_in(&t.state_dir);
        let (n, hosts) = (recs.len() as u64, get_hosts(&recs));
        let s = n + 24;
        t.set_env(FAULT, Some(&format!("{point}@{s}")));
        assert_eq!(t.try_start_again(), None, "{}", t.log());
        let answered = burst(&t, 8, None);
        assert_eq!(
            t.wait_exit(Duration::from_secs(20)),
            Some(FAULT_EXIT),
            "{point}"
        );
        t.set_env(FAULT, None);
        // A clean start: tvpd verified the whole log against its anchor.
        assert_eq!(t.try_start_again(), None, "{point}: {}", t.log());
        let recs = records_in(&t.state_dir);
        assert!(
            get_hosts(&recs) - hosts >= answered,
            "{point}: {answered} answered requests but only {} records",
            get_hosts(&recs) - hosts
        );
        if point == "after-wal" {
            // Never anchored, never answered: the whole group is dropped.
            assert!((recs.len() as u64) < s, "{point}: {} records", recs.len());
            assert!(t.log().contains("never anchored"), "{}", t.log());
        } else {
            // Anchored: the whole group is in the log (completed from the marker).
            assert!((recs.len() as u64) >= s, "{point}: {} records", recs.len());
            assert!(
                t.log()
                    .contains("completed the anchoring interrupted by a crash"),
                "{point}: {}",
                t.log()
            );
        }
        assert!(
            !recs.last().unwrap().grouped,
            "{point}: ends inside a group"
        );
        verified_against_the_anchor(&t, &dir);
        assert_eq!(t.stop(), Some(0));
    }

    // A real SIGKILL at random moments of a burst.
    for ms in [15u64, 40, 90] {
        let hosts = get_hosts(&records_in(&t.state_dir));
        t.start_again();
        let answered = burst(&t, 16, Some(Duration::from_millis(ms)));
        t.wait_exit(Duration::from_secs(10));
        assert_eq!(t.try_start_again(), None, "kill after {ms} ms: {}", t.log());
        let recs = records_in(&t.state_dir);
        assert!(
            get_hosts(&recs) - hosts >= answered,
            "kill after {ms} ms: {answered} answered, {} recorded",
            get_hosts(&recs) - hosts
        );
        verified_against_the_anchor(&t, &dir);
        assert_eq!(t.stop(), Some(0));
    }
}

fn draft(writer: u64, i: u64) -> RecordDraft {
    RecordDraft {
        time_ms: 1_700_000_000_000,
        uid: 0,
        pid: Some(1),
        vm: None,
        op: "get-host".into(),
        params_digest: [1; 32],
        stage: Stage::Result,
        decision: Decision::Allow,
        reason: format!("writer {writer} record {i}"),
        status: Some(200),
        result: Some("ok".into()),
        state_before: None,
        state_after: None,
        request: 0,
    }
}

/// 16 writers at once, 4 records each one after the other (a writer stops at its
/// first failure): each writer's results in order.
fn writers(rt: &tokio::runtime::Runtime, audit: &Arc<Audit>) -> Vec<Vec<Result<u64, String>>> {
    rt.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|w| {
                let audit = audit.clone();
                tokio::spawn(async move {
                    let mut out = vec![];
                    for i in 0..4 {
                        let r = audit.append(draft(w, i)).await.map_err(|e| e.to_string());
                        let failed = r.is_err();
                        out.push(r);
                        if failed {
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        let mut all = vec![];
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    })
}

#[test]
fn concurrent_appends_on_a_full_disk_all_fail_closed_and_succeed_in_groups_when_space_returns() {
    require!(Need::Tmpfs, "swtpm", "mount", "umount");
    let tpm = Swtpm::blank();
    let fs = SmallTmpfs::mount(&tpm.scratch("small"), "2m");
    let state = fs.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let svc = tpm.service();
    let log = AuditLog::open(&state, svc.client(), 0x0150_0000).expect("audit log");
    let audit = Arc::new(Audit::new(
        log,
        CounterStore::load(&state).unwrap(),
        b"host-ak-name".to_vec(),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let ok = writers(&rt, &audit);
    assert!(ok.iter().flatten().all(|r| r.is_ok()), "{ok:?}");

    let filler = fs.path().join("filler");
    fill(&filler);
    // The log's last page may still take a few records; then every append fails.
    let mut failed = None;
    for _ in 0..50 {
        let n = audit.log().try_lock().unwrap().records().len();
        let r = writers(&rt, &audit);
        if r.iter().flatten().all(|r| r.is_err()) {
            // Nothing of the failed groups is in the log (in memory or on disk).
            let l = audit.log().try_lock().unwrap();
            assert_eq!(l.records().len(), n);
            l.check_file().expect("no partial group left in the file");
            failed = Some(r);
            break;
        }
    }
    let failed = failed.expect("a full disk must make every append fail");
    assert_eq!(failed.len() as u64, CLIENTS);
    for e in failed.iter().flatten() {
        let e = e.as_ref().unwrap_err();
        assert!(e.contains("No space left on device"), "{e}");
    }

    std::fs::remove_file(&filler).unwrap();
    let back = writers(&rt, &audit);
    let seqs: Vec<Vec<u64>> = back
        .iter()
        .map(|w| w.iter().map(|r| *r.as_ref().unwrap()).collect())
        .collect();
    drop(audit);

    // Reopening verifies the whole log against the TPM anchor; every answered record
    // is there, each writer's in its order, and the writers shared groups.
    let log = AuditLog::open(&state, svc.client(), 0x0150_0000).expect("anchored");
    let recs = log.records();
    for (w, s) in seqs.iter().enumerate() {
        assert_eq!(s.len(), 4);
        assert!(s.windows(2).all(|p| p[0] < p[1]), "writer {w}: {s:?}");
        for (i, seq) in s.iter().enumerate() {
            let r = &recs[*seq as usize - 1];
            assert_eq!(r.reason, format!("writer {w} record {i}"));
        }
    }
    let tail = &recs[recs.len() - (CLIENTS as usize * 4)..];
    assert!(tail.iter().any(|r| r.grouped), "no group formed");
    assert!(!recs.last().unwrap().grouped);
    drop(log);
    drop(rt);
    svc.shutdown();
}
