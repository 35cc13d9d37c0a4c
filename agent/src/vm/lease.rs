//! The PCR lease: exactly one measured VM at a time holds PCRs 16 and 23, and only
//! for the TPM steps of one quote (reset, extend PCR 23 from its recorded
//! measurements, check, extend its tunnel measurement into PCR 16, quote, reset). The
//! others wait in FIFO order. Pure bookkeeping; the manager does the TPM steps and
//! wakes the waiters (`vm/manager/leased.rs`).

use std::collections::VecDeque;

/// Lease holder and queue.
#[derive(Debug, Default)]
pub struct Lease {
    holder: Option<String>,
    queue: VecDeque<String>,
}

impl Lease {
    /// Ask for the lease; returns true if `id` holds it now. A VM that asks again
    /// while waiting keeps its place (no double queueing).
    pub fn request(&mut self, id: &str) -> bool {
        if self.holder.as_deref() == Some(id) {
            return true;
        }
        if self.holder.is_none() && self.queue.front().is_none_or(|q| q == id) {
            self.queue.retain(|q| q != id);
            self.holder = Some(id.to_string());
            return true;
        }
        if !self.queue.iter().any(|q| q == id) {
            self.queue.push_back(id.to_string());
        }
        false
    }

    /// The holder `id` gives the lease up; returns the next in line (who takes it
    /// with its next [`Lease::request`]). Nothing happens if `id` does not hold it.
    pub fn release(&mut self, id: &str) -> Option<String> {
        if self.holder.as_deref() != Some(id) {
            return None;
        }
        self.holder = None;
        self.queue.front().cloned()
    }

    /// A waiting `id` gives up its place; never touches the holder (only the holder's
    /// own quote ends its lease, after the reset).
    pub fn leave(&mut self, id: &str) {
        self.queue.retain(|q| q != id);
    }

    /// Whether `id` holds the lease.
    pub fn holds(&self, id: &str) -> bool {
        self.holder.as_deref() == Some(id)
    }

    /// The current holder.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    /// 0 for the holder, n for the n-th waiting, None otherwise.
    pub fn position(&self, id: &str) -> Option<usize> {
        if self.holds(id) {
            return Some(0);
        }
        self.queue.iter().position(|q| q == id).map(|p| p + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_release_passes_on() {
        let mut l = Lease::default();
        assert!(l.request("a"));
        assert!(!l.request("b"));
        assert!(!l.request("c"));
        assert!(!l.request("b"), "no double queueing");
        assert_eq!(
            (l.position("a"), l.position("b"), l.position("c")),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(l.release("b"), None, "only the holder releases");
        assert_eq!(l.release("a"), Some("b".into()));
        assert!(!l.request("c"), "the next in line goes first");
        assert!(l.request("b"));
        l.leave("c");
        assert_eq!(l.release("b"), None);
        assert_eq!(l.holder(), None);
        assert!(l.request("d"));
    }

    #[test]
    fn a_waiter_leaving_never_ends_the_holders_lease() {
        let mut l = Lease::default();
        assert!(l.request("a"));
        assert!(!l.request("b"));
        l.leave("a");
        assert!(l.holds("a"), "leave is for waiters");
        l.leave("b");
        assert_eq!(l.release("a"), None, "nobody waits any more");
        assert!(l.request("c"));
    }

    #[test]
    fn a_second_quote_takes_the_lease_again_at_the_end_of_the_queue() {
        let mut l = Lease::default();
        assert!(l.request("a"));
        assert!(!l.request("b"));
        assert_eq!(l.release("a"), Some("b".into()));
        assert!(!l.request("a"), "a waits behind b");
        assert!(l.request("b"));
        assert_eq!(l.release("b"), Some("a".into()));
        assert!(l.request("a"));
    }
}
