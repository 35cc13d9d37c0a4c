//! Why `tvpd` did not start or stopped abnormally, and the exit code each reason maps
//! to. The codes are sysexits.h values, so init systems and scripts can tell them
//! apart; `docs/configuration.md` ("Exit codes") and `tvpd --help` list them, and the
//! systemd unit does not restart on [`exit::CONFIG`].

use std::path::PathBuf;

use crate::audit::counters::CounterError;
use crate::audit::AuditError;
use crate::config::ConfigError;
use crate::host_log::HostLogError;
use crate::platform::MeasureError;
use crate::tpm::error::TpmError;

/// Process exit codes (sysexits.h values).
pub mod exit {
    /// Stopped on request, or a one-shot mode (`--print-config`, ...) succeeded.
    pub const OK: i32 = 0;
    /// The audit log does not verify or does not match its TPM anchor (EX_DATAERR).
    pub const DATAERR: i32 = 65;
    /// The TPM is unavailable or refused a start step (EX_UNAVAILABLE).
    pub const UNAVAILABLE: i32 = 69;
    /// Internal error (EX_SOFTWARE).
    pub const SOFTWARE: i32 = 70;
    /// Cannot create the socket or the state (EX_CANTCREAT).
    pub const CANTCREAT: i32 = 73;
    /// Bad configuration (EX_CONFIG): restarting will not help.
    pub const CONFIG: i32 = 78;
}

/// A step of tvpd's start (or its serving) that failed. Each variant names the step;
/// [`StartError::exit_code`] is the one place that maps them to exit codes.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration file or a flag is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `allowed_users` / `allowed_groups` name a user or group that does not exist.
    #[error("{0}")]
    AccessPolicy(String),
    /// Another process answers on the API socket.
    #[error("another process is serving on the socket {}; stop it or choose another --socket", socket.display())]
    SocketInUse { socket: PathBuf },
    /// `state_dir` cannot be created or restricted to mode 0700.
    #[error("cannot create state directory {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TPM cannot be opened, or the EK/AK cannot be found or created.
    #[error("TPM ({tcti}): {source}")]
    Tpm {
        tcti: String,
        #[source]
        source: TpmError,
    },
    /// The host event log cannot be read, reconciled with the PCRs, or written.
    #[error(transparent)]
    HostLog(#[from] HostLogError),
    /// The PCRs the host event log covers cannot be read.
    #[error("cannot read PCRs: {0}")]
    ReadPcrs(#[source] TpmError),
    /// The leased PCRs (16 and 23) cannot be reset.
    #[error("cannot reset the leased PCRs 16 and 23: {0}")]
    ResetLeasedPcrs(#[source] TpmError),
    /// tvpd cannot find its own binary (to measure it).
    #[error("cannot locate own binary: {0}")]
    OwnBinary(#[source] std::io::Error),
    /// A platform file (tvpd, an artefact) cannot be read to be measured.
    #[error(transparent)]
    MeasurePlatform(MeasureError),
    /// The platform measurement could not be logged or extended.
    #[error("platform measurement failed: {0}")]
    ExtendPlatform(#[source] MeasureError),
    /// The host binding key could not be created.
    #[error("cannot create the host binding key: {0}")]
    BindingKey(#[source] TpmError),
    /// The audit log cannot be opened, does not verify, or disagrees with its anchor.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The authorization counters cannot be loaded.
    #[error(transparent)]
    Counters(#[from] CounterError),
    /// A VM record disagrees with the TPM-anchored audit trail (its management key
    /// was rolled back or edited while tvpd was stopped).
    #[error("{0}")]
    VmRecord(String),
    /// The API socket cannot be created, bound or configured.
    #[error("{what} {}: {source}", socket.display())]
    Socket {
        what: &'static str,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `socket_group` names no group.
    #[error("socket_group: no such group '{0}'")]
    SocketGroup(String),
    /// The watch over the measured platform files cannot start.
    #[error("cannot watch the measured platform files: {0}")]
    PlatformWatch(#[source] std::io::Error),
    /// The async runtime cannot start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The API server failed while serving.
    #[error("API server failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl StartError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        use StartError as E;
        match self {
            E::Config(_) | E::AccessPolicy(_) | E::MeasurePlatform(_) | E::SocketGroup(_) => {
                exit::CONFIG
            }
            E::SocketInUse { .. }
            | E::StateDir { .. }
            | E::HostLog(_)
            | E::Socket { .. }
            | E::Serve(_)
            | E::Audit(AuditError::Io { .. } | AuditError::EventsPending { .. }) => exit::CANTCREAT,
            E::Tpm { .. }
            | E::ReadPcrs(_)
            | E::ResetLeasedPcrs(_)
            | E::ExtendPlatform(_)
            | E::BindingKey(_)
            | E::Audit(AuditError::Tpm(_)) => exit::UNAVAILABLE,
            E::Audit(
                AuditError::Chain { .. }
                | AuditError::AnchorMismatch { .. }
                | AuditError::Tampered { .. },
            )
            | E::Counters(_)
            | E::VmRecord(_) => exit::DATAERR,
            E::OwnBinary(_) | E::PlatformWatch(_) | E::Runtime(_) => exit::SOFTWARE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented meanings (docs/configuration.md, "Exit codes").
    #[test]
    fn exit_codes_keep_their_documented_meanings() {
        let io = || std::io::Error::other("x");
        assert_eq!(StartError::AccessPolicy("x".into()).exit_code(), 78);
        assert_eq!(StartError::SocketGroup("g".into()).exit_code(), 78);
        let in_use = StartError::SocketInUse {
            socket: "/s".into(),
        };
        assert_eq!(in_use.exit_code(), 73);
        assert_eq!(StartError::Serve(io()).exit_code(), 73);
        assert_eq!(StartError::OwnBinary(io()).exit_code(), 70);
        assert_eq!(StartError::Runtime(io()).exit_code(), 70);
        assert_eq!(StartError::PlatformWatch(io()).exit_code(), 70);
        let tampered = StartError::Audit(AuditError::Tampered {
            path: "/a".into(),
            detail: "x".into(),
        });
        assert_eq!(tampered.exit_code(), 65);
        let unanchored = StartError::Audit(AuditError::AnchorMismatch {
            path: "/a".into(),
            records: 3,
            index: 0x0150_0000,
            seq: 3,
            why: "is in the log but not in the anchor".into(),
        });
        assert_eq!(unanchored.exit_code(), 65);
        assert!(unanchored
            .to_string()
            .contains("record seq 3 is in the log"));
        let io_audit = StartError::Audit(AuditError::Io {
            path: "/a".into(),
            source: io(),
        });
        assert_eq!(io_audit.exit_code(), 73);
    }
}
