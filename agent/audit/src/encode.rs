//! The canonical binary encoding every signed or hashed tvp audit structure uses:
//! big-endian integers, length-prefixed strings, a presence byte for optional values.
//! It is deliberately not JSON, so that no JSON canonicalization question (key order,
//! escapes, number forms) can make two parties hash different bytes.

/// Builds a canonical encoding.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// Start with a domain-separation label (e.g. `tvp-audit-v1`), written with a
    /// trailing NUL.
    pub fn new(label: &str) -> Self {
        let mut e = Encoder { buf: Vec::new() };
        e.buf.extend_from_slice(label.as_bytes());
        e.buf.push(0);
        e
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// u32, big-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// u64, big-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Fixed-size bytes (e.g. a digest), no length prefix.
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Variable bytes: u32 length, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    /// A UTF-8 string as [`Encoder::bytes`].
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    /// An optional string: 0, or 1 followed by the string.
    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(s) => self.u8(1).str(s),
        }
    }
    /// An optional u64: 0, or 1 followed by the value.
    pub fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(n) => self.u8(1).u64(n),
        }
    }
    /// The encoded bytes.
    pub fn finish(&self) -> &[u8] {
        &self.buf
    }
    /// SHA-256 of the encoded bytes.
    pub fn sha256(&self) -> crate::Digest32 {
        use sha2::Digest;
        sha2::Sha256::digest(&self.buf).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        let mut e = Encoder::new("x");
        e.u8(1).u32(2).str("ab").opt_str(None).opt_u64(Some(3));
        assert_eq!(
            e.finish(),
            b"x\0\x01\0\0\0\x02\0\0\0\x02ab\0\x01\0\0\0\0\0\0\0\x03"
        );
    }
}
