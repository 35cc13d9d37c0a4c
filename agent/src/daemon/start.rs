//! The serving start, as one linear recipe (docs/configuration.md, "Start-up order",
//! steps 6 to 11): each step is a function that names what it does and fails with the
//! [`StartError`] variant that says so.

use std::path::Path;
use std::sync::{Arc, Mutex};

use log::{info, warn};

use super::{serve, socket, StartError};
use crate::api::handlers::AppState;
use crate::api::peer::AccessPolicy;
use crate::audit::counters::CounterStore;
use crate::audit::{Audit, AuditLog};
use crate::config::Config;
use crate::host_log::{HostEventLog, Reconciled};
use crate::image_release::Releaser;
use crate::platform;
use crate::platform_watch::{self, PlatformState, Watched};
use crate::tpm::binding::BindingKey;
use crate::tpm::service::TpmClient;
use crate::vm::{Manager, ManagerConfig};

/// Recover the host event log, reset stale leases, measure the platform, create the
/// binding key, open the audit log, bind the socket, start the VM manager, and serve
/// the API until SIGTERM/SIGINT.
pub(super) fn start_and_serve(
    cfg: &Config,
    config_path: Option<&Path>,
    tpm: TpmClient,
    policy: Arc<AccessPolicy>,
) -> Result<(), StartError> {
    let host_log = Arc::new(Mutex::new(recover_host_log(cfg, &tpm)?));
    reset_leased_pcrs(&tpm)?;
    let watched = measure_platform(cfg, config_path, &tpm, &host_log)?;
    let binding_key = create_binding_key(&tpm, cfg.platform_pcr)?;
    let audit = open_audit(cfg, &tpm)?;
    // Signals first: from the bind on, a client (or systemd) may see tvpd as up.
    let runtime = serve::ServeRuntime::new()?;
    let listener = socket::bind(cfg)?;
    start_delay_fault();
    let platform_state = Arc::new(Mutex::new(PlatformState::default()));
    let releaser = Releaser {
        tpm: tpm.clone(),
        binding_key: binding_key.clone(),
        host_log: host_log.clone(),
        platform_pcr: cfg.platform_pcr,
    };
    let vms = Manager::new(
        releaser,
        manager_config(cfg)?,
        platform_state.clone(),
        audit.clone(),
    );
    if cfg.vmm_user.is_none() {
        warn!("vmm_user is not set: every tvp-vmm keeps running as root after its lockdown; set a dedicated user (docs/host-hardening.md)");
    }
    watch_platform(watched, &platform_state, &vms)?;
    let recovered = vms.recover().map_err(StartError::VmRecord)?;
    if recovered.failed > 0 {
        warn!(vms = recovered.failed; "VMs of an earlier tvpd were live and could not be adopted: marked failed (tvpd-restarted)");
    }
    if recovered.adopted > 0 {
        info!(vms = recovered.adopted; "running VMs of an earlier tvpd re-adopted");
    }
    let state = Arc::new(AppState {
        tpm,
        host_log,
        platform_pcr: cfg.platform_pcr,
        unmanaged: Default::default(),
        platform: platform_state,
        binding_key,
        vms: vms.clone(),
        audit,
    });
    let served = serve::serve(runtime, cfg, listener, state, policy);
    vms.shutdown(std::time::Duration::from_secs(10));
    served
}

/// Load the host event log and reconcile it with the PCRs it covers (and the platform
/// PCR): continue it within this TPM boot cycle, or start a new one.
fn recover_host_log(cfg: &Config, tpm: &TpmClient) -> Result<HostEventLog, StartError> {
    let mut log = HostEventLog::load(&cfg.state_dir)?;
    let mut pcrs: Vec<u32> = HostEventLog::replay(log.records())
        .keys()
        .copied()
        .collect();
    pcrs.push(cfg.platform_pcr);
    pcrs.sort_unstable();
    pcrs.dedup();
    let current = tpm
        .call(move |t| t.pcr_read(&pcrs))
        .map_err(StartError::ReadPcrs)?;
    let outcome = log.reconcile(|p| current.get(&p).copied())?;
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
    Ok(log)
}

/// A lease can only be held by a VM of this process: whatever PCRs 16 and 23 hold now
/// is a stale lease of an earlier tvpd (crash) and is reset before anything else.
fn reset_leased_pcrs(tpm: &TpmClient) -> Result<(), StartError> {
    tpm.call(|t| {
        t.pcr_reset(crate::vm::manager::PCR_TUNNEL)?;
        t.pcr_reset(crate::vm::manager::PCR_VM)
    })
    .map_err(StartError::ResetLeasedPcrs)?;
    info!("PCRs 16 and 23 reset (no lease held)");
    Ok(())
}

/// The VMM binary tvpd will exec: `vmm_binary`, or `tvp-vmm` next to tvpd. The one
/// resolution both the launcher and the platform measurement use.
fn vmm_binary(cfg: &Config) -> std::path::PathBuf {
    cfg.vmm_binary
        .clone()
        .unwrap_or_else(crate::vm::manager::default_vmm_binary)
}

/// The platform files measured after the configuration: the VMM tvpd will exec and
/// the firmware it will load (always), then the other `platform_artefacts`.
pub(super) fn platform_files(cfg: &Config) -> Vec<platform::PlatformFile> {
    platform::platform_files(&vmm_binary(cfg), &cfg.firmware, &cfg.platform_artefacts)
}

/// Measure tvpd, the configuration, tvp-vmm, the firmware and the other platform
/// artefacts into the platform PCR (files hashed first, then logged and extended).
/// Returns what must not change while tvpd runs: the measured files and the
/// configuration file.
fn measure_platform(
    cfg: &Config,
    config_path: Option<&Path>,
    tpm: &TpmClient,
    host_log: &Arc<Mutex<HostEventLog>>,
) -> Result<Vec<Watched>, StartError> {
    let exe = std::env::current_exe().map_err(StartError::OwnBinary)?;
    let measurements =
        platform::platform_measurements(&exe, &cfg.canonical_json(), &platform_files(cfg))
            .map_err(StartError::MeasurePlatform)?;
    let mut watched: Vec<Watched> = measurements
        .iter()
        .filter_map(|m| {
            m.file.clone().map(|path| Watched {
                path,
                measured: m.digest,
            })
        })
        .collect();
    // Only a regular file (not e.g. /dev/null, whose directory is all device noise).
    if let Some(p) = config_path.filter(|p| p.is_file()) {
        if let Ok(d) = platform::hash_file(p) {
            watched.push(Watched {
                path: p.to_path_buf(),
                measured: d,
            });
        }
    }
    platform::extend_all(tpm, host_log, cfg.platform_pcr, measurements)
        .map_err(StartError::ExtendPlatform)?;
    Ok(watched)
}

/// The binding key's use is bound to the platform PCR as it is now, after this start's
/// measurement: a later change of the platform makes it unusable.
fn create_binding_key(tpm: &TpmClient, pcr: u32) -> Result<BindingKey, StartError> {
    let key = tpm
        .call(move |t| t.create_binding_key(&[pcr]))
        .map_err(StartError::BindingKey)?;
    info!(policy_pcr = pcr; "host binding key created");
    Ok(key)
}

/// Open and verify the audit log against its TPM anchor, and load the authorization
/// counters and check them against the log's decision records (a counter file rolled
/// back while tvpd was stopped is refused); tvpd refuses to serve if either is not
/// trustworthy. Tokens must name this host's AK.
fn open_audit(cfg: &Config, tpm: &TpmClient) -> Result<Arc<Audit>, StartError> {
    let log = AuditLog::open(&cfg.state_dir, tpm.clone(), cfg.audit_nv_index)?;
    let counters = CounterStore::load(&cfg.state_dir)?;
    counters.check_against(log.records())?;
    let host = tpm.identity().ak_name.clone();
    Ok(Arc::new(Audit::new(log, counters, host)))
}

/// The VM manager's part of the configuration.
fn manager_config(cfg: &Config) -> Result<ManagerConfig, StartError> {
    Ok(ManagerConfig {
        vmm_binary: vmm_binary(cfg),
        firmware: cfg.firmware.clone(),
        vms_dir: cfg.state_dir.join("vms"),
        platform_pcr: cfg.platform_pcr,
        tap_prefix: cfg.tap_prefix.clone(),
        bridge: cfg.vm_bridge.clone(),
        vmm_ids: cfg.vmm_ids()?,
        image_dir: cfg.image_dir.clone(),
        kms_socket_dir: cfg.kms_socket_dir.clone(),
        adoption_grace: std::time::Duration::from_secs(cfg.vmm_adoption_grace_secs),
        keep_vms_on_stop: cfg.keep_vms_on_stop,
    })
}

/// Watch the measured files: a change revokes what the VMs were promised.
fn watch_platform(
    watched: Vec<Watched>,
    state: &Arc<Mutex<PlatformState>>,
    vms: &Arc<Manager>,
) -> Result<(), StartError> {
    // Weak: the watch thread lives forever and must not keep the manager (and through
    // it the TPM thread) alive past shutdown.
    let revoke = Arc::downgrade(vms);
    platform_watch::spawn(
        watched,
        state.clone(),
        Box::new(move |c| {
            if let Some(vms) = revoke.upgrade() {
                vms.platform_changed(c)
            }
        }),
    )
    .map_err(StartError::PlatformWatch)
}

/// Test-only fault hook: `TVP_FAULT_START_DELAY_MS=N` holds the start for N ms (at most
/// 5 s) between binding the socket and serving, so a test can signal tvpd in that
/// window (tests/tests/host_api.rs).
fn start_delay_fault() {
    if let Some(ms) = std::env::var("TVP_FAULT_START_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        warn!(ms = ms; "test fault hook: holding the start after the bind");
        std::thread::sleep(std::time::Duration::from_millis(ms.min(5000)));
    }
}
