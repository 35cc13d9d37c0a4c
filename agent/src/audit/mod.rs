//! The management audit trail and the authorization gate (`docs/audit.md`).
//!
//! [`log`] is the append-only, fsynced, hash-chained log whose chain head is anchored
//! in a TPM NV extend index; [`counters`] persists the per-VM authorization counters;
//! [`gate`] is the one place every API request passes: it records the decision
//! before execution and the result after, checks tenant authorizations for restricted
//! operations, and fails closed when a record cannot be persisted. Formats live in
//! the `tvp-audit` crate.

pub mod counters;
pub mod gate;
pub mod log;
pub mod view;

pub use gate::{Audit, Authorized, Remediator, TenantBinding};
pub use log::{AuditError, AuditLog};

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
