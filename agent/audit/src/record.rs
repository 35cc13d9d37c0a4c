//! The audit record: one JSON object per line in the log, hashed over a canonical
//! binary encoding split in a *head* (what a tenant's verifier must see of every
//! record, also of other tenants' records) and a *body* (everything else, seen only
//! through its digest when the record belongs to someone else):
//!
//! ```text
//! head   = "tvp-audit-head-v1\0" || seq u64 || prev [32] || vm_digest [32] || op str
//! body   = "tvp-audit-body-v1\0" || time_ms u64 || uid u32 || pid opt u64 || vm opt str
//!          || params_digest [32] || stage str || decision str || reason str
//!          || status opt u64 || result opt str || state_before opt str
//!          || state_after opt str || request u64
//! hash   = SHA-256( "tvp-audit-record-v1\0" || SHA-256(head) || SHA-256(body) )
//! ```
//!
//! `vm_digest` is SHA-256 of the VM id (32 zero bytes for host-level records). See
//! `docs/audit.md`.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::encode::Encoder;
use crate::Digest32;

/// Format version written in every record.
pub const RECORD_VERSION: u32 = 1;
/// Longest operation name kept (longer, caller-controlled names are cut).
pub const MAX_OP: usize = 160;
/// Longest reason or result text kept.
pub const MAX_TEXT: usize = 1024;
/// The `prev` of the first record.
pub const GENESIS: Digest32 = [0u8; 32];

/// Which half of a request's audit pair a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Written before execution, carrying the decision.
    Decision,
    /// Written after execution (or refusal), carrying the result.
    Result,
    /// A VM state change (an operation taking effect, handover, crash, deadline,
    /// remediation): `state_before` and `state_after` say which, `reason` why;
    /// `request` is 0.
    Event,
}

/// Whether the request was allowed to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Allowed: it ran (or was about to run).
    Allow,
    /// Denied: it did not run.
    Deny,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Decision => "decision",
            Stage::Result => "result",
            Stage::Event => "event",
        }
    }
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// One audit record as stored (a JSON line) and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub v: u32,
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Caller's uid (SO_PEERCRED); for records tvpd writes itself, its own uid.
    pub uid: u32,
    /// Caller's pid, if the kernel reported one.
    pub pid: Option<i32>,
    /// The VM concerned, if any.
    pub vm: Option<String>,
    /// Operation name (`pause`, `quote`, ...; `http:GET /x` for unknown paths).
    pub op: String,
    /// SHA-256 (hex) of the operation's canonical parameters (`params::digest`).
    pub params_digest: String,
    /// Decision (before) or result (after).
    pub stage: Stage,
    /// Allowed or denied.
    pub decision: Decision,
    /// Why (for denials: the refusal message; for allowed restricted operations: which
    /// authorization allowed it).
    pub reason: String,
    /// HTTP status of the answer (result records).
    pub status: Option<u16>,
    /// Outcome in words (result records).
    pub result: Option<String>,
    /// VM state before the operation, when a VM is concerned.
    pub state_before: Option<String>,
    /// VM state after the operation.
    pub state_after: Option<String>,
    /// `seq` of the decision record of the same request (its own seq for decisions).
    pub request: u64,
    /// Hash (hex) of the previous record; zeros for the first.
    pub prev: String,
    /// Hash (hex) of this record.
    pub hash: String,
    /// Set on every record of a commit group but the last: the TPM anchor was not
    /// extended with this record's hash but once for the whole group, with the hash of
    /// its last record, which chains over this one (docs/audit.md, "Group commit").
    /// Absent (false) on records the anchor was extended with, and on every record of
    /// logs written before group commit. Not covered by the hash: a wrong value only
    /// makes the anchor check fail ([`crate::anchor::step`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub grouped: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a caller fills in; [`AuditRecord::seal`] adds `seq`, `prev` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDraft {
    /// See [`AuditRecord::time_ms`].
    pub time_ms: u64,
    /// See [`AuditRecord::uid`].
    pub uid: u32,
    /// See [`AuditRecord::pid`].
    pub pid: Option<i32>,
    /// See [`AuditRecord::vm`].
    pub vm: Option<String>,
    /// See [`AuditRecord::op`].
    pub op: String,
    /// See [`AuditRecord::params_digest`].
    pub params_digest: Digest32,
    /// See [`AuditRecord::stage`].
    pub stage: Stage,
    /// See [`AuditRecord::decision`].
    pub decision: Decision,
    /// See [`AuditRecord::reason`].
    pub reason: String,
    /// See [`AuditRecord::status`].
    pub status: Option<u16>,
    /// See [`AuditRecord::result`].
    pub result: Option<String>,
    /// See [`AuditRecord::state_before`].
    pub state_before: Option<String>,
    /// See [`AuditRecord::state_after`].
    pub state_after: Option<String>,
    /// See [`AuditRecord::request`]; ignored for decision records.
    pub request: u64,
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// SHA-256 of a VM id as it appears in record heads (zeros for none).
pub fn vm_digest(vm: Option<&str>) -> Digest32 {
    match vm {
        None => [0u8; 32],
        Some(v) => Sha256::digest(v.as_bytes()).into(),
    }
}

/// Combine head and body digests into the record hash.
pub fn record_hash(head: &Digest32, body: &Digest32) -> Digest32 {
    let mut e = Encoder::new("tvp-audit-record-v1");
    e.fixed(head).fixed(body);
    e.sha256()
}

/// The digest of a record head.
pub fn head_digest(seq: u64, prev: &Digest32, vm_digest: &Digest32, op: &str) -> Digest32 {
    let mut e = Encoder::new("tvp-audit-head-v1");
    e.u64(seq).fixed(prev).fixed(vm_digest).str(op);
    e.sha256()
}

impl AuditRecord {
    /// Turn a draft into the record at position `seq` after `prev`, with its hash.
    /// Caller-controlled text is bounded here.
    pub fn seal(d: RecordDraft, seq: u64, prev: &Digest32) -> AuditRecord {
        let mut r = AuditRecord {
            v: RECORD_VERSION,
            seq,
            time_ms: d.time_ms,
            uid: d.uid,
            pid: d.pid,
            vm: d.vm.map(|v| cut(&v, MAX_OP)),
            op: cut(&d.op, MAX_OP),
            params_digest: hex::encode(d.params_digest),
            stage: d.stage,
            decision: d.decision,
            reason: cut(&d.reason, MAX_TEXT),
            status: d.status,
            result: d.result.map(|s| cut(&s, MAX_TEXT)),
            state_before: d.state_before.map(|s| cut(&s, MAX_OP)),
            state_after: d.state_after.map(|s| cut(&s, MAX_OP)),
            request: if d.stage == Stage::Decision {
                seq
            } else {
                d.request
            },
            prev: hex::encode(prev),
            hash: String::new(),
            grouped: false,
        };
        r.hash = hex::encode(r.compute_hash().unwrap_or_default());
        r
    }

    /// `prev` as bytes, if well-formed.
    pub fn prev_bytes(&self) -> Option<Digest32> {
        crate::digest_from_hex(&self.prev)
    }

    /// `hash` as bytes, if well-formed.
    pub fn hash_bytes(&self) -> Option<Digest32> {
        crate::digest_from_hex(&self.hash)
    }

    /// The digest of the head; `None` if `prev` is not a hex digest.
    pub fn head_digest(&self) -> Option<Digest32> {
        Some(head_digest(
            self.seq,
            &self.prev_bytes()?,
            &vm_digest(self.vm.as_deref()),
            &self.op,
        ))
    }

    /// The digest of the body; `None` if `params_digest` is not a hex digest.
    pub fn body_digest(&self) -> Option<Digest32> {
        let params = crate::digest_from_hex(&self.params_digest)?;
        let mut e = Encoder::new("tvp-audit-body-v1");
        e.u64(self.time_ms)
            .u32(self.uid)
            .opt_u64(self.pid.map(|p| p as i64 as u64))
            .opt_str(self.vm.as_deref())
            .fixed(&params)
            .str(self.stage.as_str())
            .str(self.decision.as_str())
            .str(&self.reason)
            .opt_u64(self.status.map(u64::from))
            .opt_str(self.result.as_deref())
            .opt_str(self.state_before.as_deref())
            .opt_str(self.state_after.as_deref())
            .u64(self.request);
        Some(e.sha256())
    }

    /// The hash this record should carry; `None` if a digest field is malformed.
    pub fn compute_hash(&self) -> Option<Digest32> {
        Some(record_hash(&self.head_digest()?, &self.body_digest()?))
    }

    /// One JSON line (no trailing newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn draft(op: &str, vm: Option<&str>) -> RecordDraft {
        RecordDraft {
            time_ms: 1_700_000_000_000,
            uid: 0,
            pid: Some(42),
            vm: vm.map(String::from),
            op: op.into(),
            params_digest: [7; 32],
            stage: Stage::Decision,
            decision: Decision::Allow,
            reason: "test".into(),
            status: None,
            result: None,
            state_before: None,
            state_after: None,
            request: 0,
        }
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let r = AuditRecord::seal(draft("pause", Some("vm1")), 1, &GENESIS);
        assert_eq!(r.compute_hash().map(hex::encode), Some(r.hash.clone()));
        let mut variants: Vec<AuditRecord> = Vec::new();
        let m = |f: &dyn Fn(&mut AuditRecord)| {
            let mut x = r.clone();
            f(&mut x);
            x
        };
        variants.push(m(&|x| x.seq = 2));
        variants.push(m(&|x| x.time_ms += 1));
        variants.push(m(&|x| x.uid = 1));
        variants.push(m(&|x| x.pid = None));
        variants.push(m(&|x| x.vm = Some("vm2".into())));
        variants.push(m(&|x| x.op = "resume".into()));
        variants.push(m(&|x| x.params_digest = hex::encode([8u8; 32])));
        variants.push(m(&|x| x.stage = Stage::Result));
        variants.push(m(&|x| x.decision = Decision::Deny));
        variants.push(m(&|x| x.reason = "other".into()));
        variants.push(m(&|x| x.status = Some(200)));
        variants.push(m(&|x| x.result = Some("ok".into())));
        variants.push(m(&|x| x.state_before = Some("running".into())));
        variants.push(m(&|x| x.state_after = Some("paused".into())));
        variants.push(m(&|x| x.request = 9));
        variants.push(m(&|x| x.prev = hex::encode([1u8; 32])));
        for v in variants {
            assert_ne!(
                v.compute_hash().map(hex::encode),
                Some(r.hash.clone()),
                "{v:?}"
            );
        }
    }

    #[test]
    fn caller_text_is_bounded() {
        let long = "x".repeat(10_000);
        let r = AuditRecord::seal(draft(&long, None), 1, &GENESIS);
        assert!(r.op.len() <= MAX_OP + 3);
        let back: AuditRecord = serde_json::from_str(&r.to_line()).unwrap();
        assert_eq!(back, r);
    }
}
