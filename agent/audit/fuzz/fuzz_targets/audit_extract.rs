//! Tenant extracts (seeds: real extracts built with `extract::build` from the seed log,
//! with the AK-certified anchor) through `Extract::verify` against the seed log's
//! certified anchor and the tenant policy, from the VM's creation and from a tenant
//! checkpoint. Invariants beyond no panic: an accepted extract begins exactly at the
//! VM's `create-vm` record (or right after the checkpoint) and shows exactly the log's
//! records of its VM from there that must be shown, each unaltered: the host can
//! neither cut the beginning or the end, nor hide, alter, reorder or invent a record
//! of the tenant's VM.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_audit::extract::{self, Extract, ExtractSummary, Start, CREATE_OP};
use tvp_audit::record::{AuditRecord, Stage};
use tvp_audit_fuzz::{ak_pem, checkpoint, log, log_anchor, policy, NONCE};

/// The accepted extract shows exactly the seed's records of its VM from `since`.
fn exactly_the_log(x: &Extract, s: &ExtractSummary, since: u64) {
    let reported = |op: &str| policy().reports(op);
    let seed = log();
    let want: Vec<&AuditRecord> = seed
        .iter()
        .filter(|r| r.seq >= since && r.vm.as_deref() == Some(x.vm.as_str()))
        .filter(|r| extract::shown(&r.op, &reported))
        .collect();
    let got: Vec<&AuditRecord> = s
        .records
        .iter()
        .filter(|r| extract::shown(&r.op, &reported))
        .collect();
    assert_eq!(
        got, want,
        "accepted extract does not show exactly the VM's records"
    );
    for r in &s.records {
        let i = r.seq.checked_sub(1).expect("seq 0 accepted") as usize;
        assert_eq!(Some(r), seed.get(i), "accepted an altered record");
    }
    assert_eq!(s.anchor, log_anchor());
}

fuzz_target!(|data: &[u8]| {
    let Ok(x) = serde_json::from_slice::<Extract>(data) else {
        return;
    };
    let reported = |op: &str| policy().reports(op);
    let seed = log();
    let certified = (log_anchor(), seed.len() as u64);
    let creation = Start::Creation { management: None };
    if let Ok(s) = x.verify(&reported, creation, certified) {
        let first = x
            .since
            .checked_sub(1)
            .and_then(|i| seed.get(i as usize))
            .expect("accepted an extract that starts outside the log");
        assert!(
            first.op == CREATE_OP
                && first.stage == Stage::Decision
                && first.vm.as_deref() == Some(x.vm.as_str()),
            "accepted an extract that does not begin at the VM's creation: {first:?}"
        );
        exactly_the_log(&x, &s, x.since);
    }
    let cp = checkpoint(3);
    if let Ok(s) = x.verify(&reported, Start::Checkpoint(&cp), certified) {
        assert_eq!(
            (x.vm.as_str(), x.since),
            ("a", 4),
            "accepted an extract that does not continue from the checkpoint"
        );
        exactly_the_log(&x, &s, 4);
    }
    if let Some(c) = &x.anchor {
        if let Ok(v) = c.verify(Some(&ak_pem()), Some(NONCE)) {
            assert_eq!(
                v,
                log_anchor(),
                "accepted an anchor value the AK did not certify"
            );
        }
    }
});
