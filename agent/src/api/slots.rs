//! Connection slots, taken at accept once the caller's role is known: at most
//! `max_connections` in all, at most `max_connections_per_uid` per caller uid, and the
//! last `manager_reserved_connections` for managers only. A connection that finds no
//! slot is answered 503 and closed at once (it never waits), so no number of idle or
//! refused connections from other callers keeps a manager waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::ApiError;
use super::peer::Role;

/// The limits (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct SlotLimits {
    /// Most connections in all.
    pub total: usize,
    /// Most connections of one uid.
    pub per_uid: usize,
    /// Of `total`, how many only managers may take.
    pub reserved_for_managers: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// The slots of a running API.
#[derive(Debug)]
pub struct Slots {
    limits: SlotLimits,
    counts: Mutex<Counts>,
}

/// A slot held by one connection; released when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = crate::lock(&self.slots.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

fn refused(message: String) -> ApiError {
    ApiError {
        status: 503,
        code: "too_many_connections",
        message,
        allow: None,
    }
}

impl Slots {
    /// No slot taken yet.
    pub fn new(limits: SlotLimits) -> Arc<Self> {
        Arc::new(Slots {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Take a slot for a connection of `uid` in `role`, or say why there is none.
    pub fn take(self: &Arc<Self>, uid: u32, role: Role) -> Result<Slot, ApiError> {
        let l = self.limits;
        let mut c = crate::lock(&self.counts);
        let mine = c.per_uid.get(&uid).copied().unwrap_or(0);
        if mine >= l.per_uid {
            return Err(refused(format!(
                "uid {uid} already holds {mine} API connections (max_connections_per_uid {}); close idle ones and retry",
                l.per_uid
            )));
        }
        let open_to_role = match role {
            Role::Manager => l.total,
            Role::Observer => l.total.saturating_sub(l.reserved_for_managers),
        };
        if c.total >= open_to_role {
            return Err(refused(format!(
                "all {open_to_role} API connections open to the {} role are in use (max_connections {}, {} reserved for managers); retry shortly",
                role.name(),
                l.total,
                l.reserved_for_managers
            )));
        }
        c.total += 1;
        *c.per_uid.entry(uid).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_uid_and_reserved_slots() {
        let s = Slots::new(SlotLimits {
            total: 4,
            per_uid: 2,
            reserved_for_managers: 2,
        });
        let a = s.take(1000, Role::Observer).unwrap();
        let _b = s.take(1000, Role::Observer).unwrap();
        let e = s.take(1000, Role::Observer).unwrap_err();
        assert!(
            e.message.contains("max_connections_per_uid"),
            "{}",
            e.message
        );
        let e = s.take(1001, Role::Observer).unwrap_err();
        assert!(e.message.contains("reserved for managers"), "{}", e.message);
        let _m1 = s.take(0, Role::Manager).unwrap();
        let _m2 = s.take(0, Role::Manager).unwrap();
        assert!(s.take(2, Role::Manager).is_err());
        drop(a);
        assert!(s.take(2, Role::Manager).is_ok());
    }
}
