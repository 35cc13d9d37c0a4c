//! The host's IMA measurement list (binary and ASCII) through the parsers, the PCR 10
//! replay and the allowlist check: never a panic; a parsed binary list replays to the
//! value a straightforward model of TPM2_PCR_Extend gives, and its every prefix is
//! found by `replay_to_quote`; the check names an entry or passes, consistently with
//! the allowlist.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tvp_verifier::ima::{allowlist, parse_ascii, parse_binary, replay_to_quote, IMA_PCR};
use tvp_verifier::ima::{AllowEntry, Allowlist, ImaError, RuntimeIntegrity};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_ascii(text);
    }
    let Ok(entries) = parse_binary(data) else {
        return;
    };
    if entries.iter().any(|e| e.pcr != IMA_PCR) {
        return;
    }
    // The model: every prefix's value, from zero.
    let mut pcr = [0u8; 32];
    let mut values = vec![pcr];
    for e in &entries {
        let mut h = Sha256::new();
        h.update(pcr);
        h.update(if e.violation {
            [0xff; 32]
        } else {
            e.template_sha256
        });
        pcr = h.finalize().into();
        values.push(pcr);
    }
    for (n, v) in values.iter().enumerate() {
        // The first prefix reaching v (values are distinct but for hash collisions).
        let first = values.iter().position(|x| x == v).unwrap();
        assert_eq!(replay_to_quote(&entries, v), Ok(first), "prefix {n}");
    }
    // Allow every non-violation digest but the last entry's: the check passes or names
    // exactly that entry, a violation, or the missing boot_aggregate.
    let Some(last) = entries.last() else { return };
    let allow: BTreeSet<String> = entries
        .iter()
        .map(|e| e.digest_string())
        .filter(|d| *d != last.digest_string())
        .collect();
    let policy = RuntimeIntegrity::Ima(Allowlist {
        entries: allow
            .iter()
            .map(|d| AllowEntry {
                digest: d.clone(),
                path: String::new(),
            })
            .collect(),
        boot_pcrs: Default::default(),
    });
    let quoted = BTreeMap::from([(IMA_PCR, pcr)]);
    match allowlist::check(&policy, Some(data), &quoted) {
        // Only a lone boot_aggregate is exempt from the allowlist.
        Ok(_) => assert_eq!(entries.len(), 1),
        Err(ImaError::NotAllowed { digest, .. }) => assert_eq!(digest, last.digest_string()),
        Err(ImaError::Violation { .. })
        | Err(ImaError::NoBootAggregate)
        | Err(ImaError::BadAllowlist(_)) => {}
        Err(e) => panic!("unexpected {e}"),
    }
});
