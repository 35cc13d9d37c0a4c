//! tvpd, the trusted virtualization platform host agent (its CLI, `tvpctl`, is the
//! crate of the same name in `agent/ctl/`).
//!
//! Module map:
//! - [`daemon`]: start-up and shutdown: one recipe of start steps, the start error
//!   type that owns the exit codes, the API socket, serving until a signal.
//! - [`config`] (the keys, defined once in `config/keys.rs`) and [`logging`]
//!   (key-value records as text or JSON): the operator's surface.
//! - [`tpm`]: the only code that talks to the TPM, on one thread ([`tpm::service`]).
//! - [`platform`]: measures the platform software at start into the platform PCR,
//!   recorded in the host event log ([`host_log`]); [`platform_watch`] notices when a
//!   measured file changes afterwards.
//! - [`api`]: the Unix-socket HTTP API (typed requests, one dispatcher, the peer
//!   caller access policy); [`evidence`] assembles quotes into the documented
//!   evidence format, with the kernel's IMA list ([`host_ima`]) where the host has one.
//! - [`audit`]: the tamper-evident audit log anchored in a TPM NV index, and the
//!   authorization counters.
//! - [`vm`]: measured VMs: specs, one `tvp-vmm` per VM, the PCR lease, lifecycle,
//!   supervision and recovery.
//! - [`image_release`]: obtaining an encrypted image's key from the tenant's KMS.
//! - [`unmanaged_vms`]: finding KVM VMs on the host that tvpd did not create.

pub mod api;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod evidence;
pub mod host_ima;
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
