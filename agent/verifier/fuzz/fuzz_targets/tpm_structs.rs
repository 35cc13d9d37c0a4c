//! The TPM 2.0 wire parsers (TPMS_ATTEST quote and certify, TPMT_SIGNATURE,
//! TPM2B_PUBLIC / TPMT_PUBLIC) on arbitrary bytes; the first byte picks the parser.
//! Beyond no panic: every accepted structure re-marshals to exactly the bytes it was
//! parsed from (TPM structures have one encoding), and names are computable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_verifier::tpm::certify::CertifyAttest;
use tvp_verifier::tpm::public::{marshal_tpmt, tpm2b_public};
use tvp_verifier::tpm::{qualified_name, Attest, Public, PublicKey, Signature};
use tvp_verifier::AkKey;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(a) = Attest::parse(bytes) {
                assert_eq!(
                    a.marshal(),
                    bytes,
                    "TPMS_ATTEST does not re-marshal to its bytes"
                );
                for s in &a.quote.selections {
                    assert!(s.pcrs().iter().all(|p| *p < 8 * s.bitmap.len() as u32));
                }
            }
        }
        1 => {
            if let Ok(s) = Signature::parse(bytes) {
                assert_eq!(
                    s.marshal(),
                    bytes,
                    "TPMT_SIGNATURE does not re-marshal to its bytes"
                );
            }
        }
        2 => {
            if let Ok(p) = Public::parse_tpm2b(bytes) {
                assert_eq!(tpm2b_public(&p.tpmt_bytes), bytes);
                let again = marshal_tpmt(
                    p.name_alg,
                    p.object_attributes,
                    &p.auth_policy,
                    p.symmetric,
                    p.scheme,
                    &p.key,
                );
                // The exponent 65537 has two encodings (0 and 65537); the writer uses 0.
                let explicit_e = matches!(
                    p.key,
                    PublicKey::Rsa {
                        exponent: 65537,
                        ..
                    }
                ) && again != p.tpmt_bytes;
                if !explicit_e {
                    assert_eq!(
                        again, p.tpmt_bytes,
                        "TPMT_PUBLIC does not re-marshal to its bytes"
                    );
                }
                if let Some(name) = p.name() {
                    assert_eq!(&name[..2], &p.name_alg.to_be_bytes());
                    assert!(qualified_name(&[0x40, 0, 0, 0x0b], &name).is_some());
                }
                let _ = AkKey::from_tpm_public(&p);
            }
        }
        _ => {
            if let Ok(c) = CertifyAttest::parse(bytes) {
                assert!(c.name.len() <= 66 && c.qualified_name.len() <= 66);
            }
        }
    }
});
