//! The signed workload container (`docs/boot-protocol.md`):
//!
//! ```text
//! magic "TVPW" | version u16 = 1 | reserved u16 = 0 | cert_len u32 | payload_len u32 |
//! signer certificate (DER, cert_len) | payload (ELF, payload_len) | signature [64]
//! ```
//!
//! All integers little endian. The signature is Ed25519 by the signer certificate's key
//! over every byte before it (header, certificate, payload). The firmware accepts the
//! signer only if its certificate chains to the tenant CA of the configuration page and
//! carries the code-signing extended key usage.

use crate::ProtocolError;

/// Magic of a signed workload.
pub const MAGIC: [u8; 4] = *b"TVPW";
/// Container version.
pub const VERSION: u16 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Size of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest signer certificate.
pub const CERT_MAX: usize = 4096;

/// A parsed (not yet verified) signed workload, borrowing the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedWorkload<'a> {
    /// The signer's certificate, DER.
    pub cert: &'a [u8],
    /// The workload (an ELF image).
    pub payload: &'a [u8],
    /// The bytes the signature covers.
    pub signed: &'a [u8],
    /// The Ed25519 signature.
    pub signature: &'a [u8],
}

/// The header for a container with these lengths.
pub fn header(cert_len: usize, payload_len: usize) -> Result<[u8; HEADER_LEN], ProtocolError> {
    if cert_len > CERT_MAX || payload_len > crate::WORKLOAD_MAX {
        return Err(ProtocolError::TooLong);
    }
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&(cert_len as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(payload_len as u32).to_le_bytes());
    Ok(h)
}

impl<'a> SignedWorkload<'a> {
    /// Splits a container into its parts; checks magic, version and lengths.
    pub fn parse(b: &'a [u8]) -> Result<Self, ProtocolError> {
        let h = b.get(..HEADER_LEN).ok_or(ProtocolError::Truncated)?;
        if h[..4] != MAGIC || h[4..6] != VERSION.to_le_bytes() || h[6..8] != [0, 0] {
            return Err(ProtocolError::BadField);
        }
        let cert_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let payload_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
        if cert_len == 0 || cert_len > CERT_MAX || payload_len > crate::WORKLOAD_MAX {
            return Err(ProtocolError::BadField);
        }
        let signed_len = HEADER_LEN + cert_len + payload_len;
        if b.len() != signed_len + SIGNATURE_LEN {
            return Err(ProtocolError::Truncated);
        }
        Ok(SignedWorkload {
            cert: &b[HEADER_LEN..HEADER_LEN + cert_len],
            payload: &b[HEADER_LEN + cert_len..signed_len],
            signed: &b[..signed_len],
            signature: &b[signed_len..],
        })
    }
}

/// Picks a container's payload bytes out of the container as it arrives in order, so
/// a receiver can hash the payload during the transfer. Knows nothing until the fixed
/// header has arrived; a header [`SignedWorkload::parse`] would refuse yields no
/// payload at all (the receiver then refuses the whole container anyway).
#[derive(Debug, Default, Clone)]
pub struct PayloadSpan {
    head: [u8; HEADER_LEN],
    seen: usize,
    /// The payload's offset and length, once the header was read and was acceptable.
    payload: Option<(usize, usize)>,
}

impl PayloadSpan {
    /// Takes the container's next `chunk` (its bytes from offset [`Self::seen`]) and
    /// returns the part of it that lies inside the payload (often all, or nothing).
    pub fn feed<'c>(&mut self, chunk: &'c [u8]) -> &'c [u8] {
        let at = self.seen;
        if at < HEADER_LEN {
            let n = (HEADER_LEN - at).min(chunk.len());
            self.head[at..at + n].copy_from_slice(&chunk[..n]);
            if at + n == HEADER_LEN {
                self.payload = payload_of(&self.head);
            }
        }
        self.seen = at.saturating_add(chunk.len());
        let Some((start, len)) = self.payload else {
            return &[];
        };
        let end = start + len;
        let (from, to) = (start.max(at), end.min(self.seen));
        if from >= to {
            return &[];
        }
        &chunk[from - at..to - at]
    }

    /// How many container bytes were fed.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The payload's byte range in the container, once the header arrived and was
    /// acceptable.
    pub fn range(&self) -> Option<core::ops::Range<usize>> {
        self.payload.map(|(start, len)| start..start + len)
    }
}

/// The payload's (offset, length) that `h` announces, if `parse` would accept the
/// header.
fn payload_of(h: &[u8; HEADER_LEN]) -> Option<(usize, usize)> {
    if h[..4] != MAGIC || h[4..6] != VERSION.to_le_bytes() || h[6..8] != [0, 0] {
        return None;
    }
    let cert_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let payload_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    if cert_len == 0 || cert_len > CERT_MAX || payload_len > crate::WORKLOAD_MAX {
        return None;
    }
    Some((HEADER_LEN + cert_len, payload_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A container with a 3-byte certificate and `payload`.
    fn container(payload: &[u8]) -> Vec<u8> {
        let mut b = header(3, payload.len()).unwrap().to_vec();
        b.extend_from_slice(b"crt");
        b.extend_from_slice(payload);
        b.extend_from_slice(&[0xee; SIGNATURE_LEN]);
        b
    }

    #[test]
    fn the_span_yields_exactly_the_payload_whatever_the_chunking() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let c = container(&payload);
        let parsed = SignedWorkload::parse(&c).unwrap();
        for size in [1, 2, 15, 16, 17, 19, 20, 64, 299, 1000] {
            let mut span = PayloadSpan::default();
            let mut got = Vec::new();
            for chunk in c.chunks(size) {
                got.extend_from_slice(span.feed(chunk));
            }
            assert_eq!(got, payload, "chunks of {size}");
            assert_eq!(span.seen(), c.len());
            let r = span.range().unwrap();
            assert_eq!(&c[r], parsed.payload);
        }
    }

    #[test]
    fn a_header_parse_refuses_yields_no_payload() {
        let mut c = container(b"payload");
        c[0] = b'X';
        let mut span = PayloadSpan::default();
        assert!(c.chunks(4).all(|ch| span.feed(ch).is_empty()));
        assert_eq!(span.range(), None);
        // A zero-length certificate: refused by parse, so no span either.
        let mut c = container(b"payload");
        c[8..12].copy_from_slice(&0u32.to_le_bytes());
        let mut span = PayloadSpan::default();
        assert!(span.feed(&c).is_empty());
        assert_eq!(span.range(), None);
    }

    #[test]
    fn parse_checks_lengths() {
        let h = header(3, 5).unwrap();
        let mut b = [0u8; HEADER_LEN + 3 + 5 + SIGNATURE_LEN];
        b[..HEADER_LEN].copy_from_slice(&h);
        b[HEADER_LEN..HEADER_LEN + 3].copy_from_slice(b"crt");
        let w = SignedWorkload::parse(&b).unwrap();
        assert_eq!(w.cert, b"crt");
        assert_eq!(w.payload.len(), 5);
        assert_eq!(w.signature.len(), SIGNATURE_LEN);
        assert_eq!(w.signed.len(), HEADER_LEN + 8);
        assert_eq!(
            SignedWorkload::parse(&b[..b.len() - 1]),
            Err(ProtocolError::Truncated)
        );
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(SignedWorkload::parse(&bad), Err(ProtocolError::BadField));
    }
}
