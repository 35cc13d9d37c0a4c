//! Tenant extracts (seeds: real extracts built with `extract::build` from the seed log,
//! with the AK-certified anchor) through `Extract::verify` against the seed log's
//! certified anchor and the tenant policy. Invariant beyond no panic: an accepted
//! extract for VM `x` from seq `s` shows exactly the log's records of `x` from `s` on
//! that the policy reports, each unaltered: the host can neither hide, alter, reorder
//! nor invent a record of the tenant's VM.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_audit::extract::Extract;
use tvp_audit::record::AuditRecord;
use tvp_audit_fuzz::{ak_pem, log, log_anchor, policy, NONCE};

fuzz_target!(|data: &[u8]| {
    let Ok(x) = serde_json::from_slice::<Extract>(data) else {
        return;
    };
    let reported = |op: &str| policy().reports(op);
    let seed = log();
    if let Ok(s) = x.verify(&reported, Some((log_anchor(), seed.len() as u64))) {
        let since = x.since.max(1);
        let want: Vec<&AuditRecord> = seed
            .iter()
            .filter(|r| r.seq >= since && r.vm.as_deref() == Some(x.vm.as_str()))
            .filter(|r| reported(&r.op))
            .collect();
        let got: Vec<&AuditRecord> = s.records.iter().filter(|r| reported(&r.op)).collect();
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
