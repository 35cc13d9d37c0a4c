//! The attestation mailbox: a reserved guest-physical region
//! ([`crate::layout::MAILBOX_GPA`], [`crate::layout::MAILBOX_SIZE`]) and a doorbell port
//! ([`crate::ports::MAILBOX_DOORBELL_PORT`]).
//!
//! The guest writes a request block at offset [`REQUEST_OFFSET`] and writes any value to
//! the doorbell. The vCPU is held in the doorbell exit until the platform has written the
//! response block at [`RESPONSE_OFFSET`]; when the `out` instruction retires the response
//! is complete.
//!
//! Request block (at offset 0, at most [`REQUEST_MAX`] bytes):
//! `magic "TVPQ" (4) | abi_version u16 | command u16 | payload_len u32 | reserved u32 = 0 | payload`
//!
//! Response block (at offset 0x1000):
//! `magic "TVPR" (4) | abi_version u16 | command u16 (echo, 0 if unparsable) | status u32 |
//!  payload_len u32 | sequence u32 | detail u32 | reserved 8 | payload`

use crate::layout::MAILBOX_SIZE;
use crate::{rd_u16, rd_u32, wr_u16, wr_u32};

/// Mailbox ABI version.
pub const MAILBOX_ABI_VERSION: u16 = 1;
/// Request magic, "TVPQ".
pub const REQUEST_MAGIC: [u8; 4] = *b"TVPQ";
/// Response magic, "TVPR".
pub const RESPONSE_MAGIC: [u8; 4] = *b"TVPR";
/// Offset of the request block in the mailbox.
pub const REQUEST_OFFSET: usize = 0;
/// Size of the request block: the platform copies exactly this many bytes, once.
pub const REQUEST_MAX: usize = 0x1000;
/// Size of the request header.
pub const REQUEST_HEADER_LEN: usize = 16;
/// Largest request payload.
pub const REQUEST_PAYLOAD_MAX: usize = REQUEST_MAX - REQUEST_HEADER_LEN;
/// Offset of the response block in the mailbox.
pub const RESPONSE_OFFSET: usize = 0x1000;
/// Size of the response header.
pub const RESPONSE_HEADER_LEN: usize = 32;
/// Largest response payload (the evidence must fit here).
pub const RESPONSE_PAYLOAD_MAX: usize = MAILBOX_SIZE - RESPONSE_OFFSET - RESPONSE_HEADER_LEN;
/// Size of a tunnel measurement and of a handover digest.
pub const DIGEST_LEN: usize = 32;
/// Shortest quote nonce.
pub const NONCE_MIN: usize = 8;
/// Longest quote nonce: the same limit tvpd applies to every quote (qualifying data
/// of at most a SHA-256 digest).
pub const NONCE_MAX: usize = 32;
/// Size of the GET_VERSION response payload.
pub const VERSION_RESPONSE_LEN: usize = 16;

/// Mailbox commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Command {
    /// Query the ABI version and limits; payload empty.
    GetVersion = 1,
    /// The TLS tunnel is up; payload = 32-byte tunnel measurement (extended into PCR 16).
    TunnelEstablished = 2,
    /// Quote request; payload = nonce of `NONCE_MIN..=NONCE_MAX` bytes; response = evidence.
    QuoteRequest = 3,
    /// The firmware hands over; payload = 32-byte digest of what it is about to run.
    Handover = 4,
    /// The boot failed; payload = u32 reason code.
    BootFailed = 5,
    /// The firmware's own measured digest (for the VM's TPM); payload empty; response
    /// = the 32-byte SHA-256 of the firmware ELF file as the platform measured it
    /// (PCR 23's `firmware-image` event).
    GetFirmwareDigest = 6,
}

impl Command {
    /// The command with this number, if any.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Command::GetVersion,
            2 => Command::TunnelEstablished,
            3 => Command::QuoteRequest,
            4 => Command::Handover,
            5 => Command::BootFailed,
            6 => Command::GetFirmwareDigest,
            _ => return None,
        })
    }
}

/// Response status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Done; the payload (if any) is valid.
    Ok = 0,
    /// The request magic is not "TVPQ".
    BadMagic = 1,
    /// The request's ABI version is not supported.
    BadVersion = 2,
    /// The command number is unknown.
    UnknownCommand = 3,
    /// The payload length is wrong for the command or exceeds the request block.
    BadLength = 4,
    /// A reserved field is not zero.
    BadField = 5,
    /// The command is not allowed in the current state (quote before tunnel, second
    /// tunnel measurement, handover before tunnel).
    OutOfOrder = 6,
    /// The mailbox is closed (after handover or boot failure); nothing is accepted.
    Closed = 7,
    /// The platform's answer does not fit the response area.
    ResponseTooLarge = 8,
    /// The platform refused the request; `detail` carries its code.
    PlatformRefused = 9,
    /// The platform did not answer in time or is gone.
    PlatformUnavailable = 10,
    /// Too many requests of this kind.
    RateLimited = 11,
}

impl Status {
    /// The status with this number, if any.
    pub fn from_u32(v: u32) -> Option<Self> {
        use Status::*;
        [
            Ok,
            BadMagic,
            BadVersion,
            UnknownCommand,
            BadLength,
            BadField,
            OutOfOrder,
            Closed,
            ResponseTooLarge,
            PlatformRefused,
            PlatformUnavailable,
            RateLimited,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }
}

/// A parsed request; borrows the platform's private copy of the request block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// [`Command::GetVersion`].
    GetVersion,
    /// [`Command::TunnelEstablished`].
    TunnelEstablished([u8; DIGEST_LEN]),
    /// [`Command::QuoteRequest`] with its nonce.
    QuoteRequest(&'a [u8]),
    /// [`Command::Handover`].
    Handover([u8; DIGEST_LEN]),
    /// [`Command::BootFailed`] with its reason code.
    BootFailed(u32),
    /// [`Command::GetFirmwareDigest`].
    GetFirmwareDigest,
}

impl Request<'_> {
    /// The command of this request.
    pub fn command(&self) -> Command {
        match self {
            Request::GetVersion => Command::GetVersion,
            Request::TunnelEstablished(_) => Command::TunnelEstablished,
            Request::QuoteRequest(_) => Command::QuoteRequest,
            Request::Handover(_) => Command::Handover,
            Request::BootFailed(_) => Command::BootFailed,
            Request::GetFirmwareDigest => Command::GetFirmwareDigest,
        }
    }
}

/// A rejected request: the status to answer and the command number to echo (0 when the
/// header itself was invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// Status to answer.
    pub status: Status,
    /// Command number to echo.
    pub command: u16,
}

/// Parses a request block (the platform's private copy). Checks magic, version, the
/// reserved word, the command and the exact payload length for the command.
pub fn parse_request(block: &[u8; REQUEST_MAX]) -> Result<Request<'_>, Rejection> {
    let reject = |status, command| Rejection { status, command };
    if block[0..4] != REQUEST_MAGIC {
        return Err(reject(Status::BadMagic, 0));
    }
    if rd_u16(block, 4) != MAILBOX_ABI_VERSION {
        return Err(reject(Status::BadVersion, 0));
    }
    let cmd_raw = rd_u16(block, 6);
    let len = rd_u32(block, 8) as usize;
    if rd_u32(block, 12) != 0 {
        return Err(reject(Status::BadField, cmd_raw));
    }
    let Some(cmd) = Command::from_u16(cmd_raw) else {
        return Err(reject(Status::UnknownCommand, cmd_raw));
    };
    if len > REQUEST_PAYLOAD_MAX {
        return Err(reject(Status::BadLength, cmd_raw));
    }
    let payload = &block[REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + len];
    let digest = |p: &[u8]| -> Result<[u8; DIGEST_LEN], Rejection> {
        <[u8; DIGEST_LEN]>::try_from(p).map_err(|_| reject(Status::BadLength, cmd_raw))
    };
    Ok(match cmd {
        Command::GetVersion if len == 0 => Request::GetVersion,
        Command::TunnelEstablished => Request::TunnelEstablished(digest(payload)?),
        Command::QuoteRequest if (NONCE_MIN..=NONCE_MAX).contains(&len) => {
            Request::QuoteRequest(payload)
        }
        Command::Handover => Request::Handover(digest(payload)?),
        Command::BootFailed if len == 4 => Request::BootFailed(rd_u32(payload, 0)),
        Command::GetFirmwareDigest if len == 0 => Request::GetFirmwareDigest,
        _ => return Err(reject(Status::BadLength, cmd_raw)),
    })
}

/// Encodes a request block (for the firmware and tests). Returns the number of bytes
/// used, or `None` if `payload` exceeds [`REQUEST_PAYLOAD_MAX`] or `out` is too short.
pub fn encode_request(command: u16, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let n = REQUEST_HEADER_LEN.checked_add(payload.len())?;
    if payload.len() > REQUEST_PAYLOAD_MAX || out.len() < n {
        return None;
    }
    out[0..4].copy_from_slice(&REQUEST_MAGIC);
    wr_u16(out, 4, MAILBOX_ABI_VERSION);
    wr_u16(out, 6, command);
    wr_u32(out, 8, payload.len() as u32);
    wr_u32(out, 12, 0);
    out[REQUEST_HEADER_LEN..n].copy_from_slice(payload);
    Some(n)
}

/// Encodes a response header.
pub fn encode_response_header(
    command: u16,
    status: Status,
    payload_len: u32,
    sequence: u32,
    detail: u32,
) -> [u8; RESPONSE_HEADER_LEN] {
    let mut h = [0u8; RESPONSE_HEADER_LEN];
    h[0..4].copy_from_slice(&RESPONSE_MAGIC);
    wr_u16(&mut h, 4, MAILBOX_ABI_VERSION);
    wr_u16(&mut h, 6, command);
    wr_u32(&mut h, 8, status as u32);
    wr_u32(&mut h, 12, payload_len);
    wr_u32(&mut h, 16, sequence);
    wr_u32(&mut h, 20, detail);
    h
}

/// A response header as the guest reads it back (see [`encode_response_header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Command echoed (0 if the request header was unparsable or the mailbox closed).
    pub command: u16,
    /// Raw status; [`Status::from_u32`] names it.
    pub status: u32,
    /// Payload length, at most [`RESPONSE_PAYLOAD_MAX`].
    pub payload_len: u32,
    /// Doorbell count.
    pub sequence: u32,
    /// The platform's refusal code, or the evidence size for `RESPONSE_TOO_LARGE`.
    pub detail: u32,
}

/// Parses a response header (for the firmware). `None` if the magic or version is
/// wrong or the payload length exceeds [`RESPONSE_PAYLOAD_MAX`].
pub fn parse_response_header(h: &[u8; RESPONSE_HEADER_LEN]) -> Option<ResponseHeader> {
    if h[0..4] != RESPONSE_MAGIC || rd_u16(h, 4) != MAILBOX_ABI_VERSION {
        return None;
    }
    let payload_len = rd_u32(h, 12);
    if payload_len as usize > RESPONSE_PAYLOAD_MAX {
        return None;
    }
    Some(ResponseHeader {
        command: rd_u16(h, 6),
        status: rd_u32(h, 8),
        payload_len,
        sequence: rd_u32(h, 16),
        detail: rd_u32(h, 20),
    })
}

/// The GET_VERSION response payload: `abi_version u16 | reserved u16 | request_max u32 |
/// response_payload_max u32 | tsc_khz u32`. `tsc_khz` is the guest TSC's frequency as
/// the hypervisor runs it (0 = unknown): the firmware's clock, and so every timeout it
/// sets, depends on it (CPUID does not always carry it, e.g. under nested KVM).
pub fn version_payload(tsc_khz: u32) -> [u8; VERSION_RESPONSE_LEN] {
    let mut p = [0u8; VERSION_RESPONSE_LEN];
    wr_u16(&mut p, 0, MAILBOX_ABI_VERSION);
    wr_u32(&mut p, 4, REQUEST_MAX as u32);
    wr_u32(&mut p, 8, RESPONSE_PAYLOAD_MAX as u32);
    wr_u32(&mut p, 12, tsc_khz);
    p
}

/// The TSC frequency (kHz) of a GET_VERSION response payload; `None` if unknown (0).
pub fn version_tsc_khz(p: &[u8; VERSION_RESPONSE_LEN]) -> Option<u32> {
    Some(rd_u32(p, 12)).filter(|&k| k != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cmd: u16, payload: &[u8]) -> [u8; REQUEST_MAX] {
        let mut b = [0u8; REQUEST_MAX];
        encode_request(cmd, payload, &mut b).unwrap();
        b
    }

    #[test]
    fn the_version_payload_carries_the_tsc_frequency() {
        let p = version_payload(2_596_130);
        assert_eq!(rd_u16(&p, 0), MAILBOX_ABI_VERSION);
        assert_eq!(version_tsc_khz(&p), Some(2_596_130));
        assert_eq!(version_tsc_khz(&version_payload(0)), None);
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(parse_request(&block(1, &[])), Ok(Request::GetVersion));
        assert_eq!(
            parse_request(&block(2, &[9; 32])),
            Ok(Request::TunnelEstablished([9; 32]))
        );
        let b = block(3, &[1; 16]);
        assert_eq!(parse_request(&b), Ok(Request::QuoteRequest(&[1; 16])));
        assert_eq!(
            parse_request(&block(4, &[3; 32])),
            Ok(Request::Handover([3; 32]))
        );
        assert_eq!(
            parse_request(&block(5, &7u32.to_le_bytes())),
            Ok(Request::BootFailed(7))
        );
        assert_eq!(
            parse_request(&block(6, &[])),
            Ok(Request::GetFirmwareDigest)
        );
        assert_eq!(
            parse_request(&block(6, &[0; 4])).map_err(|r| r.status),
            Err(Status::BadLength)
        );
    }

    #[test]
    fn response_header_roundtrips() {
        let h = encode_response_header(3, Status::PlatformRefused, 12, 7, 99);
        let r = parse_response_header(&h).unwrap();
        assert_eq!(
            (r.command, r.payload_len, r.sequence, r.detail),
            (3, 12, 7, 99)
        );
        assert_eq!(Status::from_u32(r.status), Some(Status::PlatformRefused));
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(parse_response_header(&bad), None);
        let big = encode_response_header(3, Status::Ok, RESPONSE_PAYLOAD_MAX as u32 + 1, 1, 0);
        assert_eq!(parse_response_header(&big), None);
        assert_eq!(Status::from_u32(12), None);
    }

    #[test]
    fn rejects_malformed() {
        let st = |b: &[u8; REQUEST_MAX]| parse_request(b).unwrap_err().status;
        assert_eq!(st(&[0; REQUEST_MAX]), Status::BadMagic);
        assert_eq!(st(&block(9, &[])), Status::UnknownCommand);
        assert_eq!(st(&block(2, &[0; 31])), Status::BadLength);
        assert_eq!(st(&block(3, &[0; 33])), Status::BadLength);
        assert_eq!(st(&block(3, &[0; 7])), Status::BadLength);
        assert!(parse_request(&block(3, &[0; 32])).is_ok());
        assert_eq!(st(&block(1, &[0])), Status::BadLength);
        let mut b = block(1, &[]);
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(st(&b), Status::BadLength);
        b = block(1, &[]);
        b[12] = 1;
        assert_eq!(st(&b), Status::BadField);
        b = block(1, &[]);
        b[4] = 2;
        assert_eq!(st(&b), Status::BadVersion);
    }
}
