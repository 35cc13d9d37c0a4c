//! Who may do what: every access rule of the API, in one module.
//!
//! - [`check_caller`]: the caller's uid/gid must be allowed to use the API at all
//!   (the server applies it before reading a request's body, so a caller who may not
//!   use the API cannot make tvpd read one);
//! - [`decide`]: for a parsed request, root-only endpoints refuse other uids, and a
//!   restricted operation runs only with the tenant's valid authorization
//!   (`audit::Audit::authorize`).
//!
//! The gate ([`super::gate`]) records whatever these decide.

use super::error::ApiError;
use super::peer::{AccessPolicy, Caller};
use super::request::ApiRequest;
use crate::audit::Audit;

/// Whether `caller` may use the API at all.
pub fn check_caller(policy: &AccessPolicy, caller: &Caller) -> Result<(), ApiError> {
    if policy.allows(caller) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "uid {} (gid {}) may not use the tvpd API; add it to allowed_users or allowed_groups",
        caller.uid, caller.gid
    )))
}

/// Decide a parsed request of an allowed caller: `Ok` with the reason the decision
/// record states, or the refusal. For a restricted operation this checks `token`
/// (the `X-Tvp-Authorization` header) and, if it passes, spends its counter.
pub fn decide(
    audit: &Audit,
    caller: &Caller,
    req: &ApiRequest,
    token: Option<&str>,
) -> Result<String, ApiError> {
    if let Some((vm, op, params)) = req.restricted() {
        let a = audit.authorize(vm, op, &params, token)?;
        return Ok(format!(
            "authorized by tenant key {} with counter {}",
            a.key_id, a.counter
        ));
    }
    if req.root_only() && caller.uid != 0 {
        return Err(ApiError::forbidden(format!(
            "{} is for root only: the whole audit trail concerns every tenant (uid {} asked)",
            req.name(),
            caller.uid
        )));
    }
    Ok("allowed: unrestricted operation by an allowed caller".to_string())
}
