//! Who may call the API: the caller's uid/gid from SO_PEERCRED, checked against the
//! configured users and groups (root is always allowed). Names are resolved once, at
//! start, so a later change of /etc/passwd cannot widen access silently.

use std::collections::BTreeSet;

use nix::unistd::{Gid, Group, Uid, User};

/// The caller of a connection, from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, if the kernel reported one.
    pub pid: Option<i32>,
}

/// The resolved allow-lists.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
}

impl AccessPolicy {
    /// Resolve user and group names (or numbers). Unknown names are an error that
    /// names them.
    pub fn resolve(users: &[String], groups: &[String]) -> Result<Self, String> {
        let mut uids = resolve_ids("allowed_users", "user", users, |n| {
            User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()))
        })?;
        uids.insert(0);
        let gids = resolve_ids("allowed_groups", "group", groups, |n| {
            Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()))
        })?;
        Ok(AccessPolicy { uids, gids })
    }

    /// Whether `caller` may use the API: its uid is listed, its primary gid is listed,
    /// or its user is a member of a listed group.
    pub fn allows(&self, caller: &Caller) -> bool {
        if self.uids.contains(&caller.uid) || self.gids.contains(&caller.gid) {
            return true;
        }
        if self.gids.is_empty() {
            return false;
        }
        // Supplementary groups of the caller's user.
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(caller.uid)) else {
            return false;
        };
        let Ok(name) = std::ffi::CString::new(user.name) else {
            return false;
        };
        nix::unistd::getgrouplist(&name, Gid::from_raw(caller.gid))
            .map(|gs| gs.iter().any(|g| self.gids.contains(&g.as_raw())))
            .unwrap_or(false)
    }
}

/// Numbers stay numbers; names are looked up once.
fn resolve_ids(
    key: &str,
    what: &str,
    names: &[String],
    lookup: impl Fn(&str) -> nix::Result<Option<u32>>,
) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for n in names {
        let id = match n.parse::<u32>() {
            Ok(id) => id,
            Err(_) => lookup(n)
                .map_err(|e| format!("{key}: cannot look up '{n}': {e}"))?
                .ok_or_else(|| format!("{key}: no such {what} '{n}'"))?,
        };
        out.insert(id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_listed_ids_only() {
        let p = AccessPolicy::resolve(&["4242".into()], &["4343".into()]).unwrap();
        let c = |uid, gid| Caller {
            uid,
            gid,
            pid: None,
        };
        assert!(p.allows(&c(0, 0)));
        assert!(p.allows(&c(4242, 1)));
        assert!(p.allows(&c(7, 4343)));
        assert!(!p.allows(&c(65534, 65534)));
        assert!(AccessPolicy::resolve(&["no-such-user-xyz".into()], &[])
            .unwrap_err()
            .contains("no-such-user-xyz"));
    }
}
