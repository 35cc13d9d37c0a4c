//! API errors: an HTTP status, a stable code and a message that says what to fix.

use crate::tpm::TpmError;

use super::types::{ErrorBody, ErrorDetail};

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// For 405: the methods the path allows.
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }
    /// 400: the body is not valid JSON or not the expected shape.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_json", message)
    }
    /// 400: a field's value is not acceptable.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_argument", message)
    }
    /// 403: the caller may not use the API.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }
    /// 404: no such path.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            404,
            "not_found",
            format!("no such endpoint: {path} (see docs/api.md)"),
        )
    }
    /// 405: the path exists, the method does not.
    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path}; use {allow}"),
            )
        }
    }
    /// 408: the client was too slow.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(408, "request_timeout", message)
    }
    /// 413: the body is larger than allowed.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "body_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }
    /// 415: a body that is not JSON.
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(
            415,
            "unsupported_media_type",
            format!("content-type '{ct}' is not supported; send application/json"),
        )
    }
    /// 500: a bug or an unexpected state.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
    /// 503: the TPM is not usable right now.
    pub fn tpm_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "tpm_unavailable", message)
    }

    /// 403: a restricted operation's authorization was refused; `code` is the
    /// token check that failed (`bad_signature`, `counter_not_increasing`, ...).
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(403, code, message)
    }
    /// 404: no such VM.
    pub fn not_found_vm(vm: &str) -> Self {
        Self::new(404, "vm_not_found", format!("no VM '{vm}' on this host"))
    }
    /// 503: the audit trail cannot record the request, so it does not run.
    pub fn audit_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "audit_unavailable", message)
    }

    /// 503 `audit_pending`: events observed earlier (VM state changes, host events)
    /// are not in the audit trail yet; nothing runs until they are.
    pub fn audit_pending(message: impl Into<String>) -> Self {
        Self::new(503, "audit_pending", message)
    }

    /// The 503 for a record that could not be persisted because of `e`:
    /// `audit_pending` when earlier events wait, else `audit_unavailable`.
    pub fn audit_failed(e: &crate::audit::AuditError, message: impl Into<String>) -> Self {
        match e.root() {
            crate::audit::AuditError::EventsPending { .. } => Self::audit_pending(message),
            _ => Self::audit_unavailable(message),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl From<crate::vm::VmError> for ApiError {
    fn from(e: crate::vm::VmError) -> Self {
        use crate::vm::VmError as V;
        match e {
            V::Invalid(_) => ApiError::invalid_argument(e.to_string()),
            V::Exists(_) => ApiError::new(409, "exists", e.to_string()),
            V::AddressInUse { .. } => ApiError::new(409, "address_in_use", e.to_string()),
            V::NotFound(_) => ApiError::new(404, "not_found", e.to_string()),
            V::Refused(_) => ApiError::new(409, "platform_changed", e.to_string()),
            V::Spawn(_) => ApiError::internal(e.to_string()),
            V::ShuttingDown => ApiError::new(503, "shutting_down", e.to_string()),
            V::State(_) => ApiError::new(409, "invalid_state", e.to_string()),
            V::Stopping(_) => ApiError::new(409, "stopping", e.to_string()),
            V::NotSupported(_) => ApiError::new(501, "not_supported", e.to_string()),
            V::Image(i) => match i {
                crate::vm::image::ImageError::Path { .. }
                | crate::vm::image::ImageError::PlaintextDisk { .. } => {
                    ApiError::invalid_argument(i.to_string())
                }
                crate::vm::image::ImageError::Rejected { .. } => {
                    ApiError::new(422, "image_rejected", i.to_string())
                }
                crate::vm::image::ImageError::Release(r) => r.into(),
            },
        }
    }
}

impl From<crate::image_release::ReleaseError> for ApiError {
    fn from(e: crate::image_release::ReleaseError) -> Self {
        use crate::image_release::ReleaseError as R;
        match e {
            R::Tpm(t) => t.into(),
            R::Refused { .. } => ApiError::new(422, "release_refused", e.to_string()),
            R::Image { .. } => ApiError::new(422, "image_rejected", e.to_string()),
            R::Service { .. } => ApiError::new(502, "kms_unavailable", e.to_string()),
        }
    }
}

impl From<TpmError> for ApiError {
    fn from(e: TpmError) -> Self {
        match e {
            TpmError::InvalidArgument(_) => ApiError::invalid_argument(e.to_string()),
            TpmError::Refused(_) => ApiError::new(409, "refused", e.to_string()),
            TpmError::QuoteRace { .. } => ApiError::new(409, "retry", e.to_string()),
            TpmError::ServiceStopped | TpmError::Tcti { .. } => {
                ApiError::tpm_unavailable(e.to_string())
            }
            TpmError::Command { .. } | TpmError::WrongObject { .. } | TpmError::Encoding { .. } => {
                ApiError::new(502, "tpm_error", e.to_string())
            }
        }
    }
}

impl From<crate::audit::AuthorizeError> for ApiError {
    fn from(e: crate::audit::AuthorizeError) -> Self {
        use crate::audit::AuthorizeError as A;
        match &e {
            A::Token(t) => ApiError::unauthorized(t.code(), e.to_string()),
            A::UnknownVm(vm) => ApiError::not_found_vm(vm),
            A::Counter(_) => ApiError::audit_unavailable(e.to_string()),
        }
    }
}

impl From<crate::audit::ViewError> for ApiError {
    fn from(e: crate::audit::ViewError) -> Self {
        use crate::audit::ViewError as V;
        match e {
            V::UnknownVm(vm) => ApiError::not_found_vm(&vm),
            V::NotAnchored | V::AnchorUnwritten => ApiError::audit_unavailable(e.to_string()),
            V::EventsPending(_) => ApiError::audit_pending(e.to_string()),
            V::Tpm(t) => t.into(),
        }
    }
}

/// A VM id that breaks the rule, wherever it was given: the same 400 as a create
/// request with that id.
impl From<crate::vm::id::VmIdError> for ApiError {
    fn from(e: crate::vm::id::VmIdError) -> Self {
        ApiError::invalid_argument(format!("id: {e}"))
    }
}
