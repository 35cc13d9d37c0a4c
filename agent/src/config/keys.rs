//! Every configuration key of `tvpd`, defined once: its documentation, type, default
//! and command-line flag. From this table [`config_keys!`] derives the [`Config`]
//! struct (TOML parsing with unknown keys refused, and the canonical JSON that is
//! measured into the platform PCR, in table order), its `Default`, the flags
//! ([`Overrides`], one `Option` per key) and the merge of the flags over the file
//! ([`Overrides::apply_to`]).
//!
//! The order of the rows is the order of the canonical JSON: reordering, renaming or
//! retyping a key changes the platform PCR that verifiers expect.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{parse_handle, DEFAULT_AUDIT_NV_INDEX, DEFAULT_PLATFORM_PCR, DEFAULT_SOCKET};
use crate::tpm::provision::{AkAlgorithm, DEFAULT_AK_HANDLE, DEFAULT_EK_HANDLE};

/// Declares the configuration keys. Each row:
///
/// ```text
/// /// Documentation (the struct field's doc and the flag's help).
/// key: Type = default_expression, flag FlagType [clap arg attributes];
/// ```
///
/// `FlagType` is what the flag parses: the key's type, or `T` for an `Option<T>` key
/// (a flag sets it). The flag is `--key-with-dashes`.
macro_rules! config_keys {
    ($(
        $(#[doc = $doc:literal])+
        $key:ident: $ty:ty = $default:expr, flag $flag:ty [$($arg:tt)*];
    )+) => {
        /// Effective configuration of `tvpd`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Config {
            $(
                $(#[doc = $doc])+
                pub $key: $ty,
            )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $($key: $default,)+
                }
            }
        }

        /// The command-line flags of the configuration keys: each given flag overrides
        /// the file's key of the same name.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct Overrides {
            $(
                $(#[doc = $doc])+
                #[arg(long, $($arg)*)]
                pub $key: Option<$flag>,
            )+
        }

        impl Overrides {
            /// Flags win over the file.
            pub fn apply_to(&self, cfg: &mut Config) {
                $(
                    if let Some(v) = &self.$key {
                        cfg.$key = v.clone().into();
                    }
                )+
            }
        }
    };
}

config_keys! {
    /// Path of the API's Unix socket.
    socket: PathBuf = PathBuf::from(DEFAULT_SOCKET), flag PathBuf [value_name = "PATH"];
    /// Permission bits of the socket file, an octal string.
    socket_mode: String = "0660".into(), flag String [value_name = "MODE"];
    /// Group owning the socket file (name or number); unset keeps root's group.
    socket_group: Option<String> = None, flag String [value_name = "GROUP"];
    /// TPM access: device:/dev/tpmrm0 on hosts, swtpm:host=127.0.0.1,port=2321 for development.
    tcti: String = "device:/dev/tpmrm0".into(), flag String [value_name = "TCTI"];
    /// Directory for persistent state (host event log, audit log, VMs).
    state_dir: PathBuf = PathBuf::from("/var/lib/tvp"), flag PathBuf [value_name = "DIR"];
    /// Non-resettable PCR (0-15) receiving the platform measurement.
    platform_pcr: u32 = DEFAULT_PLATFORM_PCR, flag u32 [value_name = "N"];
    /// Persistent handle of the endorsement key.
    ek_handle: u32 = DEFAULT_EK_HANDLE, flag u32 [value_name = "HANDLE", value_parser = parse_handle];
    /// Persistent handle of the attestation key.
    ak_handle: u32 = DEFAULT_AK_HANDLE, flag u32 [value_name = "HANDLE", value_parser = parse_handle];
    /// NV index (owner range) of the audit log's TPM anchor, an extend-type index.
    audit_nv_index: u32 = DEFAULT_AUDIT_NV_INDEX, flag u32 [value_name = "HANDLE", value_parser = parse_handle];
    /// Users (names or uids, comma-separated) allowed to call the API; root always is.
    allowed_users: Vec<String> = Vec::new(), flag Vec<String> [value_name = "USERS", value_delimiter = ','];
    /// Groups (names or gids, comma-separated) whose members may call the API.
    allowed_groups: Vec<String> = Vec::new(), flag Vec<String> [value_name = "GROUPS", value_delimiter = ','];
    /// Further platform files measured and watched at start, after tvpd, tvp-vmm and the firmware (which are always measured); comma-separated paths.
    platform_artefacts: Vec<PathBuf> = Vec::new(), flag Vec<PathBuf> [value_name = "PATHS", value_delimiter = ','];
    /// Time a client has to send a whole request, in milliseconds.
    request_timeout_ms: u64 = 10_000, flag u64 [value_name = "MS"];
    /// Largest request body accepted, in bytes.
    max_body_bytes: usize = 1 << 20, flag usize [value_name = "BYTES"];
    /// Most API connections served at once; a caller beyond it (or beyond its share) is answered 503 and closed.
    max_connections: usize = 64, flag usize [value_name = "N"];
    /// Log level: error, warn, info, debug or trace.
    log_level: String = "info".into(), flag String [value_name = "LEVEL"];
    /// Log format: text for people, json for log collectors (one object per line).
    log_format: String = "text".into(), flag String [value_name = "FORMAT"];
    /// How often to look for KVM VMs tvpd did not create, in milliseconds; 0 = never.
    kvm_scan_interval_ms: u64 = 5000, flag u64 [value_name = "MS"];
    /// The tvp-vmm binary; unset = tvp-vmm next to tvpd.
    vmm_binary: Option<PathBuf> = None, flag PathBuf [value_name = "PATH"];
    /// The measured VMs' firmware image.
    firmware: PathBuf = PathBuf::from("/usr/local/lib/tvp/firmware.elf"), flag PathBuf [value_name = "PATH"];
    /// Prefix of the VMs' TAP device names (name = prefix + hex of the id's SHA-256, 15 characters in all); TAP devices with it are orphans and deleted at start.
    tap_prefix: String = "tvp".into(), flag String [value_name = "PREFIX"];
    /// Bridge every VM's TAP device is attached to; unset = left for the cloud manager.
    vm_bridge: Option<String> = None, flag String [value_name = "BRIDGE"];
    /// The only directory tvpd opens VM images and disks in (POST /v1/vms image and disk, POST /v1/images/verify).
    image_dir: PathBuf = PathBuf::from("/var/lib/tvp/images"), flag PathBuf [value_name = "DIR"];
    /// User each tvp-vmm drops to once its devices and files are open: a user name (its primary group) or UID:GID; unset = the VMMs keep running as root (warned).
    vmm_user: Option<String> = None, flag String [value_name = "USER"];
    /// Users (names or uids, comma-separated) with the read-only observer role: host information, VM list and views, quotes of the platform PCR. allowed_users/allowed_groups (and root) are managers.
    observer_users: Vec<String> = Vec::new(), flag Vec<String> [value_name = "USERS", value_delimiter = ','];
    /// Groups (names or gids, comma-separated) whose members have the observer role; memberships are resolved at start and on SIGHUP.
    observer_groups: Vec<String> = Vec::new(), flag Vec<String> [value_name = "GROUPS", value_delimiter = ','];
    /// The only directory whose Unix sockets tvpd connects to as a tenant's key-management service (kms_socket of POST /v1/vms and POST /v1/images/verify).
    kms_socket_dir: PathBuf = PathBuf::from("/run/tvp/kms"), flag PathBuf [value_name = "DIR"];
    /// Most API connections one uid may hold at once; further ones are answered 503 and closed.
    max_connections_per_uid: usize = 16, flag usize [value_name = "N"];
    /// Of max_connections, how many only managers may take: observers never fill them.
    manager_reserved_connections: usize = 16, flag usize [value_name = "N"];
    /// How often refused requests, counted per caller uid and reason, are written to the audit log as one record, in milliseconds (also before the next allowed request's record).
    denial_flush_interval_ms: u64 = 5000, flag u64 [value_name = "MS"];
    /// On a graceful stop (SIGTERM), leave running VMs (handed over, no PCR lease) to the next tvpd instead of stopping them, for upgrades; VMs still booting are stopped. Needs KillMode=process in the systemd unit (docs/vm-lifecycle.md).
    keep_vms_on_stop: bool = false, flag bool [value_name = "BOOL", action = clap::ArgAction::Set];
    /// How long a running VM's tvp-vmm waits for a restarted tvpd to re-adopt it once its channel closed, in seconds; past it the VMM stops the VM. 0 = never wait.
    vmm_adoption_grace_secs: u64 = 120, flag u64 [value_name = "SECS"];
    /// Algorithm of the attestation key created at first start: ecc-p256 (ECDSA-SHA256) or rsa-2048 (RSASSA-SHA256). An AK already at ak_handle is kept whatever its algorithm.
    ak_algorithm: AkAlgorithm = AkAlgorithm::EccP256, flag AkAlgorithm [value_name = "ALG", value_enum];
}
