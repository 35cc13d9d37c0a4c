//! Raw evidence JSON (seeds: the real swtpm evidence document) through `verify_json`
//! with options trusting the real swtpm AK and, separately, a
//! fixed P-256 AK whose quote covers a longer event log: no panic, and an accepted document says only what
//! the TPM signed ([`tvp_verifier_fuzz::assert_justified`]). A document that parses
//! also survives a serialize/parse round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_verifier::{verify, Evidence};
use tvp_verifier_fuzz::{assert_justified, base_of, Which};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ev) = serde_json::from_str::<Evidence>(text) else {
        return;
    };
    let again: Evidence = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
    assert_eq!(again, ev, "evidence does not survive a JSON round trip");
    for which in [Which::Swtpm, Which::P256] {
        if let Ok(v) = verify(&ev, &base_of(which).opts) {
            assert_justified(which, &ev, &v);
        }
    }
});
