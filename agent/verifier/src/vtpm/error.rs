//! Why a vTPM identity or a vTPM quote is refused: one variant per check, each with a
//! stable short code (`vtpm:<check>`) and a message saying what to do.

use super::KeyRole;

/// A refused vTPM identity or quote. `Display` starts with [`VtpmError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VtpmError {
    /// The identity's format version is not supported.
    #[error("vtpm:version: identity version {found} is not supported (this verifier reads {supported}); update tvpctl or the verifier")]
    Version {
        /// Version in the document.
        found: u32,
        /// Version this crate reads.
        supported: u32,
    },
    /// A structure does not parse.
    #[error("vtpm:format: malformed {0}")]
    Format(String),
    /// The CA key's certification is not signed by the pinned host AK.
    #[error("vtpm:ca-certify-signature: the vTPM CA key's certification is not signed by the pinned host AK ({0}); the identity did not come from this host's TPM, or the pinned AK is not this host's")]
    CaCertifySignature(String),
    /// The certification carries another nonce.
    #[error("vtpm:ca-certify-nonce: the CA key's certification carries nonce {got}, not yours ({want}): a replayed or stale identity; ask again with a fresh nonce")]
    CaCertifyNonce {
        /// Hex nonce in the certification.
        got: String,
        /// Hex nonce the tenant sent.
        want: String,
    },
    /// The host AK certified another key than `ca_public`.
    #[error("vtpm:ca-certify-name: the host AK certified object {certified}, not the presented CA key ({key}): the CA key was substituted")]
    CaCertifyName {
        /// Hex name certified.
        certified: String,
        /// Hex name of `ca_public`.
        key: String,
    },
    /// The CA key is not a TPM-bound P-256 unrestricted signing key.
    #[error("vtpm:ca-key: the vTPM CA key {0}; it must be a P-256 ECDSA-SHA256 signing key that is fixedTPM, fixedParent, sensitiveDataOrigin, not restricted and not decrypt")]
    CaKey(String),
    /// The CA certificate does not hold the certified CA key or does not verify.
    #[error("vtpm:ca-certificate: {0}")]
    CaCertificate(String),
    /// A key certificate is not signed by the certified CA key.
    #[error("vtpm:cert-signature: the vTPM {} certificate is not signed by the certified vTPM CA key: a forged certificate", role.name().to_uppercase())]
    CertSignature {
        /// Which certificate.
        role: KeyRole,
    },
    /// A key certificate's issuer is not the CA's subject.
    #[error("vtpm:cert-issuer: the vTPM {} certificate's issuer is not the vTPM CA's subject", role.name().to_uppercase())]
    CertIssuer {
        /// Which certificate.
        role: KeyRole,
    },
    /// A key certificate lacks tvp's extension, or it is malformed.
    #[error("vtpm:cert-binding: the vTPM {} certificate's tvp extension: {msg}", role.name().to_uppercase())]
    CertBinding {
        /// Which certificate.
        role: KeyRole,
        /// What is wrong.
        msg: String,
    },
    /// A certificate names another host.
    #[error("vtpm:host: {what} names host {found}, expected {expected}")]
    Host {
        /// Which part.
        what: String,
        /// Host named.
        found: String,
        /// Host expected.
        expected: String,
    },
    /// A certificate or the identity names another VM.
    #[error(
        "vtpm:vm: {what} names VM {found:?}, expected {expected:?}: this is not your VM's TPM"
    )]
    Vm {
        /// Which part.
        what: String,
        /// VM named.
        found: String,
        /// VM expected.
        expected: String,
    },
    /// A certificate is for another role (an AK certificate presented as EK, ...).
    #[error("vtpm:role: the certificate presented as the vTPM {} certificate {msg}", expected.name().to_uppercase())]
    Role {
        /// The role it was presented as.
        expected: KeyRole,
        /// What it is instead.
        msg: String,
    },
    /// The certificate's key is not the key of the TPM structure it carries.
    #[error("vtpm:cert-key: the vTPM {} certificate's public key is not the key of the TPMT_PUBLIC in its tvp extension", role.name().to_uppercase())]
    CertKey {
        /// Which certificate.
        role: KeyRole,
    },
    /// The vTPM EK is not a restricted decryption key bound to the TPM.
    #[error("vtpm:ek-key: the vTPM EK {0}; an EK must be a P-256 restricted decryption key, fixedTPM and fixedParent, not a signing key (TCG default EK template)")]
    EkKey(String),
    /// The vTPM AK is not a restricted ECDSA-SHA256 signing key bound to the TPM.
    #[error("vtpm:ak-key: the vTPM AK {0}; an AK must be a P-256 restricted ECDSA-SHA256 signing key, fixedTPM, fixedParent and sensitiveDataOrigin, not decrypt")]
    AkKey(String),
    /// A vTPM quote's signature does not verify with the certified vTPM AK.
    #[error("vtpm:quote-signature: the quote is not signed by the certified vTPM AK ({0})")]
    QuoteSignature(String),
    /// A vTPM quote carries another nonce.
    #[error(
        "vtpm:quote-nonce: the quote carries nonce {got}, not yours ({want}): replayed or stale"
    )]
    QuoteNonce {
        /// Hex qualifying data of the quote.
        got: String,
        /// Hex nonce expected.
        want: String,
    },
    /// The quote's signer is not named with the AK's name algorithm.
    #[error(
        "vtpm:quote-signer: the quote's signer {0} is not a name of the vTPM AK's name algorithm"
    )]
    QuoteSigner(String),
}

impl VtpmError {
    /// The stable short code, e.g. `vtpm:ca-certify-signature`.
    pub fn code(&self) -> &'static str {
        match self {
            VtpmError::Version { .. } => "vtpm:version",
            VtpmError::Format(_) => "vtpm:format",
            VtpmError::CaCertifySignature(_) => "vtpm:ca-certify-signature",
            VtpmError::CaCertifyNonce { .. } => "vtpm:ca-certify-nonce",
            VtpmError::CaCertifyName { .. } => "vtpm:ca-certify-name",
            VtpmError::CaKey(_) => "vtpm:ca-key",
            VtpmError::CaCertificate(_) => "vtpm:ca-certificate",
            VtpmError::CertSignature { .. } => "vtpm:cert-signature",
            VtpmError::CertIssuer { .. } => "vtpm:cert-issuer",
            VtpmError::CertBinding { .. } => "vtpm:cert-binding",
            VtpmError::Host { .. } => "vtpm:host",
            VtpmError::Vm { .. } => "vtpm:vm",
            VtpmError::Role { .. } => "vtpm:role",
            VtpmError::CertKey { .. } => "vtpm:cert-key",
            VtpmError::EkKey(_) => "vtpm:ek-key",
            VtpmError::AkKey(_) => "vtpm:ak-key",
            VtpmError::QuoteSignature(_) => "vtpm:quote-signature",
            VtpmError::QuoteNonce { .. } => "vtpm:quote-nonce",
            VtpmError::QuoteSigner(_) => "vtpm:quote-signer",
        }
    }
}
