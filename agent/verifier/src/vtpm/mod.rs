//! A measured VM's own TPM (vTPM) and its certified identity: the vTPM's EK and AK
//! certificates, issued by tvpd's vTPM CA, whose key lives in the host TPM and is
//! certified by the host AK. A tenant holding the host AK (pinned at inventory) checks
//!
//! vTPM EK/AK certificate → vTPM CA key → host AK (TPM2_Certify) → host EK → manufacturer.
//!
//! - [`cert`]: the X.509 profile, built with the TPM as signer ([`CaSigner`]).
//! - [`parse`]: the strict reader of those certificates and their tvp extension.
//! - [`chain`]: [`verify_identity`] and [`verify_vtpm_quote`].
//!
//! The profile and the chain are documented in `docs/vtpm-identity.md`.

pub mod cert;
pub mod chain;
pub mod der;
mod error;
pub mod parse;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::evidence::QuoteBlobs;
use crate::tpm::alg::ECC_NIST_P256;
use crate::tpm::{Public, PublicKey};
use crate::verify::AkKey;

pub use cert::{ca_certificate, key_certificate, CaSigner, CertError, VtpmSubject};
pub use chain::{check_ak, verify_identity, verify_quote_by, verify_vtpm_quote};
pub use error::VtpmError;

/// The [`VtpmIdentity`] format version this crate writes and reads.
pub const VTPM_IDENTITY_VERSION: u32 = 1;

/// The UUID under `2.25` naming tvp's private certificate extension
/// (be43925c-e264-4f8f-afc0-b3b60775354b, as an integer).
pub const TVP_EXTENSION_UUID: u128 = 252_904_171_679_513_814_278_122_157_050_319_680_843;

/// The private extension's OID in dotted form.
pub fn tvp_extension_oid() -> String {
    format!("2.25.{TVP_EXTENSION_UUID}")
}

/// Which vTPM key a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// The endorsement key (a restricted decryption key).
    Ek,
    /// The attestation key (a restricted signing key).
    Ak,
}

impl KeyRole {
    /// `ek` or `ak`.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Ek => "ek",
            KeyRole::Ak => "ak",
        }
    }

    /// The ENUMERATED value in the private extension.
    pub fn number(self) -> u8 {
        match self {
            KeyRole::Ek => 0,
            KeyRole::Ak => 1,
        }
    }

    /// The role of an ENUMERATED value.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            0 => Some(KeyRole::Ek),
            1 => Some(KeyRole::Ak),
            _ => None,
        }
    }

    /// The subject common name for VM `vm_id`.
    pub fn common_name(self, vm_id: &str) -> String {
        match self {
            KeyRole::Ek => format!("tvp vTPM EK {vm_id}"),
            KeyRole::Ak => format!("tvp vTPM AK {vm_id}"),
        }
    }

    /// The extended key usage OID's arcs: tcg-kp-EKCertificate (2.23.133.8.1) or
    /// tcg-kp-AIKCertificate (2.23.133.8.3).
    pub fn eku_arcs(self) -> [u128; 5] {
        match self {
            KeyRole::Ek => [2, 23, 133, 8, 1],
            KeyRole::Ak => [2, 23, 133, 8, 3],
        }
    }
}

/// The CA's subject (and issuer) common name for host `host_id`.
pub fn ca_common_name(host_id: &str) -> String {
    format!("tvp vTPM CA {host_id}")
}

/// What tvpd hands a tenant about a VM's TPM: the answer of
/// `POST /v1/vms/{id}/vtpm/identity` (docs/api.md, docs/vtpm-identity.md).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VtpmIdentity {
    /// Format version; [`VTPM_IDENTITY_VERSION`].
    pub version: u32,
    /// The host's id (lowercase hex SHA-256 of its EK public key, DER).
    pub host_id: String,
    /// The VM's id.
    pub vm_id: String,
    /// The vTPM CA key's TPMT_PUBLIC as the host TPM marshals it, base64.
    #[serde(
        serialize_with = "crate::hexbytes::ser_b64",
        deserialize_with = "crate::hexbytes::de_b64"
    )]
    pub ca_public: Vec<u8>,
    /// TPM2_Certify of the CA key by the host AK over the tenant's nonce: TPMS_ATTEST
    /// and TPMT_SIGNATURE, base64.
    pub ca_certify: QuoteBlobs,
    /// The CA's self-signed certificate, PEM.
    pub ca_certificate_pem: String,
    /// The vTPM EK's certificate, PEM.
    pub ek_certificate_pem: String,
    /// The vTPM AK's certificate, PEM.
    pub ak_certificate_pem: String,
}

/// What the tenant expects the identity to be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtpmExpect<'a> {
    /// The host the pinned AK belongs to (its inventory id); `None` checks only that
    /// every part names the same host (the AK binds the chain to the host anyway).
    pub host_id: Option<&'a str>,
    /// The VM whose TPM this must be.
    pub vm_id: &'a str,
}

/// A verified vTPM identity: the VM's TPM keys a tenant can now trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedVtpm {
    /// The host id every part names.
    pub host_id: String,
    /// The VM id every part names.
    pub vm_id: String,
    /// The vTPM EK's TPMT_PUBLIC.
    pub ek_public: Vec<u8>,
    /// The vTPM AK's TPMT_PUBLIC.
    pub ak_public: Vec<u8>,
    /// The vTPM EK's TPM name (nameAlg ‖ H(TPMT_PUBLIC)).
    pub ek_name: Vec<u8>,
    /// The vTPM AK's TPM name.
    pub ak_name: Vec<u8>,
    /// The vTPM AK, to check the VM's quotes with ([`verify_vtpm_quote`]).
    pub ak_key: AkKey,
    /// The vTPM CA key's TPM name in the host TPM (what the host AK certified).
    pub ca_name: Vec<u8>,
}

/// The P-256 point of an ECC TPM key; `None` for another key type or curve.
pub fn p256_point(public: &Public) -> Option<p256::PublicKey> {
    match (&public.key, AkKey::from_tpm_public(public)) {
        (PublicKey::Ecc { curve, .. }, Ok(AkKey::P256(k))) if *curve == ECC_NIST_P256 => Some(k),
        _ => None,
    }
}
