//! Frames of the boot protocol (`tvp_boot_protocol`, `docs/boot-protocol.md`) over a
//! blocking stream.

use std::io::{Read, Write};
use tvp_boot_protocol::{frame_header, parse_frame_header, FRAME_HEADER_LEN};
pub use tvp_boot_protocol::{BootRequest, MsgType, ProtocolError};

/// Why reading or writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed (TLS error, timeout, closed).
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a malformed frame.
    #[error("malformed frame: {0}")]
    Protocol(ProtocolError),
    /// The peer sent another frame type than the protocol expects here.
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected {
        /// What the protocol expects.
        expected: MsgType,
        /// What came.
        got: MsgType,
    },
}

/// Reads one frame of type `expected`; returns its payload (bounded by the type's limit).
pub fn read_frame(r: &mut impl Read, expected: MsgType) -> Result<Vec<u8>, FrameError> {
    let mut h = [0u8; FRAME_HEADER_LEN];
    r.read_exact(&mut h)?;
    let h = parse_frame_header(&h).map_err(FrameError::Protocol)?;
    if h.msg != expected {
        return Err(FrameError::Unexpected {
            expected,
            got: h.msg,
        });
    }
    let mut p = vec![0u8; h.len];
    r.read_exact(&mut p)?;
    Ok(p)
}

/// Writes one frame and flushes.
pub fn write_frame(w: &mut impl Write, msg: MsgType, payload: &[u8]) -> Result<(), FrameError> {
    let h = frame_header(msg, payload.len()).map_err(FrameError::Protocol)?;
    w.write_all(&h)?;
    w.write_all(payload)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn frames_round_trip_and_hostile_lengths_are_refused_before_reading() {
        let mut buf = Vec::new();
        write_frame(&mut buf, MsgType::Evidence, b"{}").unwrap();
        assert_eq!(
            read_frame(&mut Cursor::new(&buf), MsgType::Evidence).unwrap(),
            b"{}"
        );
        // Another type than the protocol expects here.
        assert!(matches!(
            read_frame(&mut Cursor::new(&buf), MsgType::BootRequest),
            Err(FrameError::Unexpected { .. })
        ));
        // A 4 GiB evidence frame: refused from its header, nothing allocated.
        let huge = [3u8, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut Cursor::new(&huge), MsgType::Evidence),
            Err(FrameError::Protocol(ProtocolError::TooLong))
        ));
        // Unknown type, truncated payload.
        assert!(matches!(
            read_frame(&mut Cursor::new(&[9u8, 0, 0, 0, 0]), MsgType::Evidence),
            Err(FrameError::Protocol(ProtocolError::UnknownType(9)))
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new(&buf[..buf.len() - 1]), MsgType::Evidence),
            Err(FrameError::Io(_))
        ));
    }
}
