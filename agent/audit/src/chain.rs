//! Verifying a whole audit log: every record's hash, every link to its predecessor,
//! sequence numbers without gaps, and (optionally) the TPM anchor. The first record
//! that fails is named, with what its failure most likely means.

use crate::anchor;
use crate::record::{AuditRecord, GENESIS, RECORD_VERSION};
use crate::Digest32;

/// Why a log does not verify. `seq` is the sequence number found in (or expected at)
/// the first bad record; `line` its 1-based line in the file when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A line is not a record.
    #[error("line {line}: not an audit record ({message}); the log was edited or corrupted there")]
    Malformed { line: usize, message: String },
    /// The record's content does not hash to its `hash`.
    #[error("record seq {seq} (line {line}) was edited: its content does not match its hash")]
    Edited { seq: u64, line: usize },
    /// The record does not follow its predecessor.
    #[error("record seq {seq} (line {line}) does not follow the previous record (expected seq {expected_seq}): records were deleted, inserted or reordered there")]
    Broken {
        seq: u64,
        line: usize,
        expected_seq: u64,
    },
    /// The chain is consistent but does not match the TPM anchor.
    #[error("the log's {records} records are internally consistent but do not match the TPM anchor: records were removed from the end, or the whole log was rewritten")]
    AnchorMismatch { records: u64 },
}

/// What a verified log amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Number of records.
    pub records: u64,
    /// Hash of the last record (genesis zeros if none).
    pub head: Digest32,
    /// NV anchor value the records fold to from `start_anchor`.
    pub anchor: Digest32,
}

/// Parse a JSON-lines log. Blank lines are allowed only at the end.
pub fn parse_log(text: &str) -> Result<Vec<AuditRecord>, ChainError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: AuditRecord = serde_json::from_str(line).map_err(|e| ChainError::Malformed {
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(r);
    }
    Ok(out)
}

/// Verify `records` as a log that starts at seq `first_seq` after `prev` (use 1 and
/// [`GENESIS`] for a whole log) with the NV anchor at `start_anchor` before it (zeros
/// for a whole log). If `expected_anchor` is given, the folded anchor must equal it.
pub fn verify_from(
    records: &[AuditRecord],
    first_seq: u64,
    prev: Digest32,
    start_anchor: Digest32,
    expected_anchor: Option<&Digest32>,
) -> Result<ChainSummary, ChainError> {
    let mut prev = prev;
    let mut acc = start_anchor;
    for (i, r) in records.iter().enumerate() {
        let line = i + 1;
        let expected_seq = first_seq + i as u64;
        if r.v != RECORD_VERSION {
            return Err(ChainError::Malformed {
                line,
                message: format!("record version {} is not {RECORD_VERSION}", r.v),
            });
        }
        let Some(h) = r.hash_bytes() else {
            return Err(ChainError::Edited { seq: r.seq, line });
        };
        if r.compute_hash() != Some(h) {
            return Err(ChainError::Edited { seq: r.seq, line });
        }
        if r.seq != expected_seq || r.prev_bytes() != Some(prev) {
            return Err(ChainError::Broken {
                seq: r.seq,
                line,
                expected_seq,
            });
        }
        prev = h;
        acc = anchor::step(&acc, &h, r.grouped);
    }
    if let Some(want) = expected_anchor {
        // The last record must be one the anchor was extended with: a trailing
        // `grouped` record is not covered by the anchor (its group was cut short).
        if *want != acc || records.last().is_some_and(|r| r.grouped) {
            return Err(ChainError::AnchorMismatch {
                records: records.len() as u64,
            });
        }
    }
    Ok(ChainSummary {
        records: records.len() as u64,
        head: prev,
        anchor: acc,
    })
}

/// Verify a whole log from its first record.
pub fn verify_chain(
    records: &[AuditRecord],
    expected_anchor: Option<&Digest32>,
) -> Result<ChainSummary, ChainError> {
    verify_from(records, 1, GENESIS, anchor::EMPTY, expected_anchor)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::tests::draft;

    pub(crate) fn log(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|s| {
                let r = AuditRecord::seal(draft(&format!("op{s}"), None), s, &prev);
                prev = r.hash_bytes().unwrap();
                r
            })
            .collect()
    }

    /// `l` with the commit groups ending at `ends` (1-based seqs): every other
    /// record `grouped`; and the NV value the TPM holds: one extend per group end.
    pub(crate) fn grouped(mut l: Vec<AuditRecord>, ends: &[u64]) -> (Vec<AuditRecord>, Digest32) {
        let mut nv = anchor::EMPTY;
        for r in l.iter_mut() {
            r.grouped = !ends.contains(&r.seq);
            if !r.grouped {
                nv = anchor::extend(&nv, &r.hash_bytes().unwrap());
            }
        }
        (l, nv)
    }

    #[test]
    fn a_grouped_log_verifies_against_one_extend_per_group_and_its_tail_must_be_anchored() {
        let (l, nv) = grouped(log(6), &[3, 4, 6]);
        assert_eq!(verify_chain(&l, Some(&nv)).unwrap().anchor, nv);
        // The marks survive the log's text.
        let text: String = l.iter().map(|r| r.to_line() + "\n").collect();
        assert_eq!(parse_log(&text).unwrap(), l);
        // A mark flipped (either way) no longer matches the anchor.
        for i in [0, 2] {
            let mut m = l.clone();
            m[i].grouped = !m[i].grouped;
            assert_eq!(
                verify_chain(&m, Some(&nv)),
                Err(ChainError::AnchorMismatch { records: 6 })
            );
        }
        // A record appended behind the anchor's back, marked as part of a group:
        // the fold is unchanged, but a log must end with an anchored record.
        let mut forged = l.clone();
        let mut x = AuditRecord::seal(draft("forged", None), 7, &l[5].hash_bytes().unwrap());
        x.grouped = true;
        forged.push(x);
        assert_eq!(verify_chain(&forged, None).unwrap().anchor, nv);
        assert_eq!(
            verify_chain(&forged, Some(&nv)),
            Err(ChainError::AnchorMismatch { records: 7 })
        );
        // Records cut from the end of the last group: the anchor is not reached.
        assert!(verify_chain(&l[..5], Some(&nv)).is_err());
    }

    #[test]
    fn intact_log_verifies_with_its_anchor() {
        let l = log(5);
        let s = verify_chain(&l, None).unwrap();
        assert_eq!(s.records, 5);
        verify_chain(&l, Some(&s.anchor)).unwrap();
        let text: String = l.iter().map(|r| r.to_line() + "\n").collect();
        assert_eq!(parse_log(&text).unwrap(), l);
    }

    #[test]
    fn edited_record_is_named() {
        let mut l = log(5);
        l[2].reason = "nothing happened".into();
        assert_eq!(
            verify_chain(&l, None),
            Err(ChainError::Edited { seq: 3, line: 3 })
        );
    }

    #[test]
    fn edited_and_rehashed_record_breaks_the_next_link() {
        let mut l = log(5);
        l[2].reason = "nothing happened".into();
        l[2].hash = hex::encode(l[2].compute_hash().unwrap());
        assert_eq!(
            verify_chain(&l, None),
            Err(ChainError::Broken {
                seq: 4,
                line: 4,
                expected_seq: 4
            })
        );
    }

    #[test]
    fn deleted_record_is_named() {
        let mut l = log(5);
        l.remove(1);
        assert_eq!(
            verify_chain(&l, None),
            Err(ChainError::Broken {
                seq: 3,
                line: 2,
                expected_seq: 2
            })
        );
    }

    #[test]
    fn reordered_records_are_named() {
        let mut l = log(5);
        l.swap(1, 3);
        assert_eq!(
            verify_chain(&l, None),
            Err(ChainError::Broken {
                seq: 4,
                line: 2,
                expected_seq: 2
            })
        );
    }

    #[test]
    fn truncation_is_caught_by_the_anchor_only() {
        let l = log(5);
        let full = verify_chain(&l, None).unwrap();
        assert!(verify_chain(&l[..3], None).is_ok());
        assert_eq!(
            verify_chain(&l[..3], Some(&full.anchor)),
            Err(ChainError::AnchorMismatch { records: 3 })
        );
        // A rewritten log (fresh chain of the same length) also fails the anchor.
        let mut other = log(5);
        other[0] = AuditRecord::seal(draft("forged", None), 1, &GENESIS);
        let mut prev = other[0].hash_bytes().unwrap();
        for (i, r) in other.iter_mut().enumerate().skip(1) {
            *r = AuditRecord::seal(draft(&format!("op{}", i + 1), None), i as u64 + 1, &prev);
            prev = r.hash_bytes().unwrap();
        }
        assert_eq!(
            verify_chain(&other, Some(&full.anchor)),
            Err(ChainError::AnchorMismatch { records: 5 })
        );
    }

    /// Fuzzing found (audit_log, audit_extract): `v` is not hashed, so a record with
    /// another version verified; and a digest spelled in uppercase verified too.
    #[test]
    fn unhashed_version_and_digest_spelling_are_refused() {
        let mut l = log(3);
        l[1].v = 2;
        assert!(matches!(
            verify_chain(&l, None),
            Err(ChainError::Malformed { line: 2, .. })
        ));
        let mut l = log(3);
        l[2].prev = l[2].prev.to_uppercase();
        assert!(verify_chain(&l, None).is_err());
        let mut l = log(3);
        l[0].hash = l[0].hash.to_uppercase();
        assert!(verify_chain(&l, None).is_err());
    }

    #[test]
    fn garbage_line_is_named() {
        let l = log(2);
        let text = format!("{}\nnot json\n{}\n", l[0].to_line(), l[1].to_line());
        assert!(matches!(
            parse_log(&text),
            Err(ChainError::Malformed { line: 2, .. })
        ));
    }
}
