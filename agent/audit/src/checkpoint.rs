//! A tenant's checkpoint: where its last successful verification of a VM's extract
//! ended (sequence number, hash of that record, NV anchor value after it). The next
//! extract verifies only if it continues exactly there, so a host cannot start a later
//! extract somewhere else and cut what lies in between, and the tenant does not have
//! to fetch the VM's history from its creation every time.

use serde::{Deserialize, Serialize};

use crate::Digest32;

/// Format version of [`Checkpoint`].
pub const CHECKPOINT_VERSION: u32 = 1;

/// The position a verification ended at (`tvpctl audit verify --save-checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version ([`CHECKPOINT_VERSION`]).
    pub v: u32,
    /// The VM.
    pub vm: String,
    /// Sequence number of the VM's `create-vm` decision record (its incarnation).
    pub created: u64,
    /// The last verified record: the next extract starts at `seq + 1`.
    pub seq: u64,
    /// Hash (hex) of record `seq`: the next extract's `prev`.
    pub head: String,
    /// NV anchor (hex) after record `seq`: the next extract's `start_anchor`.
    pub anchor: String,
}

impl Checkpoint {
    /// A checkpoint at record `seq` of `vm` (created at `created`).
    pub fn new(vm: &str, created: u64, seq: u64, head: &Digest32, anchor: &Digest32) -> Self {
        Checkpoint {
            v: CHECKPOINT_VERSION,
            vm: vm.to_string(),
            created,
            seq,
            head: hex::encode(head),
            anchor: hex::encode(anchor),
        }
    }

    /// Parse a checkpoint file; the message says what is wrong.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let c: Checkpoint =
            serde_json::from_str(text).map_err(|e| format!("not a checkpoint: {e}"))?;
        if c.v != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint version {} is not {CHECKPOINT_VERSION}",
                c.v
            ));
        }
        if c.head_bytes().is_none() || c.anchor_bytes().is_none() {
            return Err("checkpoint head or anchor is not a lowercase hex SHA-256".into());
        }
        Ok(c)
    }

    /// `head` as bytes, if well-formed.
    pub fn head_bytes(&self) -> Option<Digest32> {
        crate::digest_from_hex(&self.head)
    }

    /// `anchor` as bytes, if well-formed.
    pub fn anchor_bytes(&self) -> Option<Digest32> {
        crate::digest_from_hex(&self.anchor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_digests() {
        let c = Checkpoint::new("vm-a", 3, 9, &[0xab; 32], &[2; 32]);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(Checkpoint::from_json(&text).unwrap(), c);
        let bad = text.replace(&c.head, &c.head.to_uppercase());
        assert!(Checkpoint::from_json(&bad).is_err());
        let other = text.replace("\"v\":1", "\"v\":2");
        assert!(Checkpoint::from_json(&other)
            .unwrap_err()
            .contains("version"));
    }
}
