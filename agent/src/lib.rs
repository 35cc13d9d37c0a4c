//! tvpd, the trusted virtualization platform host agent, and tvpctl, its CLI.
//!
//! Layout: [`tpm`] is the only code that talks to the TPM; [`platform`] measures the
//! platform software at start into the host event log ([`host_log`]); [`api`] is the
//! Unix-socket HTTP API (typed requests, one dispatcher); [`evidence`] assembles quotes
//! into the documented evidence format; [`config`] and [`logging`] are the operator's
//! surface; [`ctl`] is `tvpctl`.

pub mod api;
pub mod audit;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod evidence;
pub mod host_log;
pub mod image_release;
pub mod logging;
pub mod platform;
pub mod platform_watch;
pub mod tpm;
pub mod unmanaged_vms;
pub mod vm;

/// Lock a mutex even if a panicking thread poisoned it: every writer in tvpd persists
/// before it mutates further, so the data is still consistent, and a daemon must not
/// die of someone else's panic.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
