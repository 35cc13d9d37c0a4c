//! Raw HTTP request bytes (head and body), framed as hyper frames them, through tvpd's
//! request parser (`api::request::parse`, with `api::query`). Never panics; every
//! refusal is a 4xx `ApiError` with a code and a message; an accepted request
//! re-validates (`check_accepted`: VM ids, nonces, PCR indexes, buffers, paths,
//! operation parameters, GET read-only).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_agent::api::request::parse;
use tvp_agent_fuzz::{check_accepted, check_refusal, frame};

fuzz_target!(|raw: &[u8]| {
    let Some(f) = frame(raw) else { return };
    match parse(&f.method, &f.path, &f.body) {
        Ok(r) => {
            check_accepted(&f.method, &f.path, &f.body, &r);
            // Parsing is a function of the request: the same bytes, the same result.
            assert_eq!(parse(&f.method, &f.path, &f.body).ok(), Some(r));
        }
        Err(e) => check_refusal(&f.method, &e),
    }
});
