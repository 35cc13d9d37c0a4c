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
    read_frame_of(r, &[expected]).map(|(_, p)| p)
}

/// Reads one frame whose type is one of `expected` (the first is the one the protocol
/// is waiting for; any other type is refused from its header, before its payload is
/// read or allocated); returns its type and payload.
pub fn read_frame_of(
    r: &mut impl Read,
    expected: &[MsgType],
) -> Result<(MsgType, Vec<u8>), FrameError> {
    let mut h = [0u8; FRAME_HEADER_LEN];
    r.read_exact(&mut h)?;
    let h = parse_frame_header(&h).map_err(FrameError::Protocol)?;
    if !expected.contains(&h.msg) {
        return Err(FrameError::Unexpected {
            expected: expected.first().copied().unwrap_or(h.msg),
            got: h.msg,
        });
    }
    let mut p = vec![0u8; h.len];
    r.read_exact(&mut p)?;
    Ok((h.msg, p))
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

    #[test]
    fn a_frame_of_several_types_takes_only_those() {
        let want = [MsgType::VtpmQuote, MsgType::Status];
        let mut buf = Vec::new();
        write_frame(&mut buf, MsgType::Status, &20u32.to_le_bytes()).unwrap();
        assert_eq!(
            read_frame_of(&mut Cursor::new(&buf), &want).unwrap(),
            (MsgType::Status, 20u32.to_le_bytes().to_vec())
        );
        let mut q = Vec::new();
        write_frame(&mut q, MsgType::VtpmQuote, b"abc").unwrap();
        assert_eq!(
            read_frame_of(&mut Cursor::new(&q), &want).unwrap().0,
            MsgType::VtpmQuote
        );
        // A 1 GiB workload announced where a quote is due: refused from the header.
        let w = [4u8, 0, 0, 0, 0x40];
        assert!(matches!(
            read_frame_of(&mut Cursor::new(&w), &want),
            Err(FrameError::Unexpected {
                expected: MsgType::VtpmQuote,
                got: MsgType::Workload
            })
        ));
        // A quote longer than its limit.
        assert!(matches!(
            read_frame_of(&mut Cursor::new(&[7u8, 0x01, 0x08, 0, 0]), &want),
            Err(FrameError::Protocol(ProtocolError::TooLong))
        ));
    }
}
