//! Group commit of concurrent appends (docs/audit.md, "Group commit"). Every append
//! joins a FIFO queue, then takes the log's lock. Whoever gets the lock while its
//! record is still queued becomes the group's *leader*: it takes the queued records
//! (at most [`MAX_GROUP`], its own among them), appends them as one group
//! ([`super::log::AuditLog::append_group`]: one marker fsync, one `NV_Extend`, one
//! log write and fsync) and answers each waiting appender before it releases the
//! lock. An appender that finds its answer when it gets the lock was in an earlier
//! group and returns it. The window is the previous commit: appends that arrive while
//! one group is being written form the next group; a single writer is never delayed.
//! Each appender is answered only after its record is durable and anchored, and an
//! error fails every record of the group (closed).

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
    /// A VM or host event: kept if it cannot be written (`super::pending`).
    pub event: bool,
    /// Where its answer goes: its seq, or why the group failed.
    pub answer: oneshot::Sender<Result<u64, AuditError>>,
}

/// The appends waiting for a leader, in arrival order.
#[derive(Default)]
pub(super) struct Queue(Mutex<VecDeque<Waiting>>);

impl Queue {
    /// Queue an append; the receiver gets its answer.
    pub fn push(
        &self,
        draft: RecordDraft,
        event: bool,
    ) -> oneshot::Receiver<Result<u64, AuditError>> {
        let (answer, rx) = oneshot::channel();
        crate::lock(&self.0).push_back(Waiting {
            draft,
            event,
            answer,
        });
        rx
    }

    /// The oldest waiting appends, at most [`MAX_GROUP`]: the next group.
    pub fn take(&self) -> Vec<Waiting> {
        let mut q = crate::lock(&self.0);
        let n = q.len().min(MAX_GROUP);
        q.drain(..n).collect()
    }
}
