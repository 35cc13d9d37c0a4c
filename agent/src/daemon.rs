//! `tvpd`'s start-up and shutdown: configuration, TPM, platform measurement, API.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{error, info, warn};

use crate::api::handlers::AppState;
use crate::api::peer::AccessPolicy;
use crate::api::server::{serve, Limits};
use crate::config::{Args, Config};
use crate::host_log::{HostEventLog, Reconciled};
use crate::platform;
use crate::platform_watch::{self, PlatformState};
use crate::tpm::service::TpmService;
use crate::tpm::ProvisionConfig;
use crate::unmanaged_vms::{self, Census};

/// Process exit codes (sysexits.h values, so init systems and scripts can tell them apart).
pub mod exit {
    /// Stopped on request.
    pub const OK: i32 = 0;
    /// Internal error.
    pub const SOFTWARE: i32 = 70;
    /// The TPM is unavailable or provisioning failed.
    pub const UNAVAILABLE: i32 = 69;
    /// Cannot create the socket or the state directory.
    pub const CANTCREAT: i32 = 73;
    /// Bad configuration.
    pub const CONFIG: i32 = 78;
    /// The audit log does not verify or does not match its TPM anchor.
    pub const DATAERR: i32 = 65;
}

/// Run `tvpd`; returns the process exit code.
pub fn run(args: Args) -> i32 {
    let cfg = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tvpd: {e}");
            return exit::CONFIG;
        }
    };
    if args.print_config {
        print!("{}", cfg.to_toml());
        return exit::OK;
    }
    crate::logging::init(&cfg.log_level, &cfg.log_format);
    let policy = match AccessPolicy::resolve(&cfg.allowed_users, &cfg.allowed_groups) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            error!("{e}");
            return exit::CONFIG;
        }
    };
    if args.check_config {
        println!("configuration OK");
        return exit::OK;
    }
    if args.print_expected_pcrs {
        return print_expected_pcrs(&cfg);
    }
    // Refuse early (before touching the TPM) if another tvpd serves on the socket.
    if std::os::unix::net::UnixStream::connect(&cfg.socket).is_ok() {
        error!(socket = cfg.socket.display().to_string(); "another process is serving on the socket; stop it or choose another --socket");
        return exit::CANTCREAT;
    }
    if let Err(e) = std::fs::create_dir_all(&cfg.state_dir).and_then(|_| {
        std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700))
    }) {
        error!(dir = cfg.state_dir.display().to_string(), error = e.to_string(); "cannot create state directory");
        return exit::CANTCREAT;
    }

    let tpm_service = match TpmService::start(
        cfg.tcti.clone(),
        ProvisionConfig {
            ek_handle: cfg.ek_handle,
            ak_handle: cfg.ak_handle,
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            error!(tcti = cfg.tcti.as_str(); "{e}");
            return exit::UNAVAILABLE;
        }
    };
    let tpm = tpm_service.client();
    let id = tpm.identity().clone();
    info!(host_id = id.host_id.as_str(), ak_name = hex::encode(&id.ak_name), ek_certificate = id.ek_certificate_der.is_some(), provisioned_now = id.created; "TPM ready");

    let config_path = args.config.clone().or_else(|| {
        let p = std::path::PathBuf::from(crate::config::DEFAULT_CONFIG_PATH);
        p.exists().then_some(p)
    });
    let code = match start_and_serve(&cfg, config_path.as_deref(), tpm.clone(), policy) {
        Ok(()) => exit::OK,
        Err(code) => code,
    };
    drop(tpm);
    tpm_service.shutdown();
    info!(exit_code = code; "tvpd stopped");
    code
}

fn start_and_serve(
    cfg: &Config,
    config_path: Option<&Path>,
    tpm: crate::tpm::service::TpmClient,
    policy: Arc<AccessPolicy>,
) -> Result<(), i32> {
    let mut log = HostEventLog::load(&cfg.state_dir).map_err(|e| {
        error!("{e}");
        exit::CANTCREAT
    })?;
    let mut pcrs: Vec<u32> = HostEventLog::replay(log.records())
        .keys()
        .copied()
        .collect();
    pcrs.push(cfg.platform_pcr);
    pcrs.sort_unstable();
    pcrs.dedup();
    let current = tpm.call(move |t| t.pcr_read(&pcrs)).map_err(|e| {
        error!("cannot read PCRs: {e}");
        exit::UNAVAILABLE
    })?;
    let outcome = log.reconcile(|p| current.get(&p).copied()).map_err(|e| {
        error!("{e}");
        exit::CANTCREAT
    })?;
    for (pcr, state) in outcome {
        match state {
            Reconciled::Continued => {
                info!(pcr = pcr; "host event log continues this TPM boot cycle")
            }
            Reconciled::Restarted => {
                info!(pcr = pcr; "PCR was reset (new TPM boot cycle): new host event log")
            }
            Reconciled::DroppedUnextended => {
                warn!(pcr = pcr; "dropped a log record whose extend never happened (earlier crash)")
            }
            Reconciled::Diverged { .. } => {
                warn!(pcr = pcr; "PCR was extended by something other than tvpd, or the log was lost: quotes over it will not replay until the next reboot; choose an unused platform_pcr")
            }
        }
    }
    let log = Arc::new(Mutex::new(log));
    // A lease can only be held by a VM of this process: whatever PCRs 16 and 23 hold now
    // is a stale lease of an earlier tvpd (crash) and is reset before anything else.
    tpm.call(|t| {
        t.pcr_reset(crate::vm::manager::PCR_TUNNEL)?;
        t.pcr_reset(crate::vm::manager::PCR_VM)
    })
    .map_err(|e| {
        error!("cannot reset the leased PCRs 16 and 23: {e}");
        exit::UNAVAILABLE
    })?;
    info!("PCRs 16 and 23 reset (no lease held)");

    let exe = std::env::current_exe().map_err(|e| {
        error!("cannot locate own binary: {e}");
        exit::SOFTWARE
    })?;
    let measurements =
        platform::platform_measurements(&exe, &cfg.canonical_json(), &cfg.platform_artefacts)
            .map_err(|e| {
                error!("{e}");
                exit::CONFIG
            })?;
    // What must not change while we run: the measured files, and the configuration file.
    let mut watched = vec![platform_watch::Watched {
        path: exe.clone(),
        measured: measurements[1].digest,
    }];
    for (path, m) in cfg.platform_artefacts.iter().zip(&measurements[3..]) {
        watched.push(platform_watch::Watched {
            path: path.clone(),
            measured: m.digest,
        });
    }
    // Only a regular file (not e.g. /dev/null, whose directory is all device noise).
    if let Some(p) = config_path.filter(|p| p.is_file()) {
        if let Ok(d) = platform::hash_file(p) {
            watched.push(platform_watch::Watched {
                path: p.to_path_buf(),
                measured: d,
            });
        }
    }
    platform::extend_all(&tpm, &log, cfg.platform_pcr, measurements).map_err(|e| {
        error!("platform measurement failed: {e}");
        exit::UNAVAILABLE
    })?;

    // The binding key's use is bound to the platform PCR as it is now, after this
    // start's measurement: a later change of the platform makes it unusable.
    let pcr = cfg.platform_pcr;
    let binding_key = tpm
        .call(move |t| t.create_binding_key(&[pcr]))
        .map_err(|e| {
            error!("cannot create the host binding key: {e}");
            exit::UNAVAILABLE
        })?;
    info!(policy_pcr = pcr; "host binding key created");
    let audit = open_audit(cfg, &tpm)?;
    let listener = bind_socket(cfg)?;
    let platform_state = Arc::new(Mutex::new(PlatformState::default()));
    let vms = crate::vm::Manager::new(
        crate::image_release::Releaser {
            tpm: tpm.clone(),
            binding_key: binding_key.clone(),
            host_log: log.clone(),
            platform_pcr: cfg.platform_pcr,
        },
        crate::vm::ManagerConfig {
            vmm_binary: cfg
                .vmm_binary
                .clone()
                .unwrap_or_else(crate::vm::manager::default_vmm_binary),
            firmware: cfg.firmware.clone(),
            vms_dir: cfg.state_dir.join("vms"),
            platform_pcr: cfg.platform_pcr,
            tap_prefix: cfg.tap_prefix.clone(),
            bridge: cfg.vm_bridge.clone(),
            vmm_ids: cfg.vmm_ids().map_err(|e| {
                error!("{e}");
                exit::CONFIG
            })?,
            image_dir: cfg.image_dir.clone(),
        },
        platform_state.clone(),
        audit.clone(),
    );
    if cfg.vmm_user.is_none() {
        warn!("vmm_user is not set: every tvp-vmm keeps running as root after its lockdown; set a dedicated user (docs/host-hardening.md)");
    }
    // Weak: the watch thread lives forever and must not keep the manager (and through
    // it the TPM thread) alive past shutdown.
    let revoke = Arc::downgrade(&vms);
    if let Err(e) = platform_watch::spawn(
        watched,
        platform_state.clone(),
        Box::new(move |c| {
            if let Some(vms) = revoke.upgrade() {
                vms.platform_changed(c)
            }
        }),
    ) {
        error!(error = e.to_string(); "cannot watch the measured platform files");
        return Err(exit::SOFTWARE);
    }
    let orphaned = vms.recover();
    if orphaned > 0 {
        warn!(vms = orphaned; "VMs of an earlier tvpd were live: marked failed (tvpd-restarted)");
    }
    let unmanaged = Arc::new(Mutex::new(Census::default()));
    let state = Arc::new(AppState {
        tpm,
        host_log: log,
        platform_pcr: cfg.platform_pcr,
        unmanaged: unmanaged.clone(),
        platform: platform_state,
        binding_key,
        vms: vms.clone(),
        audit,
    });
    let vms_for_scan = vms.clone();
    let scan_interval = Duration::from_millis(cfg.kvm_scan_interval_ms);
    let limits = Limits {
        request_timeout: Duration::from_millis(cfg.request_timeout_ms),
        max_body: cfg.max_body_bytes,
        max_connections: cfg.max_connections,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            error!("cannot start the async runtime: {e}");
            exit::SOFTWARE
        })?;
    let socket = cfg.socket.clone();
    let result = rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        if !scan_interval.is_zero() {
            tokio::spawn(scan_for_unmanaged_vms(
                unmanaged,
                vms_for_scan,
                scan_interval,
            ));
        }
        info!(socket = socket.display().to_string(); "serving the API");
        notify_ready();
        serve(listener, state, policy, limits, shutdown_signal()).await;
        Ok::<(), std::io::Error>(())
    });
    let _ = std::fs::remove_file(&cfg.socket);
    vms.shutdown(Duration::from_secs(10));
    result.map_err(|e| {
        error!("API server failed: {e}");
        exit::CANTCREAT
    })
}

/// Open and verify the audit log against its TPM anchor; refuse to serve if they
/// disagree (exit 65) or the log cannot be written (exit 73).
fn open_audit(
    cfg: &Config,
    tpm: &crate::tpm::service::TpmClient,
) -> Result<Arc<crate::audit::Audit>, i32> {
    use crate::audit::AuditError;
    let log = crate::audit::AuditLog::open(&cfg.state_dir, tpm.clone(), cfg.audit_nv_index)
        .map_err(|e| {
            error!("{e}");
            match e {
                AuditError::Chain { .. }
                | AuditError::AnchorMismatch { .. }
                | AuditError::Tampered { .. } => exit::DATAERR,
                AuditError::Io { .. } => exit::CANTCREAT,
                AuditError::Tpm(_) => exit::UNAVAILABLE,
            }
        })?;
    let counters = crate::audit::counters::CounterStore::load(&cfg.state_dir).map_err(|e| {
        error!("{e}");
        exit::DATAERR
    })?;
    Ok(Arc::new(crate::audit::Audit::new(log, counters)))
}

/// `--print-expected-pcrs`: what an inventory should expect of the platform PCR.
fn print_expected_pcrs(cfg: &Config) -> i32 {
    let measured = std::env::current_exe()
        .map_err(|e| e.to_string())
        .and_then(|exe| {
            platform::platform_measurements(&exe, &cfg.canonical_json(), &cfg.platform_artefacts)
                .map_err(|e| e.to_string())
        });
    let measurements = match measured {
        Ok(m) => m,
        Err(e) => {
            eprintln!("tvpd: {e}");
            return exit::CONFIG;
        }
    };
    let mut pcr = [0u8; 32];
    for m in &measurements {
        eprintln!("{}  {:?}  {}", hex::encode(m.digest), m.kind, m.description);
        pcr = tvp_verifier::eventlog::extend_sha256(&pcr, &m.digest);
    }
    let expected =
        serde_json::json!({"pcrs": {"sha256": {cfg.platform_pcr.to_string(): hex::encode(pcr)}}});
    println!("{expected:#}");
    exit::OK
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

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop tvpd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}

/// Tell systemd (Type=notify) that the API is up.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
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

/// Create the socket with restrictive permissions from the start; refuse to steal a
/// socket another tvpd is serving on; remove a stale one.
fn bind_socket(cfg: &Config) -> Result<std::os::unix::net::UnixListener, i32> {
    let fail = |what: &str, e: std::io::Error| {
        error!(socket = cfg.socket.display().to_string(), error = e.to_string(); "{what}");
        exit::CANTCREAT
    };
    let mode = cfg.socket_mode_bits().map_err(|e| {
        error!("{e}");
        exit::CONFIG
    })?;
    if let Some(dir) = cfg.socket.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
                .map_err(|e| fail("cannot create socket directory", e))?;
        }
    }
    if cfg.socket.exists() {
        if std::os::unix::net::UnixStream::connect(&cfg.socket).is_ok() {
            error!(socket = cfg.socket.display().to_string(); "another process is serving on the socket; stop it or choose another --socket");
            return Err(exit::CANTCREAT);
        }
        std::fs::remove_file(&cfg.socket).map_err(|e| fail("cannot remove stale socket", e))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(&cfg.socket);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| fail("cannot bind socket", e))?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail("cannot set socket mode", e))?;
    if let Some(g) = &cfg.socket_group {
        let gid = match g.parse::<u32>() {
            Ok(n) => Some(nix::unistd::Gid::from_raw(n)),
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .map(|g| g.gid),
        };
        let Some(gid) = gid else {
            error!(group = g.as_str(); "socket_group: no such group");
            return Err(exit::CONFIG);
        };
        nix::unistd::chown(&cfg.socket, None, Some(gid))
            .map_err(|e| fail("cannot set socket group", std::io::Error::from(e)))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| fail("cannot configure socket", e))?;
    Ok(listener)
}
