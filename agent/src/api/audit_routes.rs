//! Parsing of the audit endpoints' paths and query strings (`docs/audit.md`).

use serde::Deserialize;

use super::error::ApiError;
use super::request::ApiRequest;
use crate::tpm::quote::check_nonce;

/// Body of `POST /v1/audit/anchor`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorRequest {
    /// Fresh nonce, hex, 1..=32 bytes.
    pub nonce: String,
}

fn query<'a>(full: &'a str, key: &str) -> Option<&'a str> {
    let q = full.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `since=SEQ` (default 1).
pub fn since(full: &str) -> Result<u64, ApiError> {
    match query(full, "since") {
        None => Ok(1),
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::invalid_argument(format!("since: '{v}' is not a sequence number"))
        }),
    }
}

/// A hex nonce, 1..=32 bytes.
pub fn nonce(hex_text: &str) -> Result<Vec<u8>, ApiError> {
    let n = hex::decode(hex_text)
        .map_err(|e| ApiError::invalid_argument(format!("nonce: not hex ({e})")))?;
    check_nonce(&n).map_err(|e| ApiError::invalid_argument(format!("nonce: {e}")))?;
    Ok(n)
}

/// VM ids: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn valid_vm_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `GET /v1/vms/{id}/audit?since=SEQ[&nonce=HEX]` (route and method already checked).
pub fn vm_audit(id: String, full: &str) -> Result<ApiRequest, ApiError> {
    if !valid_vm_id(&id) {
        return Err(ApiError::invalid_argument(
            "VM id: 1 to 64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    Ok(ApiRequest::GetVmAudit {
        vm: id,
        since: since(full)?,
        nonce: query(full, "nonce").map(nonce).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_audit_paths() {
        use crate::api::request::parse;
        assert_eq!(
            parse("GET", "/v1/vms/vm-1/audit?since=5&nonce=0a", b"").unwrap(),
            ApiRequest::GetVmAudit {
                vm: "vm-1".into(),
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
        assert_eq!(since("/v1/audit?since=x").unwrap_err().status, 400);
        assert_eq!(since("/v1/audit").unwrap(), 1);
    }
}
