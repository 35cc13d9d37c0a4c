//! The VM's own TPM in the boot protocol: the [`crate::MsgType::VtpmQuote`] frame the
//! firmware sends after the host's Evidence when the configuration page names a TPM,
//! and the qualifying data both ends compute for it (`docs/boot-protocol.md`, step 4).
//!
//! Payload: `ak_len u16 LE | AK TPMT_PUBLIC | attest_len u16 LE | TPMS_ATTEST |
//! sig_len u16 LE | TPMT_SIGNATURE`, each part non-empty, the three lengths adding up
//! to the payload exactly, at most [`VTPM_QUOTE_MAX`] bytes.

use crate::{ProtocolError, Reader, Writer, NONCE_LEN};
use sha2::{Digest, Sha256};

/// Largest VtpmQuote payload.
pub const VTPM_QUOTE_MAX: usize = 2048;
/// The domain-separation label of the quote's qualifying data.
pub const QUALIFYING_LABEL: &[u8] = b"tvp-vtpm-quote-v1";
/// The PCRs the firmware quotes (SHA-256 bank): what it measured at start.
pub const QUOTED_PCRS: [u32; 2] = [0, 1];

/// The quote's qualifying data (its TPMS_ATTEST `extraData`):
/// SHA-256(`"tvp-vtpm-quote-v1"` ‖ N ‖ tunnel measurement), binding the vTPM's quote
/// to this session's nonce N and to this TLS tunnel (its exporter value).
pub fn qualifying_data(nonce: &[u8; NONCE_LEN], tunnel_measurement: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(QUALIFYING_LABEL);
    h.update(nonce);
    h.update(tunnel_measurement);
    h.finalize().into()
}

/// The VtpmQuote payload: the AK the firmware re-created, its quote and signature, as
/// the VM's TPM marshalled them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtpmQuote<'a> {
    /// The AK's TPMT_PUBLIC (CreatePrimary's outPublic without its size).
    pub ak_public: &'a [u8],
    /// The TPMS_ATTEST of TPM2_Quote (without its size).
    pub attest: &'a [u8],
    /// The TPMT_SIGNATURE over it.
    pub signature: &'a [u8],
}

impl<'a> VtpmQuote<'a> {
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        6 + self.ak_public.len() + self.attest.len() + self.signature.len()
    }

    /// Encodes into `out`; returns the length used. Each part must be non-empty and
    /// the whole at most [`VTPM_QUOTE_MAX`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ProtocolError> {
        let parts = [self.ak_public, self.attest, self.signature];
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ProtocolError::BadField);
        }
        let n = self.encoded_len();
        if n > VTPM_QUOTE_MAX {
            return Err(ProtocolError::TooLong);
        }
        let out = out.get_mut(..n).ok_or(ProtocolError::TooLong)?;
        let mut w = Writer { out, at: 0 };
        for p in parts {
            // Each part is shorter than VTPM_QUOTE_MAX, so its length fits a u16.
            w.put(&(p.len() as u16).to_le_bytes());
            w.put(p);
        }
        Ok(n)
    }

    /// Parses a VtpmQuote payload: bounded, each part non-empty, nothing trailing.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtocolError> {
        if p.len() > VTPM_QUOTE_MAX {
            return Err(ProtocolError::TooLong);
        }
        let mut r = Reader { p, at: 0 };
        let mut part = || -> Result<&'a [u8], ProtocolError> {
            let l = r.take(2)?;
            let len = usize::from(u16::from_le_bytes([l[0], l[1]]));
            if len == 0 {
                return Err(ProtocolError::BadField);
            }
            r.take(len)
        };
        let ak_public = part()?;
        let attest = part()?;
        let signature = part()?;
        if r.at != p.len() {
            return Err(ProtocolError::Truncated);
        }
        Ok(VtpmQuote {
            ak_public,
            attest,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{frame_header, max_payload, parse_frame_header, FrameHeader, MsgType};

    const AK: [u8; 24] = [
        0x00, 0x23, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00,
        0x0b, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
    ];

    fn sample() -> std::vec::Vec<u8> {
        let q = VtpmQuote {
            ak_public: &AK,
            attest: &[0xff, 0x54, 0x43, 0x47, 0x80, 0x18],
            signature: &[0x00, 0x18, 0x00, 0x0b, 1, 2],
        };
        let mut out = [0u8; VTPM_QUOTE_MAX];
        let n = q.encode(&mut out).unwrap();
        assert_eq!(n, q.encoded_len());
        out[..n].to_vec()
    }

    #[test]
    fn a_quote_round_trips_and_its_lengths_lead_each_part() {
        let b = sample();
        assert_eq!(&b[..2], &24u16.to_le_bytes());
        assert_eq!(&b[2..26], &AK);
        assert_eq!(&b[26..28], &6u16.to_le_bytes());
        let q = VtpmQuote::parse(&b).unwrap();
        assert_eq!(q.ak_public, &AK);
        assert_eq!(q.attest.len(), 6);
        assert_eq!(q.signature, &[0x00, 0x18, 0x00, 0x0b, 1, 2]);
        let mut again = [0u8; 64];
        let n = q.encode(&mut again).unwrap();
        assert_eq!(&again[..n], &b[..]);
    }

    #[test]
    fn lengths_must_add_up_exactly() {
        let b = sample();
        // Truncated anywhere, or a trailing byte.
        for cut in 0..b.len() {
            assert!(VtpmQuote::parse(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(VtpmQuote::parse(&long), Err(ProtocolError::Truncated));
        // A length past the end.
        let mut over = b.clone();
        over[0] = 0xff;
        assert_eq!(VtpmQuote::parse(&over), Err(ProtocolError::Truncated));
        // An empty part.
        let mut empty = std::vec![0u8, 0];
        empty.extend_from_slice(&b[26..]);
        assert_eq!(VtpmQuote::parse(&empty), Err(ProtocolError::BadField));
    }

    #[test]
    fn the_payload_is_bounded_on_both_sides() {
        let big = [1u8; VTPM_QUOTE_MAX];
        let q = VtpmQuote {
            ak_public: &big[..1000],
            attest: &big[..1000],
            signature: &big[..43],
        };
        let mut out = [0u8; 4096];
        assert_eq!(q.encode(&mut out), Err(ProtocolError::TooLong));
        let q = VtpmQuote {
            signature: &big[..42],
            ..q
        };
        assert_eq!(q.encode(&mut out), Ok(VTPM_QUOTE_MAX));
        assert!(VtpmQuote::parse(&out[..VTPM_QUOTE_MAX]).is_ok());
        assert_eq!(
            VtpmQuote::parse(&[0u8; VTPM_QUOTE_MAX + 1]),
            Err(ProtocolError::TooLong)
        );
        assert_eq!(
            q.encode(&mut out[..100]),
            Err(ProtocolError::TooLong),
            "an output buffer too small"
        );
        assert_eq!(max_payload(MsgType::VtpmQuote), VTPM_QUOTE_MAX);
        assert_eq!(MsgType::from_u8(7), Some(MsgType::VtpmQuote));
        let h = frame_header(MsgType::VtpmQuote, VTPM_QUOTE_MAX).unwrap();
        assert_eq!(
            parse_frame_header(&h),
            Ok(FrameHeader {
                msg: MsgType::VtpmQuote,
                len: VTPM_QUOTE_MAX
            })
        );
        assert_eq!(
            parse_frame_header(&[7, 0x01, 0x08, 0, 0]),
            Err(ProtocolError::TooLong)
        );
    }

    #[test]
    fn the_qualifying_data_binds_label_nonce_and_tunnel() {
        let (n, t) = ([1u8; 32], [2u8; 32]);
        let mut m = std::vec::Vec::from(QUALIFYING_LABEL);
        m.extend_from_slice(&n);
        m.extend_from_slice(&t);
        let want: [u8; 32] = Sha256::digest(&m).into();
        assert_eq!(qualifying_data(&n, &t), want);
        assert_ne!(qualifying_data(&n, &[3; 32]), want, "another tunnel");
        assert_ne!(qualifying_data(&[3; 32], &t), want, "another nonce");
        // Neither is interchangeable with the other.
        assert_ne!(qualifying_data(&t, &n), want);
    }
}
