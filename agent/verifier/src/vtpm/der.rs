//! The few DER encodings the vTPM certificates need, written and read by hand: a
//! strict, bounded TLV reader (definite, minimal lengths; single-byte tags) and a
//! writer. Hand-made because the private extension's OID (`2.25.<UUID>`) has an arc
//! wider than 32 bits, which `const-oid` 0.9 (and so `x509-cert` 0.2) cannot hold.

/// Universal tags used here.
pub const BOOLEAN: u8 = 0x01;
/// INTEGER.
pub const INTEGER: u8 = 0x02;
/// BIT STRING.
pub const BIT_STRING: u8 = 0x03;
/// OCTET STRING.
pub const OCTET_STRING: u8 = 0x04;
/// OBJECT IDENTIFIER.
pub const OID: u8 = 0x06;
/// ENUMERATED.
pub const ENUMERATED: u8 = 0x0a;
/// UTF8String.
pub const UTF8_STRING: u8 = 0x0c;
/// UTCTime.
pub const UTC_TIME: u8 = 0x17;
/// GeneralizedTime.
pub const GENERALIZED_TIME: u8 = 0x18;
/// SEQUENCE (constructed).
pub const SEQUENCE: u8 = 0x30;
/// SET (constructed).
pub const SET: u8 = 0x31;

/// Largest length accepted (a certificate here is well under 4 KiB).
const MAX_LEN: usize = 1 << 16;

/// One element: its tag, its contents and its whole encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The identifier octet.
    pub tag: u8,
    /// The contents octets.
    pub value: &'a [u8],
    /// The element's complete encoding (identifier, length, contents).
    pub raw: &'a [u8],
}

/// A strict DER reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Read from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("truncated DER")?;
        self.pos += 1;
        Ok(b)
    }

    /// The tag of the next element, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The next element, whatever its tag.
    pub fn any(&mut self) -> Result<Tlv<'a>, String> {
        let start = self.pos;
        let tag = self.byte()?;
        if tag & 0x1f == 0x1f {
            return Err(format!("multi-byte tag {tag:#04x} not supported"));
        }
        let first = self.byte()?;
        let len = match first {
            0..=0x7f => usize::from(first),
            0x80 => return Err("indefinite length is not DER".into()),
            0x81..=0x83 => {
                let n = usize::from(first & 0x7f);
                let mut len = 0usize;
                for _ in 0..n {
                    len = (len << 8) | usize::from(self.byte()?);
                }
                let min = if n == 1 { 0x80 } else { 1 << (8 * (n - 1)) };
                if len < min {
                    return Err("length not minimally encoded".into());
                }
                len
            }
            _ => return Err("length too large".into()),
        };
        if len > MAX_LEN {
            return Err("length too large".into());
        }
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated DER")?;
        let value = self.buf.get(self.pos..end).ok_or("truncated DER")?;
        let raw = self.buf.get(start..end).ok_or("truncated DER")?;
        self.pos = end;
        Ok(Tlv { tag, value, raw })
    }

    /// The next element, which must have `tag`.
    pub fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        let t = self.any()?;
        if t.tag != tag {
            return Err(format!("{what}: tag {:#04x}, expected {tag:#04x}", t.tag));
        }
        Ok(t)
    }

    /// The next element if it has `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, String> {
        if self.peek_tag() == Some(tag) {
            self.any().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Nothing may follow.
    pub fn finish(&self, what: &str) -> Result<(), String> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: trailing bytes"))
        }
    }
}

/// A BIT STRING's contents without unused bits (a signature or key): the bytes.
pub fn bit_string_octets(value: &[u8]) -> Result<&[u8], String> {
    match value.split_first() {
        Some((0, rest)) => Ok(rest),
        _ => Err("BIT STRING with unused bits where whole octets are expected".into()),
    }
}

/// Encode one element.
pub fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = (n as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let len = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | len.len() as u8);
        out.extend_from_slice(len);
    }
    out.extend_from_slice(value);
    out
}

/// A constructed element of the concatenated `parts`.
pub fn cons(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// A non-negative INTEGER from big-endian magnitude bytes (minimal encoding).
pub fn uint(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    let m = magnitude.get(start..).unwrap_or_default();
    let mut v = Vec::with_capacity(m.len() + 1);
    if !matches!(m.first(), Some(&b) if b & 0x80 == 0) {
        v.push(0);
    }
    v.extend_from_slice(m);
    tlv(INTEGER, &v)
}

/// An OBJECT IDENTIFIER's contents from its arcs (at least two; arcs may be 128-bit).
pub fn oid_value(arcs: &[u128]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |mut v: u128| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        tmp.reverse();
        out.extend_from_slice(&tmp);
    };
    if let [a, b, rest @ ..] = arcs {
        put(a * 40 + b);
        for &arc in rest {
            put(arc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip_and_strictness() {
        for n in [0usize, 1, 127, 128, 255, 256, 3000] {
            let v = vec![7u8; n];
            let e = tlv(OCTET_STRING, &v);
            let mut r = Reader::new(&e);
            let t = r.any().unwrap();
            assert_eq!((t.tag, t.value, t.raw), (OCTET_STRING, &v[..], &e[..]));
            r.finish("x").unwrap();
            for cut in 0..e.len() {
                assert!(Reader::new(&e[..cut]).any().is_err());
            }
        }
        // Non-minimal and indefinite lengths.
        assert!(Reader::new(&[4, 0x81, 0x05, 1, 2, 3, 4, 5]).any().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).any().is_err());
        assert!(Reader::new(&[0x1f, 1, 0]).any().is_err());
    }

    #[test]
    fn integers_and_oids() {
        assert_eq!(uint(&[0x00, 0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(uint(&[0, 0, 0x7f]), vec![2, 1, 0x7f]);
        assert_eq!(uint(&[]), vec![2, 1, 0]);
        assert_eq!(
            oid_value(&[1, 2, 840, 10045, 4, 3, 2]),
            hex::decode("2a8648ce3d040302").unwrap()
        );
        assert_eq!(
            oid_value(&[2, 23, 133, 8, 1]),
            hex::decode("6781050801").unwrap()
        );
        assert_eq!(oid_value(&[2, 5, 4, 3]), vec![0x55, 4, 3]);
    }
}
