//! TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY: the AK's statement that an object with a
//! given name is loaded in this TPM (TPM2_Certify).

use super::attest::{parse_header, ClockInfo, MAX_NAME};
use super::reader::{ParseError, Reader};

/// TPM_ST_ATTEST_CERTIFY.
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;

/// A parsed certification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifyAttest {
    /// Qualified name of the signing key (the AK).
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (nonce).
    pub extra_data: Vec<u8>,
    /// TPM clock.
    pub clock_info: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
    /// Name of the certified object.
    pub name: Vec<u8>,
    /// Qualified name of the certified object.
    pub qualified_name: Vec<u8>,
}

impl CertifyAttest {
    /// Parse; the type must be TPM_ST_ATTEST_CERTIFY and nothing may trail.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let (qualified_signer, extra_data, clock_info, firmware_version) =
            parse_header(&mut r, ST_ATTEST_CERTIFY, "TPM_ST_ATTEST_CERTIFY")?;
        let name = r.tpm2b(MAX_NAME, "certifyInfo.name")?.to_vec();
        let qualified_name = r.tpm2b(MAX_NAME, "certifyInfo.qualifiedName")?.to_vec();
        r.finish("TPMS_ATTEST")?;
        Ok(CertifyAttest {
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            name,
            qualified_name,
        })
    }
}
