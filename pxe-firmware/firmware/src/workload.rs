//! The signed workload (`tvp_boot_protocol::signed`): the signer's certificate must
//! chain to the tenant CA of the configuration page, be valid at the configuration
//! page's time and carry the code-signing extended key usage; the Ed25519 signature
//! must cover the container. Then the ELF payload is loaded ([`crate::elf`]).

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use tvp_boot_protocol::signed::SignedWorkload;
use webpki::{EndEntityCert, KeyUsage};

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER contents of the OID.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Why a workload was refused.
#[derive(Debug)]
pub enum WorkloadError {
    /// The container is malformed.
    Format(tvp_boot_protocol::ProtocolError),
    /// The CA certificate of the configuration page is unusable.
    Ca,
    /// The signer certificate is malformed or does not chain to the tenant CA for
    /// code signing.
    Signer(webpki::Error),
    /// The signature does not verify.
    Signature,
}

/// Verifies `container` against `ca_der` at `now_secs`; returns the payload.
pub fn verify<'a>(
    container: &'a [u8],
    ca_der: &[u8],
    now_secs: u64,
) -> Result<&'a [u8], WorkloadError> {
    let w = SignedWorkload::parse(container).map_err(WorkloadError::Format)?;
    let ca = CertificateDer::from(ca_der);
    let anchor: TrustAnchor<'_> =
        webpki::anchor_from_trusted_cert(&ca).map_err(|_| WorkloadError::Ca)?;
    let cert = CertificateDer::from(w.cert);
    let ee = EndEntityCert::try_from(&cert).map_err(WorkloadError::Signer)?;
    // The CA signs with ECDSA; the workload key itself is Ed25519.
    let algs = &[
        webpki::ring::ED25519,
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
    ];
    ee.verify_for_usage(
        algs,
        &[anchor],
        &[],
        UnixTime::since_unix_epoch(core::time::Duration::from_secs(now_secs)),
        KeyUsage::required(CODE_SIGNING),
        None,
        None,
    )
    .map_err(WorkloadError::Signer)?;
    ee.verify_signature(webpki::ring::ED25519, w.signed, w.signature)
        .map_err(|_| WorkloadError::Signature)?;
    Ok(w.payload)
}
