//! The attestation mailbox: the only place the VMM reads guest memory.
//!
//! On each doorbell the request block is copied exactly once into a private buffer,
//! parsed by `tvp_abi::mailbox::parse_request`, checked against the mailbox state, and
//! only then (for the commands that need `tvpd`) turned into a typed channel message.
//! Every outcome is a status code in the response block; nothing here panics on guest
//! input.

use std::time::Duration;
use tvp_abi::layout::MAILBOX_GPA;
use tvp_abi::mailbox::{
    encode_response_header, parse_request, version_payload, Request, Status, REQUEST_MAX,
    REQUEST_OFFSET, RESPONSE_HEADER_LEN, RESPONSE_OFFSET, RESPONSE_PAYLOAD_MAX,
};
use tvp_vmm_channel::VmmMessage;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Most quote requests one VM may make.
pub const QUOTE_LIMIT: u32 = 8;

/// tvpd's answer to a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAnswer {
    /// Done.
    Ack,
    /// Evidence for a quote request.
    Evidence(Vec<u8>),
    /// Refused with tvpd's code.
    Refused(u32),
    /// No answer (timeout, channel gone, standalone mode).
    Unavailable,
}

/// Where validated mailbox events go (tvpd over the channel, or a test double).
pub trait HostPort {
    /// Sends `msg` (which carries `request_id`) and waits up to `timeout` for the answer.
    fn request(&mut self, request_id: u64, msg: VmmMessage, timeout: Duration) -> HostAnswer;
}

/// Where the VM is in the attested boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxState {
    /// Before the tunnel measurement.
    Booting,
    /// The tunnel measurement was accepted; quotes are allowed.
    TunnelUp,
    /// After handover or boot failure: every request is refused.
    Closed,
}

/// The mailbox device state.
pub struct Mailbox {
    state: MailboxState,
    sequence: u32,
    next_request_id: u64,
    quotes: u32,
    handed_over: bool,
    block: Box<[u8; REQUEST_MAX]>,
    host_timeout: Duration,
    tsc_khz: u32,
    firmware_digest: [u8; 32],
}

/// The response to write: status, echoed command, payload, detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: Status,
    /// Command number echoed.
    pub command: u16,
    /// Payload.
    pub payload: Vec<u8>,
    /// tvpd's refusal code, else 0.
    pub detail: u32,
}

impl Response {
    fn status(status: Status, command: u16) -> Self {
        Response {
            status,
            command,
            payload: Vec::new(),
            detail: 0,
        }
    }
}

impl Mailbox {
    /// A mailbox in state [`MailboxState::Booting`].
    pub fn new(host_timeout: Duration) -> Self {
        Mailbox {
            state: MailboxState::Booting,
            sequence: 0,
            next_request_id: 1,
            quotes: 0,
            handed_over: false,
            block: Box::new([0u8; REQUEST_MAX]),
            host_timeout,
            tsc_khz: 0,
            firmware_digest: [0; 32],
        }
    }

    /// Tell the guest (GET_VERSION) that its TSC runs at `khz` (0 = unknown).
    pub fn with_tsc_khz(mut self, khz: u32) -> Self {
        self.tsc_khz = khz;
        self
    }

    /// Tell the guest (GET_FIRMWARE_DIGEST) the firmware's measured digest (PCR 23's
    /// `firmware-image` event), which the firmware extends into its own TPM.
    pub fn with_firmware_digest(mut self, digest: [u8; 32]) -> Self {
        self.firmware_digest = digest;
        self
    }

    /// Current state.
    pub fn state(&self) -> MailboxState {
        self.state
    }

    /// Whether tvpd acknowledged the firmware's handover to the workload (a boot
    /// failure also closes the mailbox, but is no handover).
    pub fn handed_over(&self) -> bool {
        self.handed_over
    }

    /// Handles one doorbell: copy the request once, process it, write the response.
    pub fn ring(&mut self, mem: &GuestMemoryMmap, host: &mut dyn HostPort) {
        self.sequence = self.sequence.wrapping_add(1);
        let resp = match mem.read_slice(
            &mut self.block[..],
            GuestAddress(MAILBOX_GPA + REQUEST_OFFSET as u64),
        ) {
            Ok(()) => self.process(host),
            Err(e) => {
                log::error!(error = e.to_string(); "cannot copy request block");
                Response::status(Status::BadLength, 0)
            }
        };
        if resp.status != Status::Ok && self.sequence <= 64 {
            log::info!(sequence = self.sequence, command = resp.command, status = format!("{:?}", resp.status); "request rejected");
        }
        let header = encode_response_header(
            resp.command,
            resp.status,
            resp.payload.len() as u32,
            self.sequence,
            resp.detail,
        );
        let base = MAILBOX_GPA + RESPONSE_OFFSET as u64;
        let wrote = mem
            .write_slice(
                &resp.payload,
                GuestAddress(base + RESPONSE_HEADER_LEN as u64),
            )
            .and_then(|()| mem.write_slice(&header, GuestAddress(base)));
        if let Err(e) = wrote {
            log::error!(error = e.to_string(); "cannot write response block");
        }
    }

    /// Processes the private copy of the request block.
    pub fn process(&mut self, host: &mut dyn HostPort) -> Response {
        if self.state == MailboxState::Closed {
            return Response::status(Status::Closed, 0);
        }
        let req = match parse_request(&self.block) {
            Ok(r) => r,
            Err(rej) => return Response::status(rej.status, rej.command),
        };
        let cmd = req.command() as u16;
        let id = self.next_request_id;
        match (self.state, req) {
            (_, Request::GetVersion) => Response {
                payload: version_payload(self.tsc_khz).to_vec(),
                ..Response::status(Status::Ok, cmd)
            },
            (_, Request::GetFirmwareDigest) => Response {
                payload: self.firmware_digest.to_vec(),
                ..Response::status(Status::Ok, cmd)
            },
            (MailboxState::Booting, Request::TunnelEstablished(measurement)) => {
                let answer = self.forward(
                    host,
                    VmmMessage::TunnelEstablished {
                        request_id: id,
                        measurement,
                    },
                );
                if answer == HostAnswer::Ack {
                    self.state = MailboxState::TunnelUp;
                }
                Self::ack_response(cmd, answer)
            }
            (MailboxState::TunnelUp, Request::QuoteRequest(nonce)) => {
                if self.quotes >= QUOTE_LIMIT {
                    return Response::status(Status::RateLimited, cmd);
                }
                self.quotes += 1;
                let nonce = nonce.to_vec();
                match self.forward(
                    host,
                    VmmMessage::QuoteRequest {
                        request_id: id,
                        nonce,
                    },
                ) {
                    HostAnswer::Evidence(ev) if ev.len() <= RESPONSE_PAYLOAD_MAX => Response {
                        payload: ev,
                        ..Response::status(Status::Ok, cmd)
                    },
                    HostAnswer::Evidence(ev) => Response {
                        detail: ev.len() as u32,
                        ..Response::status(Status::ResponseTooLarge, cmd)
                    },
                    // An Ack without evidence: tvpd is confused; refuse rather than
                    // answer OK with an empty payload.
                    HostAnswer::Ack => Response::status(Status::PlatformUnavailable, cmd),
                    other => Self::ack_response(cmd, other),
                }
            }
            (MailboxState::TunnelUp, Request::Handover(digest)) => {
                let answer = self.forward(
                    host,
                    VmmMessage::Handover {
                        request_id: id,
                        digest,
                    },
                );
                if answer == HostAnswer::Ack {
                    self.state = MailboxState::Closed;
                    self.handed_over = true;
                }
                Self::ack_response(cmd, answer)
            }
            (_, Request::BootFailed(reason)) => {
                self.state = MailboxState::Closed;
                let answer = self.forward(
                    host,
                    VmmMessage::BootFailed {
                        request_id: id,
                        reason,
                    },
                );
                Self::ack_response(cmd, answer)
            }
            _ => Response::status(Status::OutOfOrder, cmd),
        }
    }

    fn forward(&mut self, host: &mut dyn HostPort, msg: VmmMessage) -> HostAnswer {
        let id = self.next_request_id;
        self.next_request_id += 1;
        host.request(id, msg, self.host_timeout)
    }

    fn ack_response(cmd: u16, answer: HostAnswer) -> Response {
        match answer {
            HostAnswer::Ack => Response::status(Status::Ok, cmd),
            // Evidence for a command that expects an Ack: tvpd is confused; refuse.
            HostAnswer::Evidence(_) => Response::status(Status::PlatformUnavailable, cmd),
            HostAnswer::Refused(code) => Response {
                detail: code,
                ..Response::status(Status::PlatformRefused, cmd)
            },
            HostAnswer::Unavailable => Response::status(Status::PlatformUnavailable, cmd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvp_abi::mailbox::{encode_request, Command};

    struct FakeHost {
        seen: Vec<VmmMessage>,
        evidence: Vec<u8>,
    }

    impl HostPort for FakeHost {
        fn request(&mut self, _id: u64, msg: VmmMessage, _t: Duration) -> HostAnswer {
            let quote = matches!(msg, VmmMessage::QuoteRequest { .. });
            self.seen.push(msg);
            if quote {
                HostAnswer::Evidence(self.evidence.clone())
            } else {
                HostAnswer::Ack
            }
        }
    }

    fn req(mb: &mut Mailbox, host: &mut FakeHost, cmd: Command, payload: &[u8]) -> Status {
        mb.block.fill(0);
        encode_request(cmd as u16, payload, &mut mb.block[..]).unwrap();
        mb.process(host).status
    }

    #[test]
    fn state_machine_orders_commands() {
        let mut h = FakeHost {
            seen: vec![],
            evidence: vec![5; 100],
        };
        let mut mb = Mailbox::new(Duration::from_secs(1));
        assert_eq!(
            req(&mut mb, &mut h, Command::QuoteRequest, &[1; 16]),
            Status::OutOfOrder
        );
        assert_eq!(
            req(&mut mb, &mut h, Command::Handover, &[1; 32]),
            Status::OutOfOrder
        );
        assert_eq!(
            req(&mut mb, &mut h, Command::TunnelEstablished, &[1; 32]),
            Status::Ok
        );
        assert_eq!(
            req(&mut mb, &mut h, Command::TunnelEstablished, &[1; 32]),
            Status::OutOfOrder
        );
        assert_eq!(
            req(&mut mb, &mut h, Command::QuoteRequest, &[1; 16]),
            Status::Ok
        );
        assert_eq!(
            req(&mut mb, &mut h, Command::Handover, &[2; 32]),
            Status::Ok
        );
        assert_eq!(
            req(&mut mb, &mut h, Command::GetVersion, &[]),
            Status::Closed
        );
        assert_eq!(h.seen.len(), 3);
    }

    #[test]
    fn the_firmware_digest_is_answered_locally_until_the_mailbox_closes() {
        let mut h = FakeHost {
            seen: vec![],
            evidence: vec![],
        };
        let mut mb = Mailbox::new(Duration::from_secs(1)).with_firmware_digest([7; 32]);
        mb.block.fill(0);
        encode_request(Command::GetFirmwareDigest as u16, &[], &mut mb.block[..]).unwrap();
        let r = mb.process(&mut h);
        assert_eq!((r.status, r.payload), (Status::Ok, vec![7; 32]));
        assert!(h.seen.is_empty(), "never reaches tvpd");
        assert_eq!(
            req(&mut mb, &mut h, Command::BootFailed, &1u32.to_le_bytes()),
            Status::Ok
        );
        assert_eq!(
            req(&mut mb, &mut h, Command::GetFirmwareDigest, &[]),
            Status::Closed
        );
    }

    /// Fuzzing found (mailbox): a quote that tvpd answered with a bare Ack got status
    /// OK with an empty payload, which the firmware would take for evidence.
    #[test]
    fn quote_answered_without_evidence_is_not_ok() {
        struct AckHost;
        impl HostPort for AckHost {
            fn request(&mut self, _id: u64, _msg: VmmMessage, _t: Duration) -> HostAnswer {
                HostAnswer::Ack
            }
        }
        let mut mb = Mailbox::new(Duration::from_secs(1));
        let mut go = |cmd: Command, payload: &[u8]| {
            mb.block.fill(0);
            encode_request(cmd as u16, payload, &mut mb.block[..]).unwrap();
            mb.process(&mut AckHost)
        };
        assert_eq!(go(Command::TunnelEstablished, &[1; 32]).status, Status::Ok);
        let r = go(Command::QuoteRequest, &[1; 16]);
        assert_eq!(r.status, Status::PlatformUnavailable);
        assert!(r.payload.is_empty());
    }

    #[test]
    fn oversized_evidence_and_rate_limit() {
        let mut h = FakeHost {
            seen: vec![],
            evidence: vec![0; RESPONSE_PAYLOAD_MAX + 1],
        };
        let mut mb = Mailbox::new(Duration::from_secs(1));
        assert_eq!(
            req(&mut mb, &mut h, Command::TunnelEstablished, &[1; 32]),
            Status::Ok
        );
        assert_eq!(
            req(&mut mb, &mut h, Command::QuoteRequest, &[1; 16]),
            Status::ResponseTooLarge
        );
        for _ in 1..QUOTE_LIMIT {
            req(&mut mb, &mut h, Command::QuoteRequest, &[1; 16]);
        }
        assert_eq!(
            req(&mut mb, &mut h, Command::QuoteRequest, &[1; 16]),
            Status::RateLimited
        );
    }
}
