//! The boot server's side of the boot protocol: `tvp_boot_server::protocol::read_frame_of`
//! (a blocking reader over the TLS tunnel's plaintext, which `read_frame` is for one
//! type) in the order a session of a VM with its own TPM reads: a boot request (then
//! `BootRequest::parse`, as the server does), the evidence, the vTPM quote or a status
//! (then `VtpmQuote::parse`), the status, stopping at the first error. The firmware's side is hostile (the tunnel
//! proves nothing about it before the quote).
//!
//! Input: byte 0 sets the size of each read the stream answers (1..=255 bytes; 0:
//! everything asked), byte 1 makes every n-th read (`b & 7`, 0 or 1: none) fail with
//! `Interrupted` first (which `read_exact` retries) and, with bit 7, the stream end
//! with a timeout instead of a clean end of file; the rest is what the peer sent.
//! Seeds: the firmware's frames of a real exchange (`frame_stream`'s `valid-exchange`),
//! cut short, of unknown and unexpected types, and oversize.
//!
//! Asserts: a frame read has one of the expected types and a length within that type's limit,
//! is exactly the frame's bytes, and consumed exactly its header and payload; a bad
//! header (unknown type, over the limit, another type than expected) is refused from
//! its 5 bytes alone: nothing more is read, and nothing is allocated for its declared
//! length (the largest allocation during a refused read is small, during any read
//! within the expected type's limit); an I/O error means the stream ended or failed
//! (`Interrupted` never surfaces); an accepted boot request re-encodes to its payload.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{ErrorKind, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use tvp_boot_protocol::vtpm::VtpmQuote;
use tvp_boot_protocol::{
    frame_header, max_payload, parse_frame_header, BootRequest, MsgType, FRAME_HEADER_LEN,
};
use tvp_boot_server::protocol::{read_frame_of, FrameError};

/// The system allocator, recording the largest single request since the last reset.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// What a refused read may allocate (an `io::Error`, a message): nothing near a
/// payload's size.
const SMALL: usize = 256;

/// The peer's side of the tunnel: `bytes`, in reads of at most `chunk`, every
/// `interrupt`-th read failing with `Interrupted` first, ending in EOF or a timeout.
struct Peer<'a> {
    bytes: &'a [u8],
    at: usize,
    chunk: usize,
    interrupt: u8,
    reads: u8,
    timeout_at_end: bool,
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.interrupt != 0 {
            self.reads = self.reads.wrapping_add(1);
            if self.reads.is_multiple_of(self.interrupt) {
                return Err(ErrorKind::Interrupted.into());
            }
        }
        let left = &self.bytes[self.at..];
        if left.is_empty() && !buf.is_empty() && self.timeout_at_end {
            return Err(ErrorKind::TimedOut.into());
        }
        let n = buf.len().min(left.len()).min(self.chunk);
        buf[..n].copy_from_slice(&left[..n]);
        self.at += n;
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[chunk, mode], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut peer = Peer {
        bytes: stream,
        at: 0,
        chunk: if chunk == 0 {
            usize::MAX
        } else {
            usize::from(chunk)
        },
        // Every read interrupted would never end (`read_exact` retries): 1 means none.
        interrupt: if mode & 7 == 1 { 0 } else { mode & 7 },
        reads: 0,
        timeout_at_end: mode & 0x80 != 0,
    };
    let steps: [&[MsgType]; 4] = [
        &[MsgType::BootRequest],
        &[MsgType::Evidence],
        &[MsgType::VtpmQuote, MsgType::Status],
        &[MsgType::Status],
    ];
    for expected in steps {
        let start = peer.at;
        LARGEST.store(0, Ordering::Relaxed);
        let limit = expected.iter().map(|&t| max_payload(t)).max().unwrap();
        let result = read_frame_of(&mut peer, expected);
        let largest = LARGEST.load(Ordering::Relaxed);
        let consumed = peer.at - start;
        let sent = &stream[start..];
        match result {
            Ok((got, payload)) => {
                assert!(expected.contains(&got));
                assert!(payload.len() <= max_payload(got));
                assert_eq!(consumed, FRAME_HEADER_LEN + payload.len());
                let header = frame_header(got, payload.len()).unwrap();
                assert_eq!(sent[..FRAME_HEADER_LEN], header, "not the frame's header");
                assert_eq!(
                    sent[FRAME_HEADER_LEN..consumed],
                    payload[..],
                    "not the frame's payload"
                );
                assert!(largest <= max_payload(got).max(SMALL));
                if got == MsgType::BootRequest {
                    if let Ok(req) = BootRequest::parse(&payload) {
                        let mut out = vec![0u8; payload.len()];
                        let n = req.encode(&mut out).unwrap();
                        assert_eq!(out[..n], payload[..], "boot request does not re-encode");
                    }
                }
                if got == MsgType::VtpmQuote {
                    if let Ok(q) = VtpmQuote::parse(&payload) {
                        let mut out = vec![0u8; payload.len()];
                        let n = q.encode(&mut out).unwrap();
                        assert_eq!(out[..n], payload[..], "vTPM quote does not re-encode");
                    }
                }
            }
            Err(FrameError::Protocol(e)) => {
                assert_eq!(consumed, FRAME_HEADER_LEN, "read past a refused header");
                let h = sent.first_chunk::<FRAME_HEADER_LEN>().unwrap();
                assert_eq!(parse_frame_header(h), Err(e));
                assert!(
                    largest <= SMALL,
                    "{largest} bytes allocated for a refused frame"
                );
                return;
            }
            Err(FrameError::Unexpected { expected: e, got }) => {
                assert_eq!(e, expected[0]);
                assert_eq!(consumed, FRAME_HEADER_LEN, "read past a refused header");
                let h = sent.first_chunk::<FRAME_HEADER_LEN>().unwrap();
                assert_eq!(parse_frame_header(h).map(|h| h.msg), Ok(got));
                assert!(!expected.contains(&got));
                assert!(
                    largest <= SMALL,
                    "{largest} bytes allocated for a refused frame"
                );
                return;
            }
            Err(FrameError::Io(e)) => {
                assert_ne!(e.kind(), ErrorKind::Interrupted, "Interrupted surfaced");
                assert_eq!(peer.at, stream.len(), "I/O error before the stream ended");
                if let Some(h) = sent.first_chunk::<FRAME_HEADER_LEN>() {
                    // A complete header: it was valid and of the expected type, and
                    // what it declared did not arrive.
                    let h = parse_frame_header(h).unwrap();
                    assert!(expected.contains(&h.msg));
                    assert!(sent.len() < FRAME_HEADER_LEN + h.len);
                    assert!(largest <= limit.max(SMALL));
                } else {
                    assert!(largest <= SMALL, "{largest} bytes allocated for no header");
                }
                return;
            }
        }
    }
});
