//! TPMT_SIGNATURE: the signature a TPM returns with a quote.

use super::alg::{ALG_ECDSA, ALG_RSAPSS, ALG_RSASSA};
use super::reader::{ParseError, Reader, Writer};

/// Largest RSA signature accepted (RSA-4096).
pub const MAX_RSA_SIG: usize = 512;
/// Largest ECC parameter accepted (P-521 coordinates).
pub const MAX_ECC_PARAM: usize = 66;

/// A parsed TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// TPM_ALG_RSASSA: PKCS#1 v1.5.
    RsaSsa {
        /// Hash algorithm signed with.
        hash: u16,
        /// The signature, big-endian, key-size bytes.
        sig: Vec<u8>,
    },
    /// TPM_ALG_RSAPSS.
    RsaPss {
        /// Hash algorithm signed with.
        hash: u16,
        /// The signature.
        sig: Vec<u8>,
    },
    /// TPM_ALG_ECDSA.
    Ecdsa {
        /// Hash algorithm signed with.
        hash: u16,
        /// `r`, big-endian.
        r: Vec<u8>,
        /// `s`, big-endian.
        s: Vec<u8>,
    },
}

impl Signature {
    /// Parse a marshalled TPMT_SIGNATURE; trailing bytes are rejected.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let alg = r.u16("sigAlg")?;
        let sig = match alg {
            ALG_RSASSA | ALG_RSAPSS => {
                let hash = r.u16("signature.hash")?;
                let sig = r.tpm2b(MAX_RSA_SIG, "signature.sig")?.to_vec();
                if alg == ALG_RSASSA {
                    Signature::RsaSsa { hash, sig }
                } else {
                    Signature::RsaPss { hash, sig }
                }
            }
            ALG_ECDSA => {
                let hash = r.u16("signature.hash")?;
                let sr = r.tpm2b(MAX_ECC_PARAM, "signature.signatureR")?.to_vec();
                let ss = r.tpm2b(MAX_ECC_PARAM, "signature.signatureS")?.to_vec();
                Signature::Ecdsa { hash, r: sr, s: ss }
            }
            other => {
                return Err(ParseError::invalid(
                    "sigAlg",
                    format!("{other:#06x} is not RSASSA, RSAPSS or ECDSA"),
                ))
            }
        };
        r.finish("TPMT_SIGNATURE")?;
        Ok(sig)
    }

    /// The hash algorithm the signature claims.
    pub fn hash(&self) -> u16 {
        match self {
            Signature::RsaSsa { hash, .. }
            | Signature::RsaPss { hash, .. }
            | Signature::Ecdsa { hash, .. } => *hash,
        }
    }

    /// Marshal to TPMT_SIGNATURE wire bytes.
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Signature::RsaSsa { hash, sig } => {
                w.u16(ALG_RSASSA).u16(*hash).tpm2b(sig);
            }
            Signature::RsaPss { hash, sig } => {
                w.u16(ALG_RSAPSS).u16(*hash).tpm2b(sig);
            }
            Signature::Ecdsa { hash, r, s } => {
                w.u16(ALG_ECDSA).u16(*hash).tpm2b(r).tpm2b(s);
            }
        }
        w.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let s = Signature::Ecdsa {
            hash: 0x000b,
            r: vec![1; 32],
            s: vec![2; 32],
        };
        let b = s.marshal();
        assert_eq!(Signature::parse(&b).unwrap(), s);
        for n in 0..b.len() {
            assert!(Signature::parse(&b[..n]).is_err());
        }
        let mut long = b.clone();
        long.push(9);
        assert!(Signature::parse(&long).is_err());
        let rsa = Signature::RsaSsa {
            hash: 0x000b,
            sig: vec![7; 256],
        };
        assert_eq!(Signature::parse(&rsa.marshal()).unwrap(), rsa);
        assert!(Signature::parse(&[0x00, 0x01, 0, 0]).is_err());
    }
}
