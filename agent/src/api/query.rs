//! The one parser of query strings and hex nonces, for every route: `since=SEQ`,
//! `nonce=HEX` in a query, and nonces in request bodies.

use super::error::ApiError;
use crate::tpm::quote::check_nonce;

/// The value of `key` in the query string of `full` (path with query), if present.
/// Values are taken as they are (no percent decoding: every value tvpd reads is a
/// number or hex).
pub fn param<'a>(full: &'a str, key: &str) -> Option<&'a str> {
    let q = full.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Largest `since` accepted: the largest signed 64-bit integer, so that every JSON
/// client represents it exactly (docs/openapi.yaml: `format: int64`).
pub const MAX_SINCE: u64 = i64::MAX as u64;

/// `since=SEQ`: the first sequence number wanted (default 1). Records are numbered
/// from 1, so 0 is refused rather than read as "from the start" (docs/openapi.yaml).
pub fn since(full: &str) -> Result<u64, ApiError> {
    match param(full, "since") {
        None => Ok(1),
        Some(v) => match v.parse::<u64>() {
            Ok(0) => Err(ApiError::invalid_argument(
                "since: records are numbered from 1; omit since for the whole trail",
            )),
            Ok(n) if n <= MAX_SINCE => Ok(n),
            _ => Err(ApiError::invalid_argument(format!(
                "since: '{}' is not a sequence number (1 to {MAX_SINCE})",
                v.chars().take(32).collect::<String>(),
            ))),
        },
    }
}

/// `nonce=HEX`, if given.
pub fn optional_nonce(full: &str) -> Result<Option<Vec<u8>>, ApiError> {
    param(full, "nonce").map(nonce).transpose()
}

/// A hex nonce of 1 to 32 bytes (the limits of a TPM's qualifying data).
pub fn nonce(hex_text: &str) -> Result<Vec<u8>, ApiError> {
    let n = hex::decode(hex_text).map_err(|e| {
        ApiError::invalid_argument(format!("nonce: not hex ({e}); send 1 to 32 bytes as hex"))
    })?;
    check_nonce(&n).map_err(|e| ApiError::invalid_argument(format!("nonce: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_and_nonce() {
        assert_eq!(since("/v1/audit").unwrap(), 1);
        assert_eq!(since("/v1/audit?x=1&since=7").unwrap(), 7);
        assert_eq!(since("/v1/audit?since=x").unwrap_err().status, 400);
        assert_eq!(since("/v1/audit?since=0").unwrap_err().status, 400);
        assert_eq!(
            since(&format!("/v1/audit?since={MAX_SINCE}")).unwrap(),
            MAX_SINCE
        );
        let too_big = format!("/v1/audit?since={}", MAX_SINCE + 1);
        assert_eq!(since(&too_big).unwrap_err().status, 400);
        assert_eq!(optional_nonce("/a?nonce=0a0b").unwrap(), Some(vec![10, 11]));
        assert_eq!(optional_nonce("/a").unwrap(), None);
        for bad in ["", "zz", "0", &"00".repeat(33)] {
            let e = nonce(bad).unwrap_err();
            assert_eq!((e.status, e.code), (400, "invalid_argument"), "{bad}");
        }
    }
}
