//! A TAP device, opened by name before the VM starts (the lockdown forbids `open`
//! afterwards). Non-blocking: the polled virtio-net device reads it when the guest
//! touches the device and never waits.
//!
//! Opened with a vnet header (`IFF_VNET_HDR`) and the receive offloads checksum and
//! TSO4 (`TUNSETOFFLOAD`): the host hands over whole TCP segments of up to 64 KiB with
//! their checksums left to the receiver, one `read` each; [`crate::offload`] splits
//! them for the guest.

use crate::error::VmmError;
use crate::offload::{VnetHdr, VNET_HDR_LEN};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Where a NIC's frames go and come from (a TAP device; tests use a memory backend).
pub trait FrameBackend: Send {
    /// Reads one packet into `buf` with its offload header; `Ok(None)` when none is
    /// waiting. Never blocks. A TSO segment of up to [`crate::offload::PACKET_MAX`]
    /// bytes or a frame whose checksum is left to the receiver (see
    /// [`crate::offload`]); backends without offloads give frames with an empty header.
    fn recv_packet(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, VnetHdr)>>;
    /// Sends one frame (may drop it when the backend is congested). Never blocks.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// A name for logs.
    fn name(&self) -> &str;
    /// Waits at most `timeout` for a frame to arrive; whether one may have. Backends
    /// that cannot wait return `false` at once.
    fn wait(&mut self, _timeout: std::time::Duration) -> bool {
        false
    }
    /// The descriptor to wait on for frames, if the backend has one (virtio-net's
    /// receive thread polls it in interrupt mode).
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// An open TAP interface: Ethernet frames (and TSO segments) in with a vnet header,
/// Ethernet frames out with an empty one, no packet info.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the TAP interface `name` (created beforehand, e.g. by tvpd or
    /// `ip tuntap add`; attaching also creates it if the caller may).
    pub fn open(name: &str) -> Result<Self, VmmError> {
        let err = |m: String| VmmError::Tap(format!("{name}: {m}"));
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
            return Err(err("invalid interface name".into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| err(format!("cannot open /dev/net/tun: {e}")))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads (and may write back) one `struct ifreq`; `req` is a
        // properly sized, live `repr(C)` value with a NUL-terminated name.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(err(format!(
                "TUNSETIFF failed: {}",
                io::Error::last_os_error()
            )));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, a live local.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            return Err(err(format!(
                "TUNSETVNETHDRSZ failed: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: TUNSETOFFLOAD takes the offload flags by value and writes nothing.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                TUNSETOFFLOAD,
                libc::c_ulong::from(TUN_F_CSUM | TUN_F_TSO4),
            )
        };
        if rc < 0 {
            return Err(err(format!(
                "TUNSETOFFLOAD (checksum, TSO4) failed: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }
}

impl FrameBackend for Tap {
    fn name(&self) -> &str {
        &self.name
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn recv_packet(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, VnetHdr)>> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        let mut bufs = [io::IoSliceMut::new(&mut hdr), io::IoSliceMut::new(buf)];
        match self.file.read_vectored(&mut bufs) {
            Ok(n) if n < VNET_HDR_LEN => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{n}-byte read, shorter than the vnet header"),
            )),
            Ok(n) => Ok(Some((n - VNET_HDR_LEN, VnetHdr::parse(&hdr)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn wait(&mut self, timeout: std::time::Duration) -> bool {
        let mut fd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: ppoll reads one valid pollfd and the timespec, both live locals, and
        // writes only `fd.revents`; a null sigmask leaves the mask unchanged.
        let n = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
        n > 0
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // An all-zero vnet header: a complete frame, nothing for the host to do.
        let hdr = [0u8; VNET_HDR_LEN];
        match self
            .file
            .write_vectored(&[io::IoSlice::new(&hdr), io::IoSlice::new(frame)])
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}
