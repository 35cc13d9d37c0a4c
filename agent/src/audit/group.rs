//! Group commit of concurrent appends (docs/audit.md, "Group commit"). Every append of
//! a request's record joins a FIFO queue, then takes the log's lock. Whoever gets the lock while its
//! record is still queued becomes the group's *leader*: it takes the queued records
//! (at most [`MAX_GROUP`], its own among them), appends them as one group
//! ([`super::log::AuditLog::append_group`]: one marker fsync, one `NV_Extend`, one
//! log write and fsync) and answers each waiting appender before it releases the
//! lock. An appender that finds its answer when it gets the lock was in an earlier
//! group and returns it. The window is the previous commit: appends that arrive while
//! one group is being written form the next group; a single writer is never delayed.
//! Each appender is answered only after its record is durable and anchored, and an
//! error fails every record of the group (closed). A leader cancelled mid-commit (its
//! connection dropped) fails its group closed too ("abandoned"); the group's fate in
//! the anchor is settled at the next append, as for a lone record. VM and host
//! events are appended on their own (they must know whether they were written,
//! `super::pending`).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;
use tvp_audit::record::RecordDraft;

use super::log::AuditError;

/// Most records in one group: bounds the marker, the log write and the time one
/// commit keeps the others waiting.
pub const MAX_GROUP: usize = 64;

/// An append waiting for its group.
pub(super) struct Waiting {
    /// The record.
    pub draft: RecordDraft,
    /// Where its answer goes: its seq, or why the group failed.
    pub answer: oneshot::Sender<Result<u64, AuditError>>,
}

/// The appends waiting for a leader, in arrival order.
#[derive(Default)]
pub(super) struct Queue(Mutex<VecDeque<Waiting>>);

impl Queue {
    /// Queue an append; the receiver gets its answer.
    pub fn push(&self, draft: RecordDraft) -> oneshot::Receiver<Result<u64, AuditError>> {
        let (answer, rx) = oneshot::channel();
        crate::lock(&self.0).push_back(Waiting { draft, answer });
        rx
    }

    /// The oldest waiting appends, at most [`MAX_GROUP`]: the next group.
    pub fn take(&self) -> Vec<Waiting> {
        let mut q = crate::lock(&self.0);
        let n = q.len().min(MAX_GROUP);
        q.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvp_audit::record::{Decision, Stage};

    fn draft(i: u64) -> RecordDraft {
        RecordDraft {
            time_ms: i,
            uid: 0,
            pid: None,
            vm: None,
            op: "x".into(),
            params_digest: [0; 32],
            stage: Stage::Result,
            decision: Decision::Allow,
            reason: String::new(),
            status: None,
            result: None,
            state_before: None,
            state_after: None,
            request: 0,
        }
    }

    #[test]
    fn groups_are_taken_in_arrival_order_and_bounded() {
        let q = Queue::default();
        let _rx: Vec<_> = (0..MAX_GROUP as u64 + 3)
            .map(|i| q.push(draft(i)))
            .collect();
        let first = q.take();
        assert_eq!(first.len(), MAX_GROUP);
        assert!(first
            .iter()
            .enumerate()
            .all(|(i, w)| w.draft.time_ms == i as u64));
        let rest = q.take();
        assert_eq!(
            rest.iter().map(|w| w.draft.time_ms).collect::<Vec<_>>(),
            vec![64, 65, 66]
        );
        assert!(q.take().is_empty());
    }
}
