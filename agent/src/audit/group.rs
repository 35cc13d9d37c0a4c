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
