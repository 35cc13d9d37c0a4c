//! Where the API path meets the audit gate: every received request — parsed or not,
//! allowed or not — goes through [`run`], which derives what its records say
//! (operation, VM, parameter digest), makes the decision (access rules, tenant
//! authorization for restricted operations) and hands both to
//! [`crate::audit::Audit::gate`], which records before and after (read-only requests:
//! once, after) and runs [`execute`] only when allowed. There is no other path to
//! `execute`.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tvp_audit::params::{self, Params};
use tvp_audit::Digest32;

use super::error::ApiError;
use super::handlers::{execute, AppState, Reply};
use super::peer::Caller;
use super::request::ApiRequest;
use crate::audit::gate::RequestInfo;

/// The parameter digest of an unrestricted request: `params::digest` of `method`,
/// `path` (with query) and `body_sha256` (hex).
pub fn request_digest(method: &str, path: &str, body: &[u8]) -> Digest32 {
    let mut p = Params::new();
    p.insert("method".into(), method.to_string());
    p.insert("path".into(), path.to_string());
    p.insert("body_sha256".into(), hex::encode(Sha256::digest(body)));
    params::digest(&p)
}

/// Audit, decide and (if allowed) execute one request. `received` is the parsed
/// request and its body, or why it could not be parsed or was refused before
/// parsing; `token` is the `X-Tvp-Authorization` header.
pub async fn run(
    state: &AppState,
    caller: Caller,
    method: &str,
    path: &str,
    received: Result<(ApiRequest, Bytes), ApiError>,
    token: Option<&str>,
) -> Result<(&'static str, Reply), ApiError> {
    let (req, body) = match received {
        Ok(r) => r,
        Err(e) => {
            let bare = path.split('?').next().unwrap_or(path);
            let info = RequestInfo {
                caller,
                op: format!("http:{method} {bare}"),
                vm: None,
                params_digest: request_digest(method, path, b""),
                read_only: false,
            };
            let refused = state
                .audit
                .gate(info, Err(e), || async {
                    Err(ApiError::internal("a refused request reached execution"))
                })
                .await;
            return refused.map(|r| ("refused", r));
        }
    };
    let name = req.name();
    let (info, decision) = match req.restricted() {
        Some((vm, op, p)) => {
            let decision = state
                .audit
                .authorize(vm, op, &p, token)
                .map(|a| {
                    format!(
                        "authorized by tenant key {} with counter {}",
                        a.key_id, a.counter
                    )
                })
                .map_err(ApiError::from);
            let info = RequestInfo {
                caller,
                op: op.to_string(),
                vm: Some(vm.to_string()),
                params_digest: params::digest(&p),
                read_only: false,
            };
            (info, decision)
        }
        None => {
            let decision = if req.root_only() && caller.uid != 0 {
                Err(ApiError::forbidden(format!(
                    "{name} is for root only: the whole audit trail concerns every tenant (uid {} asked)",
                    caller.uid
                )))
            } else {
                Ok("allowed: unrestricted operation by an allowed caller".to_string())
            };
            let info = RequestInfo {
                caller,
                op: name.to_string(),
                vm: req.vm().map(String::from),
                params_digest: request_digest(method, path, &body),
                read_only: req.read_only(),
            };
            (info, decision)
        }
    };
    state
        .audit
        .gate(info, decision, move || execute(state, req))
        .await
        .map(|r| (name, r))
}
