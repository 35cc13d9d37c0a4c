//! The audit gate: the one place every API request passes — parsed or not, allowed
//! or not — and the only caller of [`execute`]. [`run`] goes straight through:
//!
//! 1. **describe** the request (operation, VM, parameter digest: [`RequestInfo`]);
//! 2. **decide** ([`super::access::decide`]; a request refused while it was received
//!    or parsed, or for its role, is a denial counted in [`super::denials`] and
//!    written in aggregate; it stops here);
//! 3. [`admit`]: persist the *decision* record — if that fails the request does not
//!    run and the caller gets 503 `audit_unavailable` (fail closed);
//! 4. **execute** only if allowed ([`Admission::permit`]);
//! 5. [`conclude`]: persist the *result* record (its failure turns the answer into a
//!    503 that says the operation did run).
//!
//! A read-only request skips step 3: it is recorded once, after it ran, with its
//! decision and result in one record (`request` 0), and its reply is withheld if that
//! record cannot be persisted. The records themselves are the audit layer's
//! ([`crate::audit::RequestRecord`]); this module maps them to HTTP answers.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tvp_audit::params::{self, Params};
use tvp_audit::record::Decision;
use tvp_audit::Digest32;

use super::access;
use super::denials::Denials;
use super::error::ApiError;
use super::handlers::{execute, AppState, Reply};
use super::peer::Caller;
use super::request::ApiRequest;
use crate::audit::{Audit, RequestRecord};

/// What a request's records say about it.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The caller.
    pub caller: Caller,
    /// Operation name.
    pub op: String,
    /// The VM, if any.
    pub vm: Option<String>,
    /// Digest of the canonical parameters.
    pub params_digest: Digest32,
    /// A read-only request (it changes nothing and releases no secret): recorded once,
    /// after it ran, with its decision and result (`request` 0). Every other request
    /// is recorded before (the decision) and after (the result).
    pub read_only: bool,
}

/// What the server received: the parsed request and its body, or why it could not
/// be parsed or was refused before parsing.
pub type Received = Result<(ApiRequest, Bytes), ApiError>;

/// The parameter digest of an unrestricted request: `params::digest` of `method`,
/// `path` (with query) and `body_sha256` (hex).
pub fn request_digest(method: &str, path: &str, body: &[u8]) -> Digest32 {
    let mut p = Params::new();
    p.insert("method".into(), method.to_string());
    p.insert("path".into(), path.to_string());
    p.insert("body_sha256".into(), hex::encode(Sha256::digest(body)));
    params::digest(&p)
}

/// Describe, decide, record and (if allowed) execute one request; returns the
/// operation name (for the request log) with the reply. `path` carries the query;
/// `token` is the `X-Tvp-Authorization` header. A request refused while it was
/// received (`received` is `Err`) is only counted in `denials` ([`super::denials`]);
/// before any other request is recorded, the counts so far are written.
pub async fn run(
    state: &AppState,
    denials: &Denials,
    caller: Caller,
    method: &str,
    path: &str,
    received: Received,
    token: Option<&str>,
) -> Result<(&'static str, Reply), ApiError> {
    let audit = &state.audit;
    let (req, body) = match received {
        Ok(r) => r,
        Err(refusal) => {
            // Counted, written in aggregate (no fsync or NV write of its own), for
            // the VM the path names if it is one of this host's.
            let vm =
                super::denials::vm_of_path(path).filter(|v| audit.extract_binding(v).is_some());
            denials.count_for(vm, caller.uid, &refused_op(method, path), &refusal);
            return Err(refusal);
        }
    };
    // Refusals counted so far go into the trail before this request's records.
    if let Err(e) = denials.flush(audit).await {
        ::log::error!(error = e.to_string(); "aggregated denial record not persisted: request refused");
        return Err(ApiError::audit_failed(&e, format!(
            "the request was not executed: the audit record of earlier refused requests could not be persisted ({e})"
        )));
    }
    let name = req.name();
    let t0 = std::time::Instant::now();
    let info = describe(caller, method, path, &req, &body);
    let decision = access::decide(audit, &caller, &req, token);
    let t1 = std::time::Instant::now();
    let admission = admit(audit, info, decision).await?;
    let t2 = std::time::Instant::now();
    let result = match admission.permit() {
        Ok(()) => execute(state, req).await,
        Err(e) => Err(e),
    };
    let t3 = std::time::Instant::now();
    let answer = conclude(audit, admission, result).await;
    // Where one request's time goes (debug level; `tvp-bench` prints the medians):
    // the decision (auth), its record (only for requests that change state), the
    // operation, and its result record (append: fsync, NV_Extend).
    ::log::debug!(op = name, decide_us = (t1 - t0).as_micros() as u64, admit_us = (t2 - t1).as_micros() as u64, execute_us = (t3 - t2).as_micros() as u64, conclude_us = t3.elapsed().as_micros() as u64; "request phases");
    answer.map(|r| (name, r))
}

/// The operation name of a request refused while it was received: `http:METHOD
/// /path` (without the query).
fn refused_op(method: &str, path: &str) -> String {
    let bare = path.split('?').next().unwrap_or(path);
    format!("http:{method} {bare}")
}

/// The description of a parsed request: a restricted operation is named by its
/// operation and digested over its canonical parameters (what the tenant's token
/// covers); any other by its request name and digested over method, path and body.
fn describe(
    caller: Caller,
    method: &str,
    path: &str,
    req: &ApiRequest,
    body: &[u8],
) -> RequestInfo {
    match req.restricted() {
        Some((vm, op, p)) => RequestInfo {
            caller,
            op: op.to_string(),
            vm: Some(vm.to_string()),
            params_digest: params::digest(&p),
            read_only: false,
        },
        None => RequestInfo {
            caller,
            op: req.name().to_string(),
            vm: req.vm().map(String::from),
            params_digest: request_digest(method, path, body),
            read_only: req.read_only(),
        },
    }
}

/// A request past its decision: what its records say, and whether it may run.
#[derive(Debug)]
pub struct Admission {
    read_only: bool,
    record: RequestRecord,
    verdict: Result<(), ApiError>,
    /// The decision record's sequence number (0 for a read-only request).
    seq: u64,
}

impl Admission {
    /// `Ok` if the request may run, else the refusal to answer.
    pub fn permit(&self) -> Result<(), ApiError> {
        self.verdict.clone()
    }
}

/// Step 3: record `decision` (`Ok` with the reason, or the refusal) for the request
/// `info` describes, unless it is read-only. An error means the decision could not
/// be persisted: the request must not run, and the error is the answer.
pub async fn admit(
    audit: &Audit,
    info: RequestInfo,
    decision: Result<String, ApiError>,
) -> Result<Admission, ApiError> {
    let (d, reason, verdict) = match decision {
        Ok(reason) => (Decision::Allow, reason, Ok(())),
        Err(e) => (
            Decision::Deny,
            format!("{} {}: {}", e.status, e.code, e.message),
            Err(e),
        ),
    };
    let record = RequestRecord {
        uid: info.caller.uid,
        pid: info.caller.pid,
        op: info.op,
        vm: info.vm,
        params_digest: info.params_digest,
        decision: d,
        reason,
    };
    let seq = if info.read_only {
        0
    } else {
        match audit.record_decision(&record).await {
            Ok(s) => s,
            Err(e) => {
                ::log::error!(op = record.op.as_str(), uid = record.uid, error = e.to_string(); "audit decision record not persisted: request refused");
                let why = format!(
                    "the request was not executed: its audit record could not be persisted ({e})"
                );
                return Err(ApiError::audit_failed(&e, why));
            }
        }
    };
    Ok(Admission {
        read_only: info.read_only,
        record,
        verdict,
        seq,
    })
}

/// Step 5: record the result of an admitted request and return the answer: `result`
/// itself, or 503 `audit_unavailable` if the record could not be persisted.
pub async fn conclude(
    audit: &Audit,
    admission: Admission,
    result: Result<Reply, ApiError>,
) -> Result<Reply, ApiError> {
    let (status, outcome) = match &result {
        Ok(r) => (r.status, "ok".to_string()),
        Err(e) => (e.status, format!("{}: {}", e.code, e.message)),
    };
    let Admission {
        read_only,
        record,
        seq,
        ..
    } = admission;
    let Err(e) = audit.record_result(&record, status, outcome, seq).await else {
        return result;
    };
    let op = record.op.as_str();
    if read_only {
        ::log::error!(op = op, status = status, error = e.to_string(); "audit record of a read-only request not persisted: reply withheld");
        return Err(ApiError::audit_failed(
            &e,
            format!("the reply is withheld: its audit record could not be persisted ({e})"),
        ));
    }
    ::log::error!(op = op, seq = seq, status = status, error = e.to_string(); "audit result record not persisted");
    Err(ApiError::audit_failed(&e, format!(
        "the request was executed (status {status}, decision record seq {seq}) but its result record could not be persisted ({e}); further requests are refused until the audit log is writable"
    )))
}
