//! Serving the API: the async runtime, the unmanaged-VM scan, systemd readiness, the
//! signals that stop tvpd, and SIGHUP, which refreshes the API roles' memberships.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{info, warn};

use super::StartError;
use crate::api::handlers::AppState;
use crate::api::peer::{AccessPolicy, SharedPolicy};
use crate::api::server::Limits;
use crate::api::slots::SlotLimits;
use crate::config::Config;
use crate::unmanaged_vms::{self, Census};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The API's runtime with the shutdown signals already registered. Made before the
/// socket is bound: a SIGTERM that arrives while tvpd still starts (its socket may
/// already accept connections) is kept and ends tvpd cleanly once it serves, instead of
/// killing it by the signal's default action.
pub(super) struct ServeRuntime {
    rt: tokio::runtime::Runtime,
    signals: Option<(Signal, Signal)>,
}

impl ServeRuntime {
    /// Builds the runtime and registers SIGTERM and SIGINT.
    pub(super) fn new() -> Result<Self, StartError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let signals = {
            let _in_runtime = rt.enter();
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => {
                    warn!("cannot install signal handlers; stop tvpd with SIGKILL");
                    None
                }
            }
        };
        Ok(ServeRuntime { rt, signals })
    }
}

/// Serve the API on `listener` until SIGTERM or SIGINT, then remove the socket.
pub(super) fn serve(
    runtime: ServeRuntime,
    cfg: &Config,
    listener: UnixListener,
    state: Arc<AppState>,
    policy: Arc<AccessPolicy>,
) -> Result<(), StartError> {
    let scan_interval = Duration::from_millis(cfg.kvm_scan_interval_ms);
    let limits = Limits {
        request_timeout: Duration::from_millis(cfg.request_timeout_ms),
        max_body: cfg.max_body_bytes,
        slots: SlotLimits {
            total: cfg.max_connections,
            per_uid: cfg.max_connections_per_uid,
            reserved_for_managers: cfg.manager_reserved_connections,
        },
        denial_flush_interval: Duration::from_millis(cfg.denial_flush_interval_ms),
    };
    let policy = Arc::new(SharedPolicy::with(cfg.role_names(), policy));
    let ServeRuntime { rt, signals } = runtime;
    let socket = cfg.socket.clone();
    let audit = state.audit.clone();
    let last_try = audit.clone();
    let result = rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        if !scan_interval.is_zero() {
            tokio::spawn(scan_for_unmanaged_vms(
                state.unmanaged.clone(),
                state.vms.clone(),
                scan_interval,
            ));
        }
        tokio::spawn(refresh_roles_on_sighup(policy.clone()));
        tokio::spawn(write_pending_audit_events(state.audit.clone()));
        info!(socket = socket.display().to_string(); "serving the API");
        notify_ready();
        crate::api::server::serve(listener, state, policy, limits, shutdown_signal(signals)).await;
        if last_try.pending_events() > 0 {
            let _ = last_try.flush_pending_events().await;
        }
        Ok::<(), std::io::Error>(())
    });
    let _ = std::fs::remove_file(&cfg.socket);
    let waiting = audit.pending_events();
    if waiting > 0 {
        log::error!(events = waiting; "tvpd stops with audit events that could not be written (the audit log is not writable): they are lost; the VMs' tenants see no record of them");
    }
    result.map_err(StartError::Serve)
}

/// Periodically look for KVM VMs tvpd did not create; log each as it appears and
/// goes, and record it in the live VMs' audit trails.
async fn scan_for_unmanaged_vms(
    census: Arc<Mutex<Census>>,
    vms: Arc<crate::vm::Manager>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let found = tokio::task::spawn_blocking(|| unmanaged_vms::scan(Path::new("/proc")))
            .await
            .unwrap_or_default();
        let managed = vms.pids();
        let change =
            crate::lock(&census).update(&found, &managed, "tvp-vmm", &crate::logging::timestamp());
        for v in &change.appeared {
            warn!(pid = v.pid, comm = v.comm.as_str(), kind = v.kind.name(), vm_fds = v.vm_fds; "unmanaged KVM VM on this host");
        }
        for v in &change.vanished {
            info!(pid = v.pid, comm = v.comm.as_str(); "unmanaged KVM VM gone");
        }
        if !change.appeared.is_empty() || !change.vanished.is_empty() {
            // Into every live VM's audit trail (blocking appends: off the runtime).
            let vms = vms.clone();
            let _ = tokio::task::spawn_blocking(move || {
                vms.out_of_context(&change.appeared, &change.vanished)
            })
            .await;
        }
    }
}

/// How often events that could not be written to the audit trail are tried again
/// (every append tries them first too).
const PENDING_EVENTS_RETRY: Duration = Duration::from_secs(1);

/// Write the audit events kept while the log could not be written as soon as it
/// can be again, so the VMs' management resumes without waiting for a request.
async fn write_pending_audit_events(audit: Arc<crate::audit::Audit>) {
    let mut tick = tokio::time::interval(PENDING_EVENTS_RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if audit.pending_events() == 0 {
            continue;
        }
        if let Err(e) = audit.flush_pending_events().await {
            log::debug!(error = e.to_string(); "audit events still waiting for the log");
        }
    }
}

/// On SIGHUP, resolve the roles' users, groups and group memberships again (they
/// are not looked up per request); on error the roles in force stay.
async fn refresh_roles_on_sighup(policy: Arc<SharedPolicy>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!(
            "cannot install the SIGHUP handler; role memberships are refreshed only by a restart"
        );
        return;
    };
    while hup.recv().await.is_some() {
        match policy.replace() {
            Ok(()) => info!(signal = "SIGHUP"; "API roles and group memberships resolved again"),
            Err(e) => {
                warn!(signal = "SIGHUP", error = e.as_str(); "API roles not refreshed; the previous ones stay in force")
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT (at once if one arrived while tvpd was starting).
async fn shutdown_signal(signals: Option<(Signal, Signal)>) {
    let Some((mut term, mut int)) = signals else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM"; "shutting down"),
        _ = int.recv() => info!(signal = "SIGINT"; "shutting down"),
    }
}

/// Tell systemd (Type=notify) that the API is up.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", Path::new(&path))
    };
    if let Err(e) = r {
        warn!(error = e.to_string(); "sd_notify failed");
    }
}
