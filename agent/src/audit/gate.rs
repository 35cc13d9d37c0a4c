//! The audit and authorization gate: every API request passes [`Audit::gate`] exactly
//! once (from `api::audited`), which
//! 1. decides (access rules, and for restricted operations the tenant's signed
//!    authorization via [`Audit::authorize`]),
//! 2. persists the *decision* record — if that fails the request does not run and
//!    the caller gets 503 `audit_unavailable` (fail closed),
//! 3. executes only if allowed,
//! 4. persists the *result* record (its failure turns the answer into a 503 that
//!    says the operation did run).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tvp_audit::params::Params;
use tvp_audit::policy::{Remediation, TenantPolicy};
use tvp_audit::record::{Decision, RecordDraft, Stage};
use tvp_audit::token::{AuthToken, AuthzError, Expectation, TenantKey};
use tvp_audit::Digest32;

use super::counters::{CounterError, CounterStore};
use super::log::{AuditError, AuditLog};
use crate::api::error::ApiError;
use crate::api::handlers::Reply;
use crate::api::peer::Caller;
use crate::lock;

/// A VM's tenant management key and policy, registered at VM creation.
#[derive(Debug, Clone)]
pub struct TenantBinding {
    /// The tenant's management public key.
    pub key: TenantKey,
    /// The tenant's policy.
    pub policy: TenantPolicy,
    /// When the key was registered (Unix seconds), the start of its lease.
    pub key_since: u64,
}

/// A granted authorization (what the decision record's reason states).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The VM.
    pub vm: String,
    /// The operation.
    pub op: String,
    /// The accepted counter (persisted).
    pub counter: u64,
    /// The signing key.
    pub key_id: String,
}

/// Why [`Audit::authorize`] refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The token is missing or does not pass (the reason says which check).
    #[error(transparent)]
    Token(#[from] AuthzError),
    /// No tenant key is registered for the VM.
    #[error("VM '{0}' has no registered tenant management key")]
    UnknownVm(String),
    /// The counter could not be persisted: refused so it cannot be replayed later.
    #[error("{0}; the operation was refused (fail closed)")]
    Counter(#[from] CounterError),
}

impl From<AuthorizeError> for ApiError {
    fn from(e: AuthorizeError) -> Self {
        match &e {
            AuthorizeError::Token(t) => ApiError::unauthorized(t.code(), e.to_string()),
            AuthorizeError::UnknownVm(vm) => ApiError::not_found_vm(vm),
            AuthorizeError::Counter(_) => ApiError::audit_unavailable(e.to_string()),
        }
    }
}

/// What a record says about its request.
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

/// What carries out a `power-off` remediation: the VM manager installs one with
/// [`Audit::set_remediator`].
pub trait Remediator: Send + Sync {
    /// Power `vm` off now; `Ok(false)` if there was nothing to power off (the VM has
    /// ended already).
    fn power_off(&self, vm: &str) -> Result<bool, String>;
}

/// What was done to one VM when tampering was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemediationOutcome {
    /// The VM.
    pub vm: String,
    /// Its policy's action.
    pub action: Remediation,
    /// `Ok` if carried out (alerts always are).
    pub result: Result<(), String>,
}

/// Host events written into every live VM's trail, so each affected tenant sees them
/// in its extract as they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    /// A measured platform file changed while the VM was live: the trust its
    /// attestation established no longer holds (op `platform-revocation`).
    PlatformRevocation,
    /// A KVM VM tvpd did not create appeared on, or left, the host (op
    /// `out-of-context-vm`).
    OutOfContextVm,
}

impl HostEvent {
    /// The record's operation name.
    pub fn op(self) -> &'static str {
        match self {
            HostEvent::PlatformRevocation => "platform-revocation",
            HostEvent::OutOfContextVm => "out-of-context-vm",
        }
    }
}

/// How many deleted VMs' bindings are kept for their tenants' extracts.
pub const RETIRED_BINDINGS: usize = 4096;

/// The audit trail, tenant bindings and counters of a running tvpd.
pub struct Audit {
    log: tokio::sync::Mutex<AuditLog>,
    tenants: Mutex<BTreeMap<String, TenantBinding>>,
    /// Bindings of deleted VMs, oldest first, so their tenants can still fetch the
    /// extract that shows the deletion (bounded: [`RETIRED_BINDINGS`]).
    retired: Mutex<std::collections::VecDeque<(String, TenantBinding)>>,
    counters: Mutex<CounterStore>,
    remediator: Mutex<Option<Arc<dyn Remediator>>>,
    tampered: AtomicBool,
}

fn unix_now() -> u64 {
    super::now_ms() / 1000
}

impl Audit {
    /// Wrap an opened log and counter store.
    pub fn new(log: AuditLog, counters: CounterStore) -> Self {
        Audit {
            log: tokio::sync::Mutex::new(log),
            tenants: Mutex::new(BTreeMap::new()),
            retired: Mutex::new(std::collections::VecDeque::new()),
            counters: Mutex::new(counters),
            remediator: Mutex::new(None),
            tampered: AtomicBool::new(false),
        }
    }

    /// Install what powers VMs off on detected tampering.
    pub fn set_remediator(&self, r: Arc<dyn Remediator>) {
        *lock(&self.remediator) = Some(r);
    }

    /// Whether tampering with the log was detected while running.
    pub fn tampered(&self) -> bool {
        self.tampered.load(Ordering::SeqCst)
    }

    /// Tampering detected: apply every registered VM's `on_tampering` once — power
    /// it off through the remediator, or raise an alert (error log). Every request
    /// is refused from now on anyway, because the log no longer appends.
    pub fn on_tampering(&self, detail: &str) -> Vec<RemediationOutcome> {
        if self.tampered.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        ::log::error!(detail = detail; "AUDIT TAMPERING DETECTED: refusing every request; applying the tenants' remediation");
        let remediator = lock(&self.remediator).clone();
        let tenants: Vec<(String, Remediation)> = lock(&self.tenants)
            .iter()
            .map(|(vm, b)| (vm.clone(), b.policy.on_tampering))
            .collect();
        let mut out = Vec::new();
        for (vm, action) in tenants {
            let result = match action {
                Remediation::Alert => {
                    ::log::error!(vm = vm.as_str(), action = "alert"; "audit tampering: tenant alerted (policy on_tampering = alert)");
                    Ok(())
                }
                Remediation::PowerOff => match &remediator {
                    Some(r) => r.power_off(&vm).map(|done| {
                        if done {
                            ::log::warn!(vm = vm.as_str(), action = "power-off"; "audit tampering: VM powered off (policy on_tampering = power-off)");
                        }
                    }),
                    None => Err("no VM lifecycle to power the VM off".to_string()),
                },
            };
            if let Err(e) = &result {
                ::log::error!(vm = vm.as_str(), error = e.as_str(); "audit tampering: power-off remediation failed");
            }
            out.push(RemediationOutcome { vm, action, result });
        }
        out
    }

    /// The log, for readers (views, certification).
    pub fn log(&self) -> &tokio::sync::Mutex<AuditLog> {
        &self.log
    }

    /// Register a VM's tenant key and policy (VM creation; lifecycle, issue 5). A
    /// retired binding of a deleted VM with the same id is dropped.
    pub fn register_vm(&self, vm: &str, binding: TenantBinding) {
        lock(&self.retired).retain(|(id, _)| id != vm);
        lock(&self.tenants).insert(vm.to_string(), binding);
    }

    /// Forget a VM (after delete). Its counter stays, so its tokens stay spent; its
    /// binding is retired: no operation can be authorized any more, but the tenant's
    /// extract (which shows the deletion) stays available until tvpd restarts, the id
    /// is reused, or [`RETIRED_BINDINGS`] later deletions push it out.
    pub fn unregister_vm(&self, vm: &str) {
        if let Some(b) = lock(&self.tenants).remove(vm) {
            let mut retired = lock(&self.retired);
            retired.retain(|(id, _)| id != vm);
            if retired.len() >= RETIRED_BINDINGS {
                retired.pop_front();
            }
            retired.push_back((vm.to_string(), b));
        }
    }

    /// A registered (live) VM's binding: operations are authorized against it.
    pub fn tenant(&self, vm: &str) -> Option<TenantBinding> {
        lock(&self.tenants).get(vm).cloned()
    }

    /// The binding that decides what a VM's extract reports: the live one, else that
    /// of a recently deleted VM.
    pub fn extract_binding(&self, vm: &str) -> Option<TenantBinding> {
        self.tenant(vm).or_else(|| {
            lock(&self.retired)
                .iter()
                .rev()
                .find(|(id, _)| id == vm)
                .map(|(_, b)| b.clone())
        })
    }

    /// **The authorization gate for restricted operations.** Checks `token` (text
    /// form) against the VM's key and policy, the operation, the digest of `params`,
    /// expiry and the counter, and persists the counter before returning `Ok`: the
    /// caller may then run the operation. Lifecycle code calls this (through
    /// [`Audit::gate`]) for every restricted operation.
    pub fn authorize(
        &self,
        vm: &str,
        op: &str,
        params: &Params,
        token: Option<&str>,
    ) -> Result<Authorized, AuthorizeError> {
        let binding = self
            .tenant(vm)
            .ok_or_else(|| AuthorizeError::UnknownVm(vm.to_string()))?;
        let text = token.ok_or_else(|| AuthzError::Missing { op: op.to_string() })?;
        let t = AuthToken::decode(text)?;
        // Hold the counter lock across check and persist: two racing requests with
        // the same token cannot both pass.
        let mut counters = lock(&self.counters);
        t.verify(&Expectation {
            key: &binding.key,
            policy: &binding.policy,
            key_since: binding.key_since,
            vm,
            op,
            params_digest: tvp_audit::params::digest(params),
            last_counter: counters.last(vm),
            now: unix_now(),
        })?;
        counters.accept(vm, t.counter)?;
        Ok(Authorized {
            vm: vm.to_string(),
            op: op.to_string(),
            counter: t.counter,
            key_id: t.key_id,
        })
    }

    async fn append(&self, draft: RecordDraft) -> Result<u64, AuditError> {
        let mut log = self.log.lock().await;
        let r = log.append(draft).await.map(|r| r.seq);
        drop(log);
        if let Err(AuditError::Tampered { detail, .. }) = &r {
            self.on_tampering(detail);
        }
        r
    }

    /// Record a VM state change (stage `event`: `state_before` → `state_after`, and
    /// why), attributed to tvpd itself (its uid and pid). Blocks the calling thread
    /// until the record is persisted; for the VM supervisors, never for async tasks.
    /// An error is for logging: the change has happened already.
    pub fn vm_event_blocking(
        &self,
        vm: &str,
        before: &str,
        after: &str,
        reason: &str,
    ) -> Result<u64, AuditError> {
        self.event_blocking(vm, "vm-state-change", before, after, reason)
    }

    /// Record a host event that concerns a live VM without changing its state
    /// (`state_before` = `state_after` = `state`): see [`HostEvent`]. Blocking, like
    /// [`Audit::vm_event_blocking`].
    pub fn host_event_blocking(
        &self,
        vm: &str,
        event: HostEvent,
        state: &str,
        reason: &str,
    ) -> Result<u64, AuditError> {
        self.event_blocking(vm, event.op(), state, state, reason)
    }

    fn event_blocking(
        &self,
        vm: &str,
        op: &str,
        before: &str,
        after: &str,
        reason: &str,
    ) -> Result<u64, AuditError> {
        let mut p = Params::new();
        p.insert("from".into(), before.to_string());
        p.insert("to".into(), after.to_string());
        let draft = RecordDraft {
            time_ms: super::now_ms(),
            uid: nix::unistd::geteuid().as_raw(),
            pid: i32::try_from(std::process::id()).ok(),
            vm: Some(vm.to_string()),
            op: op.into(),
            params_digest: tvp_audit::params::digest(&p),
            stage: Stage::Event,
            decision: Decision::Allow,
            reason: reason.to_string(),
            status: None,
            result: None,
            state_before: Some(before.to_string()),
            state_after: Some(after.to_string()),
            request: 0,
        };
        super::block_on(self.append(draft))
    }

    /// Record the decision, run `exec` if `decision` allows (its `Ok` is the reason
    /// recorded), record the result. See the module documentation.
    pub async fn gate<F, Fut>(
        &self,
        info: RequestInfo,
        decision: Result<String, ApiError>,
        exec: F,
    ) -> Result<Reply, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Reply, ApiError>>,
    {
        let (d, reason) = match &decision {
            Ok(r) => (Decision::Allow, r.clone()),
            Err(e) => (
                Decision::Deny,
                format!("{} {}: {}", e.status, e.code, e.message),
            ),
        };
        let draft = |stage, status, result, request| RecordDraft {
            time_ms: super::now_ms(),
            uid: info.caller.uid,
            pid: info.caller.pid,
            vm: info.vm.clone(),
            op: info.op.clone(),
            params_digest: info.params_digest,
            stage,
            decision: d,
            reason: reason.clone(),
            status,
            result,
            state_before: None,
            state_after: None,
            request,
        };
        if info.read_only {
            return self.gate_read_only(&info, decision, draft, exec).await;
        }
        let seq = match self.append(draft(Stage::Decision, None, None, 0)).await {
            Ok(s) => s,
            Err(e) => {
                ::log::error!(op = info.op.as_str(), uid = info.caller.uid, error = e.to_string(); "audit decision record not persisted: request refused");
                return Err(ApiError::audit_unavailable(format!(
                    "the request was not executed: its audit record could not be persisted ({e})"
                )));
            }
        };
        let (result, status, text) = run_if_allowed(decision, exec).await;
        if let Err(e) = self
            .append(draft(Stage::Result, Some(status), Some(text), seq))
            .await
        {
            ::log::error!(op = info.op.as_str(), seq = seq, status = status, error = e.to_string(); "audit result record not persisted");
            return Err(ApiError::audit_unavailable(format!(
                "the request was executed (status {status}, decision record seq {seq}) but its result record could not be persisted ({e}); further requests are refused until the audit log is writable"
            )));
        }
        result
    }

    /// A read-only request: run it if allowed, then one record with the decision and
    /// the result. If that record cannot be persisted the reply is withheld (fail
    /// closed: nobody learns anything the trail does not show).
    async fn gate_read_only<F, Fut, D>(
        &self,
        info: &RequestInfo,
        decision: Result<String, ApiError>,
        draft: D,
        exec: F,
    ) -> Result<Reply, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Reply, ApiError>>,
        D: Fn(Stage, Option<u16>, Option<String>, u64) -> RecordDraft,
    {
        let (result, status, text) = run_if_allowed(decision, exec).await;
        if let Err(e) = self
            .append(draft(Stage::Result, Some(status), Some(text), 0))
            .await
        {
            ::log::error!(op = info.op.as_str(), status = status, error = e.to_string(); "audit record of a read-only request not persisted: reply withheld");
            return Err(ApiError::audit_unavailable(format!(
                "the reply is withheld: its audit record could not be persisted ({e})"
            )));
        }
        result
    }
}

/// Runs `exec` if `decision` allows; returns its result with the status and outcome
/// text the result record carries.
async fn run_if_allowed<F, Fut>(
    decision: Result<String, ApiError>,
    exec: F,
) -> (Result<Reply, ApiError>, u16, String)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let result = match decision {
        Ok(_) => exec().await,
        Err(e) => Err(e),
    };
    let (status, text) = match &result {
        Ok(r) => (r.status, "ok".to_string()),
        Err(e) => (e.status, format!("{}: {}", e.code, e.message)),
    };
    (result, status, text)
}
