//! The tenant authorization check for restricted operations: a signed token against
//! this host (its AK name), the VM's binding (key, policy, lease, incarnation), the
//! operation, the parameter digest, expiry (capped by the policy) and the VM's
//! counter, which is persisted before the check succeeds so that a token cannot be
//! replayed, not even across a restart. The decision record states the accepted
//! counter ([`Authorized::reason`]); at start the counters are checked against those
//! records of the TPM-anchored audit trail ([`super::counters::CounterStore::check_against`]).

use std::sync::Mutex;

use tvp_audit::params::Params;
use tvp_audit::token::{AuthToken, AuthzError, Expectation};

use super::bindings::TenantBindings;
use super::counters::{CounterError, CounterStore};
use crate::lock;

/// A granted authorization (what the decision record's reason states).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The VM.
    pub vm: String,
    /// The operation.
    pub op: String,
    /// The accepted counter (persisted).
    pub counter: u64,
    /// The signing key.
    pub key_id: String,
}

/// Why an authorization was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The token is missing or does not pass (the reason says which check).
    #[error(transparent)]
    Token(#[from] AuthzError),
    /// No tenant key is registered for the VM.
    #[error("VM '{0}' has no registered tenant management key")]
    UnknownVm(String),
    /// The counter could not be persisted: refused so it cannot be replayed later.
    #[error("{0}; the operation was refused (fail closed)")]
    Counter(#[from] CounterError),
}

/// The words of a decision record's reason before the accepted counter.
pub const COUNTER_MARK: &str = " with counter ";

impl Authorized {
    /// The decision record's reason: `authorized by tenant key <key id> with counter
    /// <n>`. The counter is read back at start ([`accepted_counter`]).
    pub fn reason(&self) -> String {
        format!(
            "authorized by tenant key {}{COUNTER_MARK}{}",
            self.key_id, self.counter
        )
    }
}

/// The counter an allowed decision record's reason states (see
/// [`Authorized::reason`]), if it is one.
pub fn accepted_counter(reason: &str) -> Option<u64> {
    if !reason.starts_with("authorized") {
        return None;
    }
    let (_, n) = reason.rsplit_once(COUNTER_MARK)?;
    n.parse().ok()
}

/// Checks tokens and keeps the per-VM counters.
#[derive(Debug)]
pub struct Authorizer {
    counters: Mutex<CounterStore>,
    /// This host's AK name (TPM name bytes): tokens must name it.
    host: Vec<u8>,
}

impl Authorizer {
    /// Check tokens against `counters` (loaded from the state directory) for the host
    /// whose AK name is `host`.
    pub fn new(counters: CounterStore, host: Vec<u8>) -> Self {
        Authorizer {
            counters: Mutex::new(counters),
            host,
        }
    }

    /// Check `token` (text form) for `op` with `params` on `vm`, whose live binding
    /// is in `bindings`, at Unix time `now`; on success the counter is persisted and
    /// the caller may run the operation.
    pub fn authorize(
        &self,
        bindings: &TenantBindings,
        vm: &str,
        op: &str,
        params: &Params,
        token: Option<&str>,
        now: u64,
    ) -> Result<Authorized, AuthorizeError> {
        let binding = bindings
            .live(vm)
            .ok_or_else(|| AuthorizeError::UnknownVm(vm.to_string()))?;
        let text = token.ok_or_else(|| AuthzError::Missing { op: op.to_string() })?;
        let t = AuthToken::decode(text)?;
        // Hold the counter lock across check and persist: two racing requests with
        // the same token cannot both pass.
        let mut counters = lock(&self.counters);
        t.verify(&Expectation {
            key: &binding.key,
            policy: &binding.policy,
            key_since: binding.key_since,
            host: &self.host,
            vm,
            incarnation: binding.incarnation,
            op,
            params_digest: tvp_audit::params::digest(params),
            last_counter: counters.last(vm),
            now,
        })?;
        counters.accept(vm, t.counter)?;
        drop(counters);
        Ok(Authorized {
            vm: vm.to_string(),
            op: op.to_string(),
            counter: t.counter,
            key_id: t.key_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_carries_the_counter() {
        let a = Authorized {
            vm: "v".into(),
            op: "pause".into(),
            counter: 42,
            key_id: "ab".into(),
        };
        assert_eq!(accepted_counter(&a.reason()), Some(42));
        assert_eq!(accepted_counter("authorized with counter 7"), Some(7));
        assert_eq!(accepted_counter("denied: ... with counter 7"), None);
        assert_eq!(accepted_counter("authorized by x"), None);
    }
}
