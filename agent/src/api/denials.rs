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

use std::collections::BTreeMap;
use std::sync::Mutex;

use tvp_audit::params::{self, Params};
use tvp_audit::record::Decision;

use super::error::ApiError;
use crate::audit::{Audit, AuditError, RequestRecord};

/// Most distinct (uid, reason) kinds kept between two flushes; further kinds are
/// only counted in total, so a caller varying paths cannot grow tvpd's memory.
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
struct Pending {
    /// Time of the first refusal counted since the last flush.
    since_ms: u64,
    kinds: BTreeMap<Kind, Tally>,
    /// Refusals of kinds beyond [`MAX_KINDS`].
    other: u64,
    total: u64,
}

impl Pending {
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
    fn merge(&mut self, older: Pending) {
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
    /// `connect`) by `uid`.
    pub fn count(&self, uid: u32, op: &str, refusal: &ApiError) {
        let kind = Kind {
            uid,
            status: refusal.status,
            code: refusal.code,
            op: truncate(op, MAX_OP),
        };
        crate::lock(&self.pending).add(kind, &refusal.message, 1);
    }

    /// Refusals counted and not yet written.
    pub fn pending(&self) -> u64 {
        crate::lock(&self.pending).total
    }

    /// Write the counts as one record, if there are any. On error the counts are kept
    /// for the next attempt, and the error says why.
    pub async fn flush(&self, audit: &Audit) -> Result<(), AuditError> {
        let taken = std::mem::take(&mut *crate::lock(&self.pending));
        if taken.total == 0 {
            return Ok(());
        }
        let (record, status, outcome) = summary(&taken);
        match audit.record_result(&record, status, outcome, 0).await {
            Ok(seq) => {
                log::info!(seq = seq, refused = taken.total, kinds = taken.kinds.len(); "refused requests recorded in the audit trail");
                Ok(())
            }
            Err(e) => {
                crate::lock(&self.pending).merge(taken);
                Err(e)
            }
        }
    }
}

/// The record of `p`: attributed to tvpd (its uid and pid), operation
/// `denied-requests`, decision `deny`, the parameter digest over every kind's count,
/// and a reason listing them; the status is that of the most frequent kind.
fn summary(p: &Pending) -> (RequestRecord, u16, String) {
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
        op: "denied-requests".into(),
        vm: None,
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
        assert_eq!(p.total, 1001);
        assert_eq!(p.kinds.len(), MAX_KINDS);
        assert_eq!(p.other, 1001 - MAX_KINDS as u64);
        let (r, status, _) = summary(&p);
        assert_eq!((r.op.as_str(), status), ("denied-requests", 403));
        assert!(r.reason.contains("1001 requests refused"), "{}", r.reason);
    }
}
