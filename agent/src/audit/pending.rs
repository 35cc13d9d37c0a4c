//! Events tvpd observed (VM state changes, `out-of-context-vm`, `platform-revocation`)
//! that could not be written to the audit log when they happened — a full disk, which
//! any local user can cause on a shared file system, or a TPM error. They have
//! happened already, so they are not refused like a request: they are **kept** in
//! memory, in order, and written before any later record as soon as the log can be
//! written again (tried before every append and on a timer). Until then every append
//! fails with [`AuditError::EventsPending`], so no request — of these VMs' management
//! or any other — runs before the events are in the trail.
//!
//! The queue is bounded ([`MAX_PENDING_EVENTS`]). Events past the bound are counted
//! per VM (and every later one too, until the count is written, so that the order
//! stays true), and written as one `audit-events-lost` record per VM after the kept
//! events: the VM's tenant sees the gap explicitly in its extract, where that record
//! is always shown and makes the verifier report the gap (docs/audit.md, "Events kept
//! when the log cannot be written").

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use tvp_audit::params::Params;
use tvp_audit::record::{Decision, RecordDraft, Stage};

use super::log::{AuditError, AuditLog};

/// Most events kept while the log cannot be written.
pub const MAX_PENDING_EVENTS: usize = 1024;
/// Most VMs whose lost events are counted one by one; lost events of further VMs are
/// counted in one host-level `audit-events-lost` record, which every tenant's
/// verifier reports too.
pub const MAX_LOST_VMS: usize = 4096;
/// The operation of the record that states a VM's lost events.
pub const EVENTS_LOST_OP: &str = tvp_audit::extract::EVENTS_LOST_OP;

/// A kept event: its draft, and the seq and hash it was sealed with if its append
/// got as far as the write-ahead marker (the anchor then decides whether it was kept
/// in the log, see [`AuditLog::settle`]).
#[derive(Debug, Clone)]
struct Kept {
    draft: RecordDraft,
    sealed: Option<(u64, String)>,
}

/// Lost events of one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Lost {
    count: u64,
    first_ms: u64,
    last_ms: u64,
    /// Count per operation.
    ops: BTreeMap<String, u64>,
}

impl Lost {
    fn add(&mut self, op: &str, time_ms: u64) {
        if self.count == 0 {
            self.first_ms = time_ms;
        }
        self.count += 1;
        self.last_ms = time_ms;
        *self.ops.entry(op.to_string()).or_default() += 1;
    }
}

/// The events waiting for the log, and the count of those lost past the bound.
#[derive(Debug, Default)]
pub struct PendingEvents {
    queue: VecDeque<Kept>,
    lost: BTreeMap<String, Lost>,
    /// Lost events of VMs beyond [`MAX_LOST_VMS`].
    lost_unattributed: Lost,
}

impl PendingEvents {
    /// Nothing waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events kept plus events lost and not yet stated in the trail.
    pub fn len(&self) -> usize {
        let lost: u64 =
            self.lost.values().map(|l| l.count).sum::<u64>() + self.lost_unattributed.count;
        self.queue.len() + usize::try_from(lost).unwrap_or(usize::MAX)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.lost.is_empty() && self.lost_unattributed.count == 0
    }

    /// The VMs with waiting events (kept or lost), for messages.
    pub fn vms(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .queue
            .iter()
            .filter_map(|k| k.draft.vm.clone())
            .chain(self.lost.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether `vm` has waiting events.
    pub fn has(&self, vm: &str) -> bool {
        self.lost.contains_key(vm) || self.queue.iter().any(|k| k.draft.vm.as_deref() == Some(vm))
    }

    /// Keep an event whose append failed (`sealed`: see [`Kept`]); past the bound, or
    /// once any event was lost and not yet stated, count it as lost.
    pub fn push(&mut self, draft: RecordDraft, sealed: Option<(u64, String)>) {
        let losing = !self.lost.is_empty() || self.lost_unattributed.count > 0;
        if !losing && self.queue.len() < MAX_PENDING_EVENTS {
            self.queue.push_back(Kept { draft, sealed });
            return;
        }
        let vm = draft.vm.clone().unwrap_or_default();
        let counted_alone =
            self.lost.contains_key(&vm) || (self.lost.len() < MAX_LOST_VMS && !vm.is_empty());
        let lost = if counted_alone {
            self.lost.entry(vm.clone()).or_default()
        } else {
            &mut self.lost_unattributed
        };
        lost.add(&draft.op, draft.time_ms);
        ::log::error!(vm = vm.as_str(), op = draft.op.as_str(), kept = self.queue.len(); "audit event lost: the audit log cannot be written and the pending events are at their bound; the VM's trail will state the loss");
    }

    /// A short description for errors: how many events of which VMs are waiting.
    pub fn describe(&self) -> String {
        let vms = self.vms();
        let mut shown: Vec<&str> = vms.iter().map(String::as_str).take(8).collect();
        if vms.len() > shown.len() {
            shown.push("...");
        }
        format!("{} event(s) of VM(s) {}", self.len(), shown.join(", "))
    }
}

/// Write the waiting events to `log`, in order, then one `audit-events-lost` record
/// per VM that lost events. The caller holds the log's lock throughout (so nothing
/// else is appended in between) and `events` is locked only between the awaits.
/// Returns how many records were written; on error what was not written stays.
pub async fn flush(events: &Mutex<PendingEvents>, log: &mut AuditLog) -> Result<u64, AuditError> {
    let mut written = 0;
    loop {
        let front = crate::lock(events).queue.front().cloned();
        let Some(kept) = front else { break };
        log.settle().await?;
        if let Some((seq, hash)) = &kept.sealed {
            if log.holds(*seq, hash) {
                // Its append got as far as the anchor: the settle wrote it.
                crate::lock(events).queue.pop_front();
                written += 1;
                continue;
            }
        }
        let before = log.pending_record();
        match log.append(kept.draft).await {
            Ok(_) => {
                crate::lock(events).queue.pop_front();
                written += 1;
            }
            Err(e) => {
                let after = log.pending_record();
                if after.is_some() && after != before {
                    if let Some(k) = crate::lock(events).queue.front_mut() {
                        k.sealed = after;
                    }
                }
                return Err(e);
            }
        }
    }
    loop {
        let next = {
            let ev = crate::lock(events);
            ev.lost
                .iter()
                .next()
                .map(|(vm, l)| (Some(vm.clone()), l.clone()))
                .or_else(|| {
                    (ev.lost_unattributed.count > 0).then(|| (None, ev.lost_unattributed.clone()))
                })
        };
        let Some((vm, lost)) = next else { break };
        log.append(lost_draft(vm.as_deref(), &lost)).await?;
        let mut ev = crate::lock(events);
        match &vm {
            Some(v) => {
                ev.lost.remove(v);
            }
            None => ev.lost_unattributed = Lost::default(),
        }
        written += 1;
    }
    Ok(written)
}

/// The record stating `lost` events of `vm` (None: of VMs beyond [`MAX_LOST_VMS`]),
/// attributed to tvpd itself.
fn lost_draft(vm: Option<&str>, lost: &Lost) -> RecordDraft {
    let mut p = Params::new();
    p.insert("lost".into(), lost.count.to_string());
    p.insert("first_ms".into(), lost.first_ms.to_string());
    p.insert("last_ms".into(), lost.last_ms.to_string());
    for (op, n) in &lost.ops {
        p.insert(format!("op={op}"), n.to_string());
    }
    let ops: Vec<String> = lost.ops.iter().map(|(o, n)| format!("{o} x{n}")).collect();
    let whose = if vm.is_some() {
        "of this VM"
    } else {
        "of VMs beyond the per-VM count (any VM of this host may be among them)"
    };
    RecordDraft {
        time_ms: super::now_ms(),
        uid: nix::unistd::geteuid().as_raw(),
        pid: i32::try_from(std::process::id()).ok(),
        vm: vm.map(String::from),
        op: EVENTS_LOST_OP.into(),
        params_digest: tvp_audit::params::digest(&p),
        stage: Stage::Event,
        decision: Decision::Allow,
        reason: format!(
            "{} event(s) {whose} between {} and {} ms since the epoch were lost ({}): the audit log could not be written and {MAX_PENDING_EVENTS} earlier events were already waiting; what happened to the VM then is not in the trail",
            lost.count,
            lost.first_ms,
            lost.last_ms,
            ops.join(", ")
        ),
        status: None,
        result: None,
        state_before: None,
        state_after: None,
        request: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(vm: &str, t: u64) -> RecordDraft {
        let mut d = super::super::records::event_draft(vm, "vm-state-change", "a", "b", "");
        d.time_ms = t;
        d
    }

    #[test]
    fn events_past_the_bound_and_after_them_are_counted_as_lost_in_order() {
        let mut p = PendingEvents::new();
        assert!(p.is_empty());
        for i in 0..MAX_PENDING_EVENTS as u64 {
            p.push(ev("a", i), None);
        }
        assert_eq!(p.len(), MAX_PENDING_EVENTS);
        assert!(p.lost.is_empty());
        p.push(ev("b", 1), None);
        p.push(ev("b", 2), None);
        // Room again in the queue does not reorder: still lost until stated.
        p.queue.pop_front();
        p.push(ev("a", 3), None);
        assert_eq!(p.queue.len(), MAX_PENDING_EVENTS - 1);
        assert_eq!(p.lost["b"].count, 2);
        assert_eq!(p.lost["a"].count, 1);
        assert_eq!((p.lost["b"].first_ms, p.lost["b"].last_ms), (1, 2));
        assert!(p.has("b") && p.has("a") && !p.has("c"));
        assert_eq!(p.vms(), vec!["a".to_string(), "b".to_string()]);
        let d = lost_draft(Some("b"), &p.lost["b"]);
        assert_eq!(d.op, EVENTS_LOST_OP);
        assert_eq!(d.vm.as_deref(), Some("b"));
        assert!(
            d.reason.starts_with("2 event(s) of this VM"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("vm-state-change x2"), "{}", d.reason);
    }
}
