//! `tvpd`'s start-up and shutdown: configuration, TPM, platform measurement, API.
//!
//! [`run`] picks the mode (a one-shot like `--print-config`, or serving), runs it and
//! turns its [`StartError`] into the exit code, logging it once. The serving recipe is
//! [`start::start_and_serve`]; [`socket`] creates the API socket; [`serve`] runs the
//! API until SIGTERM/SIGINT.

mod error;
mod oneshot;
mod serve;
mod socket;
mod start;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{error, info, LevelFilter};

pub use error::{exit, StartError};

use crate::api::peer::AccessPolicy;
use crate::config::{Args, Config, DEFAULT_CONFIG_PATH};
use crate::tpm::service::TpmService;
use crate::tpm::ProvisionConfig;

/// Run `tvpd`; returns the process exit code.
pub fn run(args: Args) -> i32 {
    match run_mode(&args) {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = e.exit_code();
            // Before the logger is installed (configuration errors), plain stderr.
            if log::max_level() == LevelFilter::Off {
                eprintln!("tvpd: {e}");
            } else {
                error!(exit_code = code, error = e.to_string(); "tvpd stopped");
            }
            code
        }
    }
}

/// Load the configuration, then run the one-shot mode the flags ask for, or serve.
fn run_mode(args: &Args) -> Result<(), StartError> {
    let cfg = Config::load(args)?;
    if args.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    crate::logging::init(&cfg.log_level, &cfg.log_format);
    let policy =
        AccessPolicy::resolve_roles(&cfg.role_names()).map_err(StartError::AccessPolicy)?;
    if args.check_config {
        println!("configuration OK");
        return Ok(());
    }
    if args.print_expected_pcrs {
        return oneshot::print_expected_pcrs(&cfg);
    }
    let config_path = args.config.clone().or_else(|| {
        let p = PathBuf::from(DEFAULT_CONFIG_PATH);
        p.exists().then_some(p)
    });
    run_daemon(&cfg, config_path.as_deref(), Arc::new(policy))
}

/// Open the TPM, serve until asked to stop, and close the TPM again.
fn run_daemon(
    cfg: &Config,
    config_path: Option<&Path>,
    policy: Arc<AccessPolicy>,
) -> Result<(), StartError> {
    // Refuse early (before touching the TPM) if another tvpd serves on the socket.
    socket::refuse_if_served(&cfg.socket)?;
    create_state_dir(&cfg.state_dir)?;
    let provision = ProvisionConfig {
        ek_handle: cfg.ek_handle,
        ak_handle: cfg.ak_handle,
        ak_algorithm: cfg.ak_algorithm,
    };
    let tpm_service =
        TpmService::start(cfg.tcti.clone(), provision).map_err(|source| StartError::Tpm {
            tcti: cfg.tcti.clone(),
            source,
        })?;
    let id = tpm_service.client().identity().clone();
    info!(host_id = id.host_id.as_str(), ak_name = hex::encode(&id.ak_name), ek_certificate = id.ek_certificate_der.is_some(), provisioned_now = id.created; "TPM ready");
    let result = start::start_and_serve(cfg, config_path, tpm_service.client(), policy);
    tpm_service.shutdown();
    if result.is_ok() {
        info!(exit_code = exit::OK; "tvpd stopped");
    }
    result
}

/// Create `state_dir` and restrict it to its owner (at every start).
fn create_state_dir(dir: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| StartError::StateDir {
            dir: dir.to_path_buf(),
            source,
        })
}
