//! The VM manager: one `tvp-vmm` per measured VM, supervised by a thread of its own,
//! and the PCR lease (`vm/lease.rs`) that lets exactly one VM at a time have its
//! recorded measurements and tunnel extended into PCRs 23 and 16 and be quoted, for
//! the TPM steps of one quote only. Each VM's boot is
//! one [`crate::vm::boot::Boot`] value; the API's state and phase derive from it.
//!
//! By job:
//! - `registry`: the map of VMs and the lease queue, views, and the one way a boot
//!   changes (one lock, one record write, the audit record after the lock);
//! - `record`: what is kept of a VM, built from a spec, from a record, or for a reboot;
//! - `lifecycle`: create, destroy/forget, stop all;
//! - `launch`: starting `tvp-vmm` with its descriptors;
//! - `supervise`: the per-VM supervisor; `messages`: the VMM's messages;
//! - `attestation`: measuring (by computation), tunnel, handover;
//! - `leased`: a quote's TPM steps under the lease;
//! - `recovery`: the records of an earlier tvpd;
//! - `host_events`: platform changes, out-of-context VMs;
//! - `control`: the tenant-authorized restricted operations.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use crate::audit::Audit;
use crate::host_log::HostEventLog;
use crate::platform_watch::PlatformState;
use crate::tpm::service::TpmClient;

mod attestation;
pub mod control;
mod host_events;
mod launch;
mod leased;
mod lifecycle;
mod messages;
mod record;
mod recovery;
mod registry;
mod supervise;

pub(crate) use launch::{inherit_only, key_pipe};

pub use attestation::{refusal, PCR_TUNNEL, PCR_VM};
pub use control::Op;
pub use launch::default_vmm_binary;

/// Reason of VMs found live by a restarted tvpd.
pub const RESTARTED: &str = "tvpd-restarted";
/// Reason recorded when a restarted tvpd re-adopted a running VM's VMM.
pub const ADOPTED: &str = "vm-adopted";
/// Reason of VMs stopped because tvpd stops.
pub const STOPPED: &str = "tvpd-stopped";
/// Reason of VMs whose VMM made a syscall outside its seccomp allowlist.
pub const SECCOMP_KILLED: &str =
    "tvp-vmm killed by its seccomp filter (SIGSYS): a syscall outside its allowlist";

/// Where the manager finds what it runs.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The `tvp-vmm` binary.
    pub vmm_binary: PathBuf,
    /// The measured VMs' firmware image.
    pub firmware: PathBuf,
    /// Directory for per-VM files (configuration page, console log, VMM log).
    pub vms_dir: PathBuf,
    /// The platform PCR (quoted with 16 and 23).
    pub platform_pcr: u32,
    /// Prefix of the VMs' TAP device names.
    pub tap_prefix: String,
    /// Bridge the VMs' TAP devices are attached to; `None` leaves them unattached.
    pub bridge: Option<String>,
    /// (uid, gid) the VMMs drop to once their devices are open; `None`: they stay root.
    pub vmm_ids: Option<(u32, u32)>,
    /// Directory VM images are opened in.
    pub image_dir: PathBuf,
    /// The only directory whose sockets are used as a key-management service.
    pub kms_socket_dir: PathBuf,
    /// How long a running VM's VMM waits for a restarted tvpd to adopt it once its
    /// channel closed, before it stops the VM.
    pub adoption_grace: std::time::Duration,
    /// A graceful stop (SIGTERM) leaves running VMs to a restarted tvpd instead of
    /// stopping them (upgrades).
    pub keep_vms_on_stop: bool,
}

/// Errors of VM operations, mapped to API statuses.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The request is invalid; names the field.
    #[error("{0}")]
    Invalid(String),
    /// A VM with this id exists.
    #[error("a VM with id '{0}' exists; delete it first or choose another id")]
    Exists(String),
    /// No such VM.
    #[error("no VM with id '{0}'")]
    NotFound(String),
    /// Another live VM on the bridge has this MAC or VIP.
    #[error("{field} is in use by live VM '{holder}' on the bridge; choose another {field} or delete '{holder}' first")]
    AddressInUse {
        /// `mac` or `vip`.
        field: &'static str,
        /// The VM holding it.
        holder: String,
    },
    /// The platform refuses new measured VMs.
    #[error("{0}")]
    Refused(String),
    /// Starting the VMM failed.
    #[error("cannot start the VM: {0}")]
    Spawn(String),
    /// tvpd is stopping.
    #[error("tvpd is shutting down; create the VM after it restarts")]
    ShuttingDown,
    /// The VM is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
    /// The VM has ended but its VMM has not exited yet: it was not forgotten.
    #[error(
        "VM '{0}' has ended but its VMM is still stopping; nothing was forgotten: retry the DELETE"
    )]
    Stopping(String),
    /// The operation was authorized but has no engine yet.
    #[error("{0}")]
    NotSupported(String),
    /// The workload image cannot be used (or its key was not released).
    #[error(transparent)]
    Image(#[from] super::image::ImageError),
}

/// The VM manager.
pub struct Manager {
    registry: Mutex<registry::Registry>,
    /// Notified whenever a supervisor reaps its VM (with `registry`).
    reaped: Condvar,
    /// Notified whenever the PCR lease is released or a waiter leaves (with
    /// `registry`).
    lease_passed: Condvar,
    releaser: crate::image_release::Releaser,
    tpm: TpmClient,
    cfg: ManagerConfig,
    host_log: Arc<Mutex<HostEventLog>>,
    platform: Arc<Mutex<PlatformState>>,
    audit: Arc<Audit>,
}

impl Manager {
    /// A manager with no VMs. It registers each VM's management binding with `audit`,
    /// records every VM state change there, and is `audit`'s remediator (it powers
    /// VMs off when the trail is found tampered with and their policy says so).
    pub fn new(
        releaser: crate::image_release::Releaser,
        cfg: ManagerConfig,
        platform: Arc<Mutex<PlatformState>>,
        audit: Arc<Audit>,
    ) -> Arc<Self> {
        let tpm = releaser.tpm.clone();
        let host_log = releaser.host_log.clone();
        let m = Arc::new(Manager {
            registry: Mutex::new(registry::Registry::default()),
            reaped: Condvar::new(),
            lease_passed: Condvar::new(),
            releaser,
            tpm,
            cfg,
            host_log,
            platform,
            audit: audit.clone(),
        });
        audit.set_remediator(Arc::new(control::VmRemediator(Arc::downgrade(&m))));
        m
    }

    /// The directory VM images are opened in.
    pub fn image_dir(&self) -> &std::path::Path {
        &self.cfg.image_dir
    }

    /// The only directory whose sockets are used as a key-management service.
    pub fn kms_socket_dir(&self) -> &std::path::Path {
        &self.cfg.kms_socket_dir
    }
}
