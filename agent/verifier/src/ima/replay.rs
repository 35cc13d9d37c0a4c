//! The PCR 10 replay rule: start from 32 zero bytes and extend, for each entry in
//! order, SHA-256 of its template data (all-ones for a violation). The list is read
//! after the quote, so it may have grown: the entries the quote covers are the
//! shortest prefix that replays to the quoted value; the rest happened afterwards.

use crate::eventlog::extend_sha256;

use super::list::ImaEntry;
use super::IMA_PCR;

/// Why the list does not match the quoted PCR 10.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImaReplayError {
    /// An entry was extended into another PCR than 10.
    #[error("measurement {index} ({path}) is for PCR {pcr}; only PCR {IMA_PCR} is replayed (remove pcr= from the IMA policy)")]
    OtherPcr {
        /// The entry.
        index: usize,
        /// Its path.
        path: String,
        /// Its PCR.
        pcr: u32,
    },
    /// No prefix of the list replays to the quoted value.
    #[error("no prefix of the {entries} measurements replays to the quoted PCR {IMA_PCR} {quoted} (the whole list gives {replayed}): the list was altered, or PCR {IMA_PCR} was extended outside IMA")]
    Mismatch {
        /// Entries in the list.
        entries: usize,
        /// Quoted PCR 10, hex.
        quoted: String,
        /// The whole list's replay, hex.
        replayed: String,
    },
}

/// How many leading entries of `entries` the quoted PCR 10 covers.
pub fn replay_to_quote(entries: &[ImaEntry], quoted: &[u8; 32]) -> Result<usize, ImaReplayError> {
    let mut pcr = [0u8; 32];
    if pcr == *quoted {
        return Ok(0);
    }
    for (index, e) in entries.iter().enumerate() {
        if e.pcr != IMA_PCR {
            return Err(ImaReplayError::OtherPcr {
                index,
                path: e.path.clone(),
                pcr: e.pcr,
            });
        }
        pcr = extend_sha256(&pcr, &e.extended_sha256());
        if pcr == *quoted {
            return Ok(index + 1);
        }
    }
    Err(ImaReplayError::Mismatch {
        entries: entries.len(),
        quoted: hex::encode(quoted),
        replayed: hex::encode(pcr),
    })
}
