//! TAP devices of measured VMs: one persistent TAP per VM, named from the VM id
//! (`<tap_prefix><hex of SHA-256(id)>`, at most 15 characters), created and brought up
//! before the VMM starts, optionally attached to a bridge, and deleted on every end.
//!
//! Each TAP device gets the host-side MAC address `fe:` + 5 bytes of SHA-256 of its
//! name (as libvirt does), never its random one: a Linux bridge without an address
//! set takes the lowest MAC of its ports, so with random TAP addresses its MAC (the
//! boot server's, when it runs on the bridge) changed whenever a VM's TAP came or
//! went, and the VMs that had resolved the old one lost their TCP connection for
//! seconds (issue #19, the queued-1 failure). A bridge whose own address is not set
//! explicitly is still warned about at attach, since its MAC can follow its ports.
//! Everything goes through `/dev/net/tun` and interface ioctls, so no external tool is
//! needed.
//!
//! The `unsafe` blocks are ioctls on descriptors this module owns, each with a
//! correctly sized, initialised `struct ifreq`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::libc;
use sha2::{Digest, Sha256};

/// Longest interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;
const ARPHRD_ETHER: u16 = 1;
/// `addr_assign_type` of an address set from user space (`NET_ADDR_SET`).
const NET_ADDR_SET: &str = "3";

/// Errors creating, configuring or deleting a TAP device.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` cannot be opened.
    #[error("cannot open /dev/net/tun: {0} (load the tun module; tvpd needs CAP_NET_ADMIN)")]
    Open(io::Error),
    /// An ioctl failed.
    #[error("TAP {name}: {op} failed: {source}")]
    Ioctl {
        /// Device name.
        name: String,
        /// Which operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The name does not fit or is not a plain interface name.
    #[error("interface name '{0}' is empty, longer than {IFNAME_MAX} characters or contains '/' or whitespace; shorten tap_prefix")]
    Name(String),
    /// The configured bridge does not exist.
    #[error("bridge '{0}' does not exist (create it, or unset vm_bridge)")]
    NoBridge(String),
}

/// The TAP name of VM `id` under `prefix`.
pub fn name_for(prefix: &str, id: &str) -> String {
    let h = hex::encode(Sha256::digest(id.as_bytes()));
    let room = IFNAME_MAX.saturating_sub(prefix.len()).min(h.len());
    format!("{prefix}{}", &h[..room])
}

/// Whether `name` can be an interface name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// `struct ifreq` with the union used as flags (TUNSETIFF, SIOC[GS]IFFLAGS) or as an
/// interface index (SIOCBRADDIF).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> Result<IfReq, TapError> {
        if !valid_name(name) {
            return Err(TapError::Name(name.to_string()));
        }
        let mut r = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(r)
    }

    fn set_short(&mut self, v: libc::c_short) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    fn short(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_int(&mut self, v: libc::c_int) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }

    /// The union as `struct sockaddr` holding an Ethernet address (SIOCSIFHWADDR).
    fn set_hwaddr(&mut self, mac: [u8; 6]) {
        self.data[..2].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        self.data[2..8].copy_from_slice(&mac);
    }
}

/// The host-side MAC address of TAP `name`: `fe:` and 5 bytes of SHA-256 of the name
/// (locally administered, unicast, and above any vendor address, so never the lowest
/// port of a bridge with an uplink).
pub fn host_mac(name: &str) -> [u8; 6] {
    let h = Sha256::digest(name.as_bytes());
    [0xfe, h[0], h[1], h[2], h[3], h[4]]
}

fn set_mac(name: &str, mac: [u8; 6]) -> Result<(), TapError> {
    let s = inet_socket()?;
    let mut req = IfReq::new(name)?;
    req.set_hwaddr(mac);
    // SAFETY: SIOCSIFHWADDR reads the name and the `struct sockaddr` of the `ifreq` we
    // own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFHWADDR, &mut req as *mut IfReq) } < 0 {
        return Err(ioctl_err(name, "SIOCSIFHWADDR"));
    }
    Ok(())
}

fn ioctl_err(name: &str, op: &'static str) -> TapError {
    TapError::Ioctl {
        name: name.to_string(),
        op,
        source: io::Error::last_os_error(),
    }
}

fn set_persist(name: &str, persist: bool) -> Result<(), TapError> {
    let mut req = IfReq::new(name)?;
    req.set_short(IFF_TAP | IFF_NO_PI);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(TapError::Open)?;
    // SAFETY: `f` is an open /dev/net/tun descriptor; `req` is a 40-byte `struct ifreq`
    // that lives across the call; the kernel reads and writes only within it.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(ioctl_err(name, "TUNSETIFF"));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETPERSIST, libc::c_ulong::from(persist)) } < 0 {
        return Err(ioctl_err(name, "TUNSETPERSIST"));
    }
    Ok(())
}

fn inet_socket() -> Result<OwnedFd, TapError> {
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(TapError::Open(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bring_up(name: &str) -> Result<(), TapError> {
    let s = inet_socket()?;
    let mut req = IfReq::new(name)?;
    // SAFETY: SIOCGIFFLAGS fills the flags of the `ifreq` we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req as *mut IfReq) } < 0 {
        return Err(ioctl_err(name, "SIOCGIFFLAGS"));
    }
    let flags = req.short() | libc::IFF_UP as libc::c_short;
    req.set_short(flags);
    // SAFETY: SIOCSIFFLAGS reads the `ifreq` we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req as *mut IfReq) } < 0 {
        return Err(ioctl_err(name, "SIOCSIFFLAGS"));
    }
    Ok(())
}

fn attach_to_bridge(name: &str, bridge: &str) -> Result<(), TapError> {
    if !exists(bridge)
        || !Path::new("/sys/class/net")
            .join(bridge)
            .join("bridge")
            .exists()
    {
        return Err(TapError::NoBridge(bridge.to_string()));
    }
    let cname = std::ffi::CString::new(name).map_err(|_| TapError::Name(name.to_string()))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(ioctl_err(name, "if_nametoindex"));
    }
    let s = inet_socket()?;
    let mut req = IfReq::new(bridge)?;
    req.set_int(index as libc::c_int);
    // SAFETY: SIOCBRADDIF reads the bridge name and the port's index from our `ifreq`.
    if unsafe { libc::ioctl(s.as_raw_fd(), SIOCBRADDIF, &mut req as *mut IfReq) } < 0 {
        return Err(ioctl_err(name, "SIOCBRADDIF"));
    }
    let assigned = std::fs::read_to_string(
        Path::new("/sys/class/net")
            .join(bridge)
            .join("addr_assign_type"),
    )
    .unwrap_or_default();
    if assigned.trim() != NET_ADDR_SET {
        log::warn!(bridge = bridge; "the bridge's MAC address is not set explicitly: it follows its ports' addresses, and VMs on it lose their peer on the bridge for seconds whenever it changes; set one (ip link set BRIDGE address ...)");
    }
    Ok(())
}

/// Create the persistent TAP device `name`, bring it up and, with `bridge`, make it a
/// port of that bridge. On failure nothing is left behind.
pub fn create(name: &str, bridge: Option<&str>) -> Result<(), TapError> {
    set_persist(name, true)?;
    let configured = set_mac(name, host_mac(name))
        .and_then(|()| bring_up(name))
        .and_then(|()| match bridge {
            Some(b) => attach_to_bridge(name, b),
            None => Ok(()),
        });
    if let Err(e) = configured {
        let _ = set_persist(name, false);
        return Err(e);
    }
    log::info!(tap = name, bridge = bridge.unwrap_or(""); "TAP device created");
    Ok(())
}

/// Delete the TAP device `name`; one that does not exist is not an error.
pub fn delete(name: &str) -> Result<(), TapError> {
    if !exists(name) {
        return Ok(());
    }
    set_persist(name, false)?;
    log::info!(tap = name; "TAP device deleted");
    Ok(())
}

/// Whether a network device of that name exists (in tvpd's network namespace).
pub fn exists(name: &str) -> bool {
    valid_name(name) && Path::new("/sys/class/net").join(name).exists()
}

/// TUN/TAP devices whose name starts with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .filter(|n| {
            Path::new("/sys/class/net")
                .join(n)
                .join("tun_flags")
                .exists()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_are_stable_and_distinct() {
        let a = name_for("tvp", "vm-1");
        assert_eq!(a.len(), IFNAME_MAX);
        assert!(a.starts_with("tvp"));
        assert!(valid_name(&a));
        assert_eq!(a, name_for("tvp", "vm-1"));
        assert_ne!(a, name_for("tvp", "vm-2"));
    }

    #[test]
    fn host_macs_are_stable_unicast_and_above_vendor_addresses() {
        let a = host_mac("tvpa1b2");
        assert_eq!(a, host_mac("tvpa1b2"));
        assert_ne!(a, host_mac("tvpa1b3"));
        assert_eq!(a[0], 0xfe, "locally administered, unicast, high");
        assert_eq!(a[0] & 1, 0);
    }

    #[test]
    fn bad_names_are_refused_before_any_ioctl() {
        for n in ["", "a/b", "sixteen-chars-xx", "a b", "x:y", ".."] {
            assert!(!valid_name(n), "{n}");
            assert!(matches!(IfReq::new(n), Err(TapError::Name(_))));
        }
    }
}
