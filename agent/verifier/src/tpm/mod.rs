//! Bounded, validated, panic-free parsers for the TPM 2.0 wire structures in a quote:
//! TPMS_ATTEST, TPMT_SIGNATURE and TPM2B_PUBLIC (all big-endian), plus the TPM name
//! computations. All input is treated as hostile.

pub mod alg;
pub mod attest;
pub mod certify;
pub mod public;
pub mod reader;
pub mod signature;

#[cfg(test)]
pub(crate) mod fixture;

pub use attest::{Attest, ClockInfo, PcrSelection, QuoteInfo};
pub use public::{hierarchy_qualified_name, qualified_name, Public, PublicKey, Scheme, SymDef};
pub use reader::ParseError;
pub use signature::Signature;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parser on pseudo-random garbage and on corrupted real structures: errors,
    /// never panics.
    #[test]
    fn parsers_survive_garbage() {
        let mut x: u32 = 0x1234_5678;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for len in 0..400 {
            let g: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = Attest::parse(&g);
            let _ = Signature::parse(&g);
            let _ = Public::parse_tpm2b(&g);
            let _ = Public::parse_tpmt(&g);
        }
        for real in [fixture::AK_PUB, fixture::QUOTE_SIG, fixture::QUOTE_MSG] {
            let real = hex::decode(real).unwrap();
            for i in 0..real.len() {
                for v in [0x00, 0xff, 0x01, 0x80] {
                    let mut b = real.clone();
                    b[i] = v;
                    let _ = Attest::parse(&b);
                    let _ = Signature::parse(&b);
                    if let Ok(p) = Public::parse_tpm2b(&b) {
                        let _ = p.name();
                    }
                }
            }
        }
    }
}
