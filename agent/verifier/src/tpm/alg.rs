//! TPM 2.0 constants (TPM_ALG_ID, TPM_ST, TPM_ECC_CURVE, handles) this crate understands.

/// TPM_ALG_RSA.
pub const ALG_RSA: u16 = 0x0001;
/// TPM_ALG_SHA1.
pub const ALG_SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000b;
/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000c;
/// TPM_ALG_SHA512.
pub const ALG_SHA512: u16 = 0x000d;
/// TPM_ALG_NULL.
pub const ALG_NULL: u16 = 0x0010;
/// TPM_ALG_RSASSA (PKCS#1 v1.5 signatures).
pub const ALG_RSASSA: u16 = 0x0014;
/// TPM_ALG_RSAPSS.
pub const ALG_RSAPSS: u16 = 0x0016;
/// TPM_ALG_ECDSA.
pub const ALG_ECDSA: u16 = 0x0018;
/// TPM_ALG_ECC.
pub const ALG_ECC: u16 = 0x0023;

/// TPM_ECC_NIST_P256.
pub const ECC_NIST_P256: u16 = 0x0003;

/// TPM_GENERATED_VALUE: the magic that starts every TPM-generated attestation.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// TPM_RH_ENDORSEMENT: the endorsement hierarchy handle (the parent of an EK).
pub const RH_ENDORSEMENT: u32 = 0x4000_000b;

/// Digest size in bytes of a TPM hash algorithm, if it is one this crate knows.
pub fn digest_size(alg: u16) -> Option<usize> {
    match alg {
        ALG_SHA1 => Some(20),
        ALG_SHA256 => Some(32),
        ALG_SHA384 => Some(48),
        ALG_SHA512 => Some(64),
        _ => None,
    }
}

/// Lowercase TCG name of a hash algorithm (as CEL and tpm2-tools spell it).
pub fn hash_name(alg: u16) -> Option<&'static str> {
    match alg {
        ALG_SHA1 => Some("sha1"),
        ALG_SHA256 => Some("sha256"),
        ALG_SHA384 => Some("sha384"),
        ALG_SHA512 => Some("sha512"),
        _ => None,
    }
}
