//! Audit append throughput: tvpd's `AuditLog::append` (seal, write, fsync, TPM NV
//! extend on a private swtpm) against the floor, a plain `write` + `fsync` loop of
//! the same record lines into a file in the same directory. Also the log without
//! the TPM (same records, write + fsync through the chain code), to separate the
//! anchor's cost. Run by scripts/bench-audit.sh.
//!
//! Usage: tvp-audit-bench [RECORDS] [DIR]   (defaults: 200, a temporary directory)

use std::io::Write;
use std::time::Instant;

use tvp_agent::audit::AuditLog;
use tvp_audit::record::{AuditRecord, Decision, RecordDraft, Stage};
use tvp_tests::Swtpm;

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

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::env::args()
        .nth(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let audit_dir = dir.join("audit-bench-log");
    let _ = std::fs::remove_dir_all(&audit_dir);
    std::fs::create_dir_all(&audit_dir).expect("dir");

    let tpm = Swtpm::blank();
    let svc = tpm.service();
    let mut log = AuditLog::open(&audit_dir, svc.client(), 0x0150_0000).expect("audit log");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let mut lines = Vec::with_capacity(n as usize);
    rt.block_on(async {
        for i in 0..n {
            let r = log.append(draft(i)).await.expect("append");
            lines.push(r.to_line() + "\n");
        }
    });
    let audit_s = t0.elapsed().as_secs_f64();

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
    println!("records: {n} (directory {})", dir.display());
    println!(
        "audit log append (write+fsync+TPM NV_Extend): {:>9.1} records/s  {:>7.3} ms/record",
        rate(audit_s),
        audit_s * 1000.0 / n as f64
    );
    println!(
        "chain + write+fsync, no TPM:                  {:>9.1} records/s  {:>7.3} ms/record",
        rate(chain_s),
        chain_s * 1000.0 / n as f64
    );
    println!(
        "plain write+fsync loop (floor):               {:>9.1} records/s  {:>7.3} ms/record",
        rate(plain_s),
        plain_s * 1000.0 / n as f64
    );
    println!(
        "ratio audit/floor time: {:.2}x   chain-only/floor: {:.2}x",
        audit_s / plain_s,
        chain_s / plain_s
    );
    drop(log);
    drop(rt);
    svc.shutdown();
    for p in [&chain_path, &plain_path] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&audit_dir);
}
