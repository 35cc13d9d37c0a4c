//! A tenant's extract: the records of one VM that its policy reports, in log order,
//! with every other record of the covered range reduced to its *head* (seq, prev,
//! SHA-256 of its VM id, operation) and the digest of its body. From that a verifier
//! recomputes every record hash, so it checks
//! - **inclusion and order**: each record links to its predecessor, and the fold of
//!   all hashes equals the TPM-certified anchor;
//! - **completeness**: no skipped record concerns this VM with a reported operation
//!   (its head shows VM digest and operation), so nothing was withheld.
//!
//! - **a start it knows**: the extract begins at the VM's creation (its `create-vm`
//!   record, always shown in full) or exactly where the tenant's last verification
//!   ended ([`Checkpoint`]); a host cannot cut off the beginning by choosing `since`.
//!
//! Of other tenants it learns only hashed VM ids, operation names and counts.

use serde::{Deserialize, Serialize};

use crate::anchor::{self, AnchorCertification};
use crate::checkpoint::Checkpoint;
use crate::record::{self, AuditRecord, Decision, Stage};
use crate::Digest32;

/// The operation of a VM's creation request; its records are in every extract in full.
pub const CREATE_OP: &str = "create-vm";
/// The operation of a VM state change event (the first, `none` → ..., is its creation).
pub const STATE_CHANGE_OP: &str = "vm-state-change";

/// The operation of the record tvpd writes when events of a VM were lost (the audit
/// log could not be written and its queue of waiting events was full): always shown
/// in full in that VM's extract, and reported by the verifier as a gap. One with no
/// VM (lost events of VMs tvpd could not count one by one) is a gap for every VM.
pub const EVENTS_LOST_OP: &str = "audit-events-lost";

/// An explicit gap in a verified extract: events of the VM that are not in the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The record that states the loss.
    pub seq: u64,
    /// What it says (for a host-level record, which the extract shows only as a head,
    /// a fixed text).
    pub reason: String,
}

/// A record of someone else (or an unreported operation), reduced to its head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedRecord {
    /// Sequence number.
    pub seq: u64,
    /// Hash of the previous record (hex).
    pub prev: String,
    /// SHA-256 of the record's VM id (hex; zeros for host records).
    pub vm_digest: String,
    /// Operation name.
    pub op: String,
    /// SHA-256 of the record's body encoding (hex).
    pub body_digest: String,
}

/// One position of the covered range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractEntry {
    /// A record of this VM, in full.
    Record(AuditRecord),
    /// Another record, reduced.
    Skipped(SkippedRecord),
}

/// What `GET /v1/vms/{id}/audit?since=SEQ` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    /// Format version (1).
    pub v: u32,
    /// The VM.
    pub vm: String,
    /// First covered seq.
    pub since: u64,
    /// Hash of record `since - 1` (zeros if `since` is 1).
    pub prev: String,
    /// The NV anchor after record `since - 1` (zeros if `since` is 1). A tenant keeps
    /// the anchor it verified last time and checks it equals this.
    pub start_anchor: String,
    /// Records `since..` up to the end of the log (`since` is at most the log's
    /// length + 1: an empty extract positioned at the end).
    pub entries: Vec<ExtractEntry>,
    /// The AK-certified NV anchor covering the end of `entries`, when requested.
    pub anchor: Option<AnchorCertification>,
}

/// Why an extract does not verify; positions are sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// A hex field is malformed.
    #[error("extract entry seq {seq}: malformed {field}")]
    Malformed { seq: u64, field: &'static str },
    /// A full record does not match its hash.
    #[error("record seq {seq} was edited: its content does not match its hash")]
    Edited { seq: u64 },
    /// An entry does not follow its predecessor.
    #[error("entry seq {seq} does not follow the previous entry (expected seq {expected}): records were deleted, inserted or reordered there")]
    Broken { seq: u64, expected: u64 },
    /// A full record of another VM.
    #[error("record seq {seq} is not about VM {vm}")]
    OtherVm { seq: u64, vm: String },
    /// A skipped record this VM's policy says must be reported.
    #[error(
        "record seq {seq} ({op}) concerns this VM and is a reported operation, but was withheld"
    )]
    Withheld { seq: u64, op: String },
    /// The fold of the hashes does not equal the certified anchor, or the extract does
    /// not reach the certified end.
    #[error("the extract does not match the TPM anchor (certified {certified} records, extract ends at {ends}): records were removed or rewritten")]
    AnchorMismatch { certified: u64, ends: u64 },
    /// Verifying from the VM's creation, but the extract does not begin with it.
    #[error("the extract does not begin at the VM's creation (its first entry is {found}): without a checkpoint of an earlier verification, records before it could have been cut off")]
    NotFromCreation { found: String },
    /// The creation request the extract begins with did not succeed.
    #[error("the create-vm request at seq {seq} has no successful (201) result in the extract: it did not create this VM")]
    CreateFailed { seq: u64 },
    /// Another successful creation of the same id: the extract covers an earlier VM.
    #[error(
        "record seq {seq} creates a VM with this id again: the extract covers another VM's life"
    )]
    OtherIncarnation { seq: u64 },
    /// The creation event does not name the tenant's management binding.
    #[error("the VM's creation (record seq {seq}) does not name your management key and policy: this VM was not created with your binding")]
    BindingMismatch { seq: u64 },
    /// The creation event is not in the extract in full, so the binding is not checkable.
    #[error("the VM's creation event is not shown in full (the policy does not report vm-state-change), so the management binding cannot be checked")]
    BindingNotShown,
    /// The extract does not continue from the tenant's checkpoint.
    #[error("the extract does not continue from your checkpoint (seq {checkpoint}): its {field} differs, so records after the checkpoint could have been cut or rewritten")]
    CheckpointMismatch {
        checkpoint: u64,
        field: &'static str,
    },
    /// The certification itself is bad.
    #[error(transparent)]
    Anchor(#[from] anchor::AnchorError),
}

impl ExtractError {
    /// A short, stable name of the failed check (tvpctl's `--json` `reason`).
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::Malformed { .. } => "malformed",
            ExtractError::Edited { .. } => "edited",
            ExtractError::Broken { .. } => "broken-link",
            ExtractError::OtherVm { .. } => "other-vm",
            ExtractError::Withheld { .. } => "withheld",
            ExtractError::AnchorMismatch { .. } => "anchor-mismatch",
            ExtractError::NotFromCreation { .. } => "not-from-creation",
            ExtractError::CreateFailed { .. } => "create-failed",
            ExtractError::OtherIncarnation { .. } => "other-incarnation",
            ExtractError::BindingMismatch { .. } => "binding-mismatch",
            ExtractError::BindingNotShown => "binding-not-shown",
            ExtractError::CheckpointMismatch { .. } => "checkpoint-mismatch",
            ExtractError::Anchor(e) => e.code(),
        }
    }
}

/// Build an extract of `vm` from a whole log's `records` (seq 1..), covering
/// `since..`. `reported(op)` says whether the policy reports an operation (the VM's
/// creation is always shown, [`shown`]). A `since` beyond the end gives an empty
/// extract at the end of the log (`since` = length + 1), which verifies only against
/// a checkpoint at exactly that position.
pub fn build(
    records: &[AuditRecord],
    vm: &str,
    since: u64,
    reported: &dyn Fn(&str) -> bool,
) -> Extract {
    let since = since.clamp(1, records.len() as u64 + 1);
    let skip = (since - 1) as usize;
    let before = &records[..skip.min(records.len())];
    let prev = before
        .last()
        .and_then(|r| r.hash_bytes())
        .unwrap_or(record::GENESIS);
    let hashes: Vec<Digest32> = before.iter().filter_map(|r| r.hash_bytes()).collect();
    let start_anchor = anchor::fold(anchor::EMPTY, &hashes);
    let entries = records
        .iter()
        .skip(skip)
        .map(|r| {
            if r.vm.as_deref() == Some(vm) && shown(&r.op, reported) {
                ExtractEntry::Record(r.clone())
            } else {
                ExtractEntry::Skipped(SkippedRecord {
                    seq: r.seq,
                    prev: r.prev.clone(),
                    vm_digest: hex::encode(record::vm_digest(r.vm.as_deref())),
                    op: r.op.clone(),
                    body_digest: hex::encode(r.body_digest().unwrap_or_default()),
                })
            }
        })
        .collect();
    Extract {
        v: 1,
        vm: vm.to_string(),
        since,
        prev: hex::encode(prev),
        start_anchor: hex::encode(start_anchor),
        entries,
        anchor: None,
    }
}

/// Where a tenant's verification of an extract begins. There is no third way: an
/// extract that starts anywhere else could have had its beginning cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'a> {
    /// At the VM's creation: the first entry must be this VM's `create-vm` decision
    /// record (allowed), answered by a `201` result in the extract. With `management`
    /// (the tenant's [`crate::policy::management_digest`]), the VM's creation event
    /// must also name that digest: the VM was created with the tenant's key and policy.
    Creation {
        /// The tenant's management digest, if the tenant wants its binding checked.
        management: Option<Digest32>,
    },
    /// Where an earlier verification ended: the extract must continue exactly there.
    Checkpoint(&'a Checkpoint),
}

/// What a verified extract contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractSummary {
    /// The VM's records.
    pub records: Vec<AuditRecord>,
    /// Covered positions.
    pub covered: u64,
    /// Anchor after the last entry (keep it for the next extract's `start_anchor`).
    pub anchor: Digest32,
    /// Where this verification ended: the start of the next one.
    pub checkpoint: Checkpoint,
    /// Events of this VM that were lost (the trail says so explicitly): the chain
    /// verifies, but the VM's history has these holes.
    pub gaps: Vec<Gap>,
}

/// Whether a record of the extract's VM with operation `op` is shown in full: what
/// the policy `reported`, and always the VM's creation, where a verification from
/// the start begins, and the statement of lost events.
pub fn shown(op: &str, reported: &dyn Fn(&str) -> bool) -> bool {
    op == CREATE_OP || op == EVENTS_LOST_OP || reported(op)
}

/// Check the start of `x` against `start`; returns the seq of the VM's creation.
fn check_start(
    x: &Extract,
    start: Start<'_>,
    prev: &Digest32,
    start_anchor: &Digest32,
) -> Result<u64, ExtractError> {
    match start {
        Start::Checkpoint(cp) => {
            let differs = |field: &'static str| ExtractError::CheckpointMismatch {
                checkpoint: cp.seq,
                field,
            };
            if cp.vm != x.vm {
                return Err(differs("vm"));
            }
            if x.since != cp.seq.saturating_add(1) {
                return Err(differs("since"));
            }
            if cp.head_bytes() != Some(*prev) {
                return Err(differs("prev"));
            }
            if cp.anchor_bytes() != Some(*start_anchor) {
                return Err(differs("start_anchor"));
            }
            Ok(cp.created)
        }
        Start::Creation { .. } => {
            let found = match x.entries.first() {
                None => "nothing (the extract is empty)".to_string(),
                Some(ExtractEntry::Record(r))
                    if r.vm.as_deref() == Some(x.vm.as_str())
                        && r.op == CREATE_OP
                        && r.stage == Stage::Decision
                        && r.decision == Decision::Allow =>
                {
                    return Ok(x.since);
                }
                Some(ExtractEntry::Record(r)) => format!("seq {} ({})", r.seq, r.op),
                Some(ExtractEntry::Skipped(s)) => {
                    format!("seq {} ({}, not this VM's)", s.seq, s.op)
                }
            };
            Err(ExtractError::NotFromCreation { found })
        }
    }
}

/// What the VM's creation looked like in the extract.
#[derive(Default)]
struct Creation {
    /// The `201` result of the creation request was seen.
    succeeded: bool,
    /// The creation event (`none` → ...) was seen: its seq and reason.
    event: Option<(u64, String)>,
}

impl Creation {
    fn see(&mut self, r: &AuditRecord, created: u64) -> Result<(), ExtractError> {
        if r.op == CREATE_OP && r.stage == Stage::Result && r.status == Some(201) {
            if r.request != created {
                return Err(ExtractError::OtherIncarnation { seq: r.seq });
            }
            self.succeeded = true;
        }
        if r.op == STATE_CHANGE_OP
            && r.stage == Stage::Event
            && r.state_before.as_deref() == Some("none")
            && self.event.is_none()
        {
            self.event = Some((r.seq, r.reason.clone()));
        }
        Ok(())
    }

    fn check(&self, start: Start<'_>, created: u64) -> Result<(), ExtractError> {
        let Start::Creation { management } = start else {
            return Ok(());
        };
        if !self.succeeded {
            return Err(ExtractError::CreateFailed { seq: created });
        }
        if let Some(d) = management {
            let want = hex::encode(d);
            match &self.event {
                Some((_, reason)) if reason.contains(&want) => {}
                Some((seq, _)) => return Err(ExtractError::BindingMismatch { seq: *seq }),
                None => return Err(ExtractError::BindingNotShown),
            }
        }
        Ok(())
    }
}

impl Extract {
    /// Verify a tenant's extract: it begins where `start` says (the VM's creation, or
    /// the tenant's checkpoint), every link and hash holds, nothing `reported` (or the
    /// VM's creation) about this VM is withheld, and it folds to the AK-certified
    /// anchor `certified` (a value from [`AnchorCertification::verify`] and the log
    /// length it covers), ending exactly at the certified end.
    pub fn verify(
        &self,
        reported: &dyn Fn(&str) -> bool,
        start: Start<'_>,
        certified: (Digest32, u64),
    ) -> Result<ExtractSummary, ExtractError> {
        let hexd = |s: &str, seq, field| {
            crate::digest_from_hex(s).ok_or(ExtractError::Malformed { seq, field })
        };
        let mut prev = hexd(&self.prev, self.since, "prev")?;
        let mut acc = hexd(&self.start_anchor, self.since, "start_anchor")?;
        let created = check_start(self, start, &prev, &acc)?;
        let own = record::vm_digest(Some(&self.vm));
        let mut out = Vec::new();
        let mut creation = Creation::default();
        let mut gaps = Vec::new();
        let mut expected = self.since.max(1);
        for e in &self.entries {
            let (seq, eprev, hash) = match e {
                ExtractEntry::Record(r) => {
                    if r.v != record::RECORD_VERSION {
                        return Err(ExtractError::Malformed {
                            seq: r.seq,
                            field: "v",
                        });
                    }
                    if r.vm.as_deref() != Some(self.vm.as_str()) {
                        return Err(ExtractError::OtherVm {
                            seq: r.seq,
                            vm: self.vm.clone(),
                        });
                    }
                    let h = r.hash_bytes().ok_or(ExtractError::Malformed {
                        seq: r.seq,
                        field: "hash",
                    })?;
                    if r.compute_hash() != Some(h) {
                        return Err(ExtractError::Edited { seq: r.seq });
                    }
                    creation.see(r, created)?;
                    if r.op == EVENTS_LOST_OP {
                        gaps.push(Gap {
                            seq: r.seq,
                            reason: r.reason.clone(),
                        });
                    }
                    out.push(r.clone());
                    (r.seq, r.prev_bytes(), h)
                }
                ExtractEntry::Skipped(s) => {
                    let p = hexd(&s.prev, s.seq, "prev")?;
                    let vmd = hexd(&s.vm_digest, s.seq, "vm_digest")?;
                    let body = hexd(&s.body_digest, s.seq, "body_digest")?;
                    if vmd == own && shown(&s.op, reported) {
                        return Err(ExtractError::Withheld {
                            seq: s.seq,
                            op: s.op.clone(),
                        });
                    }
                    if s.op == EVENTS_LOST_OP && vmd == record::vm_digest(None) {
                        gaps.push(Gap {
                            seq: s.seq,
                            reason: "events of VMs the host could not count one by one were lost; this VM's may be among them".into(),
                        });
                    }
                    let head = record::head_digest(s.seq, &p, &vmd, &s.op);
                    (s.seq, Some(p), record::record_hash(&head, &body))
                }
            };
            if seq != expected || eprev != Some(prev) {
                return Err(ExtractError::Broken { seq, expected });
            }
            prev = hash;
            acc = anchor::extend(&acc, &hash);
            expected += 1;
        }
        let ends = expected - 1;
        let (value, records) = certified;
        if value != acc || records != ends {
            return Err(ExtractError::AnchorMismatch {
                certified: records,
                ends,
            });
        }
        creation.check(start, created)?;
        Ok(ExtractSummary {
            records: out,
            covered: self.entries.len() as u64,
            anchor: acc,
            checkpoint: Checkpoint::new(&self.vm, created, ends, &prev, &acc),
            gaps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::verify_chain;
    use crate::record::tests::draft;
    use crate::record::GENESIS;

    /// VM `a` created (decision 1, creation event 2, result 3), then requests of `a`
    /// and `b`, a host quote, and a `get` the policy does not report.
    fn log() -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        let mut out: Vec<AuditRecord> = Vec::new();
        let mut push = |d: crate::record::RecordDraft| {
            let r = AuditRecord::seal(d, out.len() as u64 + 1, &prev);
            prev = r.hash_bytes().unwrap();
            out.push(r);
        };
        push(draft(CREATE_OP, Some("a")));
        let mut ev = draft(STATE_CHANGE_OP, Some("a"));
        ev.stage = Stage::Event;
        ev.state_before = Some("none".into());
        ev.state_after = Some("queued".into());
        ev.reason = format!("created; management {}", hex::encode([5u8; 32]));
        push(ev);
        let mut res = draft(CREATE_OP, Some("a"));
        res.stage = Stage::Result;
        res.status = Some(201);
        res.request = 1;
        push(res);
        for (op, vm) in [
            ("pause", Some("b")),
            ("pause", Some("a")),
            ("quote", None),
            ("resume", Some("a")),
            ("get", Some("a")),
        ] {
            push(draft(op, vm));
        }
        out
    }

    fn reported(op: &str) -> bool {
        op != "get"
    }

    const FROM_CREATION: Start<'static> = Start::Creation { management: None };

    fn certified(l: &[AuditRecord]) -> (Digest32, u64) {
        (verify_chain(l, None).unwrap().anchor, l.len() as u64)
    }

    #[test]
    fn honest_extract_verifies_from_creation_and_then_from_its_checkpoint() {
        let l = log();
        let x = build(&l[..6], "a", 1, &reported);
        let s = x
            .verify(&reported, FROM_CREATION, certified(&l[..6]))
            .unwrap();
        let seqs: Vec<u64> = s.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 5]);
        assert_eq!(
            s.checkpoint,
            Checkpoint::new("a", 1, 6, &l[5].hash_bytes().unwrap(), &s.anchor)
        );
        // The log grew; the next extract continues from the checkpoint.
        let y = build(&l, "a", 7, &reported);
        let t = y
            .verify(&reported, Start::Checkpoint(&s.checkpoint), certified(&l))
            .unwrap();
        assert_eq!(t.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![7]);
        assert_eq!(t.checkpoint.seq, 8);
        assert_eq!(t.checkpoint.created, 1);
        // Nothing new since: an empty extract at the end verifies from the checkpoint.
        let z = build(&l, "a", 9, &reported);
        assert!(z.entries.is_empty());
        z.verify(&reported, Start::Checkpoint(&t.checkpoint), certified(&l))
            .unwrap();
        // With the tenant's management digest the creation event is checked too.
        x.verify(
            &reported,
            Start::Creation {
                management: Some([5; 32]),
            },
            certified(&l[..6]),
        )
        .unwrap();
    }

    /// The cuts of issue #16: an extract that does not begin at the creation, or not
    /// at the tenant's checkpoint, is refused with the reason named.
    #[test]
    fn an_extract_that_does_not_begin_at_creation_or_checkpoint_is_refused() {
        let l = log();
        let c = certified(&l);
        // `since` past the end: empty, positioned at the end (it verified before).
        let x = build(&l, "a", 1_000, &reported);
        assert_eq!((x.since, x.entries.len()), (9, 0));
        let e = x.verify(&reported, FROM_CREATION, c).unwrap_err();
        assert_eq!(e.code(), "not-from-creation");
        assert!(e.to_string().contains("the extract is empty"), "{e}");
        // Starting after the create record.
        let x = build(&l, "a", 4, &reported);
        let e = x.verify(&reported, FROM_CREATION, c).unwrap_err();
        assert!(
            e.to_string().contains("seq 4 (pause, not this VM's)"),
            "{e}"
        );
        // ... and against a checkpoint that ended elsewhere.
        let cp_at = |seq: usize| {
            let a = verify_chain(&l[..seq], None).unwrap().anchor;
            Checkpoint::new("a", 1, seq as u64, &l[seq - 1].hash_bytes().unwrap(), &a)
        };
        let cp = cp_at(2);
        assert_eq!(
            x.verify(&reported, Start::Checkpoint(&cp), c).unwrap_err(),
            ExtractError::CheckpointMismatch {
                checkpoint: 2,
                field: "since"
            }
        );
        // The host lies about prev/start_anchor to match a checkpoint: caught.
        let mut y = build(&l, "a", 3, &reported);
        y.start_anchor = hex::encode([9u8; 32]);
        assert_eq!(
            y.verify(&reported, Start::Checkpoint(&cp), c).unwrap_err(),
            ExtractError::CheckpointMismatch {
                checkpoint: 2,
                field: "start_anchor"
            }
        );
        let mut other = cp.clone();
        other.vm = "b".into();
        assert!(matches!(
            build(&l, "a", 3, &reported).verify(&reported, Start::Checkpoint(&other), c),
            Err(ExtractError::CheckpointMismatch { field: "vm", .. })
        ));
        build(&l, "a", 3, &reported)
            .verify(&reported, Start::Checkpoint(&cp), c)
            .unwrap();
        // A wrong management binding is named.
        let e = build(&l, "a", 1, &reported)
            .verify(
                &reported,
                Start::Creation {
                    management: Some([6; 32]),
                },
                c,
            )
            .unwrap_err();
        assert_eq!(e, ExtractError::BindingMismatch { seq: 2 });
    }

    #[test]
    fn creation_is_always_shown_and_must_have_succeeded_once() {
        let l = log();
        let c = certified(&l);
        // A policy that reports nothing still shows the creation in full.
        let none = |_: &str| false;
        let x = build(&l, "a", 1, &none);
        assert!(matches!(&x.entries[0], ExtractEntry::Record(r) if r.op == CREATE_OP));
        x.verify(&none, FROM_CREATION, c).unwrap();
        // A creation that was not answered 201 did not create this VM.
        let mut l2 = l[..2].to_vec();
        let mut res = draft(CREATE_OP, Some("a"));
        res.stage = Stage::Result;
        res.status = Some(409);
        res.request = 1;
        l2.push(AuditRecord::seal(res, 3, &l2[1].hash_bytes().unwrap()));
        let x = build(&l2, "a", 1, &reported);
        assert_eq!(
            x.verify(&reported, FROM_CREATION, certified(&l2))
                .unwrap_err(),
            ExtractError::CreateFailed { seq: 1 }
        );
        // A second successful creation of the id: the extract is of an earlier VM.
        let mut l3 = l.clone();
        let mut again = draft(CREATE_OP, Some("a"));
        again.stage = Stage::Result;
        again.status = Some(201);
        again.request = 8;
        let p = l3[7].hash_bytes().unwrap();
        l3.push(AuditRecord::seal(again, 9, &p));
        let x = build(&l3, "a", 1, &reported);
        assert_eq!(
            x.verify(&reported, FROM_CREATION, certified(&l3))
                .unwrap_err(),
            ExtractError::OtherIncarnation { seq: 9 }
        );
    }

    #[test]
    fn withheld_record_is_named() {
        let l = log();
        let c = certified(&l);
        let mut x = build(&l, "a", 1, &reported);
        // The host hides record 5 (pause of a) as if it were someone else's.
        let r = l[4].clone();
        let hide = |vm: &str| {
            ExtractEntry::Skipped(SkippedRecord {
                seq: 5,
                prev: r.prev.clone(),
                vm_digest: hex::encode(record::vm_digest(Some(vm))),
                op: r.op.clone(),
                body_digest: hex::encode(r.body_digest().unwrap()),
            })
        };
        x.entries[4] = hide("a");
        assert_eq!(
            x.verify(&reported, FROM_CREATION, c).unwrap_err(),
            ExtractError::Withheld {
                seq: 5,
                op: "pause".into()
            }
        );
        // Lying about its VM digest or op changes its hash: the next link breaks.
        let mut z = build(&l, "a", 1, &reported);
        z.entries[4] = hide("b");
        assert_eq!(
            z.verify(&reported, FROM_CREATION, c).unwrap_err(),
            ExtractError::Broken {
                seq: 6,
                expected: 6
            }
        );
    }

    /// Fuzzing found (audit_extract): a full record with `v` 2 (not hashed) verified.
    #[test]
    fn record_of_another_version_is_refused() {
        let l = log();
        let c = certified(&l);
        let mut x = build(&l, "a", 1, &reported);
        if let ExtractEntry::Record(r) = &mut x.entries[4] {
            r.v = 2;
        }
        assert_eq!(
            x.verify(&reported, FROM_CREATION, c).unwrap_err(),
            ExtractError::Malformed { seq: 5, field: "v" }
        );
        let mut x = build(&l, "a", 1, &reported);
        if let ExtractEntry::Skipped(s) = &mut x.entries[3] {
            s.body_digest = s.body_digest.to_uppercase();
        }
        assert!(matches!(
            x.verify(&reported, FROM_CREATION, c),
            Err(ExtractError::Malformed { seq: 4, .. })
        ));
    }

    #[test]
    fn edited_deleted_reordered_and_truncated_extracts_fail() {
        let l = log();
        let c = certified(&l);
        let mut x = build(&l, "a", 1, &reported);
        if let ExtractEntry::Record(r) = &mut x.entries[4] {
            r.reason = "edited".into();
        }
        assert_eq!(
            x.verify(&reported, FROM_CREATION, c).unwrap_err(),
            ExtractError::Edited { seq: 5 }
        );
        let mut x = build(&l, "a", 1, &reported);
        x.entries.remove(3);
        assert_eq!(
            x.verify(&reported, FROM_CREATION, c).unwrap_err(),
            ExtractError::Broken {
                seq: 5,
                expected: 4
            }
        );
        let mut x = build(&l, "a", 1, &reported);
        x.entries.swap(4, 6);
        assert!(matches!(
            x.verify(&reported, FROM_CREATION, c),
            Err(ExtractError::Broken { .. })
        ));
        let mut x = build(&l, "a", 1, &reported);
        x.entries.truncate(6);
        assert_eq!(
            x.verify(&reported, FROM_CREATION, c).unwrap_err(),
            ExtractError::AnchorMismatch {
                certified: 8,
                ends: 6
            }
        );
    }

    #[test]
    fn lost_events_are_always_shown_and_reported_as_gaps() {
        let mut l = log();
        let mut prev = l.last().unwrap().hash_bytes().unwrap();
        for vm in [Some("a"), Some("b"), None] {
            let mut d = draft(EVENTS_LOST_OP, vm);
            d.stage = Stage::Event;
            d.reason = format!("3 event(s) of {vm:?} were lost");
            let r = AuditRecord::seal(d, l.len() as u64 + 1, &prev);
            prev = r.hash_bytes().unwrap();
            l.push(r);
        }
        // Even a policy that reports nothing shows the loss in full.
        let nothing = |_: &str| false;
        let x = build(&l, "a", 1, &nothing);
        let s = x.verify(&nothing, FROM_CREATION, certified(&l)).unwrap();
        let seqs: Vec<u64> = s.gaps.iter().map(|g| g.seq).collect();
        // a's own record (9) and the host-level one (11); b's (10) is not a's gap.
        assert_eq!(seqs, vec![9, 11]);
        assert!(s.gaps[0].reason.contains("were lost"));
        // Withholding a's statement of loss is named.
        let mut w = x.clone();
        let ExtractEntry::Record(r) = w.entries[8].clone() else {
            panic!("seq 9 in full")
        };
        w.entries[8] = ExtractEntry::Skipped(SkippedRecord {
            seq: r.seq,
            prev: r.prev.clone(),
            vm_digest: hex::encode(record::vm_digest(Some("a"))),
            op: r.op.clone(),
            body_digest: hex::encode(r.body_digest().unwrap()),
        });
        assert_eq!(
            w.verify(&nothing, FROM_CREATION, certified(&l))
                .unwrap_err(),
            ExtractError::Withheld {
                seq: 9,
                op: EVENTS_LOST_OP.into()
            }
        );
        // Without any loss: no gap.
        let y = build(&l[..8], "a", 1, &reported);
        let t = y
            .verify(&reported, FROM_CREATION, certified(&l[..8]))
            .unwrap();
        assert!(t.gaps.is_empty());
    }
}
