//! The management audit trail and the tenant authorization check (`docs/audit.md`),
//! as plain Rust: nothing here knows HTTP. The API's gate (`api::gate`) drives it.
//!
//! - [`log`]: the append-only, fsynced, hash-chained log whose chain head is anchored
//!   in a TPM NV extend index (appends fail closed);
//! - [`records`]: what a request's records and tvpd's own event records say;
//! - [`pending`]: events that could not be written yet, kept and written first;
//! - [`bindings`]: each VM's tenant key and policy (live and recently deleted);
//! - [`authorize`]: the tenant token check, with [`counters`] persisting the per-VM
//!   authorization counters and [`key_history`] the key changes the trail records;
//! - [`remediation`]: what happens when tampering is detected;
//! - [`view`]: the admin view, the certified anchor and tenants' extracts;
//! - [`trail`]: [`Audit`], which ties them together for tvpd.
//!
//! Formats live in the `tvp-audit` crate.

pub mod authorize;
pub mod bindings;
pub mod counters;
pub mod key_history;
pub mod log;
pub mod pending;
pub mod records;
pub mod remediation;
pub mod trail;
pub mod view;

pub use authorize::{AuthorizeError, Authorized};
pub use bindings::{TenantBinding, RETIRED_BINDINGS};
pub use log::{AuditError, AuditLog};
pub use records::{HostEvent, RequestRecord};
pub use remediation::{RemediationOutcome, Remediator};
pub use trail::Audit;
pub use view::{AdminView, ViewError};

/// Now, milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Run a future to completion on the current thread, parking it while the future
/// waits. For the VM supervisors' plain threads, which record state changes through
/// the async audit log; never call it on an async runtime's worker thread.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
