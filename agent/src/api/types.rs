//! Request and response bodies of the API, shared by `tvpd` and `tvpctl`.

use serde::{Deserialize, Serialize};

/// `GET /v1/host`: the host's identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    /// Lowercase hex SHA-256 of the EK public key (DER SubjectPublicKeyInfo).
    pub host_id: String,
    /// EK public key, PEM.
    pub ek_public_pem: String,
    /// EK certificate from the TPM's NV, PEM, if the TPM has one.
    pub ek_certificate_pem: Option<String>,
    /// AK public key, PEM.
    pub ak_public_pem: String,
    /// AK marshalled TPM2B_PUBLIC, base64.
    pub ak_public: String,
    /// AK TPM name (nameAlg || digest), hex: what TPM2_MakeCredential binds to.
    pub ak_name: String,
    /// EK TPM name, hex.
    pub ek_name: String,
    /// PCR bank used for quotes and measurements.
    pub pcr_bank: String,
    /// The platform PCR.
    pub platform_pcr: u32,
    /// No measured platform file (tvpd, platform artefacts, configuration file) has
    /// changed on disk since tvpd measured it at start.
    pub platform_intact: bool,
    /// The changes detected, if any.
    pub platform_changes: Vec<crate::platform_watch::PlatformChange>,
    /// tvpd version.
    pub version: String,
}

/// `POST /v1/host/quote`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// Caller's fresh nonce, hex, 1 to 32 bytes.
    pub nonce: String,
    /// PCR indexes to quote (SHA-256 bank); absent: the platform PCR. `null` is
    /// refused like any other non-list (docs/openapi.yaml: a list of 1 or more).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub pcrs: Option<Vec<u32>>,
}

/// For an optional field: absent is `None` (through `#[serde(default)]`), a value is
/// `Some`, and an explicit `null` is an error, as the API schema says.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `POST /v1/host/binding-key`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BindingKeyRequest {
    /// The key-management service's fresh nonce, hex, 1 to 32 bytes.
    pub nonce: String,
}

/// Body of `POST /v1/vms/{id}/vtpm/identity`: the tenant's nonce, as for the binding
/// key. The response is `tvp_verifier::vtpm::VtpmIdentity`.
pub type VtpmIdentityRequest = BindingKeyRequest;

/// Response of `POST /v1/host/binding-key`: the host binding key and its certification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BindingKeyResponse {
    /// Marshalled TPM2B_PUBLIC of the binding key, base64.
    pub public: String,
    /// The binding key's RSA public key, PEM (wrap image keys to it with RSA-OAEP-SHA-256).
    pub public_pem: String,
    /// The PCRs (SHA-256 bank) whose values at creation the key's use policy requires.
    pub policy_pcrs: Vec<u32>,
    /// TPMS_ATTEST of TPM2_Certify by the AK over the binding key, base64.
    pub certify_attest: String,
    /// TPMT_SIGNATURE of the certification, base64.
    pub certify_signature: String,
}

/// `POST /v1/images/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerifyImageRequest {
    /// Absolute path of the encrypted image on this host.
    pub image: std::path::PathBuf,
    /// Absolute path of the tenant key-management service's Unix socket.
    pub kms_socket: std::path::PathBuf,
}

/// Response of `POST /v1/images/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerifyImageResponse {
    /// The image key was released to this host and unwrapped by its TPM.
    pub key_released: bool,
    /// Every chunk authenticated and the plaintext digest matched.
    pub image_verified: bool,
    /// Plaintext length.
    pub plaintext_len: u64,
    /// Number of chunks.
    pub chunk_count: u64,
    /// SHA-256 of the plaintext, hex.
    pub image_digest: String,
}

/// `POST /v1/host/activate-credential`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActivateCredentialRequest {
    /// TPM2B_ID_OBJECT buffer (without its size field), base64.
    pub credential_blob: String,
    /// TPM2B_ENCRYPTED_SECRET buffer (without its size field), base64.
    pub secret: String,
}

/// Response of `POST /v1/host/activate-credential`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActivateCredentialResponse {
    /// The recovered credential, base64.
    pub credential: String,
}

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error's machine-readable code and human-readable message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_json`, `not_found`, `forbidden`.
    pub code: String,
    /// What was wrong and what to do about it.
    pub message: String,
}

/// Body of `POST /v1/vms/{id}/operations`; the tenant's token travels in the
/// `X-Tvp-Authorization` header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmOperationRequest {
    /// A restricted operation other than `delete` (`pause`, `resume`, `power-off`, ...).
    pub op: String,
    /// Its parameters, as the token's parameter digest covers them.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
}

/// Longest parameter value of an operation.
pub const MAX_PARAM_VALUE: usize = 256;

impl VmOperationRequest {
    /// The operation and its parameters, exactly the operation's keys with values of
    /// 1 to [`MAX_PARAM_VALUE`] printable ASCII characters; errors name what is wrong.
    pub fn validate(self) -> Result<(crate::vm::Op, tvp_audit::params::Params), String> {
        use crate::vm::Op;
        let op = match Op::from_name(&self.op) {
            Some(Op::Delete) => {
                return Err("op: delete is DELETE /v1/vms/{id} (with the same token header)".into())
            }
            Some(op) => op,
            None => {
                return Err(format!(
                    "op: '{}' is not a VM operation; one of {}, {}",
                    self.op.chars().take(64).collect::<String>(),
                    tvp_audit::policy::RESTRICTED_OPERATIONS.join(", "),
                    tvp_audit::policy::KEY_OPERATIONS.join(", ")
                ))
            }
        };
        let want = op.param_keys();
        for (k, v) in &self.params {
            if !want.contains(&k.as_str()) {
                return Err(format!(
                    "params: '{}' does not apply to {} (it takes: {})",
                    k.chars().take(64).collect::<String>(),
                    op.name(),
                    if want.is_empty() {
                        "none".to_string()
                    } else {
                        want.join(", ")
                    }
                ));
            }
            if v.is_empty()
                || v.len() > MAX_PARAM_VALUE
                || !v.bytes().all(|b| (0x20..0x7f).contains(&b))
            {
                return Err(format!(
                    "params.{k}: 1 to {MAX_PARAM_VALUE} printable ASCII characters"
                ));
            }
        }
        if let Some(missing) = want.iter().find(|k| !self.params.contains_key(**k)) {
            return Err(format!("params.{missing}: required for {}", op.name()));
        }
        if op == Op::RotateKey {
            rotation_key(&self.params)?;
        }
        Ok((op, self.params))
    }
}

/// The new key of a `rotate-key` operation: its `public_key` parameter, the DER
/// SubjectPublicKeyInfo of an Ed25519 or P-256 key in standard base64.
pub fn rotation_key(params: &tvp_audit::params::Params) -> Result<tvp_audit::TenantKey, String> {
    let b64 = params
        .get("public_key")
        .ok_or("params.public_key: required for rotate-key")?;
    tvp_audit::TenantKey::from_spki_base64(b64).map_err(|e| format!("params.public_key: {e}"))
}

/// Body of `POST /v1/audit/anchor`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AnchorRequest {
    /// Fresh nonce, hex, 1..=32 bytes.
    pub nonce: String,
}
