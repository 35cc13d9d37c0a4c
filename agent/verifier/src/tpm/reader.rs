//! A bounded big-endian cursor over hostile bytes: every read checks the remaining
//! length and fails with a [`ParseError`] instead of panicking.

use thiserror::Error;

/// Why a TPM structure could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The input ended before `what` was complete.
    #[error("truncated while reading {what} (need {need} bytes at offset {offset}, {have} left)")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes remaining.
        have: usize,
    },
    /// Bytes remained after the structure ended.
    #[error("{count} trailing bytes after {what}")]
    Trailing {
        /// The structure parsed.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A field held a value this parser does not accept.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
}

impl ParseError {
    /// Shorthand for [`ParseError::Invalid`].
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        ParseError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// A cursor over a byte slice reading big-endian TPM wire types.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Start reading `buf` at offset 0.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset into the input.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Take exactly `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest.get(..n) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => Err(ParseError::Truncated {
                what,
                offset: self.pos,
                need: n,
                have: rest.len(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// A `UINT8`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A big-endian `UINT16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `UINT32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `UINT64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A TPM2B: `UINT16` size then that many bytes, at most `max` bytes.
    pub fn tpm2b(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(ParseError::invalid(
                what,
                format!("size {size} exceeds maximum {max}"),
            ));
        }
        self.bytes(size, what)
    }

    /// Fail unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), ParseError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(ParseError::Trailing { what, count }),
        }
    }
}

/// Appends big-endian TPM wire types to a buffer (used to build structures for
/// hashing, tests and tools).
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Append a `UINT8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Append a big-endian `UINT16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Append a big-endian `UINT32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Append a big-endian `UINT64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Append raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Append a TPM2B (size-prefixed bytes). Sizes above `u16::MAX` are truncated to
    /// the limit, which no valid TPM structure needs.
    pub fn tpm2b(&mut self, v: &[u8]) -> &mut Self {
        let n = v.len().min(usize::from(u16::MAX));
        self.u16(n as u16);
        self.bytes(v.get(..n).unwrap_or_default())
    }
    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.u16("a").unwrap(), 1);
        assert!(matches!(r.u16("b"), Err(ParseError::Truncated { .. })));
        assert_eq!(r.u8("c").unwrap(), 2);
        assert!(r.finish("x").is_ok());
        let mut r = Reader::new(&[0xff, 0xff, 1]);
        assert!(r.tpm2b(1000, "big").is_err());
        let mut r = Reader::new(&[0, 5, 1]);
        assert!(matches!(
            r.tpm2b(10, "t"),
            Err(ParseError::Truncated { .. })
        ));
    }
}
