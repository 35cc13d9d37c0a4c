//! The boot server's TLS: rustls 1.3 server with the certificate the tenant CA
//! issued, and the tunnel measurement (the exporter the firmware also computes).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// The exporter label of the tunnel measurement.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-tvp-tunnel-measurement";

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file cannot be read or parsed.
    #[error("{0}: {1}")]
    Pem(String, String),
    /// rustls rejected the certificate or key.
    #[error("certificate/key rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS 1.3 server configuration from PEM files (certificate chain, private key).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let pem = |p: &Path, e: &dyn std::fmt::Display| {
        TlsSetupError::Pem(p.display().to_string(), e.to_string())
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The tunnel measurement of `conn` for auth code `u`: exporter(label, context U, 32).
pub fn tunnel_measurement(
    conn: &rustls::ServerConnection,
    u: &[u8],
) -> Result<[u8; 32], rustls::Error> {
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, Some(u))
}
