//! Routing and parsing: every HTTP request becomes exactly one [`ApiRequest`] or an
//! [`ApiError`]. Nothing executes here.

use base64::Engine;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::query;
use super::types::{
    ActivateCredentialRequest, AnchorRequest, BindingKeyRequest, QuoteRequest, VerifyImageRequest,
    VmOperationRequest, VtpmIdentityRequest,
};
use crate::vm::VmId;

/// Every operation the API offers.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// `POST /v1/vms`
    CreateVm(Box<crate::vm::CreateVmRequest>),
    /// `GET /v1/vms`
    ListVms,
    /// `GET /v1/vms/{id}`
    GetVm {
        /// VM id.
        id: VmId,
    },
    /// `DELETE /v1/vms/{id}` (restricted: `delete`)
    DeleteVm {
        /// VM id.
        id: VmId,
    },
    /// `POST /v1/vms/{id}/operations`: a restricted operation other than delete.
    VmOperation {
        /// VM id.
        id: VmId,
        /// The operation.
        op: crate::vm::Op,
        /// Its parameters (exactly `op.param_keys()`), which the token covers.
        params: tvp_audit::params::Params,
    },
    /// `POST /v1/vms/{id}/vtpm/identity`: the VM's own TPM's EK and AK certificates
    /// and the vTPM CA key, certified by the host's AK with this nonce.
    GetVtpmIdentity {
        /// VM id.
        id: VmId,
        /// Qualifying data for TPM2_Certify, 1..=32 bytes.
        nonce: Vec<u8>,
    },
    /// `GET /v1/host`
    GetHost,
    /// `POST /v1/host/quote`
    Quote {
        /// Qualifying data, 1..=32 bytes.
        nonce: Vec<u8>,
        /// PCRs to quote; `None` = the platform PCR.
        pcrs: Option<Vec<u32>>,
    },
    /// `GET /v1/host/event-log`
    GetEventLog,
    /// `GET /v1/host/unmanaged-vms`
    GetUnmanagedVms,
    /// `POST /v1/images/verify`: obtain an encrypted image's key from the tenant's
    /// key-management service and authenticate the whole image, writing nothing.
    VerifyImage {
        /// The encrypted image.
        image: std::path::PathBuf,
        /// The key-management service's socket.
        kms_socket: std::path::PathBuf,
    },
    /// `POST /v1/host/binding-key`: the binding key, certified by the AK with this nonce.
    CertifyBindingKey {
        /// Qualifying data for TPM2_Certify, 1..=32 bytes.
        nonce: Vec<u8>,
    },
    /// `POST /v1/host/activate-credential`
    ActivateCredential {
        /// TPM2B_ID_OBJECT buffer.
        credential_blob: Vec<u8>,
        /// TPM2B_ENCRYPTED_SECRET buffer.
        secret: Vec<u8>,
    },
    /// `GET /v1/audit?since=SEQ` (root only)
    GetAudit {
        /// First sequence number returned.
        since: u64,
    },
    /// `POST /v1/audit/anchor` (root only): the NV anchor certified by the AK.
    CertifyAuditAnchor {
        /// Qualifying data, 1..=32 bytes.
        nonce: Vec<u8>,
    },
    /// `GET /v1/vms/{id}/audit?since=SEQ[&nonce=HEX]`: a tenant's extract.
    GetVmAudit {
        /// The VM.
        vm: VmId,
        /// First sequence number covered.
        since: u64,
        /// If given, the extract carries an anchor certification for this nonce.
        nonce: Option<Vec<u8>>,
    },
}

impl ApiRequest {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ApiRequest::GetHost => "get-host",
            ApiRequest::CreateVm(_) => "create-vm",
            ApiRequest::ListVms => "list-vms",
            ApiRequest::GetVm { .. } => "get-vm",
            ApiRequest::GetVtpmIdentity { .. } => "get-vtpm-identity",
            ApiRequest::DeleteVm { .. } => "delete-vm",
            ApiRequest::VmOperation { .. } => "vm-operation",
            ApiRequest::Quote { .. } => "quote",
            ApiRequest::GetEventLog => "get-event-log",
            ApiRequest::ActivateCredential { .. } => "activate-credential",
            ApiRequest::GetUnmanagedVms => "get-unmanaged-vms",
            ApiRequest::CertifyBindingKey { .. } => "certify-binding-key",
            ApiRequest::VerifyImage { .. } => "verify-image",
            ApiRequest::GetAudit { .. } => "get-audit",
            ApiRequest::CertifyAuditAnchor { .. } => "certify-audit-anchor",
            ApiRequest::GetVmAudit { .. } => "get-vm-audit",
        }
    }

    /// Whether the request only reads: it changes no state and releases no secret
    /// (the audit trail records it once, after it ran). No wildcard: a new variant
    /// must decide.
    pub fn read_only(&self) -> bool {
        match self {
            ApiRequest::GetHost
            | ApiRequest::ListVms
            | ApiRequest::GetVm { .. }
            | ApiRequest::GetVtpmIdentity { .. }
            | ApiRequest::Quote { .. }
            | ApiRequest::GetEventLog
            | ApiRequest::GetUnmanagedVms
            | ApiRequest::GetAudit { .. }
            | ApiRequest::CertifyAuditAnchor { .. }
            | ApiRequest::GetVmAudit { .. } => true,
            ApiRequest::CreateVm(_)
            | ApiRequest::DeleteVm { .. }
            | ApiRequest::VmOperation { .. }
            | ApiRequest::ActivateCredential { .. }
            | ApiRequest::CertifyBindingKey { .. }
            | ApiRequest::VerifyImage { .. } => false,
        }
    }

    /// The VM the request concerns (the audit record's `vm`). No wildcard: a new
    /// variant must decide.
    pub fn vm(&self) -> Option<&str> {
        match self {
            ApiRequest::GetVmAudit { vm, .. } => Some(vm.as_str()),
            ApiRequest::CreateVm(r) => Some(&r.id),
            ApiRequest::GetVm { id }
            | ApiRequest::GetVtpmIdentity { id, .. }
            | ApiRequest::DeleteVm { id }
            | ApiRequest::VmOperation { id, .. } => Some(id.as_str()),
            ApiRequest::ListVms
            | ApiRequest::GetUnmanagedVms
            | ApiRequest::CertifyBindingKey { .. }
            | ApiRequest::VerifyImage { .. }
            | ApiRequest::GetHost
            | ApiRequest::Quote { .. }
            | ApiRequest::GetEventLog
            | ApiRequest::ActivateCredential { .. }
            | ApiRequest::GetAudit { .. }
            | ApiRequest::CertifyAuditAnchor { .. } => None,
        }
    }

    /// For a restricted operation (issue 6: power-off, pause, delete, ...): the VM,
    /// the operation name of `tvp_audit::policy::RESTRICTED_OPERATIONS` and its
    /// canonical parameters, which the tenant's token must match. The audit gate runs
    /// no restricted request without a valid authorization. No wildcard: a new
    /// variant must decide.
    pub fn restricted(&self) -> Option<(&str, &'static str, tvp_audit::params::Params)> {
        match self {
            ApiRequest::DeleteVm { id } => {
                Some((id.as_str(), "delete", tvp_audit::params::Params::new()))
            }
            ApiRequest::VmOperation { id, op, params } => {
                Some((id.as_str(), op.name(), params.clone()))
            }
            ApiRequest::CreateVm(_)
            | ApiRequest::ListVms
            | ApiRequest::GetVm { .. }
            | ApiRequest::GetVtpmIdentity { .. }
            | ApiRequest::GetUnmanagedVms
            | ApiRequest::CertifyBindingKey { .. }
            | ApiRequest::VerifyImage { .. }
            | ApiRequest::GetHost
            | ApiRequest::Quote { .. }
            | ApiRequest::GetEventLog
            | ApiRequest::ActivateCredential { .. }
            | ApiRequest::GetAudit { .. }
            | ApiRequest::CertifyAuditAnchor { .. }
            | ApiRequest::GetVmAudit { .. } => None,
        }
    }

    /// Whether only root may call it (the whole audit trail names every tenant).
    pub fn root_only(&self) -> bool {
        matches!(
            self,
            ApiRequest::GetAudit { .. } | ApiRequest::CertifyAuditAnchor { .. }
        )
    }
}

/// The routes and the methods each allows (`{id}` matches one path segment).
const ROUTES: &[(&str, &str)] = &[
    ("/v1/vms", "GET, POST"),
    ("/v1/vms/{id}", "GET, DELETE"),
    ("/v1/vms/{id}/audit", "GET"),
    ("/v1/vms/{id}/operations", "POST"),
    ("/v1/vms/{id}/vtpm/identity", "POST"),
    ("/v1/host", "GET"),
    ("/v1/host/quote", "POST"),
    ("/v1/host/event-log", "GET"),
    ("/v1/host/activate-credential", "POST"),
    ("/v1/host/unmanaged-vms", "GET"),
    ("/v1/host/binding-key", "POST"),
    ("/v1/images/verify", "POST"),
    ("/v1/audit", "GET"),
    ("/v1/audit/anchor", "POST"),
];

/// Parse a request. `path` may carry a query string: [`query`] reads the parameters
/// the audit routes take; any other parameter is ignored.
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<ApiRequest, ApiError> {
    let full = path;
    let path = path.split('?').next().unwrap_or(path);
    let (route, vm_id) = route_of(path);
    let Some(&(_, allow)) = ROUTES.iter().find(|(p, _)| *p == route) else {
        return Err(ApiError::not_found(path));
    };
    if !allow.split(", ").any(|m| m == method) {
        return Err(ApiError::method_not_allowed(method, path, allow));
    }
    if method == "GET" && !body.is_empty() {
        return Err(ApiError::invalid_argument(format!(
            "GET {path} takes no request body"
        )));
    }
    if let Some(id) = vm_id {
        return vm_request(route, method, full, id, body);
    }
    match path {
        "/v1/vms" if method == "GET" => Ok(ApiRequest::ListVms),
        "/v1/vms" => Ok(ApiRequest::CreateVm(Box::new(json(body)?))),
        "/v1/host" => Ok(ApiRequest::GetHost),
        "/v1/host/event-log" => Ok(ApiRequest::GetEventLog),
        "/v1/host/unmanaged-vms" => Ok(ApiRequest::GetUnmanagedVms),
        "/v1/images/verify" => {
            let r: VerifyImageRequest = json(body)?;
            for (field, p) in [("image", &r.image), ("kms_socket", &r.kms_socket)] {
                if !p.is_absolute() {
                    return Err(ApiError::invalid_argument(format!(
                        "{field}: '{}' is not an absolute path",
                        p.display()
                    )));
                }
            }
            Ok(ApiRequest::VerifyImage {
                image: r.image,
                kms_socket: r.kms_socket,
            })
        }
        "/v1/host/binding-key" => {
            let r: BindingKeyRequest = json(body)?;
            Ok(ApiRequest::CertifyBindingKey {
                nonce: query::nonce(&r.nonce)?,
            })
        }
        "/v1/host/quote" => {
            let q: QuoteRequest = json(body)?;
            let nonce = query::nonce(&q.nonce)?;
            if let Some(p) = &q.pcrs {
                if p.is_empty() {
                    return Err(ApiError::invalid_argument(
                        "pcrs: empty list; omit it to quote the platform PCR",
                    ));
                }
                if let Some(bad) = p.iter().find(|&&i| i > 23) {
                    return Err(ApiError::invalid_argument(format!(
                        "pcrs: PCR {bad} does not exist (0..=23)"
                    )));
                }
            }
            Ok(ApiRequest::Quote {
                nonce,
                pcrs: q.pcrs,
            })
        }
        "/v1/host/activate-credential" => {
            let r: ActivateCredentialRequest = json(body)?;
            Ok(ApiRequest::ActivateCredential {
                credential_blob: b64("credential_blob", &r.credential_blob)?,
                secret: b64("secret", &r.secret)?,
            })
        }
        "/v1/audit" => Ok(ApiRequest::GetAudit {
            since: query::since(full)?,
        }),
        "/v1/audit/anchor" => {
            let r: AnchorRequest = json(body)?;
            Ok(ApiRequest::CertifyAuditAnchor {
                nonce: query::nonce(&r.nonce)?,
            })
        }
        _ => Err(ApiError::not_found(path)),
    }
}

/// The route pattern of `path` (`{id}` standing for a VM id) and that id.
fn route_of(path: &str) -> (&str, Option<&str>) {
    let Some(rest) = path.strip_prefix("/v1/vms/") else {
        return (path, None);
    };
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    if id.is_empty() {
        return (path, None);
    }
    let route = match sub {
        "" if !rest.ends_with('/') => "/v1/vms/{id}",
        "audit" => "/v1/vms/{id}/audit",
        "operations" => "/v1/vms/{id}/operations",
        "vtpm/identity" => "/v1/vms/{id}/vtpm/identity",
        _ => return (path, None),
    };
    (route, Some(id))
}

/// A request on `/v1/vms/{id}...` whose route and method are known to be valid. An
/// `id` that breaks the [`VmId`] rule is a 400 on every such route.
fn vm_request(
    route: &str,
    method: &str,
    full: &str,
    id: &str,
    body: &[u8],
) -> Result<ApiRequest, ApiError> {
    let id = VmId::parse(id)?;
    match (route, method) {
        ("/v1/vms/{id}/audit", _) => Ok(ApiRequest::GetVmAudit {
            vm: id,
            since: query::since(full)?,
            nonce: query::optional_nonce(full)?,
        }),
        ("/v1/vms/{id}/operations", _) => {
            let r: VmOperationRequest = json(body)?;
            let (op, params) = r.validate().map_err(ApiError::invalid_argument)?;
            Ok(ApiRequest::VmOperation { id, op, params })
        }
        ("/v1/vms/{id}/vtpm/identity", _) => {
            let r: VtpmIdentityRequest = json(body)?;
            Ok(ApiRequest::GetVtpmIdentity {
                id,
                nonce: query::nonce(&r.nonce)?,
            })
        }
        (_, "DELETE") => Ok(ApiRequest::DeleteVm { id }),
        _ => Ok(ApiRequest::GetVm { id }),
    }
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_json(
            "request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(format!("request body: {e}")))
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    let v = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ApiError::invalid_argument(format!("{field}: not base64 ({e})")))?;
    if v.is_empty() || v.len() > 1024 {
        return Err(ApiError::invalid_argument(format!(
            "{field}: {} bytes; expected 1 to 1024",
            v.len()
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_methods_and_bodies() {
        assert_eq!(parse("GET", "/v1/host", b"").unwrap(), ApiRequest::GetHost);
        assert_eq!(
            parse("GET", "/v1/host?x=1", b"").unwrap(),
            ApiRequest::GetHost
        );
        assert_eq!(parse("GET", "/v1/nope", b"").unwrap_err().status, 404);
        assert_eq!(
            parse("DELETE", "/v1/vms/vm-1", b"").unwrap(),
            ApiRequest::DeleteVm { id: vm("vm-1") }
        );
        assert_eq!(parse("GET", "/v1/vms/a/b", b"").unwrap_err().status, 404);
        let e = parse("DELETE", "/v1/host", b"").unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("GET")));
        assert_eq!(parse("GET", "/v1/host", b"{}").unwrap_err().status, 400);
    }

    fn vm(id: &str) -> VmId {
        VmId::parse(id).unwrap()
    }

    #[test]
    fn vm_audit_paths() {
        assert_eq!(
            parse("GET", "/v1/vms/vm-1/audit?since=5&nonce=0a", b"").unwrap(),
            ApiRequest::GetVmAudit {
                vm: vm("vm-1"),
                since: 5,
                nonce: Some(vec![10])
            }
        );
        assert_eq!(
            parse("GET", "/v1/vms/a%2f/audit", b"").unwrap_err().status,
            400
        );
        assert_eq!(
            parse("POST", "/v1/vms/a/audit", b"").unwrap_err().status,
            405
        );
        assert_eq!(
            parse("GET", "/v1/vms/a/audit/x", b"").unwrap_err().status,
            404
        );
        assert_eq!(
            parse("GET", "/v1/vms/a/audit?since=x", b"")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn a_bad_vm_id_is_the_same_400_on_every_vm_route() {
        for (method, path, body) in [
            ("GET", "/v1/vms/Bad_Id", &b""[..]),
            ("DELETE", "/v1/vms/Bad_Id", b""),
            ("GET", "/v1/vms/Bad_Id/audit", b""),
            ("POST", "/v1/vms/-x/operations", br#"{"op":"pause"}"#),
        ] {
            let e = parse(method, path, body).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (400, "invalid_argument"),
                "{method} {path}"
            );
            // Word for word what a create request with that id gets (vm::spec).
            assert_eq!(e.message, format!("id: {}", crate::vm::id::VmIdError));
        }
    }

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = include_str!("../../../docs/openapi.yaml");
        for (path, method) in ROUTES {
            let at = doc
                .find(&format!("\n  {path}:\n"))
                .unwrap_or_else(|| panic!("{path} missing from docs/openapi.yaml"));
            let section = &doc[at..];
            let next = section[3..].find("\n  /").map_or(section.len(), |n| n + 3);
            for m in method.split(", ") {
                assert!(
                    section[..next].contains(&format!("    {}:", m.to_lowercase())),
                    "{m} {path} missing from docs/openapi.yaml"
                );
            }
        }
    }

    #[test]
    fn operation_params_are_printable_ascii_as_the_schema_says() {
        let op = |params: &str| {
            let body = format!(r#"{{"op":"snapshot-create","params":{{"name":{params}}}}}"#);
            parse("POST", "/v1/vms/vm-1/operations", body.as_bytes())
        };
        assert!(op(r#""snap-1 ~""#).is_ok());
        for bad in [
            r#""""#,
            r#""\u00e9""#,
            r#""a\u0007""#,
            &format!("\"{}\"", "a".repeat(257)),
        ] {
            let e = op(bad).unwrap_err();
            assert!(
                e.message.contains("printable ASCII"),
                "{bad}: {}",
                e.message
            );
        }
        let e = parse(
            "POST",
            "/v1/vms/vm-1/operations",
            br#"{"op":"pause","params":{"name":"x"}}"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("does not apply to pause"),
            "{}",
            e.message
        );
    }

    #[test]
    fn quote_body_is_validated() {
        let ok = parse(
            "POST",
            "/v1/host/quote",
            br#"{"nonce":"0a0b","pcrs":[15,23]}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            ApiRequest::Quote {
                nonce: vec![10, 11],
                pcrs: Some(vec![15, 23])
            }
        );
        for (body, code, needle) in [
            (&b""[..], "invalid_json", "empty"),
            (b"{nonce", "invalid_json", "request body"),
            (br#"{"nonce":"00","extra":1}"#, "invalid_json", "unknown field `extra`"),
            (br#"{"nonce":5}"#, "invalid_json", "invalid type"),
            (br#"{"nonce":""}"#, "invalid_argument", "empty"),
            (br#"{"nonce":"zz"}"#, "invalid_argument", "not hex"),
            (
                br#"{"nonce":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"}"#,
                "invalid_argument",
                "at most 32",
            ),
            (br#"{"nonce":"00","pcrs":[24]}"#, "invalid_argument", "PCR 24"),
            (br#"{"nonce":"00","pcrs":[]}"#, "invalid_argument", "empty list"),
            (br#"{"nonce":"00","pcrs":[-1]}"#, "invalid_json", "invalid value"),
            (br#"{"nonce":"00","pcrs":null}"#, "invalid_json", "invalid type: null"),
        ] {
            let e = parse("POST", "/v1/host/quote", body).unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(body));
            assert!(e.message.contains(needle), "{} -> {}", String::from_utf8_lossy(body), e.message);
        }
    }
}
