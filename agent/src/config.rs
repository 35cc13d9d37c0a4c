//! `tvpd`'s configuration: a TOML file (default `/etc/tvp/tvpd.toml`) whose every key
//! can also be given as a command-line flag of the same name (`state_dir` ↔
//! `--state-dir`); a flag wins over the file. Every key and its default is documented
//! in `docs/configuration.md` and by `tvpd --help`.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::tpm::provision::{DEFAULT_AK_HANDLE, DEFAULT_EK_HANDLE};

/// Default configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tvp/tvpd.toml";
/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/tvp/tvpd.sock";
/// Default platform PCR: non-resettable, not used by firmware, shim or GRUB.
pub const DEFAULT_PLATFORM_PCR: u32 = 15;
/// Default NV index of the audit anchor (owner-defined range, `docs/audit.md`).
pub const DEFAULT_AUDIT_NV_INDEX: u32 = 0x0150_0000;

/// Effective configuration of `tvpd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Path of the API's Unix socket.
    pub socket: PathBuf,
    /// Permission bits of the socket file, octal string.
    pub socket_mode: String,
    /// Group owning the socket file (name or number); unset keeps root's group.
    pub socket_group: Option<String>,
    /// TPM access: `device:/dev/tpmrm0` on hosts, `swtpm:host=H,port=P` for development.
    pub tcti: String,
    /// Directory for persistent state (host event log, later VM and audit state).
    pub state_dir: PathBuf,
    /// Non-resettable PCR receiving the platform measurement.
    pub platform_pcr: u32,
    /// Persistent handle of the endorsement key.
    pub ek_handle: u32,
    /// Persistent handle of the attestation key.
    pub ak_handle: u32,
    /// NV index (owner range) of the audit log's TPM anchor, an extend-type index.
    pub audit_nv_index: u32,
    /// Users (names or uids) allowed to call the API. root is always allowed.
    pub allowed_users: Vec<String>,
    /// Groups (names or gids) whose members may call the API.
    pub allowed_groups: Vec<String>,
    /// Further platform files measured at start besides `tvpd` itself (tvp-vmm, firmware).
    pub platform_artefacts: Vec<PathBuf>,
    /// Time a client has to send a whole request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most API connections served at once; further ones wait.
    pub max_connections: usize,
    /// Log level: error, warn, info, debug, trace.
    pub log_level: String,
    /// Log format: `text` for people, `json` for log collectors (one object per line).
    pub log_format: String,
    /// How often to look for KVM VMs tvpd did not create, in milliseconds; 0 = never.
    pub kvm_scan_interval_ms: u64,
    /// The `tvp-vmm` binary; unset = `tvp-vmm` next to `tvpd`.
    pub vmm_binary: Option<PathBuf>,
    /// The measured VMs' firmware image.
    pub firmware: PathBuf,
    /// Prefix of the VMs' TAP device names (name = prefix + hex of the id's SHA-256, 15
    /// characters in all). At start, TAP devices with this prefix are orphans and deleted.
    pub tap_prefix: String,
    /// Bridge every VM's TAP device is attached to; unset = left for the cloud manager.
    pub vm_bridge: Option<String>,
    /// Directory holding VM images; tvpd opens images (`POST /v1/vms` `image`,
    /// `POST /v1/images/verify`) only inside it.
    pub image_dir: PathBuf,
    /// User each `tvp-vmm` drops to once its devices and files are open: a user name
    /// (its primary group) or `UID:GID`. Unset = the VMMs keep running as root (warned).
    pub vmm_user: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: "0660".into(),
            socket_group: None,
            tcti: "device:/dev/tpmrm0".into(),
            state_dir: PathBuf::from("/var/lib/tvp"),
            platform_pcr: DEFAULT_PLATFORM_PCR,
            ek_handle: DEFAULT_EK_HANDLE,
            ak_handle: DEFAULT_AK_HANDLE,
            audit_nv_index: DEFAULT_AUDIT_NV_INDEX,
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            platform_artefacts: Vec::new(),
            request_timeout_ms: 10_000,
            max_body_bytes: 1 << 20,
            max_connections: 64,
            log_level: "info".into(),
            log_format: "text".into(),
            kvm_scan_interval_ms: 5000,
            vmm_binary: None,
            firmware: PathBuf::from("/usr/local/lib/tvp/firmware.elf"),
            tap_prefix: "tvp".into(),
            vm_bridge: None,
            vmm_user: None,
            image_dir: PathBuf::from("/var/lib/tvp/images"),
        }
    }
}

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
/// 70 internal error; 65 the audit log does not verify or does not match its TPM anchor.
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
    /// Path of the API's Unix socket [default: /run/tvp/tvpd.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket file, octal [default: 0660].
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Group owning the socket file.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// TPM TCTI: device:/dev/tpmrm0 (hosts) or swtpm:host=127.0.0.1,port=2321 (development).
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// Directory for persistent state [default: /var/lib/tvp].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Platform PCR (non-resettable) for the platform measurement [default: 15].
    #[arg(long, value_name = "N")]
    pub platform_pcr: Option<u32>,
    /// Persistent handle of the EK [default: 0x81010001].
    #[arg(long, value_name = "HANDLE", value_parser = parse_handle)]
    pub ek_handle: Option<u32>,
    /// Persistent handle of the AK [default: 0x81010002].
    #[arg(long, value_name = "HANDLE", value_parser = parse_handle)]
    pub ak_handle: Option<u32>,
    /// NV index of the audit anchor [default: 0x01500000].
    #[arg(long, value_name = "HANDLE", value_parser = parse_handle)]
    pub audit_nv_index: Option<u32>,
    /// Users (names or uids, comma-separated) allowed to call the API; root always is.
    #[arg(long, value_name = "USERS", value_delimiter = ',')]
    pub allowed_users: Option<Vec<String>>,
    /// Groups (names or gids, comma-separated) whose members may call the API.
    #[arg(long, value_name = "GROUPS", value_delimiter = ',')]
    pub allowed_groups: Option<Vec<String>>,
    /// Further platform files measured at start (comma-separated paths).
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub platform_artefacts: Option<Vec<PathBuf>>,
    /// Time a client has to send a request, ms [default: 10000].
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Largest request body, bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most connections served at once [default: 64].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Scan for KVM VMs tvpd did not create every MS milliseconds; 0 = off [default: 5000].
    #[arg(long, value_name = "MS")]
    pub kvm_scan_interval_ms: Option<u64>,
    /// The tvp-vmm binary [default: tvp-vmm next to tvpd].
    #[arg(long, value_name = "PATH")]
    pub vmm_binary: Option<PathBuf>,
    /// The measured VMs' firmware image [default: /usr/local/lib/tvp/firmware.elf].
    #[arg(long, value_name = "PATH")]
    pub firmware: Option<PathBuf>,
    /// Prefix of the VMs' TAP device names; TAP devices with it are deleted at start [default: tvp].
    #[arg(long, value_name = "PREFIX")]
    pub tap_prefix: Option<String>,
    /// Bridge the VMs' TAP devices are attached to [default: none].
    #[arg(long, value_name = "BRIDGE")]
    pub vm_bridge: Option<String>,
    /// Directory tvpd opens VM images in [default: /var/lib/tvp/images].
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// User the VMMs drop to: a name or UID:GID [default: none, VMMs stay root].
    #[arg(long, value_name = "USER")]
    pub vmm_user: Option<String>,
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
        cfg.apply(args);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Flags win over the file.
    fn apply(&mut self, a: &Args) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        set(&mut self.socket, &a.socket);
        set(&mut self.socket_mode, &a.socket_mode);
        if a.socket_group.is_some() {
            self.socket_group = a.socket_group.clone();
        }
        set(&mut self.tcti, &a.tcti);
        set(&mut self.state_dir, &a.state_dir);
        set(&mut self.platform_pcr, &a.platform_pcr);
        set(&mut self.ek_handle, &a.ek_handle);
        set(&mut self.ak_handle, &a.ak_handle);
        set(&mut self.audit_nv_index, &a.audit_nv_index);
        set(&mut self.allowed_users, &a.allowed_users);
        set(&mut self.allowed_groups, &a.allowed_groups);
        set(&mut self.platform_artefacts, &a.platform_artefacts);
        set(&mut self.request_timeout_ms, &a.request_timeout_ms);
        set(&mut self.max_body_bytes, &a.max_body_bytes);
        set(&mut self.max_connections, &a.max_connections);
        set(&mut self.log_level, &a.log_level);
        set(&mut self.log_format, &a.log_format);
        set(&mut self.kvm_scan_interval_ms, &a.kvm_scan_interval_ms);
        if a.vmm_binary.is_some() {
            self.vmm_binary = a.vmm_binary.clone();
        }
        set(&mut self.firmware, &a.firmware);
        set(&mut self.tap_prefix, &a.tap_prefix);
        if a.vm_bridge.is_some() {
            self.vm_bridge = a.vm_bridge.clone();
        }
        if a.vmm_user.is_some() {
            self.vmm_user = a.vmm_user.clone();
        }
        set(&mut self.image_dir, &a.image_dir);
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
        if self.tcti.trim().is_empty() {
            return bad("tcti", "must not be empty".into());
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
        cfg.apply(&args);
        assert_eq!(cfg.state_dir, PathBuf::from("/b"));
        assert_eq!(cfg.tcti, "swtpm:port=1");
        assert_eq!(cfg.ek_handle, 0x8101_0009);
    }

    #[test]
    fn shipped_config_file_documents_the_defaults() {
        let shipped = Config::from_toml(
            include_str!("../../scripts/tvpd.toml"),
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
    }
}
