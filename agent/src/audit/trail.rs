//! [`Audit`]: the audit trail of a running tvpd, the one value the API and the VM
//! manager share. It ties the log ([`super::log`]), the tenant bindings
//! ([`super::bindings`]), the authorization check ([`super::authorize`]) and the
//! tamper response ([`super::remediation`]) together; each job lives in its module.
//! Appends fail closed: an error means the record is not in the trail, and the
//! caller must not act as if it were. Events tvpd observed (VM state changes, host
//! events) are the exception: they have happened, so one that cannot be written is
//! kept ([`super::pending`]) and written before any later record.

use std::sync::{Arc, Mutex};

use tvp_audit::params::Params;
use tvp_audit::record::RecordDraft;

use super::authorize::{AuthorizeError, Authorized, Authorizer};
use super::bindings::{TenantBinding, TenantBindings};
use super::counters::CounterStore;
use super::log::{AuditError, AuditLog};
use super::pending::{self, PendingEvents};
use super::records::{event_draft, HostEvent, RequestRecord};
use super::remediation::{RemediationOutcome, Remediator, TamperResponse};

/// The audit trail, tenant bindings and counters of a running tvpd.
pub struct Audit {
    log: tokio::sync::Mutex<AuditLog>,
    bindings: TenantBindings,
    authorizer: Authorizer,
    tamper: TamperResponse,
    /// Events not written yet; changed only while `log` is locked.
    events: Mutex<PendingEvents>,
}

impl Audit {
    /// Wrap an opened log and counter store, for the host whose AK name (TPM name
    /// bytes) is `host`: tokens must name it.
    pub fn new(log: AuditLog, counters: CounterStore, host: Vec<u8>) -> Self {
        Audit {
            log: tokio::sync::Mutex::new(log),
            bindings: TenantBindings::new(),
            authorizer: Authorizer::new(counters, host),
            tamper: TamperResponse::new(),
            events: Mutex::new(PendingEvents::new()),
        }
    }

    /// Install what powers VMs off on detected tampering.
    pub fn set_remediator(&self, r: Arc<dyn Remediator>) {
        self.tamper.set_remediator(r);
    }

    /// Whether tampering with the log was detected while running.
    pub fn tampered(&self) -> bool {
        self.tamper.tampered()
    }

    /// Tampering detected: apply every registered VM's `on_tampering` once (see
    /// [`super::remediation`]).
    pub fn on_tampering(&self, detail: &str) -> Vec<RemediationOutcome> {
        self.tamper.respond(&self.bindings, detail)
    }

    /// The log, for readers (views, certification).
    pub fn log(&self) -> &tokio::sync::Mutex<AuditLog> {
        &self.log
    }

    /// Register a VM's tenant key and policy (VM creation).
    pub fn register_vm(&self, vm: &str, binding: TenantBinding) {
        self.bindings.register(vm, binding);
    }

    /// Forget a VM (after delete). Its counter stays, so its tokens stay spent; its
    /// binding is retired (see [`TenantBindings::retire`]).
    pub fn unregister_vm(&self, vm: &str) {
        self.bindings.retire(vm);
    }

    /// A new boot of `vm` runs the configuration page with SHA-256 `incarnation`:
    /// from now on tokens must name it.
    pub fn set_incarnation(&self, vm: &str, incarnation: tvp_audit::Digest32) {
        self.bindings.set_incarnation(vm, incarnation);
    }

    /// Hand `vm`'s management to `key` with a lease from `since` (an authorized
    /// `rotate-key` or `renew-key-lease`); `false` if the VM has no live binding.
    pub fn set_key(&self, vm: &str, key: tvp_audit::TenantKey, since: u64) -> bool {
        self.bindings.set_key(vm, key, since)
    }

    /// Check a VM record's key in force (key id and lease start; `None` = the key it
    /// was created with) against the last key change the trail records for `vm`
    /// ([`super::key_history::check_record`]). Blocking: for tvpd's start, before the
    /// API serves.
    pub fn check_recorded_key(&self, vm: &str, current: Option<(&str, u64)>) -> Result<(), String> {
        let log = super::block_on(self.log.lock());
        super::key_history::check_record(log.records(), vm, current)
    }

    /// A registered (live) VM's binding: operations are authorized against it.
    pub fn tenant(&self, vm: &str) -> Option<TenantBinding> {
        self.bindings.live(vm)
    }

    /// The binding that decides what a VM's extract reports: the live one, else that
    /// of a recently deleted VM.
    pub fn extract_binding(&self, vm: &str) -> Option<TenantBinding> {
        self.bindings.for_extract(vm)
    }

    /// The authorization check for restricted operations: `token` (text form)
    /// against the VM's key and policy, the operation, the digest of `params`,
    /// expiry and the counter, which is persisted before this returns `Ok`.
    pub fn authorize(
        &self,
        vm: &str,
        op: &str,
        params: &Params,
        token: Option<&str>,
    ) -> Result<Authorized, AuthorizeError> {
        let now = super::now_ms() / 1000;
        self.authorizer
            .authorize(&self.bindings, vm, op, params, token, now)
    }

    /// Append a record, after any events still waiting; detected tampering triggers
    /// the tenants' remediation. Returns the record's sequence number.
    async fn append(&self, draft: RecordDraft) -> Result<u64, AuditError> {
        let mut log = self.log.lock().await;
        let r = match self.flush_events(&mut log).await {
            Ok(_) => log.append(draft).await.map(|r| r.seq),
            Err(e) => Err(e),
        };
        drop(log);
        self.after_append(&r);
        r
    }

    fn after_append<T>(&self, r: &Result<T, AuditError>) {
        if let Some(detail) = r.as_ref().err().and_then(AuditError::tampering) {
            self.on_tampering(detail);
        }
    }

    /// Write the events still waiting (in order, then the counts of lost ones) to
    /// `log`, whose lock the caller holds. [`AuditError::EventsPending`] if they
    /// cannot be written yet: nothing may be appended after them.
    pub(super) async fn flush_events(&self, log: &mut AuditLog) -> Result<u64, AuditError> {
        if crate::lock(&self.events).is_empty() {
            return Ok(0);
        }
        match pending::flush(&self.events, log).await {
            Ok(n) => {
                ::log::warn!(records = n; "audit events kept while the log could not be written are now in the trail");
                Ok(n)
            }
            Err(e) => Err(AuditError::EventsPending {
                waiting: crate::lock(&self.events).describe(),
                source: Box::new(e),
            }),
        }
    }

    /// Try to write the events still waiting (tvpd's timer; every append tries it
    /// first too). Returns how many records were written.
    pub async fn flush_pending_events(&self) -> Result<u64, AuditError> {
        let mut log = self.log.lock().await;
        let r = self.flush_events(&mut log).await;
        drop(log);
        self.after_append(&r);
        r
    }

    /// How many events wait to be written (kept, and lost ones not yet stated).
    pub fn pending_events(&self) -> usize {
        crate::lock(&self.events).len()
    }

    /// Whether events of `vm` wait to be written: its management waits for them.
    pub fn events_pending_for(&self, vm: &str) -> bool {
        crate::lock(&self.events).has(vm)
    }

    /// Record a request's decision (stage `decision`), before it runs.
    pub async fn record_decision(&self, req: &RequestRecord) -> Result<u64, AuditError> {
        self.append(req.decision_draft()).await
    }

    /// Record a request's result (stage `result`): its `status` and `outcome`, for
    /// the decision record `request` (0 for a read-only request recorded once).
    pub async fn record_result(
        &self,
        req: &RequestRecord,
        status: u16,
        outcome: String,
        request: u64,
    ) -> Result<u64, AuditError> {
        self.append(req.result_draft(status, outcome, request))
            .await
    }

    /// Record a VM state change (stage `event`: `state_before` → `state_after`, and
    /// why), attributed to tvpd itself (its uid and pid). Blocks the calling thread
    /// until the record is persisted; for the VM supervisors, never for async tasks.
    /// An error is for logging: the change has happened already, and the record is
    /// kept and written before any later one ([`super::pending`]).
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
        super::block_on(self.append_event(event_draft(vm, op, before, after, reason)))
    }

    /// Append an event after those still waiting; if it cannot be written it is
    /// kept, in order, and the error says why (the event is not lost: it is written
    /// before any later record).
    async fn append_event(&self, draft: RecordDraft) -> Result<u64, AuditError> {
        let mut log = self.log.lock().await;
        let r = match self.flush_events(&mut log).await {
            Ok(_) => {
                let before = log.pending_record();
                match log.append(draft.clone()).await {
                    Ok(rec) => Ok(rec.seq),
                    Err(e) => {
                        let after = log.pending_record();
                        let sealed = after.filter(|a| Some(a) != before.as_ref());
                        crate::lock(&self.events).push(draft, sealed);
                        Err(e)
                    }
                }
            }
            Err(e) => {
                crate::lock(&self.events).push(draft, None);
                Err(e)
            }
        };
        drop(log);
        self.after_append(&r);
        r
    }
}
