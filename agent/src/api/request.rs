//! Routing and parsing: every HTTP request becomes exactly one [`ApiRequest`] or an
//! [`ApiError`]. Nothing executes here.

use base64::Engine;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::types::{
    ActivateCredentialRequest, BindingKeyRequest, QuoteRequest, VerifyImageRequest,
};
use crate::tpm::quote::check_nonce;

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
        id: String,
    },
    /// `DELETE /v1/vms/{id}`
    DeleteVm {
        /// VM id.
        id: String,
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
}

impl ApiRequest {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ApiRequest::GetHost => "get-host",
            ApiRequest::CreateVm(_) => "create-vm",
            ApiRequest::ListVms => "list-vms",
            ApiRequest::GetVm { .. } => "get-vm",
            ApiRequest::DeleteVm { .. } => "delete-vm",
            ApiRequest::Quote { .. } => "quote",
            ApiRequest::GetEventLog => "get-event-log",
            ApiRequest::ActivateCredential { .. } => "activate-credential",
            ApiRequest::GetUnmanagedVms => "get-unmanaged-vms",
            ApiRequest::CertifyBindingKey { .. } => "certify-binding-key",
            ApiRequest::VerifyImage { .. } => "verify-image",
        }
    }
}

/// The routes and the methods each allows (`{id}` matches one path segment).
const ROUTES: &[(&str, &str)] = &[
    ("/v1/vms", "GET, POST"),
    ("/v1/vms/{id}", "GET, DELETE"),
    ("/v1/host", "GET"),
    ("/v1/host/quote", "POST"),
    ("/v1/host/event-log", "GET"),
    ("/v1/host/activate-credential", "POST"),
    ("/v1/host/unmanaged-vms", "GET"),
    ("/v1/host/binding-key", "POST"),
    ("/v1/images/verify", "POST"),
];

/// Parse a request. `path` may carry a query string, which is ignored.
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<ApiRequest, ApiError> {
    let path = path.split('?').next().unwrap_or(path);
    let vm_id = path
        .strip_prefix("/v1/vms/")
        .filter(|rest| !rest.is_empty() && !rest.contains('/'));
    let route = if vm_id.is_some() {
        "/v1/vms/{id}"
    } else {
        path
    };
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
        return Ok(match method {
            "DELETE" => ApiRequest::DeleteVm { id: id.to_string() },
            _ => ApiRequest::GetVm { id: id.to_string() },
        });
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
                nonce: nonce_arg(&r.nonce)?,
            })
        }
        "/v1/host/quote" => {
            let q: QuoteRequest = json(body)?;
            let nonce = nonce_arg(&q.nonce)?;
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
        _ => Err(ApiError::not_found(path)),
    }
}

fn nonce_arg(hex_nonce: &str) -> Result<Vec<u8>, ApiError> {
    let nonce = hex::decode(hex_nonce).map_err(|e| {
        ApiError::invalid_argument(format!("nonce: not hex ({e}); send 1 to 32 bytes as hex"))
    })?;
    check_nonce(&nonce).map_err(|e| ApiError::invalid_argument(format!("nonce: {e}")))?;
    Ok(nonce)
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
            ApiRequest::DeleteVm { id: "vm-1".into() }
        );
        assert_eq!(parse("GET", "/v1/vms/a/b", b"").unwrap_err().status, 404);
        let e = parse("DELETE", "/v1/host", b"").unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("GET")));
        assert_eq!(parse("GET", "/v1/host", b"{}").unwrap_err().status, 400);
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
        ] {
            let e = parse("POST", "/v1/host/quote", body).unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(body));
            assert!(e.message.contains(needle), "{} -> {}", String::from_utf8_lossy(body), e.message);
        }
    }
}
