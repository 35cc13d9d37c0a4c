//! A tenant's extract: the records of one VM that its policy reports, in log order,
//! with every other record of the covered range reduced to its *head* (seq, prev,
//! SHA-256 of its VM id, operation) and the digest of its body. From that a verifier
//! recomputes every record hash, so it checks
//! - **inclusion and order**: each record links to its predecessor, and the fold of
//!   all hashes equals the TPM-certified anchor;
//! - **completeness**: no skipped record concerns this VM with a reported operation
//!   (its head shows VM digest and operation), so nothing was withheld.
//!
//! Of other tenants it learns only hashed VM ids, operation names and counts.

use serde::{Deserialize, Serialize};

use crate::anchor::{self, AnchorCertification};
use crate::record::{self, AuditRecord};
use crate::Digest32;

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
    /// Records `since..` up to the end of the log.
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
    /// The certification itself is bad.
    #[error(transparent)]
    Anchor(#[from] anchor::AnchorError),
}

/// Build an extract of `vm` from a whole log's `records` (seq 1..), covering
/// `since..`. `reported(op)` says whether the policy reports an operation.
pub fn build(
    records: &[AuditRecord],
    vm: &str,
    since: u64,
    reported: &dyn Fn(&str) -> bool,
) -> Extract {
    let since = since.max(1);
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
            if r.vm.as_deref() == Some(vm) && reported(&r.op) {
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

/// What a verified extract contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractSummary {
    /// The VM's records.
    pub records: Vec<AuditRecord>,
    /// Covered positions.
    pub covered: u64,
    /// Anchor after the last entry (keep it for the next extract's `start_anchor`).
    pub anchor: Digest32,
}

impl Extract {
    /// Verify links, hashes and completeness against `reported`, and, if
    /// `certified` is given (a value from [`AnchorCertification::verify`] and the log
    /// length it covers), the anchor.
    pub fn verify(
        &self,
        reported: &dyn Fn(&str) -> bool,
        certified: Option<(Digest32, u64)>,
    ) -> Result<ExtractSummary, ExtractError> {
        let hexd = |s: &str, seq, field| {
            crate::digest_from_hex(s).ok_or(ExtractError::Malformed { seq, field })
        };
        let mut prev = hexd(&self.prev, self.since, "prev")?;
        let mut acc = hexd(&self.start_anchor, self.since, "start_anchor")?;
        let own = record::vm_digest(Some(&self.vm));
        let mut out = Vec::new();
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
                    out.push(r.clone());
                    (r.seq, r.prev_bytes(), h)
                }
                ExtractEntry::Skipped(s) => {
                    let p = hexd(&s.prev, s.seq, "prev")?;
                    let vmd = hexd(&s.vm_digest, s.seq, "vm_digest")?;
                    let body = hexd(&s.body_digest, s.seq, "body_digest")?;
                    if vmd == own && reported(&s.op) {
                        return Err(ExtractError::Withheld {
                            seq: s.seq,
                            op: s.op.clone(),
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
        if let Some((value, records)) = certified {
            if value != acc || records != ends {
                return Err(ExtractError::AnchorMismatch {
                    certified: records,
                    ends,
                });
            }
        }
        Ok(ExtractSummary {
            records: out,
            covered: self.entries.len() as u64,
            anchor: acc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::verify_chain;
    use crate::record::tests::draft;
    use crate::record::GENESIS;

    fn log() -> Vec<AuditRecord> {
        let spec = [
            ("create", Some("a")),
            ("pause", Some("b")),
            ("pause", Some("a")),
            ("quote", None),
            ("resume", Some("a")),
            ("get", Some("a")),
        ];
        let mut prev = GENESIS;
        spec.iter()
            .enumerate()
            .map(|(i, (op, vm))| {
                let r = AuditRecord::seal(draft(op, *vm), i as u64 + 1, &prev);
                prev = r.hash_bytes().unwrap();
                r
            })
            .collect()
    }

    fn reported(op: &str) -> bool {
        op != "get"
    }

    #[test]
    fn honest_extract_verifies_against_the_anchor() {
        let l = log();
        let anchor = verify_chain(&l, None).unwrap().anchor;
        let x = build(&l, "a", 1, &reported);
        let s = x.verify(&reported, Some((anchor, 6))).unwrap();
        let seqs: Vec<u64> = s.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3, 5]);
        // A later extract continues from where the tenant stopped.
        let y = build(&l, "a", 4, &reported);
        let mid = verify_chain(&l[..3], None).unwrap().anchor;
        assert_eq!(y.start_anchor, hex::encode(mid));
        y.verify(&reported, Some((anchor, 6))).unwrap();
    }

    #[test]
    fn withheld_record_is_named() {
        let l = log();
        let mut x = build(&l, "a", 1, &reported);
        // The host hides record 3 (pause of a) as if it were someone else's.
        let r = l[2].clone();
        x.entries[2] = ExtractEntry::Skipped(SkippedRecord {
            seq: 3,
            prev: r.prev.clone(),
            vm_digest: hex::encode(record::vm_digest(Some("a"))),
            op: r.op.clone(),
            body_digest: hex::encode(r.body_digest().unwrap()),
        });
        assert_eq!(
            x.verify(&reported, None).unwrap_err(),
            ExtractError::Withheld {
                seq: 3,
                op: "pause".into()
            }
        );
        // Lying about its VM digest or op changes its hash: the next link breaks.
        let mut z = build(&l, "a", 1, &reported);
        z.entries[2] = ExtractEntry::Skipped(SkippedRecord {
            seq: 3,
            prev: r.prev.clone(),
            vm_digest: hex::encode(record::vm_digest(Some("b"))),
            op: r.op.clone(),
            body_digest: hex::encode(r.body_digest().unwrap()),
        });
        assert_eq!(
            z.verify(&reported, None).unwrap_err(),
            ExtractError::Broken {
                seq: 4,
                expected: 4
            }
        );
    }

    /// Fuzzing found (audit_extract): a full record with `v` 2 (not hashed) verified.
    #[test]
    fn record_of_another_version_is_refused() {
        let l = log();
        let mut x = build(&l, "a", 1, &reported);
        if let ExtractEntry::Record(r) = &mut x.entries[2] {
            r.v = 2;
        }
        assert_eq!(
            x.verify(&reported, None).unwrap_err(),
            ExtractError::Malformed { seq: 3, field: "v" }
        );
        let mut x = build(&l, "a", 1, &reported);
        if let ExtractEntry::Skipped(s) = &mut x.entries[1] {
            s.body_digest = s.body_digest.to_uppercase();
        }
        assert!(matches!(
            x.verify(&reported, None),
            Err(ExtractError::Malformed { seq: 2, .. })
        ));
    }

    #[test]
    fn edited_deleted_reordered_and_truncated_extracts_fail() {
        let l = log();
        let anchor = verify_chain(&l, None).unwrap().anchor;
        let mut x = build(&l, "a", 1, &reported);
        if let ExtractEntry::Record(r) = &mut x.entries[2] {
            r.reason = "edited".into();
        }
        assert_eq!(
            x.verify(&reported, None).unwrap_err(),
            ExtractError::Edited { seq: 3 }
        );
        let mut x = build(&l, "a", 1, &reported);
        x.entries.remove(1);
        assert_eq!(
            x.verify(&reported, None).unwrap_err(),
            ExtractError::Broken {
                seq: 3,
                expected: 2
            }
        );
        let mut x = build(&l, "a", 1, &reported);
        x.entries.swap(2, 4);
        assert!(matches!(
            x.verify(&reported, None),
            Err(ExtractError::Broken { .. })
        ));
        let mut x = build(&l, "a", 1, &reported);
        x.entries.truncate(4);
        assert_eq!(
            x.verify(&reported, Some((anchor, 6))).unwrap_err(),
            ExtractError::AnchorMismatch {
                certified: 6,
                ends: 4
            }
        );
    }
}
