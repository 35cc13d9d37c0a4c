//! Signed workloads (`tvp_boot_protocol::signed`): the tenant signs an ELF image with
//! an Ed25519 key whose certificate the tenant CA issued (code signing), and the boot
//! server delivers the container as it is.

use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use tvp_boot_protocol::signed::{header, SignedWorkload};

/// Why a workload cannot be signed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A file cannot be read.
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    /// A PEM file does not hold what it should.
    #[error("{0}: {1}")]
    Pem(String, String),
    /// The key is not an Ed25519 PKCS#8 key.
    #[error("signing key: {0}")]
    Key(String),
    /// The container is malformed or too large.
    #[error("signed workload: {0}")]
    Format(tvp_boot_protocol::ProtocolError),
    /// The kernel, command line or initrd cannot be booted by the firmware.
    #[error("Linux workload: {0}")]
    Linux(tvp_boot_protocol::linux::LinuxError),
}

/// A generous workload window (32 MiB .. 4 GiB) for checking a kernel at signing
/// time; the firmware checks again against the VM's real window.
const LINUX_CHECK_WINDOW: (u64, u64) = (0x200_0000, 4 << 30);

/// A Linux bundle (`tvp_boot_protocol::linux`) of `kernel` (bzImage), `cmdline` and
/// `initrd` (may be empty), checked as far as it can be without the VM's memory size.
pub fn linux_bundle(kernel: &[u8], cmdline: &str, initrd: &[u8]) -> Result<Vec<u8>, WorkloadError> {
    use tvp_boot_protocol::linux;
    let mut b = linux::bundle_header(cmdline.len(), initrd.len(), kernel.len())
        .map_err(WorkloadError::Linux)?
        .to_vec();
    b.extend_from_slice(cmdline.as_bytes());
    b.extend_from_slice(initrd);
    b.extend_from_slice(kernel);
    let parsed = linux::parse_bundle(&b).map_err(WorkloadError::Linux)?;
    linux::layout(&parsed, LINUX_CHECK_WINDOW.0, LINUX_CHECK_WINDOW.1)
        .map_err(WorkloadError::Linux)?;
    Ok(b)
}

/// Signs `elf` with the Ed25519 key `key_pem` (PKCS#8) whose certificate is `cert_pem`;
/// returns the container.
pub fn sign(elf: &[u8], key_pem: &Path, cert_pem: &Path) -> Result<Vec<u8>, WorkloadError> {
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| WorkloadError::Pem(key_pem.display().to_string(), e.to_string()))?;
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        return Err(WorkloadError::Key("not a PKCS#8 key".into()));
    };
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
        .map_err(|e| WorkloadError::Key(e.to_string()))?;
    let cert = CertificateDer::from_pem_file(cert_pem)
        .map_err(|e| WorkloadError::Pem(cert_pem.display().to_string(), e.to_string()))?;
    let mut out = header(cert.len(), elf.len())
        .map_err(WorkloadError::Format)?
        .to_vec();
    out.extend_from_slice(&cert);
    out.extend_from_slice(elf);
    let sig = pair.sign(&out);
    out.extend_from_slice(sig.as_ref());
    // The public key must be the certificate's: a mismatch would only fail in the VM.
    if !contains(&cert, pair.public_key().as_ref()) {
        return Err(WorkloadError::Key(
            "the key does not belong to the certificate".into(),
        ));
    }
    Ok(out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Reads a signed workload file and checks its framing (not its signature: the firmware
/// verifies that against the tenant CA).
pub fn load(path: &Path) -> Result<Vec<u8>, WorkloadError> {
    let b = std::fs::read(path).map_err(|e| WorkloadError::Read(path.display().to_string(), e))?;
    SignedWorkload::parse(&b).map_err(WorkloadError::Format)?;
    Ok(b)
}

/// SHA-256 of the workload payload: the digest the firmware reports at handover.
pub fn payload_digest(container: &[u8]) -> Option<[u8; 32]> {
    SignedWorkload::parse(container)
        .ok()
        .map(|w| tvp_abi::measure::sha256(w.payload))
}
