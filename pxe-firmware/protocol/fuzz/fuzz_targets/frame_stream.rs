//! The frame reader of the boot protocol over a byte stream (`frame_at`, which the
//! firmware's `FrameReader` buffers the TLS tunnel's plaintext through): partial
//! frames, several frames in one read, oversize and unknown headers. The first byte
//! picks the input's meaning:
//!
//! - even: a list of valid frames (type, length, payload taken from the input). Their
//!   stream, split into two reads at every point (in a long stream:
//!   around the first 8 frame boundaries and at 32 more) and read one byte at a time, reads
//!   back exactly the same frames, nothing left over.
//! - odd: a hostile stream delivered in reads of 1..=16 bytes (byte 1). Reading stops
//!   at the first bad header, refused from its 5 header bytes alone (so before the
//!   reader waits for or buffers any of a refused frame's payload); each frame read
//!   re-encodes to its header, with a length within its type's limit; a frame still
//!   waiting for its payload declared a length within that limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_boot_protocol::{
    frame_at, frame_header, max_payload, MsgType, ProtocolError, FRAME_HEADER_LEN,
};

type Frame = (MsgType, Vec<u8>);

/// The firmware's `FrameReader` without the tunnel: a buffer of what arrived.
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// Adds one read's bytes and takes every complete frame.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), ProtocolError> {
        self.buf.extend_from_slice(bytes);
        while let Some((msg, payload)) = frame_at(&self.buf)? {
            assert_eq!(payload.start, FRAME_HEADER_LEN);
            out.push((msg, self.buf[payload.clone()].to_vec()));
            self.buf.drain(..payload.end);
        }
        Ok(())
    }
}

/// Valid frames described by `data`: type, 16-bit length (cut to the type's limit and
/// to what is left), payload; at most 64 (the reader, like the firmware's, moves the
/// buffer after each frame: thousands of empty frames would only cost time).
fn frames_of(mut data: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let ([t, l0, l1, rest @ ..], true) = (data, frames.len() < 64) {
        let msg = MsgType::from_u8(t % 6 + 1).unwrap();
        let len = (u16::from_le_bytes([*l0, *l1]) as usize)
            .min(max_payload(msg))
            .min(rest.len());
        frames.push((msg, rest[..len].to_vec()));
        data = &rest[len..];
    }
    frames
}

fn valid_stream(data: &[u8]) {
    let frames = frames_of(data);
    let mut stream = Vec::new();
    for (msg, p) in &frames {
        stream.extend_from_slice(&frame_header(*msg, p.len()).unwrap());
        stream.extend_from_slice(p);
    }
    // Every split point of a short stream; in a long one (the cost stays linear), the
    // points within 6 bytes of the first 8 frame boundaries (partial headers) and 32
    // spread evenly.
    let mut splits: Vec<usize> = if stream.len() <= 256 {
        (0..=stream.len()).collect()
    } else {
        (0..=32).map(|i| i * stream.len() / 32).collect()
    };
    if stream.len() > 256 {
        let mut b: usize = 0;
        for (_, p) in frames.iter().take(8) {
            splits.extend(b.saturating_sub(6)..=(b + 6).min(stream.len()));
            b += FRAME_HEADER_LEN + p.len();
        }
    }
    for k in splits {
        let (mut r, mut got) = (Reader::default(), Vec::new());
        r.feed(&stream[..k], &mut got).unwrap();
        r.feed(&stream[k..], &mut got).unwrap();
        assert_eq!(got, frames, "split at {k}");
        assert!(r.buf.is_empty());
    }
    let (mut r, mut got) = (Reader::default(), Vec::new());
    for b in &stream {
        r.feed(std::slice::from_ref(b), &mut got).unwrap();
    }
    assert_eq!(got, frames, "byte at a time");
}

fn hostile_stream(chunk: usize, stream: &[u8]) {
    let (mut r, mut got) = (Reader::default(), Vec::new());
    let mut sent = 0;
    for c in stream.chunks(chunk) {
        sent += c.len();
        if let Err(e) = r.feed(c, &mut got) {
            let h: [u8; FRAME_HEADER_LEN] = r.buf[..FRAME_HEADER_LEN].try_into().unwrap();
            assert_eq!(frame_at(&h), Err(e), "refusal not decided by the header");
            // Refused in the read that completed the header: no payload awaited.
            assert!(r.buf.len() < FRAME_HEADER_LEN + chunk, "refused late");
            break;
        }
    }
    let mut at = 0;
    for (msg, p) in &got {
        assert!(p.len() <= max_payload(*msg));
        let h = frame_header(*msg, p.len()).unwrap();
        assert_eq!(&stream[at..at + FRAME_HEADER_LEN], &h[..]);
        assert_eq!(
            &stream[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + p.len()],
            &p[..]
        );
        at += FRAME_HEADER_LEN + p.len();
    }
    assert!(at <= sent);
    if let Ok(None) = frame_at(&r.buf) {
        if let Some(h) = r.buf.first_chunk::<FRAME_HEADER_LEN>() {
            let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
            let msg = MsgType::from_u8(h[0]).unwrap();
            assert!(len <= max_payload(msg) && r.buf.len() < FRAME_HEADER_LEN + len);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match data {
        [mode, rest @ ..] if mode % 2 == 0 => valid_stream(rest),
        [_, chunk, rest @ ..] => hostile_stream(usize::from(chunk % 16) + 1, rest),
        _ => {}
    }
});
