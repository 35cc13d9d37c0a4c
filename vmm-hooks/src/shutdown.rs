//! Why and whether the VM must stop: the first cause wins. Set by the signal watcher,
//! the channel reader and the vCPU loop; read by everyone.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Causes of a stop requested from outside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGTERM, SIGINT or SIGHUP.
    Signal,
    /// tvpd sent Stop.
    Host,
    /// The channel closed or broke.
    ChannelClosed,
}

/// A first-cause-wins stop flag.
#[derive(Debug, Default)]
pub struct Shutdown {
    cause: AtomicU8,
}

impl Shutdown {
    /// Requests a stop; ignored if one is already requested.
    pub fn request(&self, cause: StopCause) {
        let v = match cause {
            StopCause::Signal => 1,
            StopCause::Host => 2,
            StopCause::ChannelClosed => 3,
        };
        let _ = self
            .cause
            .compare_exchange(0, v, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The cause, if a stop was requested.
    pub fn requested(&self) -> Option<StopCause> {
        match self.cause.load(Ordering::SeqCst) {
            1 => Some(StopCause::Signal),
            2 => Some(StopCause::Host),
            3 => Some(StopCause::ChannelClosed),
            _ => None,
        }
    }
}

/// Set by the async-signal-safe handler of SIGTERM/SIGINT/SIGHUP.
pub static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Copies [`SIGNALLED`] into `s` (called by the polling loops).
pub fn poll_signal(s: &Shutdown) {
    if SIGNALLED.load(Ordering::SeqCst) {
        s.request(StopCause::Signal);
    }
}
