//! Boot-protocol messages as both ends receive them: frame headers, the boot request
//! and the VtpmQuote payload (server side), the signed workload container (firmware
//! side); the first byte picks which. Invariants beyond no panic: each accepted message re-encodes to exactly the
//! bytes it was parsed from (one encoding per message), lengths stay within each
//! type's limit, and a container's parts tile it exactly; the firmware's streaming
//! payload span, fed the container in chunks whose sizes the input picks, yields
//! exactly the payload `parse` finds (and nothing when `parse` refuses the header).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_boot_protocol::signed::{self, SignedWorkload};
use tvp_boot_protocol::vtpm::{VtpmQuote, VTPM_QUOTE_MAX};
use tvp_boot_protocol::{
    frame_header, max_payload, parse_frame_header, BootRequest, FRAME_HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let Some(h) = bytes.get(..FRAME_HEADER_LEN) else {
                return;
            };
            let h: [u8; FRAME_HEADER_LEN] = h.try_into().unwrap();
            if let Ok(f) = parse_frame_header(&h) {
                assert!(f.len <= max_payload(f.msg));
                assert_eq!(frame_header(f.msg, f.len), Ok(h));
            }
        }
        1 => {
            if let Ok(r) = BootRequest::parse(bytes) {
                let mut out = vec![0u8; r.encoded_len()];
                let n = r.encode(&mut out).expect("a parsed request encodes");
                assert_eq!(
                    &out[..n],
                    bytes,
                    "boot request does not re-encode to its bytes"
                );
                assert!(n <= max_payload(tvp_boot_protocol::MsgType::BootRequest));
            }
        }
        3 => {
            if let Ok(q) = VtpmQuote::parse(bytes) {
                let mut out = vec![0u8; q.encoded_len()];
                let n = q.encode(&mut out).expect("a parsed quote encodes");
                assert_eq!(
                    &out[..n],
                    bytes,
                    "VtpmQuote does not re-encode to its bytes"
                );
                assert!(n <= VTPM_QUOTE_MAX);
                assert_eq!(
                    6 + q.ak_public.len() + q.attest.len() + q.signature.len(),
                    bytes.len(),
                    "the parts do not tile the payload"
                );
            }
        }
        _ => {
            // Chunk sizes 1..=64 from the container's own bytes (deterministic).
            let mut span = signed::PayloadSpan::default();
            let (mut streamed, mut rest, mut i) = (Vec::new(), bytes, 0usize);
            while !rest.is_empty() {
                let k = (usize::from(bytes[i % bytes.len()]) % 64 + 1).min(rest.len());
                streamed.extend_from_slice(span.feed(&rest[..k]));
                rest = &rest[k..];
                i += 1;
            }
            assert_eq!(span.seen(), bytes.len());
            if let Ok(w) = SignedWorkload::parse(bytes) {
                assert_eq!(streamed, w.payload, "the streamed span is not the payload");
                let h = signed::header(w.cert.len(), w.payload.len()).unwrap();
                let mut again = h.to_vec();
                again.extend_from_slice(w.cert);
                again.extend_from_slice(w.payload);
                assert_eq!(again, w.signed);
                again.extend_from_slice(w.signature);
                assert_eq!(again, bytes, "container parts do not tile it");
                assert_eq!(w.signature.len(), signed::SIGNATURE_LEN);
            }
        }
    }
});
