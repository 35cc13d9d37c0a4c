//! Mailbox request blocks as the platform copies them from guest memory (the input,
//! zero-padded or cut to the 4 KiB block), and response headers as the firmware reads
//! them. Invariants beyond no panic: an accepted request re-encodes (`encode_request`)
//! to exactly the block's header and payload, has the payload length its command
//! requires, and a rejection echoes the command only when the header was valid; a
//! response header that parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_abi::mailbox::{
    encode_request, encode_response_header, parse_request, parse_response_header, Request, Status,
    DIGEST_LEN, NONCE_MAX, NONCE_MIN, REQUEST_HEADER_LEN, REQUEST_MAX, RESPONSE_HEADER_LEN,
    RESPONSE_PAYLOAD_MAX,
};

fuzz_target!(|data: &[u8]| {
    let mut block = [0u8; REQUEST_MAX];
    let n = data.len().min(REQUEST_MAX);
    block[..n].copy_from_slice(&data[..n]);
    match parse_request(&block) {
        Ok(req) => {
            let payload: Vec<u8> = match req {
                Request::GetVersion | Request::GetFirmwareDigest => vec![],
                Request::TunnelEstablished(d) | Request::Handover(d) => d.to_vec(),
                Request::QuoteRequest(nonce) => {
                    assert!((NONCE_MIN..=NONCE_MAX).contains(&nonce.len()));
                    nonce.to_vec()
                }
                Request::BootFailed(code) => code.to_le_bytes().to_vec(),
            };
            if matches!(req, Request::TunnelEstablished(_) | Request::Handover(_)) {
                assert_eq!(payload.len(), DIGEST_LEN);
            }
            let mut again = [0u8; REQUEST_MAX];
            let used = encode_request(req.command() as u16, &payload, &mut again).unwrap();
            assert_eq!(used, REQUEST_HEADER_LEN + payload.len());
            assert_eq!(
                again[..used],
                block[..used],
                "request does not re-encode to its bytes"
            );
        }
        Err(rej) => {
            if matches!(rej.status, Status::BadMagic | Status::BadVersion) {
                assert_eq!(rej.command, 0);
            }
        }
    }
    if let Some(h) = data.get(..RESPONSE_HEADER_LEN) {
        let h: [u8; RESPONSE_HEADER_LEN] = h.try_into().unwrap();
        if let Some(r) = parse_response_header(&h) {
            assert!(r.payload_len as usize <= RESPONSE_PAYLOAD_MAX);
            if let Some(st) = Status::from_u32(r.status) {
                let again =
                    encode_response_header(r.command, st, r.payload_len, r.sequence, r.detail);
                // Bytes 24..32 are reserved: the platform writes zeros there.
                assert_eq!(again[..24], h[..24]);
            }
        }
    }
});
