//! The boot protocol between the tvp firmware and the tenant's boot server, version 1
//! (`docs/boot-protocol.md`). `no_std` and allocation-free: the firmware and the boot
//! server both use these definitions.
//!
//! Inside the TLS 1.3 tunnel both sides exchange frames:
//! `type u8 | length u32 (little endian) | payload` with `length` at most
//! [`max_payload`]`(type)`. The exchange is fixed:
//!
//! 1. firmware → server [`MsgType::BootRequest`] ([`BootRequest`]);
//! 2. server → firmware [`MsgType::AttestRequest`] (a nonce) or [`MsgType::Refused`];
//! 3. firmware → server [`MsgType::Evidence`] (tvpd's evidence JSON, as the mailbox
//!    returned it), then, when the configuration page names a TPM of the VM's own,
//!    [`MsgType::VtpmQuote`] ([`vtpm::VtpmQuote`]: that TPM's quote of PCRs 0 and 1
//!    over [`vtpm::qualifying_data`]);
//! 4. server → firmware [`MsgType::Workload`] (a [`signed`] workload) or
//!    [`MsgType::Refused`];
//! 5. firmware → server [`MsgType::Status`]: 0 = verified, handing over; else the
//!    firmware's boot-failure reason code (e.g. bad signature).
#![no_std]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(test)]
extern crate std;

pub mod elf;
pub mod linux;
pub mod signed;
pub mod vtpm;

/// Protocol version carried in the boot request.
pub const PROTOCOL_VERSION: u16 = 1;
/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 5;
/// Size of the configuration page carried in the boot request.
pub const CONFIG_PAGE_LEN: usize = 4096;
/// Longest authentication code U.
pub const AUTH_CODE_MAX: usize = 64;
/// Longest firmware version string.
pub const FIRMWARE_VERSION_MAX: usize = 32;
/// Size of the attestation nonce the boot server sends.
pub const NONCE_LEN: usize = 32;
/// Largest evidence (the mailbox's response payload limit).
pub const EVIDENCE_MAX: usize = 0xf000;
/// Largest signed workload the protocol carries (1 GiB). A VM takes at most what its
/// workload window holds ([`workload_capacity`]); both ends check that before the
/// transfer.
pub const WORKLOAD_MAX: usize = 1 << 30;
/// Guest-physical start of the workload window (the firmware's heap ends here); the
/// window ends at the VM's image, or the end of its RAM.
pub const WORKLOAD_WINDOW_BASE: u64 = 0x0200_0000;

/// The largest signed workload (Workload frame payload) a VM whose workload window ends
/// at `window_end` can take: the whole window, where the firmware stages the container
/// (the loaded image must then fit below it), at most [`WORKLOAD_MAX`].
pub fn workload_capacity(window_end: u64) -> u64 {
    window_end
        .saturating_sub(WORKLOAD_WINDOW_BASE)
        .min(WORKLOAD_MAX as u64)
}
/// Longest refusal reason.
pub const REASON_MAX: usize = 256;

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// Firmware → server: U, I, firmware version, configuration page.
    BootRequest = 1,
    /// Server → firmware: attestation request, payload = [`NONCE_LEN`]-byte nonce.
    AttestRequest = 2,
    /// Firmware → server: evidence JSON from the platform.
    Evidence = 3,
    /// Server → firmware: the signed workload.
    Workload = 4,
    /// Server → firmware: refusal, payload = reason code (ASCII, e.g. `reused-auth-code`).
    Refused = 5,
    /// Firmware → server: the outcome of the delivery, payload = u32 (little endian):
    /// [`STATUS_HANDOVER`] or the firmware's boot-failure reason code.
    Status = 6,
    /// Firmware → server, right after the Evidence and only when the configuration
    /// page names a TPM: the VM's TPM's AK, quote and signature ([`vtpm::VtpmQuote`]).
    VtpmQuote = 7,
}

/// [`MsgType::Status`] value: the workload verified and the firmware hands over.
pub const STATUS_HANDOVER: u32 = 0;

impl MsgType {
    /// The type with this number.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => MsgType::BootRequest,
            2 => MsgType::AttestRequest,
            3 => MsgType::Evidence,
            4 => MsgType::Workload,
            5 => MsgType::Refused,
            6 => MsgType::Status,
            7 => MsgType::VtpmQuote,
            _ => return None,
        })
    }
}

/// Largest payload a frame of type `t` may carry.
pub fn max_payload(t: MsgType) -> usize {
    match t {
        MsgType::BootRequest => {
            2 + 1 + AUTH_CODE_MAX + 4 + 1 + FIRMWARE_VERSION_MAX + CONFIG_PAGE_LEN
        }
        MsgType::AttestRequest => NONCE_LEN,
        MsgType::Evidence => EVIDENCE_MAX,
        MsgType::Workload => WORKLOAD_MAX,
        MsgType::Refused => REASON_MAX,
        MsgType::Status => 4,
        MsgType::VtpmQuote => vtpm::VTPM_QUOTE_MAX,
    }
}

/// Why a frame or message is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Unknown frame type.
    UnknownType(u8),
    /// Frame longer than its type allows.
    TooLong,
    /// Payload shorter than its fields, or trailing bytes.
    Truncated,
    /// A field has an invalid value (version, lengths, UTF-8).
    BadField,
}

impl core::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProtocolError::UnknownType(t) => write!(f, "unknown frame type {t}"),
            ProtocolError::TooLong => f.write_str("frame too long for its type"),
            ProtocolError::Truncated => f.write_str("truncated message"),
            ProtocolError::BadField => f.write_str("invalid field"),
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame type.
    pub msg: MsgType,
    /// The payload length (validated against [`max_payload`]).
    pub len: usize,
}

/// Encodes a frame header for `msg` with a payload of `len` bytes.
pub fn frame_header(msg: MsgType, len: usize) -> Result<[u8; FRAME_HEADER_LEN], ProtocolError> {
    if len > max_payload(msg) {
        return Err(ProtocolError::TooLong);
    }
    let l = (len as u32).to_le_bytes();
    Ok([msg as u8, l[0], l[1], l[2], l[3]])
}

/// Parses and validates a frame header.
pub fn parse_frame_header(h: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, ProtocolError> {
    let msg = MsgType::from_u8(h[0]).ok_or(ProtocolError::UnknownType(h[0]))?;
    let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > max_payload(msg) {
        return Err(ProtocolError::TooLong);
    }
    Ok(FrameHeader { msg, len })
}

/// The first frame of `buf`, the bytes received so far on a stream (what the
/// firmware's frame reader buffers): `Ok(None)` while it is incomplete; its type and
/// payload range in `buf` once complete (the frame ends at the range's end). A bad
/// header is refused as soon as its [`FRAME_HEADER_LEN`] bytes are in, before any of
/// the payload is awaited, so a reader never buffers towards a length it would refuse.
pub fn frame_at(buf: &[u8]) -> Result<Option<(MsgType, core::ops::Range<usize>)>, ProtocolError> {
    let Some(h) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let h = parse_frame_header(h)?;
    let end = FRAME_HEADER_LEN + h.len;
    Ok((buf.len() >= end).then_some((h.msg, FRAME_HEADER_LEN..end)))
}

/// The boot request: `version u16 | u_len u8 | U | I [4] | fw_len u8 | firmware version
/// (UTF-8) | configuration page [4096]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootRequest<'a> {
    /// Authentication code U.
    pub auth_code: &'a [u8],
    /// The VM's address I.
    pub vip: [u8; 4],
    /// The firmware's version.
    pub firmware_version: &'a str,
    /// The configuration page the firmware booted with (what PCR 23 measured).
    pub config_page: &'a [u8],
}

impl<'a> BootRequest<'a> {
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        2 + 1 + self.auth_code.len() + 4 + 1 + self.firmware_version.len() + CONFIG_PAGE_LEN
    }

    /// Encodes into `out`; returns the length used.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ProtocolError> {
        if self.auth_code.is_empty()
            || self.auth_code.len() > AUTH_CODE_MAX
            || self.firmware_version.len() > FIRMWARE_VERSION_MAX
            || self.config_page.len() != CONFIG_PAGE_LEN
        {
            return Err(ProtocolError::BadField);
        }
        let n = self.encoded_len();
        let out = out.get_mut(..n).ok_or(ProtocolError::TooLong)?;
        let mut w = Writer { out, at: 0 };
        w.put(&PROTOCOL_VERSION.to_le_bytes());
        w.put(&[self.auth_code.len() as u8]);
        w.put(self.auth_code);
        w.put(&self.vip);
        w.put(&[self.firmware_version.len() as u8]);
        w.put(self.firmware_version.as_bytes());
        w.put(self.config_page);
        Ok(n)
    }

    /// Parses a boot request payload.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader { p, at: 0 };
        let v = r.take(2)?;
        if u16::from_le_bytes([v[0], v[1]]) != PROTOCOL_VERSION {
            return Err(ProtocolError::BadField);
        }
        let ulen = r.take(1)?[0] as usize;
        if ulen == 0 || ulen > AUTH_CODE_MAX {
            return Err(ProtocolError::BadField);
        }
        let auth_code = r.take(ulen)?;
        let ip = r.take(4)?;
        let vip = [ip[0], ip[1], ip[2], ip[3]];
        let flen = r.take(1)?[0] as usize;
        if flen > FIRMWARE_VERSION_MAX {
            return Err(ProtocolError::BadField);
        }
        let firmware_version =
            core::str::from_utf8(r.take(flen)?).map_err(|_| ProtocolError::BadField)?;
        let config_page = r.take(CONFIG_PAGE_LEN)?;
        if r.at != p.len() {
            return Err(ProtocolError::Truncated);
        }
        Ok(BootRequest {
            auth_code,
            vip,
            firmware_version,
            config_page,
        })
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    /// Callers size `out` exactly first, so this never runs past it.
    fn put(&mut self, b: &[u8]) {
        if let Some(dst) = self.out.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }
}

struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self.at.checked_add(n).ok_or(ProtocolError::Truncated)?;
        let s = self.p.get(self.at..end).ok_or(ProtocolError::Truncated)?;
        self.at = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_request_round_trip_and_rejects() {
        let page = [7u8; CONFIG_PAGE_LEN];
        let r = BootRequest {
            auth_code: b"U-1",
            vip: [10, 0, 0, 2],
            firmware_version: "0.1.0",
            config_page: &page,
        };
        let mut buf = [0u8; 5000];
        let n = r.encode(&mut buf).unwrap();
        assert_eq!(BootRequest::parse(&buf[..n]), Ok(r));
        assert_eq!(
            BootRequest::parse(&buf[..n - 1]),
            Err(ProtocolError::Truncated)
        );
        let mut long = buf;
        assert_eq!(
            BootRequest::parse(&long[..n + 1]),
            Err(ProtocolError::Truncated)
        );
        long[0] = 2;
        assert_eq!(BootRequest::parse(&long[..n]), Err(ProtocolError::BadField));
        let mut zero = buf;
        zero[2] = 0;
        assert_eq!(BootRequest::parse(&zero[..n]), Err(ProtocolError::BadField));
        assert!(n <= max_payload(MsgType::BootRequest));
    }

    #[test]
    fn frame_at_waits_for_whole_frames_and_refuses_bad_headers_first() {
        let mut s = std::vec::Vec::new();
        s.extend_from_slice(&frame_header(MsgType::Status, 4).unwrap());
        s.extend_from_slice(&[0, 0, 0, 0, 9]);
        assert_eq!(frame_at(&s[..4]), Ok(None));
        assert_eq!(frame_at(&s[..8]), Ok(None));
        assert_eq!(frame_at(&s[..9]), Ok(Some((MsgType::Status, 5..9))));
        assert_eq!(frame_at(&s), Ok(Some((MsgType::Status, 5..9))));
        // An oversize workload: refused from the header, no payload awaited.
        assert_eq!(
            frame_at(&[4, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::TooLong)
        );
        assert_eq!(
            frame_at(&[9, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownType(9))
        );
        assert_eq!(
            frame_at(&[8, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownType(8))
        );
    }

    #[test]
    fn workload_capacity_is_the_window_above_32_mib_at_most_1_gib() {
        assert_eq!(workload_capacity(64 << 20), 32 << 20);
        assert_eq!(workload_capacity(32 << 20), 0);
        assert_eq!(workload_capacity(16 << 20), 0, "RAM below the window");
        assert_eq!(workload_capacity(8 << 30), WORKLOAD_MAX as u64);
        // The frame layer still refuses more than the protocol's maximum.
        let over = (WORKLOAD_MAX as u32 + 1).to_le_bytes();
        assert_eq!(
            frame_at(&[4, over[0], over[1], over[2], over[3]]),
            Err(ProtocolError::TooLong)
        );
    }

    #[test]
    fn frame_headers_are_bounded_per_type() {
        let h = frame_header(MsgType::Evidence, 100).unwrap();
        assert_eq!(
            parse_frame_header(&h),
            Ok(FrameHeader {
                msg: MsgType::Evidence,
                len: 100
            })
        );
        assert_eq!(
            frame_header(MsgType::AttestRequest, NONCE_LEN + 1),
            Err(ProtocolError::TooLong)
        );
        assert_eq!(
            parse_frame_header(&[2, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::TooLong)
        );
        assert_eq!(
            parse_frame_header(&[9, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownType(9))
        );
    }
}
