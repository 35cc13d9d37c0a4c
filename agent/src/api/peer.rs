//! Who may call the API, and in which role: the caller's uid/gid from SO_PEERCRED,
//! checked against the configured users and groups (root is always a manager).
//!
//! Names and group memberships are resolved once, when the policy is built (at start,
//! and again on SIGHUP: [`SharedPolicy::replace`]), never per request: a request costs
//! no `/etc/passwd` or `/etc/group` read, and a later change of those files takes
//! effect only when the operator asks for it.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use nix::unistd::{Group, User};

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

/// What a caller may do (`docs/api.md`, "Roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only: host information, VM list and views, quotes of the platform PCR.
    Observer,
    /// Everything the API offers (restricted operations still need the tenant's token).
    Manager,
}

impl Role {
    /// The role's name in messages and the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Manager => "manager",
        }
    }
}

/// The configured names of each role, as in `tvpd.toml`.
#[derive(Debug, Clone, Default)]
pub struct RoleNames {
    /// `allowed_users`: managers.
    pub manager_users: Vec<String>,
    /// `allowed_groups`: managers.
    pub manager_groups: Vec<String>,
    /// `observer_users`.
    pub observer_users: Vec<String>,
    /// `observer_groups`.
    pub observer_groups: Vec<String>,
}

/// The members of one role, resolved to numbers.
#[derive(Debug, Clone, Default)]
struct Members {
    /// Listed uids, and the users listed as supplementary members of a listed group.
    uids: BTreeSet<u32>,
    /// Listed groups: a caller whose primary gid is one of them is a member.
    gids: BTreeSet<u32>,
}

impl Members {
    fn resolve(
        ukey: &str,
        gkey: &str,
        users: &[String],
        groups: &[String],
    ) -> Result<Self, String> {
        let mut uids = resolve_ids(ukey, "user", users, |n| {
            User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()))
        })?;
        let gids = resolve_ids(gkey, "group", groups, |n| {
            Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()))
        })?;
        // Supplementary members, once: the group database's member names to uids.
        for gid in &gids {
            let group = Group::from_gid(nix::unistd::Gid::from_raw(*gid))
                .map_err(|e| format!("{gkey}: cannot look up group {gid}: {e}"))?;
            for name in group.map(|g| g.mem).unwrap_or_default() {
                match User::from_name(&name) {
                    Ok(Some(u)) => {
                        uids.insert(u.uid.as_raw());
                    }
                    _ => {
                        log::warn!(group = gid, member = name.as_str(); "group member is not a user; ignored")
                    }
                }
            }
        }
        Ok(Members { uids, gids })
    }

    fn contains(&self, caller: &Caller) -> bool {
        self.uids.contains(&caller.uid) || self.gids.contains(&caller.gid)
    }
}

/// The resolved roles.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    managers: Members,
    observers: Members,
}

impl AccessPolicy {
    /// Resolve user and group names (or numbers) and group memberships of both roles.
    /// Unknown names are an error that names them.
    pub fn resolve_roles(names: &RoleNames) -> Result<Self, String> {
        let mut managers = Members::resolve(
            "allowed_users",
            "allowed_groups",
            &names.manager_users,
            &names.manager_groups,
        )?;
        managers.uids.insert(0);
        let observers = Members::resolve(
            "observer_users",
            "observer_groups",
            &names.observer_users,
            &names.observer_groups,
        )?;
        Ok(AccessPolicy {
            managers,
            observers,
        })
    }

    /// Managers only (no observers): `allowed_users` and `allowed_groups`.
    pub fn resolve(users: &[String], groups: &[String]) -> Result<Self, String> {
        Self::resolve_roles(&RoleNames {
            manager_users: users.to_vec(),
            manager_groups: groups.to_vec(),
            ..RoleNames::default()
        })
    }

    /// The caller's role, `None` if it may not use the API: a listed uid, a listed
    /// primary gid, or a supplementary member (as resolved) of a listed group. A caller
    /// in both roles is a manager. No lookup happens here.
    pub fn role_of(&self, caller: &Caller) -> Option<Role> {
        if self.managers.contains(caller) {
            Some(Role::Manager)
        } else if self.observers.contains(caller) {
            Some(Role::Observer)
        } else {
            None
        }
    }

    /// Whether `caller` may use the API at all (in any role).
    pub fn allows(&self, caller: &Caller) -> bool {
        self.role_of(caller).is_some()
    }
}

/// The policy the server consults, replaced as a whole when memberships are refreshed
/// (SIGHUP); connections accepted before keep the role they were given.
#[derive(Debug, Default)]
pub struct SharedPolicy {
    names: RoleNames,
    current: RwLock<Arc<AccessPolicy>>,
}

impl SharedPolicy {
    /// Resolve `names` now.
    pub fn new(names: RoleNames) -> Result<Self, String> {
        let policy = AccessPolicy::resolve_roles(&names)?;
        Ok(SharedPolicy {
            names,
            current: RwLock::new(Arc::new(policy)),
        })
    }

    /// Start from a policy already resolved from `names`.
    pub fn with(names: RoleNames, policy: Arc<AccessPolicy>) -> Self {
        SharedPolicy {
            names,
            current: RwLock::new(policy),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<AccessPolicy> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Resolve the configured names and memberships again and put the result in force;
    /// on error the old policy stays and the error is returned.
    pub fn replace(&self) -> Result<(), String> {
        let fresh = Arc::new(AccessPolicy::resolve_roles(&self.names)?);
        match self.current.write() {
            Ok(mut p) => *p = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
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

    fn c(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid: None,
        }
    }

    #[test]
    fn root_and_listed_ids_only() {
        let p = AccessPolicy::resolve(&["4242".into()], &["4343".into()]).unwrap();
        assert!(p.allows(&c(0, 0)));
        assert!(p.allows(&c(4242, 1)));
        assert!(p.allows(&c(7, 4343)));
        assert!(!p.allows(&c(65534, 65534)));
        assert!(AccessPolicy::resolve(&["no-such-user-xyz".into()], &[])
            .unwrap_err()
            .contains("no-such-user-xyz"));
    }

    #[test]
    fn roles_manager_wins() {
        let p = AccessPolicy::resolve_roles(&RoleNames {
            manager_users: vec!["4242".into()],
            observer_users: vec!["4242".into(), "5000".into()],
            observer_groups: vec!["6000".into()],
            ..RoleNames::default()
        })
        .unwrap();
        assert_eq!(p.role_of(&c(0, 0)), Some(Role::Manager));
        assert_eq!(p.role_of(&c(4242, 1)), Some(Role::Manager));
        assert_eq!(p.role_of(&c(5000, 1)), Some(Role::Observer));
        assert_eq!(p.role_of(&c(7, 6000)), Some(Role::Observer));
        assert_eq!(p.role_of(&c(7, 7)), None);
    }
}
