//! Frames of the boot protocol (`tvp_boot_protocol`) over the TLS tunnel.

use crate::net::Net;
use crate::tls::{Tls, TlsError};
use alloc::vec::Vec;
use tvp_boot_protocol::{frame_at, frame_header, MsgType, ProtocolError, FRAME_HEADER_LEN};

/// Why a frame could not be exchanged.
#[derive(Debug)]
pub enum FrameError {
    /// The tunnel failed.
    Tls(TlsError),
    /// The boot server sent a malformed frame.
    Protocol(ProtocolError),
}

impl From<TlsError> for FrameError {
    fn from(e: TlsError) -> Self {
        FrameError::Tls(e)
    }
}

/// Sends one frame.
pub fn send(tls: &mut Tls, net: &mut Net, msg: MsgType, payload: &[u8]) -> Result<(), FrameError> {
    let h = frame_header(msg, payload.len()).map_err(FrameError::Protocol)?;
    let mut b = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    b.extend_from_slice(&h);
    b.extend_from_slice(payload);
    tls.send(net, &b)?;
    Ok(())
}

/// Reassembles frames from the tunnel's plaintext.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// When the first byte of the frame being read arrived (TSC milliseconds).
    started_ms: u64,
}

impl FrameReader {
    /// The next frame (type and payload), bounded by its type's limit.
    pub fn next(&mut self, tls: &mut Tls, net: &mut Net) -> Result<(MsgType, Vec<u8>), FrameError> {
        if !self.buf.is_empty() {
            self.started_ms = crate::clock::now_ms();
        }
        loop {
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

    /// When the first byte of the last frame returned arrived (TSC milliseconds).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }
}
