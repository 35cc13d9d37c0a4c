//! The network: the virtio-net device (virtio-mmio at the platform's fixed address,
//! `virtio-drivers`) as a smoltcp device, and the interface with the static VIP,
//! netmask and gateway from the configuration page. Polled: while the receive ring
//! holds frames they are taken from guest memory without touching the device; only
//! when it is empty does the driver read the device's interrupt status (one VM exit),
//! which is when tvp-vmm moves every waiting frame into the posted buffers. The ring
//! is full ([`QUEUE`] buffers posted) and the device suppresses the driver's receive
//! notifications (`VIRTIO_F_EVENT_IDX`), so a burst of frames costs one exit, not
//! three per frame.

use crate::clock;
use crate::hal::FwHal;
use alloc::vec;
use core::ptr::NonNull;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use tvp_abi::config::Config;
use tvp_abi::layout::{VIRTIO_MMIO_SIZE, VIRTIO_NET_MMIO_GPA};
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

/// Receive/transmit queue size the driver uses: every receive buffer is posted, so a
/// TCP window's worth of frames (256 KiB and more, [`crate::tcp`]) fits in the ring.
const QUEUE: usize = 256;
/// Receive buffer size (an Ethernet frame plus the virtio-net header).
const BUF_LEN: usize = 2048;
/// MTU.
const MTU: usize = 1500;

/// The virtio-net driver type.
pub type NetDevice = VirtIONet<FwHal, MmioTransport<'static>, QUEUE>;

/// Why the network could not come up.
#[derive(Debug)]
pub enum NetError {
    /// No virtio-mmio device at the platform address.
    NoDevice,
    /// The device is not a network device or its initialization failed.
    Init,
}

/// Finds and initializes the virtio-net device.
pub fn open() -> Result<NetDevice, NetError> {
    let header =
        NonNull::new(VIRTIO_NET_MMIO_GPA as *mut VirtIOHeader).ok_or(NetError::NoDevice)?;
    // SAFETY: the stub maps the virtio-mmio window [VIRTIO_NET_MMIO_GPA, +2 MiB) user
    // read-write uncached; it is device registers, valid for the program's lifetime
    // and used only through this transport. Without a device the reads return
    // all-ones and `new` fails on the magic value.
    let transport = unsafe { MmioTransport::new(header, VIRTIO_MMIO_SIZE as usize) }
        .map_err(|_| NetError::NoDevice)?;
    VirtIONet::new(transport, BUF_LEN).map_err(|_| NetError::Init)
}

/// The device's config-generation register: reading it (any register access does)
/// lets tvp-vmm deliver waiting frames, without waiting.
const CONFIG_GENERATION: u64 = VIRTIO_NET_MMIO_GPA + 0xfc;
/// The device's interrupt-status register: reading it when the device has nothing
/// lets tvp-vmm block the vCPU until a frame arrives (at most 0.5 ms): the idle poll.
const INTERRUPT_STATUS: u64 = VIRTIO_NET_MMIO_GPA + 0x60;

/// Counters of the receive path (printed after the workload transfer).
#[derive(Debug, Default, Clone, Copy)]
pub struct PhyStats {
    /// Frames taken from the receive ring.
    pub rx_frames: u64,
    /// Frames handed to the device for sending.
    pub tx_frames: u64,
    /// Register reads (each one a VM exit) that asked for frames on an empty ring.
    pub kicks: u64,
    /// Idle polls (an exit that may wait for a frame, [`Phy::idle`]).
    pub idle_polls: u64,
}

/// The device as seen by smoltcp.
pub struct Phy {
    dev: NetDevice,
    /// The counters.
    pub stats: PhyStats,
}

impl Phy {
    /// Asks the device for waiting frames without waiting: one register read.
    fn kick(&mut self) {
        self.stats.kicks += 1;
        // SAFETY: the stub maps the virtio-mmio window user read-write uncached (see
        // `open`); a 32-bit aligned read of a device register has no other effect.
        let _ = crate::profile::time(crate::profile::Phase::Kick, || unsafe {
            core::ptr::read_volatile(CONFIG_GENERATION as *const u32)
        });
    }

    /// Nothing to do until a frame arrives (what was to be sent is sent): read the
    /// interrupt status, which on an idle device blocks until a frame arrives or
    /// 0.5 ms passed; the host side gets the CPU instead of a spinning guest. The
    /// status is not acknowledged (nothing uses interrupts).
    pub fn idle(&mut self) {
        self.stats.idle_polls += 1;
        // SAFETY: as in `kick`.
        let _ = crate::profile::time(crate::profile::Phase::Idle, || unsafe {
            core::ptr::read_volatile(INTERRUPT_STATUS as *const u32)
        });
    }
}

/// A received frame, copied out of the driver's buffer (recycled at once) into a
/// fixed buffer: no heap allocation per frame.
pub struct RxToken {
    frame: [u8; FRAME_MAX],
    len: usize,
}

/// Largest frame the driver's buffers hold (an Ethernet frame of [`MTU`]).
const FRAME_MAX: usize = MTU + 14;

/// Permission to send one frame.
pub struct TxToken<'a>(&'a mut Phy);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame.get(..self.len).unwrap_or_default())
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut tx = self.0.dev.new_tx_buffer(len);
        let r = f(tx.packet_mut());
        // A full queue or device error drops the frame; TCP retransmits.
        self.0.stats.tx_frames += 1;
        let dev = &mut self.0.dev;
        let _ = crate::profile::time(crate::profile::Phase::Send, || dev.send(tx));
        r
    }
}

impl phy::Device for Phy {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(RxToken, TxToken<'_>)> {
        // Frames already in the ring cost no exit; an empty ring asks the device.
        if !self.dev.can_recv() {
            self.kick();
            if !self.dev.can_recv() {
                return None;
            }
        }
        let t0 = crate::profile::cycles();
        let rx = self.dev.receive().ok()?;
        let p = rx.packet();
        let len = p.len().min(FRAME_MAX);
        let mut frame = [0u8; FRAME_MAX];
        frame[..len].copy_from_slice(&p[..len]);
        // The device suppresses receive notifications: recycling is a ring write.
        let _ = self.dev.recycle_rx_buffer(rx);
        crate::profile::add(
            crate::profile::Phase::Ring,
            crate::profile::cycles().wrapping_sub(t0),
        );
        self.stats.rx_frames += 1;
        Some((RxToken { frame, len }, TxToken(self)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = FRAME_MAX;
        caps.max_burst_size = Some(1);
        caps.medium = Medium::Ethernet;
        caps
    }
}

/// The interface, its device and its sockets.
pub struct Net {
    /// smoltcp's interface (VIP, routes).
    pub iface: Interface,
    /// The device.
    pub phy: Phy,
    /// The sockets.
    pub sockets: SocketSet<'static>,
}

/// smoltcp's clock.
pub fn now() -> Instant {
    Instant::from_millis(clock::now_ms() as i64)
}

impl Net {
    /// Brings the interface up with the configuration's MAC, VIP/prefix and gateway.
    pub fn up(dev: NetDevice, cfg: &Config<'_>, random_seed: u64) -> Self {
        let mut phy = Phy {
            dev,
            stats: PhyStats::default(),
        };
        let mut ic = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(cfg.mac)));
        ic.random_seed = random_seed;
        let mut iface = Interface::new(ic, &mut phy, now());
        let [a, b, c, d] = cfg.vip;
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), cfg.prefix_len));
        });
        if cfg.gateway != [0; 4] {
            let [a, b, c, d] = cfg.gateway;
            let _ = iface
                .routes_mut()
                .add_default_ipv4_route(Ipv4Address::new(a, b, c, d));
        }
        Net {
            iface,
            phy,
            sockets: SocketSet::new(vec![]),
        }
    }

    /// One round of the stack: receive, process, transmit.
    pub fn poll(&mut self) {
        crate::profile::time(crate::profile::Phase::Poll, || {
            self.iface.poll(now(), &mut self.phy, &mut self.sockets)
        });
    }
}
