//! Issue #16, item 4: at start tvpd accepts only what its TPM anchor holds. Root edits
//! the audit log while tvpd is stopped (appends well-formed records with a valid hash
//! chain, rewrites the last one): tvpd refuses to start (exit 65) naming the first bad
//! record. A genuine crash in the middle of an append (reproduced exactly by the
//! test-only fault hook `TVP_FAULT_AUDIT_CRASH`) still starts cleanly: a record the
//! anchor holds is completed from the write-ahead marker, one it does not is dropped.
//! Real tvpd, real swtpm (docs/audit.md, "Anchor and start-up").

use std::path::Path;
use std::time::Duration;

use tvp_audit::record::{AuditRecord, Decision, RecordDraft, Stage};
use tvp_tests::{require, Swtpm, Tvpd};

const FAULT: &str = "TVP_FAULT_AUDIT_CRASH";
const FAULT_EXIT: i32 = 86;

fn log_lines(t: &Tvpd) -> Vec<String> {
    std::fs::read_to_string(t.state_dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(t: &Tvpd, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(t.state_dir.join("audit.log"), text).unwrap();
}

/// A record root forges: well-formed, sealed onto the chain after `prev`.
fn forged(seq: u64, prev: &AuditRecord, reason: &str) -> String {
    let draft = RecordDraft {
        time_ms: prev.time_ms + 1,
        uid: 0,
        pid: Some(1),
        vm: Some("victim".into()),
        op: "resume".into(),
        params_digest: [0; 32],
        stage: Stage::Decision,
        decision: Decision::Allow,
        reason: reason.into(),
        status: None,
        result: None,
        state_before: None,
        state_after: None,
        request: seq,
    };
    AuditRecord::seal(draft, seq, &prev.hash_bytes().unwrap()).to_line()
}

fn record(line: &str) -> AuditRecord {
    serde_json::from_str(line).unwrap()
}

/// tvpd with a few audited requests, then stopped; the log's lines.
fn stopped_with_history(tpm: &Swtpm, dir: &Path) -> (Tvpd, Vec<String>) {
    let mut t = Tvpd::start(tpm, dir, &[]);
    for _ in 0..3 {
        assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    }
    assert_eq!(t.stop(), Some(0));
    let lines = log_lines(&t);
    assert!(lines.len() >= 3, "{lines:?}");
    (t, lines)
}

#[test]
fn records_appended_while_tvpd_was_stopped_refuse_the_start_naming_the_first() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let (mut t, good) = stopped_with_history(&tpm, &tpm.scratch("a"));
    let n = good.len() as u64;

    // One appended record with a valid chain.
    let mut one = good.clone();
    one.push(forged(
        n + 1,
        &record(&good[good.len() - 1]),
        "forged by root",
    ));
    write_lines(&t, &one);
    assert_eq!(t.try_start_again(), Some(65), "{}", t.log());
    let why = format!("record seq {} is in the log but not in the anchor", n + 1);
    assert!(t.log().contains(&why), "{}", t.log());

    // Two appended records (the old start-up accepted up to two): the first is named.
    let mut two = one.clone();
    two.push(forged(n + 2, &record(&one[one.len() - 1]), "forged again"));
    write_lines(&t, &two);
    assert_eq!(t.try_start_again(), Some(65), "{}", t.log());
    assert!(t.log().contains(&why), "{}", t.log());

    // A write-ahead marker forged for the appended record changes nothing: the
    // anchor does not hold it.
    let marker = format!(
        "{{\"tvp_audit_wal\":1,\"first_seq\":{},\"prev\":\"{}\",\"records\":1}}\n{}\n",
        n + 1,
        record(&good[good.len() - 1]).hash,
        one[one.len() - 1]
    );
    std::fs::write(t.state_dir.join("audit.wal"), marker).unwrap();
    write_lines(&t, &good);
    assert_eq!(t.try_start_again(), None, "{}", t.log());
    assert_eq!(
        log_lines(&t).len() as u64,
        n,
        "the forged record is not written"
    );
    assert!(t.log().contains("never anchored"), "{}", t.log());
    // The intact log serves, and the chain continues.
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    assert_eq!(log_lines(&t).len() as u64, n + 1);
    t.stop();
}

#[test]
fn a_rewritten_last_record_refuses_the_start_naming_it() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let (mut t, good) = stopped_with_history(&tpm, &tpm.scratch("a"));
    let n = good.len();
    let mut rewritten = good.clone();
    rewritten[n - 1] = forged(n as u64, &record(&good[n - 2]), "rewritten by root");
    write_lines(&t, &rewritten);
    assert_eq!(t.try_start_again(), Some(65), "{}", t.log());
    let why = format!("record seq {n} was rewritten");
    assert!(t.log().contains(&why), "{}", t.log());
    write_lines(&t, &good);
    assert_eq!(t.try_start_again(), None, "{}", t.log());
    t.stop();
}

#[test]
fn a_crash_between_extend_and_log_write_is_completed_and_one_before_the_extend_dropped() {
    require!("swtpm");
    let tpm = Swtpm::blank();
    let (mut t, good) = stopped_with_history(&tpm, &tpm.scratch("a"));
    let n = good.len() as u64;

    // Crash right after the extend of record n+1, before its log write.
    t.set_env(FAULT, Some(&format!("after-extend@{}", n + 1)));
    assert_eq!(t.try_start_again(), None, "{}", t.log());
    let r = tvpctl::client::request(&t.socket, "GET", "/v1/host", None);
    assert!(
        r.is_err(),
        "no answer: the request's record was not persisted"
    );
    assert_eq!(t.wait_exit(Duration::from_secs(10)), Some(FAULT_EXIT));
    assert_eq!(log_lines(&t).len() as u64, n, "not in the log yet");
    t.set_env(FAULT, None);
    assert_eq!(t.try_start_again(), None, "{}", t.log());
    assert!(
        t.log()
            .contains("completed the anchoring interrupted by a crash"),
        "{}",
        t.log()
    );
    let lines = log_lines(&t);
    assert_eq!(lines.len() as u64, n + 1);
    assert_eq!(record(&lines[n as usize]).op, "get-host");

    // Crash right after the marker's fsync, before the extend: the record was never
    // anchored nor answered, and is dropped; the start is clean.
    assert_eq!(t.stop(), Some(0));
    let m = log_lines(&t).len() as u64;
    t.set_env(FAULT, Some(&format!("after-wal@{}", m + 1)));
    assert_eq!(t.try_start_again(), None, "{}", t.log());
    assert!(tvpctl::client::request(&t.socket, "GET", "/v1/host", None).is_err());
    assert_eq!(t.wait_exit(Duration::from_secs(10)), Some(FAULT_EXIT));
    t.set_env(FAULT, None);
    assert_eq!(t.try_start_again(), None, "{}", t.log());
    assert!(t.log().contains("never anchored"), "{}", t.log());
    assert_eq!(log_lines(&t).len() as u64, m);

    // Both starts left a log that matches its anchor exactly (a start verifies the
    // whole log against it): requests are served and the chain continues.
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    t.restart();
    assert_eq!(t.api("GET", "/v1/host", None).status, 200);
    assert_eq!(log_lines(&t).len() as u64, m + 2);
    t.stop();
}
