//! Audit append throughput: tvpd's audit trail (`Audit::append`: seal, write, fsync,
//! TPM NV extend on a private swtpm, with group commit) by one writer and by 16
//! concurrent writers, against the floor, a plain `write` + `fsync` loop of the same
//! record lines into a file in the same directory. Also the log without the TPM
//! (same records, write + fsync through the chain code), to separate the anchor's
//! cost, and one NV_Extend alone (what each group pays the TPM). At the end the log is
//! reopened, which verifies it against the TPM anchor.
//! Run by scripts/bench-audit.sh.
//!
//! Usage: tvp-audit-bench [RECORDS] [DIR] [WRITERS]   (defaults: 200, a temporary
//! directory, 16)

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use tvp_agent::audit::counters::CounterStore;
use tvp_agent::audit::{Audit, AuditLog};
use tvp_audit::record::{AuditRecord, Decision, RecordDraft, Stage};
use tvp_tests::Swtpm;

const NV_INDEX: u32 = 0x0150_0000;

fn draft(i: u64) -> RecordDraft {
    let result = i & 1 == 1;
    RecordDraft {
        time_ms: 1_700_000_000_000 + i,
        uid: 0,
        pid: Some(4242),
        vm: Some("vm-bench".into()),
        op: "get-host".into(),
        params_digest: [7; 32],
        stage: if result {
            Stage::Result
        } else {
            Stage::Decision
        },
        decision: Decision::Allow,
        reason: "allowed: unrestricted operation by an allowed caller".into(),
        status: result.then_some(200),
        result: result.then(|| "ok".into()),
        state_before: None,
        state_after: None,
        request: i,
    }
}

/// Append `n` records with `writers` concurrent writers; returns the seconds taken.
fn run(rt: &tokio::runtime::Runtime, audit: &Arc<Audit>, writers: u64, n: u64) -> f64 {
    let t = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let audit = audit.clone();
                tokio::spawn(async move {
                    let mut i = w;
                    while i < n {
                        audit.append(draft(i)).await.expect("append");
                        i += writers;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer");
        }
    });
    t.elapsed().as_secs_f64()
}

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let n: u64 = arg(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let writers: u64 = arg(3).and_then(|a| a.parse().ok()).unwrap_or(16).max(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = arg(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let audit_dir = dir.join("audit-bench-log");
    let _ = std::fs::remove_dir_all(&audit_dir);
    std::fs::create_dir_all(&audit_dir).expect("dir");

    let tpm = Swtpm::blank();
    let svc = tpm.service();
    let log = AuditLog::open(&audit_dir, svc.client(), NV_INDEX).expect("audit log");
    let counters = CounterStore::load(&audit_dir).expect("counters");
    // The host's AK name only binds tokens, which the bench does not use.
    let audit = Arc::new(Audit::new(log, counters, b"bench-host".to_vec()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let single_s = run(&rt, &audit, 1, n);
    let group_s = run(&rt, &audit, writers, n);
    drop(audit);
    // Reopening verifies the whole log (both runs) against the TPM anchor.
    let reopened = AuditLog::open(&audit_dir, svc.client(), NV_INDEX).expect("reopen");
    assert_eq!(reopened.records().len() as u64, 2 * n, "records missing");
    let groups = reopened.records().iter().filter(|r| !r.grouped).count() as u64 - n;
    let lines: Vec<String> = reopened.records()[..n as usize]
        .iter()
        .map(|r| r.to_line() + "\n")
        .collect();
    drop(reopened);

    // One NV_Extend alone, as the TPM thread runs it for each group (a second index,
    // so the audit anchor stays verifiable).
    let client = svc.client();
    client
        .call(|t| t.nv_anchor_open(NV_INDEX + 1))
        .expect("second index");
    let extends = 100;
    let t0 = Instant::now();
    for i in 0..extends {
        let d = [i as u8; 32];
        client
            .call(move |t| t.nv_anchor_extend(NV_INDEX + 1, &d))
            .expect("extend");
    }
    let extend_ms = t0.elapsed().as_secs_f64() * 1000.0 / extends as f64;
    drop(client);

    // Chain + fsync without the TPM: seal and write the same drafts.
    let chain_path = dir.join("audit-bench-chain.log");
    let mut f = std::fs::File::create(&chain_path).expect("file");
    let t1 = Instant::now();
    let mut prev = [0u8; 32];
    for i in 0..n {
        let r = AuditRecord::seal(draft(i), i + 1, &prev);
        prev = r.hash_bytes().unwrap_or_default();
        f.write_all((r.to_line() + "\n").as_bytes()).expect("write");
        f.sync_data().expect("fsync");
    }
    let chain_s = t1.elapsed().as_secs_f64();

    // The floor: the same bytes, write + fsync per record.
    let plain_path = dir.join("audit-bench-plain.log");
    let mut f = std::fs::File::create(&plain_path).expect("file");
    let t2 = Instant::now();
    for l in &lines {
        f.write_all(l.as_bytes()).expect("write");
        f.sync_data().expect("fsync");
    }
    let plain_s = t2.elapsed().as_secs_f64();

    let rate = |s: f64| n as f64 / s;
    println!("records: {n} per run (directory {})", dir.display());
    println!(
        "audit append, 1 writer:            {:>9.1} records/s  {:>7.3} ms/record  {:.2}x floor",
        rate(single_s),
        single_s * 1000.0 / n as f64,
        plain_s / single_s
    );
    println!(
        "audit append, {writers:>2} writers (group): {:>9.1} records/s  {:>7.3} ms/record  {:.2}x floor  ({groups} groups, {:.1} records/group)",
        rate(group_s),
        group_s * 1000.0 / n as f64,
        plain_s / group_s,
        n as f64 / groups.max(1) as f64
    );
    println!(
        "chain + write+fsync, no TPM:       {:>9.1} records/s  {:>7.3} ms/record  {:.2}x floor",
        rate(chain_s),
        chain_s * 1000.0 / n as f64,
        plain_s / chain_s
    );
    println!("NV_Extend alone (salted session):  {extend_ms:>9.3} ms/extend ({extends} extends)");
    println!(
        "plain write+fsync loop (floor):    {:>9.1} records/s  {:>7.3} ms/record",
        rate(plain_s),
        plain_s * 1000.0 / n as f64
    );
    drop(rt);
    svc.shutdown();
    for p in [&chain_path, &plain_path] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&audit_dir);
}
