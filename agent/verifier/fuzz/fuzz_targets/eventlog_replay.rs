//! CEL-JSON event logs (seeds: the real log of the base evidence) through
//! `replay_sha256`, checked against a straightforward model of TPM2_PCR_Extend: the
//! replay succeeds exactly when recnums run 0, 1, 2, … and every replayed record has
//! one 32-byte sha256 digest, and then equals the model; restricting to a set of PCRs
//! gives the same values for those PCRs.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tvp_verifier::{replay_sha256, EventLog};

fn model(log: &EventLog, only: Option<&BTreeSet<u32>>) -> Option<BTreeMap<u32, [u8; 32]>> {
    let mut out = BTreeMap::new();
    for (i, r) in log.iter().enumerate() {
        if r.recnum != i as u64 {
            return None;
        }
        if only.is_some_and(|s| !s.contains(&r.pcr)) {
            continue;
        }
        let sha: Vec<_> = r
            .digests
            .iter()
            .filter(|d| d.hash_alg == "sha256")
            .collect();
        if sha.len() != 1 || sha[0].digest.len() != 32 {
            return None;
        }
        let pcr = out.entry(r.pcr).or_insert([0u8; 32]);
        let mut h = Sha256::new();
        h.update(*pcr);
        h.update(&sha[0].digest);
        *pcr = h.finalize().into();
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Ok(log) = serde_json::from_slice::<EventLog>(data) else {
        return;
    };
    let all = replay_sha256(&log, None).ok();
    assert_eq!(all, model(&log, None), "replay differs from the model");
    let only: BTreeSet<u32> = log.iter().map(|r| r.pcr).filter(|p| p % 2 == 0).collect();
    let some = replay_sha256(&log, Some(&only)).ok();
    assert_eq!(some, model(&log, Some(&only)));
    if let (Some(all), Some(some)) = (all, some) {
        for (pcr, v) in &some {
            assert_eq!(all.get(pcr), Some(v));
        }
    }
    let text = serde_json::to_vec(&log).unwrap();
    assert_eq!(serde_json::from_slice::<EventLog>(&text).unwrap(), log);
});
