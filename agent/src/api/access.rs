//! Who may do what: every access rule of the API, in one module.
//!
//! - [`check_caller`]: the caller's uid/gid must have a role (the server applies it
//!   when it accepts the connection, before a connection slot is taken or a byte is
//!   read, so a caller who may not use the API cannot make tvpd read a request);
//! - [`check_role`]: an observer may only read (host information, VM list and
//!   views, quotes of the platform PCR); everything else needs a manager;
//!   root-only endpoints refuse other uids;
//! - [`decide`]: a restricted operation runs only with the tenant's valid
//!   authorization (`audit::Audit::authorize`).
//!
//! The gate ([`super::gate`]) records whatever these decide.

use super::error::ApiError;
use super::peer::{AccessPolicy, Caller, Role};
use super::request::ApiRequest;
use crate::audit::Audit;

/// The role of `caller`, or the refusal if it has none.
pub fn check_caller(policy: &AccessPolicy, caller: &Caller) -> Result<Role, ApiError> {
    if let Some(role) = policy.role_of(caller) {
        return Ok(role);
    }
    Err(ApiError::forbidden(format!(
        "uid {} (gid {}) may not use the tvpd API; add it to allowed_users or allowed_groups (manager) or observer_users or observer_groups (observer)",
        caller.uid, caller.gid
    )))
}

/// The role a parsed request needs: observers may read host information, the VM list
/// and views, and quotes of the platform PCR (`platform_pcr`) alone; everything else
/// (creating or operating VMs, image verification, the binding key, credential
/// activation, the event log, audit reads and extracts, quotes of other PCRs) is for
/// managers.
pub fn required_role(req: &ApiRequest, platform_pcr: u32) -> Role {
    match req {
        ApiRequest::GetHost
        | ApiRequest::GetUnmanagedVms
        | ApiRequest::ListVms
        | ApiRequest::GetVm { .. } => Role::Observer,
        ApiRequest::Quote { pcrs, .. } => match pcrs {
            None => Role::Observer,
            Some(p) if p.as_slice() == [platform_pcr] => Role::Observer,
            Some(_) => Role::Manager,
        },
        _ => Role::Manager,
    }
}

/// Refuse `req` if `role` is below what it needs (the refusal names the role), or if
/// it is root-only and the caller is not root.
pub fn check_role(
    role: Role,
    caller: &Caller,
    req: &ApiRequest,
    platform_pcr: u32,
) -> Result<(), ApiError> {
    if req.root_only() && caller.uid != 0 {
        return Err(ApiError::forbidden(format!(
            "{} is for root only: the whole audit trail concerns every tenant (uid {} asked)",
            req.name(),
            caller.uid
        )));
    }
    let needed = required_role(req, platform_pcr);
    if role >= needed {
        return Ok(());
    }
    Err(ApiError {
        status: 403,
        code: "role_required",
        allow: None,
        message: format!(
        "{} needs the {} role; uid {} has the {} role (read-only: host, VM list and views, quotes of the platform PCR {platform_pcr})",
        req.name(),
        needed.name(),
        caller.uid,
        role.name()
    ),
    })
}

/// Decide a parsed request of a caller whose role covers it ([`check_role`]): `Ok`
/// with the reason the decision record states, or the refusal. For a restricted operation this checks `token`
/// (the `X-Tvp-Authorization` header) and, if it passes, spends its counter.
pub fn decide(
    audit: &Audit,
    _caller: &Caller,
    req: &ApiRequest,
    token: Option<&str>,
) -> Result<String, ApiError> {
    if let Some((vm, op, params)) = req.restricted() {
        let a = audit.authorize(vm, op, &params, token)?;
        return Ok(a.reason());
    }
    Ok("allowed: unrestricted operation by an allowed caller".to_string())
}
