//! Audit logs as JSON lines (seed: a real log sealed like tvpd seals it) through
//! `parse_log` and `verify_chain`. Invariants beyond no panic: every parsed record
//! survives a JSON round trip; a log whose first records verify against the seed log's
//! TPM anchor (what `tvpctl audit verify --anchor` checks) is the seed log, record for
//! record; a log that verifies without an anchor folds to the anchor of its hashes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_audit::anchor;
use tvp_audit::chain::{parse_log, verify_chain};
use tvp_audit::record::AuditRecord;
use tvp_audit_fuzz::{log, log_anchor};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(records) = parse_log(text) else {
        return;
    };
    for r in &records {
        let back: AuditRecord = serde_json::from_str(&r.to_line()).unwrap();
        assert_eq!(&back, r, "record does not survive a JSON round trip");
    }
    let seed = log();
    if records.len() >= seed.len()
        && verify_chain(&records[..seed.len()], Some(&log_anchor())).is_ok()
    {
        assert_eq!(
            &records[..seed.len()],
            &seed[..],
            "a log other than the certified one matches the TPM anchor"
        );
    }
    if let Ok(s) = verify_chain(&records, None) {
        let folded = records.iter().fold(anchor::EMPTY, |a, r| {
            anchor::step(&a, &r.hash_bytes().unwrap(), r.grouped)
        });
        assert_eq!(s.anchor, folded);
        assert_eq!(s.records, records.len() as u64);
    }
});
