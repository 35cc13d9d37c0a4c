//! tvp-vmm's attestation mailbox driven by a hostile guest: a sequence of doorbells,
//! each after the guest wrote an arbitrary request block into the mailbox of a guest
//! memory image (tvp-vmm's `GuestRam`), with arbitrary answers from the host side
//! (ack, refusal, no answer, evidence of any size). Invariants beyond no panic:
//! - the device writes only the response block: every other byte of guest memory,
//!   including the request block and the configuration page, is unchanged;
//! - the response header parses, carries the doorbell count and a payload within the
//!   response area, and an OK quote response carries exactly the host's evidence;
//! - the host sees requests only in the allowed order: a quote only after an accepted
//!   tunnel measurement, at most `QUOTE_LIMIT` quotes, nonces of 8..=32 bytes, nothing
//!   after a handover or boot failure, and request ids strictly increasing.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tvp_abi::layout::{CONFIG_PAGE_GPA, MAILBOX_GPA, MAILBOX_SIZE};
use tvp_abi::mailbox::{
    parse_response_header, Status, NONCE_MAX, NONCE_MIN, REQUEST_MAX, RESPONSE_HEADER_LEN,
    RESPONSE_OFFSET, RESPONSE_PAYLOAD_MAX,
};
use tvp_vmm::mailbox::{HostAnswer, HostPort, Mailbox, QUOTE_LIMIT};
use tvp_vmm::memory::GuestRam;
use tvp_vmm_channel::VmmMessage;
use vm_memory::{Bytes, GuestAddress};

const MEM: u64 = 0x11000 + 0x20000;

#[derive(Arbitrary, Debug, Clone)]
enum Answer {
    Ack,
    Refused(u32),
    Unavailable,
    Evidence { len: u16, fill: u8, huge: bool },
}

#[derive(Arbitrary, Debug)]
struct Doorbell {
    request: Vec<u8>,
    /// Shape the request's header so that more of them parse.
    command: Option<u8>,
    answer: Answer,
}

#[derive(Default)]
struct Host {
    answer: Option<Answer>,
    last_id: u64,
    tunnel_up: bool,
    closed: bool,
    quotes: u32,
    evidence: Option<Vec<u8>>,
}

impl HostPort for Host {
    fn request(&mut self, request_id: u64, msg: VmmMessage, _t: Duration) -> HostAnswer {
        assert!(request_id > self.last_id, "request ids must increase");
        self.last_id = request_id;
        assert!(!self.closed, "request after the mailbox closed: {msg:?}");
        let answer = self.answer.clone().unwrap_or(Answer::Unavailable);
        let ack = matches!(answer, Answer::Ack);
        match &msg {
            VmmMessage::TunnelEstablished { .. } => {
                assert!(!self.tunnel_up, "second tunnel measurement forwarded");
                self.tunnel_up = ack;
            }
            VmmMessage::QuoteRequest { nonce, .. } => {
                assert!(self.tunnel_up, "quote before the tunnel measurement");
                assert!((NONCE_MIN..=NONCE_MAX).contains(&nonce.len()));
                self.quotes += 1;
                assert!(self.quotes <= QUOTE_LIMIT, "more than {QUOTE_LIMIT} quotes");
            }
            VmmMessage::Handover { .. } => {
                assert!(self.tunnel_up, "handover before the tunnel measurement");
                self.closed = ack;
            }
            VmmMessage::BootFailed { .. } => self.closed = true,
            other => panic!("the mailbox sent {other:?}"),
        }
        self.evidence = None;
        match answer {
            Answer::Ack => HostAnswer::Ack,
            Answer::Refused(c) => HostAnswer::Refused(c),
            Answer::Unavailable => HostAnswer::Unavailable,
            Answer::Evidence { len, fill, huge } => {
                let n = usize::from(len) + if huge { RESPONSE_PAYLOAD_MAX - 100 } else { 0 };
                let ev = vec![fill; n];
                self.evidence = Some(ev.clone());
                HostAnswer::Evidence(ev)
            }
        }
    }
}

/// Guest memory as the device left it, read through the host mappings (vm-memory's
/// volatile copy is slow under coverage instrumentation).
fn snapshot(ram: &GuestRam) -> Vec<u8> {
    let mut out = Vec::with_capacity(MEM as usize);
    for (p, len) in ram.host_ranges() {
        // SAFETY: each range is a live mapping of `len` bytes owned by `ram`, which
        // outlives this borrow; nothing else touches guest memory meanwhile.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, len) });
    }
    out
}

fuzz_target!(|bells: Vec<Doorbell>| {
    let ram = GuestRam::new(MEM).unwrap();
    ram.place(CONFIG_PAGE_GPA, &[0xc5; 4096]).unwrap();
    let mem = ram.mem();
    let mut mb = Mailbox::new(Duration::from_millis(1));
    let mut host = Host::default();
    let resp_lo = MAILBOX_GPA + RESPONSE_OFFSET as u64;
    let resp_hi = MAILBOX_GPA + MAILBOX_SIZE as u64;
    for (i, b) in bells.iter().take(16).enumerate() {
        let mut block = b.request.clone();
        block.truncate(REQUEST_MAX);
        if let Some(c) = b.command {
            block.resize(block.len().max(16), 0);
            block[..4].copy_from_slice(b"TVPQ");
            block[4..6].copy_from_slice(&1u16.to_le_bytes());
            block[6..8].copy_from_slice(&u16::from(c % 7).to_le_bytes());
            let len = (block.len() - 16) as u32;
            block[8..12].copy_from_slice(&len.to_le_bytes());
            block[12..16].fill(0);
        }
        mem.write_slice(&block, GuestAddress(MAILBOX_GPA)).unwrap();
        host.answer = Some(b.answer.clone());
        host.evidence = None;
        let before = snapshot(&ram);
        mb.ring(mem, &mut host);
        let after = snapshot(&ram);
        // Slice comparisons (memcmp): a byte loop here would dominate the run time.
        let (lo, hi) = (resp_lo as usize, resp_hi as usize);
        assert!(
            before[..lo] == after[..lo] && before[hi..] == after[hi..],
            "the mailbox wrote outside its response block"
        );
        let h: [u8; RESPONSE_HEADER_LEN] = after
            [resp_lo as usize..resp_lo as usize + RESPONSE_HEADER_LEN]
            .try_into()
            .unwrap();
        let r = parse_response_header(&h).expect("the response header parses");
        assert_eq!(r.sequence, i as u32 + 1);
        assert!(r.payload_len as usize <= RESPONSE_PAYLOAD_MAX);
        if r.command == 3 && r.status == Status::Ok as u32 {
            let ev = host
                .evidence
                .as_ref()
                .expect("OK quote response without evidence");
            let at = resp_lo as usize + RESPONSE_HEADER_LEN;
            assert_eq!(&after[at..at + ev.len()], &ev[..]);
            assert_eq!(r.payload_len as usize, ev.len());
        }
    }
});
