//! The PCR lease: exactly one measured VM at a time holds PCRs 16 and 23; the others
//! wait in FIFO order. Pure bookkeeping; the manager resets the PCRs at every change.

use std::collections::VecDeque;

/// Lease holder and queue.
#[derive(Debug, Default)]
pub struct Lease {
    holder: Option<String>,
    queue: VecDeque<String>,
}

impl Lease {
    /// Ask for the lease; returns true if `id` holds it now.
    pub fn request(&mut self, id: &str) -> bool {
        if self.holder.as_deref() == Some(id) {
            return true;
        }
        if self.holder.is_none() && self.queue.is_empty() {
            self.holder = Some(id.to_string());
            return true;
        }
        if !self.queue.iter().any(|q| q == id) {
            self.queue.push_back(id.to_string());
        }
        false
    }

    /// `id` gives up the lease or its place; returns the next holder, if the lease
    /// passed on.
    pub fn release(&mut self, id: &str) -> Option<String> {
        self.queue.retain(|q| q != id);
        if self.holder.as_deref() == Some(id) {
            self.holder = self.queue.pop_front();
            return self.holder.clone();
        }
        None
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
        assert_eq!(
            l.release("b"),
            None,
            "a waiting VM leaving does not pass the lease"
        );
        assert_eq!(l.release("a"), Some("c".into()));
        assert!(l.holds("c"));
        assert_eq!(l.release("c"), None);
        assert_eq!(l.holder(), None);
        assert!(l.request("d"));
    }
}
