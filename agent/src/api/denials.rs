//! Refused requests, audited in aggregate: each refusal is counted in memory per
//! caller uid and reason (status, code, operation), and the counts are written to the
//! audit trail as **one** record (operation `denied-requests`) every
//! `denial_flush_interval_ms`, before the next allowed request's record, and at
//! shutdown. A flood of refused requests so costs one fsync and one TPM NV write per
//! interval instead of one (or two) per request. What a crash loses is in
//! `docs/audit.md` ("Refused requests").
//!
//! Counted here: callers refused at accept (no role, or over their connection
//! limit), requests that cannot be parsed or are too large, and requests refused for
//! their role (including root-only reads). A restricted operation refused for its
//! tenant token is the tenant's business and keeps its own records in the VM's trail.
//!
//! A refused request whose path names a VM of this host (`/v1/vms/{id}...`, a VM
//! with a tenant binding) is counted **for that VM**: its counts are written as a
//! `denied-requests` record of its own with that VM's id, so the VM's tenant sees
//! them in its extract (and its verifier requires them when the policy reports
//! `denied-requests`), while other tenants see only the record's head (the hashed VM
//! id). Everything else is counted in the host-level record (no VM).

use std::collections::BTreeMap;
use std::sync::Mutex;

use tvp_audit::params::{self, Params};
use tvp_audit::record::Decision;

use super::error::ApiError;
use crate::audit::{Audit, AuditError, RequestRecord};

/// The operation of the aggregated records.
pub const DENIED_OP: &str = "denied-requests";
/// Most distinct (uid, reason) kinds kept between two flushes (per VM, and for the
/// host); further kinds are only counted in total, so a caller varying paths cannot
/// grow tvpd's memory.
pub const MAX_KINDS: usize = 32;
/// Longest operation text kept for a kind (paths are the caller's choice).
const MAX_OP: usize = 80;
/// Longest sample message kept for a kind.
const MAX_MESSAGE: usize = 200;

/// One kind of refusal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Kind {
    uid: u32,
    status: u16,
    code: &'static str,
    op: String,
}

#[derive(Debug, Clone)]
struct Tally {
    count: u64,
    /// The first refusal's message, as a sample of the reason.
    message: String,
}

#[derive(Debug, Default)]
struct KindSet {
    /// Time of the first refusal counted since the last flush.
    since_ms: u64,
    kinds: BTreeMap<Kind, Tally>,
    /// Refusals of kinds beyond [`MAX_KINDS`].
    other: u64,
    total: u64,
}

impl KindSet {
    fn add(&mut self, kind: Kind, message: &str, n: u64) {
        if self.total == 0 {
            self.since_ms = crate::audit::now_ms();
        }
        self.total += n;
        if let Some(t) = self.kinds.get_mut(&kind) {
            t.count += n;
        } else if self.kinds.len() < MAX_KINDS {
            let message = truncate(message, MAX_MESSAGE);
            self.kinds.insert(kind, Tally { count: n, message });
        } else {
            self.other += n;
        }
    }

    /// Put counts taken by a failed flush back.
    fn merge(&mut self, older: KindSet) {
        let since = older.since_ms;
        for (k, t) in older.kinds {
            self.add(k, &t.message, t.count);
        }
        self.other += older.other;
        self.total += older.other;
        if since != 0 {
            self.since_ms = since;
        }
    }
}

/// The refusals counted since the last flush: the host's, and each VM's.
#[derive(Debug, Default)]
struct Pending {
    host: KindSet,
    /// Keyed by VM id; only VMs with a tenant binding are counted here, so this is
    /// bounded by the VMs of the host.
    vms: BTreeMap<String, KindSet>,
}

impl Pending {
    fn total(&self) -> u64 {
        self.host.total + self.vms.values().map(|k| k.total).sum::<u64>()
    }

    fn set(&mut self, vm: Option<&str>) -> &mut KindSet {
        match vm {
            Some(v) => self.vms.entry(v.to_string()).or_default(),
            None => &mut self.host,
        }
    }
}

/// The VM id a request path names (`/v1/vms/{id}` and below), if any; whether such
/// a VM exists is the caller's to check.
pub fn vm_of_path(path: &str) -> Option<&str> {
    let bare = path.split('?').next().unwrap_or(path);
    let rest = bare.strip_prefix("/v1/vms/")?;
    let id = rest.split('/').next().unwrap_or(rest);
    (!id.is_empty()).then_some(id)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The in-memory denial counts of a running API.
#[derive(Debug, Default)]
pub struct Denials {
    pending: Mutex<Pending>,
}

impl Denials {
    /// No refusals counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one refusal of `op` (a request name, or `http:METHOD /path`, or
    /// `connect`) by `uid`, for the host.
    pub fn count(&self, uid: u32, op: &str, refusal: &ApiError) {
        self.count_for(None, uid, op, refusal);
    }

    /// Count one refusal of `op` by `uid` for `vm` (a VM of this host the request's
    /// path names), or for the host (`None`).
    pub fn count_for(&self, vm: Option<&str>, uid: u32, op: &str, refusal: &ApiError) {
        let kind = Kind {
            uid,
            status: refusal.status,
            code: refusal.code,
            op: truncate(op, MAX_OP),
        };
        crate::lock(&self.pending)
            .set(vm)
            .add(kind, &refusal.message, 1);
    }

    /// Refusals counted and not yet written.
    pub fn pending(&self) -> u64 {
        crate::lock(&self.pending).total()
    }

    /// Refusals counted for `vm` and not yet written.
    pub fn pending_for(&self, vm: &str) -> u64 {
        crate::lock(&self.pending)
            .vms
            .get(vm)
            .map_or(0, |k| k.total)
    }

    /// Write the counts, one record per VM with refusals and one for the host, if
    /// there are any. On error the counts not written are kept for the next attempt,
    /// and the error says why.
    pub async fn flush(&self, audit: &Audit) -> Result<(), AuditError> {
        let taken = std::mem::take(&mut *crate::lock(&self.pending));
        let mut sets: Vec<(Option<String>, KindSet)> =
            taken.vms.into_iter().map(|(vm, k)| (Some(vm), k)).collect();
        sets.push((None, taken.host));
        let mut sets = sets.into_iter();
        while let Some((vm, set)) = sets.next() {
            if set.total == 0 {
                continue;
            }
            let (record, status, outcome) = summary(&set, vm.as_deref());
            match audit.record_result(&record, status, outcome, 0).await {
                Ok(seq) => {
                    log::info!(seq = seq, vm = vm.as_deref().unwrap_or("-"), refused = set.total, kinds = set.kinds.len(); "refused requests recorded in the audit trail");
                }
                Err(e) => {
                    let mut p = crate::lock(&self.pending);
                    for (vm, set) in std::iter::once((vm, set)).chain(sets) {
                        p.set(vm.as_deref()).merge(set);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// The record of `p`, about `vm` (None: the host): attributed to tvpd (its uid and
/// pid), operation `denied-requests`, decision `deny`, the parameter digest over every
/// kind's count, and a reason listing them; the status is that of the most frequent
/// kind.
fn summary(p: &KindSet, vm: Option<&str>) -> (RequestRecord, u16, String) {
    let until = crate::audit::now_ms();
    let mut params = Params::new();
    params.insert("since_ms".into(), p.since_ms.to_string());
    params.insert("until_ms".into(), until.to_string());
    params.insert("total".into(), p.total.to_string());
    params.insert("other".into(), p.other.to_string());
    let mut parts = Vec::new();
    for (k, t) in &p.kinds {
        params.insert(
            format!(
                "uid={} status={} code={} op={}",
                k.uid, k.status, k.code, k.op
            ),
            t.count.to_string(),
        );
        parts.push(format!(
            "uid {} x{} {} {} on {} ({})",
            k.uid, t.count, k.status, k.code, k.op, t.message
        ));
    }
    if p.other > 0 {
        parts.push(format!("{} more of other kinds", p.other));
    }
    let status = p
        .kinds
        .iter()
        .max_by_key(|(_, t)| t.count)
        .map(|(k, _)| k.status)
        .unwrap_or(403);
    let record = RequestRecord {
        uid: nix::unistd::geteuid().as_raw(),
        pid: i32::try_from(std::process::id()).ok(),
        op: DENIED_OP.into(),
        vm: vm.map(String::from),
        params_digest: params::digest(&params),
        decision: Decision::Deny,
        reason: format!(
            "{} requests refused between {} and {} ms since the epoch, counted in memory: {}",
            p.total,
            p.since_ms,
            until,
            parts.join("; ")
        ),
    };
    let outcome = format!("refused: {} requests (aggregated)", p.total);
    (record, status, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_bounded_and_counted() {
        let d = Denials::new();
        let e = ApiError::forbidden("no");
        for i in 0..1000u32 {
            d.count(65534, &format!("http:GET /v1/x{i}"), &e);
        }
        d.count(65534, "connect", &e);
        let p = crate::lock(&d.pending);
        let p = &p.host;
        assert_eq!(p.total, 1001);
        assert_eq!(p.kinds.len(), MAX_KINDS);
        assert_eq!(p.other, 1001 - MAX_KINDS as u64);
        let (r, status, _) = summary(p, None);
        assert_eq!((r.op.as_str(), status), ("denied-requests", 403));
        assert!(r.reason.contains("1001 requests refused"), "{}", r.reason);
    }

    #[test]
    fn refusals_naming_a_vm_are_counted_for_it_and_not_crowded_out() {
        assert_eq!(vm_of_path("/v1/vms/vm-a/operations"), Some("vm-a"));
        assert_eq!(vm_of_path("/v1/vms/vm-a?x=/v1/vms/b"), Some("vm-a"));
        assert_eq!(vm_of_path("/v1/vms/vm-a"), Some("vm-a"));
        assert_eq!(vm_of_path("/v1/vms/"), None);
        assert_eq!(vm_of_path("/v1/vms"), None);
        assert_eq!(vm_of_path("/v1/host"), None);
        let d = Denials::new();
        let e = ApiError::forbidden("no");
        // A flood of other kinds for the host does not push vm-a's into "other".
        for i in 0..100u32 {
            d.count(65534, &format!("http:GET /v1/x{i}"), &e);
        }
        d.count_for(Some("vm-a"), 1000, "http:POST /v1/vms/vm-a/operations", &e);
        d.count_for(Some("vm-a"), 1000, "http:POST /v1/vms/vm-a/operations", &e);
        assert_eq!(d.pending_for("vm-a"), 2);
        assert_eq!(d.pending(), 102);
        let p = crate::lock(&d.pending);
        let (r, _, _) = summary(&p.vms["vm-a"], Some("vm-a"));
        assert_eq!(r.vm.as_deref(), Some("vm-a"));
        assert!(r.reason.starts_with("2 requests refused"), "{}", r.reason);
        assert!(r.reason.contains("uid 1000 x2 403"), "{}", r.reason);
    }
}
