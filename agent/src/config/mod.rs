//! `tvpd`'s configuration: a TOML file (default `/etc/tvp/tvpd.toml`) whose every key
//! can also be given as a command-line flag of the same name (`state_dir` ↔
//! `--state-dir`); a flag wins over the file. Every key and its default is documented
//! in `docs/configuration.md` and by `tvpd --help`.
//!
//! The keys are defined once, in [`keys`]; this module loads the file, merges the
//! flags, validates ranges, and renders the configuration (TOML for people, canonical
//! JSON for the platform measurement).

use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser};

mod keys;

pub use keys::{Config, Overrides};

/// Default configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tvp/tvpd.toml";
/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/tvp/tvpd.sock";
/// Default platform PCR: non-resettable, not used by firmware, shim or GRUB.
pub const DEFAULT_PLATFORM_PCR: u32 = 15;
/// Default NV index of the audit anchor (owner-defined range, `docs/audit.md`).
pub const DEFAULT_AUDIT_NV_INDEX: u32 = 0x0150_0000;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for tvpd.
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range.
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A TPM handle or NV index: hex with `0x`, or decimal.
fn parse_handle(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|e| format!("'{s}' is not a handle (e.g. 0x81010002): {e}"))
}

/// tvpd: the trusted virtualization platform host agent.
///
/// Owns the host TPM, measures the platform software at start, and serves the local
/// API (HTTP/1.1 + JSON on a Unix socket; try `curl --unix-socket /run/tvp/tvpd.sock
/// http://tvp/v1/host`). Settings come from the TOML file given by --config; every key
/// of that file can also be passed as the flag of the same name, which wins.
///
/// Exit codes: 0 stopped on request; 2 bad command line; 78 bad configuration;
/// 69 TPM unavailable or provisioning failed; 73 cannot create the socket or state;
/// 70 internal error; 65 the audit log does not verify or does not match its TPM anchor,
/// or the authorization counters or a VM record's key were rolled back against it.
#[derive(Debug, Parser)]
#[command(name = "tvpd", version, verbatim_doc_comment)]
pub struct Args {
    /// Configuration file (TOML). Missing file = built-in defaults, unless given explicitly.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the configuration and exit (0 if usable).
    #[arg(long)]
    pub check_config: bool,
    /// Print, as an expected-values file for `tvpctl verify --expect`, the platform PCR
    /// value this binary and configuration produce on the first start after a TPM
    /// reset, and exit. The measurements are listed on stderr.
    #[arg(long)]
    pub print_expected_pcrs: bool,
    /// One flag per configuration key (`state_dir` -> `--state-dir`).
    #[command(flatten)]
    pub keys: Overrides,
}

impl Args {
    /// Parse the command line (exits on `--help`, `--version` and usage errors). The
    /// help shows each key's built-in default, taken from [`Config::default`].
    pub fn from_command_line() -> Args {
        let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
        let command = Args::command().mut_args(|arg| {
            let shown = defaults
                .get(arg.get_id().as_str())
                .and_then(|v| default_text(v, arg.get_value_names()));
            match shown {
                Some(d) => {
                    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    arg.help(format!("{help} [default: {d}]"))
                }
                None => arg,
            }
        });
        let matches = command.get_matches();
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// How `--help` shows a default: handles in hex, lists comma-separated; nothing for an
/// unset key or an empty list (their help says what unset means).
fn default_text(value: &serde_json::Value, names: Option<&[clap::builder::Str]>) -> Option<String> {
    use serde_json::Value;
    let is_handle = names.is_some_and(|n| n.iter().any(|n| n.as_str() == "HANDLE"));
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => match n.as_u64() {
            Some(h) if is_handle => Some(format!("{h:#010x}")),
            _ => Some(n.to_string()),
        },
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| default_text(i, None))
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

impl Config {
    /// Parse TOML text.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Load the file named by `args` (or the default file if it exists), then apply flags.
    pub fn load(args: &Args) -> Result<Self, ConfigError> {
        let (path, explicit) = match &args.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut cfg = match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text, &path)?,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        args.keys.apply_to(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    /// `vmm_user` as (uid, gid); `Ok(None)` when unset.
    pub fn vmm_ids(&self) -> Result<Option<(u32, u32)>, ConfigError> {
        let Some(u) = &self.vmm_user else {
            return Ok(None);
        };
        let bad = |message: String| ConfigError::Invalid {
            key: "vmm_user",
            message,
        };
        let ids = if let Some((uid, gid)) = u.split_once(':') {
            match (uid.parse::<u32>(), gid.parse::<u32>()) {
                (Ok(uid), Ok(gid)) => (uid, gid),
                _ => return Err(bad(format!("'{u}': UID:GID must be two numbers"))),
            }
        } else {
            match nix::unistd::User::from_name(u) {
                Ok(Some(user)) => (user.uid.as_raw(), user.gid.as_raw()),
                Ok(None) => {
                    return Err(bad(format!(
                        "no user '{u}' (create it: useradd --system --no-create-home --shell /usr/sbin/nologin {u})"
                    )))
                }
                Err(e) => return Err(bad(format!("cannot look up '{u}': {e}"))),
            }
        };
        if ids.0 == 0 || ids.1 == 0 {
            return Err(bad(format!(
                "'{u}' is root; the point is a dedicated unprivileged user"
            )));
        }
        Ok(Some(ids))
    }

    /// The user and group names of each API role (`allowed_*`: managers,
    /// `observer_*`: observers).
    pub fn role_names(&self) -> crate::api::peer::RoleNames {
        crate::api::peer::RoleNames {
            manager_users: self.allowed_users.clone(),
            manager_groups: self.allowed_groups.clone(),
            observer_users: self.observer_users.clone(),
            observer_groups: self.observer_groups.clone(),
        }
    }

    /// The socket mode as permission bits.
    pub fn socket_mode_bits(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| ConfigError::Invalid {
                key: "socket_mode",
                message: format!("'{}' is not an octal mode like 0660", self.socket_mode),
            })
    }

    /// Check ranges and enumerations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, message: String| Err(ConfigError::Invalid { key, message });
        self.socket_mode_bits()?;
        // 16 and 23 are leased to VMs; 17-22 cannot be extended from locality 0.
        if self.platform_pcr > 15 {
            return bad(
                "platform_pcr",
                format!(
                    "{} is not usable: choose a PCR 0..=15 (16 and 23 are leased to VMs, 17-22 need locality > 0; default {DEFAULT_PLATFORM_PCR})",
                    self.platform_pcr
                ),
            );
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return bad(
                "log_level",
                format!(
                    "'{}': use error, warn, info, debug or trace",
                    self.log_level
                ),
            );
        }
        let tap_ok = (1..=8).contains(&self.tap_prefix.len())
            && self
                .tap_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !tap_ok {
            return bad(
                "tap_prefix",
                format!(
                    "'{}': use 1 to 8 letters, digits, '-' or '_' (the rest of the 15-character name identifies the VM)",
                    self.tap_prefix
                ),
            );
        }
        self.vmm_ids()?;
        if let Some(b) = &self.vm_bridge {
            if !crate::vm::tap::valid_name(b) {
                return bad("vm_bridge", format!("'{b}' is not an interface name"));
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad(
                "log_format",
                format!("'{}': use text or json", self.log_format),
            );
        }
        if !(0x0100_0000..=0x01ff_ffff).contains(&self.audit_nv_index) {
            return bad(
                "audit_nv_index",
                format!(
                    "{:#010x} is not an NV index (0x01000000..0x01ffffff; default {DEFAULT_AUDIT_NV_INDEX:#010x})",
                    self.audit_nv_index
                ),
            );
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be greater than 0".into());
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1".into());
        }
        if self.max_connections_per_uid == 0 {
            return bad("max_connections_per_uid", "must be at least 1".into());
        }
        if self.manager_reserved_connections >= self.max_connections {
            return bad(
                "manager_reserved_connections",
                format!(
                    "{} leaves no connection for observers: keep it below max_connections ({})",
                    self.manager_reserved_connections, self.max_connections
                ),
            );
        }
        if self.denial_flush_interval_ms == 0 {
            return bad("denial_flush_interval_ms", "must be greater than 0".into());
        }
        if !self.kms_socket_dir.is_absolute()
            || self
                .kms_socket_dir
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return bad(
                "kms_socket_dir",
                format!(
                    "'{}' must be an absolute path without '..'",
                    self.kms_socket_dir.display()
                ),
            );
        }
        if self.tcti.trim().is_empty() {
            return bad("tcti", "must not be empty".into());
        }
        if self.keep_vms_on_stop && self.vmm_adoption_grace_secs == 0 {
            return bad(
                "keep_vms_on_stop",
                "running VMs left to the next tvpd stop at once with vmm_adoption_grace_secs = 0: set a grace (default 120) or keep_vms_on_stop = false".into(),
            );
        }
        Ok(())
    }

    /// The configuration as canonical JSON (what the platform measurement hashes).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file() {
        let file = Config::from_toml(
            "tcti = \"swtpm:port=1\"\nstate_dir = \"/a\"\nak_handle = 0x81010005\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(file.ak_handle, 0x8101_0005);
        let args = Args::parse_from(["tvpd", "--state-dir", "/b", "--ek-handle", "0x81010009"]);
        let mut cfg = file.clone();
        args.keys.apply_to(&mut cfg);
        assert_eq!(cfg.state_dir, PathBuf::from("/b"));
        assert_eq!(cfg.tcti, "swtpm:port=1");
        assert_eq!(cfg.ek_handle, 0x8101_0009);
    }

    /// The canonical form is measured into the platform PCR: it must not change by
    /// accident (a change moves the PCR every verifier expects).
    #[test]
    fn canonical_json_of_the_defaults_is_stable() {
        let expected = concat!(
            r#"{"socket":"/run/tvp/tvpd.sock","socket_mode":"0660","socket_group":null,"#,
            r#""tcti":"device:/dev/tpmrm0","state_dir":"/var/lib/tvp","platform_pcr":15,"#,
            r#""ek_handle":2164326401,"ak_handle":2164326402,"audit_nv_index":22020096,"#,
            r#""allowed_users":[],"allowed_groups":[],"platform_artefacts":[],"#,
            r#""request_timeout_ms":10000,"max_body_bytes":1048576,"max_connections":64,"#,
            r#""log_level":"info","log_format":"text","kvm_scan_interval_ms":5000,"#,
            r#""vmm_binary":null,"firmware":"/usr/local/lib/tvp/firmware.elf","#,
            r#""tap_prefix":"tvp","vm_bridge":null,"image_dir":"/var/lib/tvp/images","#,
            r#""vmm_user":null,"observer_users":[],"observer_groups":[],"#,
            r#""kms_socket_dir":"/run/tvp/kms","max_connections_per_uid":16,"#,
            r#""manager_reserved_connections":16,"denial_flush_interval_ms":5000,"#,
            r#""keep_vms_on_stop":false,"vmm_adoption_grace_secs":120,"#,
            r#""ak_algorithm":"ecc-p256"}"#
        );
        let got = Config::default().canonical_json();
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    #[test]
    fn every_key_has_a_flag_and_an_unset_flag_changes_nothing() {
        let args = Args::parse_from(["tvpd"]);
        let mut cfg = Config::default();
        args.keys.apply_to(&mut cfg);
        assert_eq!(cfg, Config::default());
        let args = Args::parse_from([
            "tvpd",
            "--socket-group",
            "tvp",
            "--allowed-users",
            "alice,1001",
            "--vmm-binary",
            "/v",
        ]);
        args.keys.apply_to(&mut cfg);
        assert_eq!(cfg.socket_group.as_deref(), Some("tvp"));
        assert_eq!(cfg.allowed_users, ["alice", "1001"]);
        assert_eq!(cfg.vmm_binary, Some(PathBuf::from("/v")));
    }

    #[test]
    fn help_shows_the_defaults() {
        let v = serde_json::to_value(Config::default()).unwrap();
        let handle = [clap::builder::Str::from("HANDLE")];
        assert_eq!(
            default_text(&v["ek_handle"], Some(&handle)).as_deref(),
            Some("0x81010001")
        );
        assert_eq!(default_text(&v["socket_group"], None), None);
        assert_eq!(
            default_text(&v["max_connections"], None).as_deref(),
            Some("64")
        );
    }

    #[test]
    fn shipped_config_file_documents_the_defaults() {
        let shipped = Config::from_toml(
            include_str!("../../../scripts/tvpd.toml"),
            Path::new("scripts/tvpd.toml"),
        )
        .unwrap();
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::from_toml("sokcet = \"/x\"", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("sokcet"), "{e}");
        let cfg = Config {
            platform_pcr: 23,
            ..Config::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("platform_pcr"));
        let cfg = Config {
            socket_mode: "999".into(),
            ..Config::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("socket_mode"));
        let cfg = Config {
            keep_vms_on_stop: true,
            vmm_adoption_grace_secs: 0,
            ..Config::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("keep_vms_on_stop"));
    }
}
