//! Frames of the boot protocol (`tvp_boot_protocol`) over the TLS tunnel.

use crate::net::Net;
use crate::tls::{Tls, TlsError};
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use tvp_boot_protocol::signed::PayloadSpan;
use tvp_boot_protocol::{
    frame_at, frame_header, parse_frame_header, MsgType, ProtocolError, FRAME_HEADER_LEN,
};

/// Why a frame could not be exchanged.
#[derive(Debug)]
pub enum FrameError {
    /// The tunnel failed.
    Tls(TlsError),
    /// The boot server sent a malformed frame.
    Protocol(ProtocolError),
    /// The boot server sent a Workload where another frame was due: refused on its
    /// header, so its (up to 1 GiB) payload is never buffered on the heap.
    UnexpectedWorkload,
}

impl From<TlsError> for FrameError {
    fn from(e: TlsError) -> Self {
        FrameError::Tls(e)
    }
}

/// Sends one frame.
pub fn send(tls: &mut Tls, net: &mut Net, msg: MsgType, payload: &[u8]) -> Result<(), FrameError> {
    tls.send(net, &frame(msg, payload)?)?;
    Ok(())
}

/// Sends one frame without waiting for the boot server's acknowledgement: the last
/// frame, after the handover, when no more frames are received ([`Tls::send_unacknowledged`]).
pub fn send_last(
    tls: &mut Tls,
    net: &mut Net,
    msg: MsgType,
    payload: &[u8],
) -> Result<(), FrameError> {
    tls.send_unacknowledged(net, &frame(msg, payload)?)?;
    Ok(())
}

/// A frame: header and payload.
fn frame(msg: MsgType, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let h = frame_header(msg, payload.len()).map_err(FrameError::Protocol)?;
    let mut b = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    b.extend_from_slice(&h);
    b.extend_from_slice(payload);
    Ok(b)
}

/// What [`FrameReader::next_staged`] received.
/// The SHA-256 of a container's payload, taken as it arrived, and where that payload
/// lies in the container.
#[derive(Debug, Clone)]
pub struct StreamedDigest {
    /// The payload's byte range in the container.
    pub range: core::ops::Range<usize>,
    /// SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

pub enum Received {
    /// A frame other than the workload, on the heap.
    Frame(MsgType, Vec<u8>),
    /// The workload container, in guest RAM at the top of the workload window, and
    /// its payload's SHA-256 computed while it arrived (with the payload's range in
    /// the container; `None` when the container's header announced no acceptable
    /// payload, which the signature check then refuses).
    Workload(&'static mut [u8], Option<StreamedDigest>),
    /// A workload of `len` bytes was announced; the window holds `capacity`. None of
    /// it was read.
    TooLarge {
        /// The announced length.
        len: usize,
        /// What the window holds.
        capacity: u64,
    },
}

/// Reassembles frames from the tunnel's plaintext.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// When the first byte of the frame being read arrived (TSC milliseconds).
    started_ms: u64,
}

impl FrameReader {
    /// The next frame (type and payload), bounded by its type's limit; a Workload is
    /// refused here (only [`Self::next_staged`] takes one).
    pub fn next(&mut self, tls: &mut Tls, net: &mut Net) -> Result<(MsgType, Vec<u8>), FrameError> {
        if !self.buf.is_empty() {
            self.started_ms = crate::clock::now_ms();
        }
        loop {
            if let Some(h) = self.buf.first_chunk::<FRAME_HEADER_LEN>() {
                let h = parse_frame_header(h).map_err(FrameError::Protocol)?;
                if h.msg == MsgType::Workload {
                    return Err(FrameError::UnexpectedWorkload);
                }
            }
            if let Some((msg, payload)) = frame_at(&self.buf).map_err(FrameError::Protocol)? {
                let p = self.buf[payload.clone()].to_vec();
                self.buf.drain(..payload.end);
                return Ok((msg, p));
            }
            let more = tls.recv(net)?;
            if self.buf.is_empty() {
                self.started_ms = crate::clock::now_ms();
            }
            self.buf.extend_from_slice(&more);
        }
    }

    /// The next frame; a Workload frame is not buffered on the heap but written as it
    /// arrives straight to the top of the workload window `window` (guest RAM above
    /// the heap), after its announced length was checked against the window: a
    /// workload that does not fit is refused before any of it is read.
    pub fn next_staged(
        &mut self,
        tls: &mut Tls,
        net: &mut Net,
        window: core::ops::Range<u64>,
    ) -> Result<Received, FrameError> {
        if !self.buf.is_empty() {
            self.started_ms = crate::clock::now_ms();
        }
        loop {
            if let Some(h) = self.buf.first_chunk::<FRAME_HEADER_LEN>() {
                let h = parse_frame_header(h).map_err(FrameError::Protocol)?;
                if h.msg == MsgType::Workload {
                    return self.stage(tls, net, h.len, window);
                }
                if let Some((msg, payload)) = frame_at(&self.buf).map_err(FrameError::Protocol)? {
                    let p = self.buf[payload.clone()].to_vec();
                    self.buf.drain(..payload.end);
                    return Ok(Received::Frame(msg, p));
                }
            }
            let more = tls.recv(net)?;
            if self.buf.is_empty() {
                self.started_ms = crate::clock::now_ms();
            }
            self.buf.extend_from_slice(&more);
        }
    }

    /// Receives a Workload payload of `len` bytes (its header is in `buf`) into
    /// `[window.end - len, window.end)`.
    fn stage(
        &mut self,
        tls: &mut Tls,
        net: &mut Net,
        len: usize,
        window: core::ops::Range<u64>,
    ) -> Result<Received, FrameError> {
        let capacity = tvp_boot_protocol::workload_capacity(window.end)
            .min(window.end.saturating_sub(window.start));
        if len as u64 > capacity {
            return Ok(Received::TooLarge { len, capacity });
        }
        let start = window.end - len as u64;
        // SAFETY: [start, window.end) lies inside the workload window [WORKLOAD_BASE,
        // window end), RAM the stub maps user read-write (2 MiB pages to the end of
        // RAM) that neither the image, its stack nor its heap (which ends at
        // WORKLOAD_BASE) uses, and that no other reference points into; the device
        // writes only the receive buffers, which are on the heap.
        let dst: &'static mut [u8] =
            unsafe { core::slice::from_raw_parts_mut(start as *mut u8, len) };
        // The payload's digest is taken as it arrives (issue #18: no second pass over
        // the container); only the firmware writes `dst`, so it is what gets verified.
        let mut span = PayloadSpan::default();
        let mut hash = Sha256::new();
        let mut have = (self.buf.len() - FRAME_HEADER_LEN).min(len);
        dst[..have].copy_from_slice(&self.buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + have]);
        crate::profile::time(crate::profile::Phase::Digest, || {
            hash.update(span.feed(&dst[..have]))
        });
        self.buf.drain(..FRAME_HEADER_LEN + have);
        while have < len {
            let more = tls.recv(net)?;
            let n = more.len().min(len - have);
            dst[have..have + n].copy_from_slice(&more[..n]);
            crate::profile::time(crate::profile::Phase::Digest, || {
                hash.update(span.feed(&more[..n]))
            });
            have += n;
            self.buf.extend_from_slice(&more[n..]);
        }
        let digest = span.range().map(|range| StreamedDigest {
            range,
            sha256: hash.finalize().into(),
        });
        Ok(Received::Workload(dst, digest))
    }

    /// When the first byte of the last frame returned arrived (TSC milliseconds).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }
}
