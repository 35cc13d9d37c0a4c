//! Management authorization tokens in their text form (seeds: tokens signed by fixed
//! Ed25519 and P-256 tenant keys) through `AuthToken::decode` and `verify`; input that
//! starts with `{` is a tenant policy for `TenantPolicy::from_json`. Invariants beyond
//! no panic:
//! - a decoded token survives encode/decode unchanged;
//! - a token accepted by a tenant key (whatever VM, operation and parameters it names)
//!   carries exactly the signed content of a token that key signed: nothing unsigned
//!   is ever acted on;
//! - an accepted policy survives a JSON round trip with the same canonical encoding
//!   (the management digest extended into PCR 23).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tvp_audit::policy::management_digest;
use tvp_audit::token::{Expectation, TenantKey};
use tvp_audit::{AuthToken, TenantPolicy};
use tvp_audit_fuzz::{params_digest, policy, signers, target, SEED_EXPIRES};

/// Each key and the signed bytes of the one token it signed.
fn keys() -> &'static Vec<(TenantKey, Vec<u8>)> {
    static K: OnceLock<Vec<(TenantKey, Vec<u8>)>> = OnceLock::new();
    K.get_or_init(|| {
        signers()
            .iter()
            .map(|s| {
                let t = s.authorize("pause", &target(), &params_digest(), 5, SEED_EXPIRES);
                (s.public(), t.signed_bytes().unwrap())
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'{') {
        if let Ok(p) = TenantPolicy::from_json(data) {
            let again = TenantPolicy::from_json(&serde_json::to_vec(&p).unwrap()).unwrap();
            assert_eq!(again, p);
            let key = &keys()[0].0;
            assert_eq!(management_digest(key, &again), management_digest(key, &p));
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = AuthToken::decode(text) else {
        return;
    };
    assert_eq!(AuthToken::decode(&t.encode()).unwrap(), t);
    let params = tvp_audit::digest_from_hex(&t.params_digest).unwrap_or_default();
    let bound = target();
    for (key, signed) in keys() {
        let x = Expectation {
            key,
            policy: policy(),
            key_since: 100,
            host: &bound.host,
            vm: &t.vm,
            incarnation: Some(bound.incarnation),
            op: &t.op,
            params_digest: params,
            last_counter: None,
            now: 1000,
        };
        if t.verify(&x).is_ok() {
            assert_eq!(
                t.signed_bytes().as_ref(),
                Some(signed),
                "accepted a token with content the key never signed"
            );
        }
    }
});
