//! Event log replay: recompute PCR values from the SHA-256 digests of a CEL log, the
//! way the TPM computed them (start at 32 zero bytes, [`extend_sha256`] each digest).
//! Public so callers can also compute expected PCR values from a reference log.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::eventlog::{extend_sha256, CelRecord};

/// Why a log could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// Record numbers must be 0, 1, 2, … in order.
    #[error("record at position {position} has recnum {found}, expected {position}")]
    Recnum {
        /// Position of the record in the log (the recnum it should have).
        position: u64,
        /// The recnum it has.
        found: u64,
    },
    /// A record for a replayed PCR carries no 32-byte SHA-256 digest.
    #[error("record {recnum} (PCR {pcr}) has no 32-byte sha256 digest")]
    MissingSha256 {
        /// The record.
        recnum: u64,
        /// Its PCR.
        pcr: u32,
    },
    /// A record carries more than one SHA-256 digest, so what was extended is ambiguous.
    #[error("record {recnum} (PCR {pcr}) has more than one sha256 digest")]
    DuplicateSha256 {
        /// The record.
        recnum: u64,
        /// Its PCR.
        pcr: u32,
    },
}

/// Replayed SHA-256 PCR values by PCR index.
pub type ReplayedPcrs = BTreeMap<u32, [u8; 32]>;

/// Replay the SHA-256 bank of `log`. Record numbers are checked over the whole log;
/// digests are required and replayed only for PCRs in `only` (all PCRs if `None`).
/// PCRs with no record are absent from the result.
pub fn replay_sha256(
    log: &[CelRecord],
    only: Option<&BTreeSet<u32>>,
) -> Result<ReplayedPcrs, ReplayError> {
    let mut out = ReplayedPcrs::new();
    for (position, rec) in (0u64..).zip(log) {
        if rec.recnum != position {
            return Err(ReplayError::Recnum {
                position,
                found: rec.recnum,
            });
        }
        if only.is_some_and(|set| !set.contains(&rec.pcr)) {
            continue;
        }
        let n = rec
            .digests
            .iter()
            .filter(|d| d.hash_alg == "sha256")
            .count();
        if n > 1 {
            return Err(ReplayError::DuplicateSha256 {
                recnum: rec.recnum,
                pcr: rec.pcr,
            });
        }
        let digest = rec.sha256().ok_or(ReplayError::MissingSha256 {
            recnum: rec.recnum,
            pcr: rec.pcr,
        })?;
        let pcr = out.entry(rec.pcr).or_insert([0u8; 32]);
        *pcr = extend_sha256(pcr, &digest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::{CelDigest, EventContent, EventKind, TVP_CONTENT_TYPE};

    fn rec(recnum: u64, pcr: u32, d: u8) -> CelRecord {
        CelRecord {
            recnum,
            pcr,
            digests: vec![CelDigest {
                hash_alg: "sha256".into(),
                digest: vec![d; 32],
            }],
            content_type: TVP_CONTENT_TYPE.into(),
            content: EventContent {
                event_type: EventKind::PlatformArtefact,
                description: "x".into(),
            },
        }
    }

    #[test]
    fn replays_and_checks_recnum() {
        let log = vec![rec(0, 15, 1), rec(1, 15, 2), rec(2, 14, 3)];
        let r = replay_sha256(&log, None).unwrap();
        let p15 = extend_sha256(&extend_sha256(&[0; 32], &[1; 32]), &[2; 32]);
        assert_eq!(r[&15], p15);
        assert_eq!(r.len(), 2);
        let only: BTreeSet<u32> = [15].into_iter().collect();
        assert_eq!(replay_sha256(&log, Some(&only)).unwrap().len(), 1);
        let gap = vec![rec(0, 15, 1), rec(2, 15, 2)];
        assert_eq!(
            replay_sha256(&gap, None),
            Err(ReplayError::Recnum {
                position: 1,
                found: 2
            })
        );
        let mut missing = log.clone();
        missing[2].digests[0].hash_alg = "sha1".into();
        assert!(replay_sha256(&missing, None).is_err());
        assert!(replay_sha256(&missing, Some(&only)).is_ok());
    }
}
