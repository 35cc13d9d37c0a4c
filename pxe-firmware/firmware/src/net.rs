//! The network: the virtio-net device (virtio-mmio at the platform's fixed address,
//! [`crate::virtio_net`]) as a smoltcp device, and the interface with the static VIP,
//! netmask and gateway from the configuration page. Polled: while the receive ring
//! holds frames they are taken from guest memory without touching the device; only
//! when it is empty does the driver read a device register (one VM exit), which is
//! when tvp-vmm moves every waiting frame into the posted buffers (its I/O thread also
//! does as frames arrive). The ring is full (every receive buffer posted) and the
//! device suppresses the driver's receive notifications (`VIRTIO_F_EVENT_IDX`), so a
//! burst of frames costs one exit, not three per frame.
//!
//! Bigger frames (issue #18): the driver takes whole TCP segments (`GUEST_TSO4` with
//! `GUEST_CSUM`), so the host's TSO segments of up to 64 KiB arrive as one frame each
//! in a 64 KiB receive buffer, and smoltcp takes each frame in its buffer (no copy):
//! the buffer is posted again once smoltcp is done with it.
//!
//! Sending does not wait for the device: a frame goes into one of [`TX_BUFS`] buffers
//! of its own and onto the transmit queue, and the buffer is taken back once the
//! device returned it. tvp-vmm's I/O thread sends it (the notify only wakes that
//! thread), so the host's work for the frame runs beside the firmware, and the same
//! thread fills the receive ring while the firmware works through it.

use crate::clock;
use crate::virtio_net::{DevError, HDR_LEN, LARGE_BUF_LEN};
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ptr::NonNull;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use tvp_abi::config::Config;
use tvp_abi::layout::{VIRTIO_MMIO_SIZE, VIRTIO_NET_MMIO_GPA};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

/// Receive/transmit queue size the driver uses: every receive buffer is posted, so a
/// TCP window's worth of frames (256 KiB and more, [`crate::tcp`]) fits in the ring.
const QUEUE: usize = 256;
/// Receive and transmit buffer size (an Ethernet frame plus the virtio-net header).
const BUF_LEN: usize = 2048;
/// Receive buffers when the device hands over whole TCP segments
/// ([`crate::virtio_net::NetDevice::large_receive`]): at most 128 of 64 KiB (8 MiB,
/// a ring's worth of segments well beyond the TCP window), at most a quarter of the
/// heap; with fewer than [`LARGE_BUFS_MIN`] (a heap under 8 MiB, a VM of less than
/// about 12 MiB) the driver does not ask for whole segments.
const LARGE_BUFS: usize = 128;
/// Fewest 64 KiB receive buffers worth taking whole segments for (2 MiB).
const LARGE_BUFS_MIN: usize = 32;
/// Transmit buffers: frames handed to the device and not yet returned (the firmware
/// sends mostly ACKs, a few per batch of received frames).
const TX_BUFS: usize = 32;
/// MTU.
const MTU: usize = 1500;

/// The virtio-net driver type.
pub type NetDevice = crate::virtio_net::NetDevice<QUEUE>;

/// Why the network could not come up.
#[derive(Debug)]
pub enum NetError {
    /// No virtio-mmio device at the platform address.
    NoDevice,
    /// The device is not a network device or its initialization failed.
    Init,
    /// Posting the receive buffers failed.
    Buffers,
}

/// Finds and initializes the virtio-net device, with every receive buffer posted;
/// `heap` is the heap's size, which bounds the receive buffers.
pub fn open(heap: usize) -> Result<Phy, NetError> {
    let header =
        NonNull::new(VIRTIO_NET_MMIO_GPA as *mut VirtIOHeader).ok_or(NetError::NoDevice)?;
    // SAFETY: the stub maps the virtio-mmio window [VIRTIO_NET_MMIO_GPA, +2 MiB) user
    // read-write uncached; it is device registers, valid for the program's lifetime
    // and used only through this transport. Without a device the reads return
    // all-ones and `new` fails on the magic value.
    let transport = unsafe { MmioTransport::new(header, VIRTIO_MMIO_SIZE as usize) }
        .map_err(|_| NetError::NoDevice)?;
    let large_bufs = (heap / 4 / LARGE_BUF_LEN).min(LARGE_BUFS);
    let mut dev =
        NetDevice::new(transport, large_bufs >= LARGE_BUFS_MIN).map_err(|_| NetError::Init)?;
    let large = dev.large_receive();
    let (count, len) = if large {
        (large_bufs, LARGE_BUF_LEN)
    } else {
        (QUEUE, BUF_LEN)
    };
    let mut rx: Vec<Option<Box<[u8]>>> = (0..QUEUE).map(|_| None).collect();
    for _ in 0..count {
        let mut buf = vec![0u8; len].into_boxed_slice();
        // SAFETY: the buffer is kept in `rx` (its heap memory does not move with the
        // box) and not touched until the device returned it (`Phy::receive`).
        let token = unsafe { dev.receive_begin(&mut buf) }.map_err(|_| NetError::Buffers)?;
        *rx.get_mut(usize::from(token)).ok_or(NetError::Buffers)? = Some(buf);
    }
    let tx = (0..TX_BUFS)
        .map(|_| vec![0u8; BUF_LEN].into_boxed_slice())
        .collect();
    Ok(Phy {
        dev,
        large,
        rx,
        returned: Rc::new(RefCell::new(Vec::with_capacity(count))),
        tx,
        tx_free: (0..TX_BUFS).collect(),
        tx_busy: Vec::with_capacity(TX_BUFS),
        ask_device: true,
        stats: PhyStats::default(),
    })
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
    /// The device hands over whole TCP segments with checksums left to the receiver.
    large: bool,
    /// The posted receive buffers, by the token (head descriptor) they were posted as.
    rx: Vec<Option<Box<[u8]>>>,
    /// Receive buffers smoltcp is done with, to be posted again.
    returned: Rc<RefCell<Vec<Box<[u8]>>>>,
    /// The transmit buffers.
    tx: Vec<Box<[u8]>>,
    /// Transmit buffers free for a frame.
    tx_free: Vec<usize>,
    /// Transmit buffers the device holds: (token, buffer).
    tx_busy: Vec<(u16, usize)>,
    /// Whether an empty ring asks the device (an exit); off for [`Net::poll_ring`].
    ask_device: bool,
    /// The counters.
    pub stats: PhyStats,
}

impl Phy {
    /// Takes back the transmit buffers the device returned.
    fn reap_tx(&mut self) {
        while let Some(token) = self.dev.poll_transmit() {
            let Some(at) = self.tx_busy.iter().position(|(t, _)| *t == token) else {
                return;
            };
            let (_, i) = self.tx_busy.swap_remove(at);
            let Some(buf) = self.tx.get(i) else {
                return;
            };
            // SAFETY: `buf` is the buffer `transmit_begin` was given for `token`.
            if unsafe { self.dev.transmit_complete(token, buf) }.is_err() {
                return;
            }
            self.tx_free.push(i);
        }
    }

    /// A free transmit buffer; when the device holds them all, asks it to send (the
    /// interrupt-status read sends what is queued) until one is back, a bounded number
    /// of times.
    fn tx_buffer(&mut self) -> Option<usize> {
        for _ in 0..1000 {
            self.reap_tx();
            if let Some(i) = self.tx_free.pop() {
                return Some(i);
            }
            self.idle();
        }
        None
    }

    /// Queues `len` bytes of frame that `f` writes; the frame is dropped (TCP
    /// retransmits) when no buffer comes back or the queue refuses it.
    fn send<R, F: FnOnce(&mut [u8]) -> R>(&mut self, len: usize, f: F) -> R {
        let mut scratch = [0u8; FRAME_MAX];
        let Some(i) = self.tx_buffer() else {
            return f(&mut scratch[..len.min(FRAME_MAX)]);
        };
        let Some(buf) = self.tx.get_mut(i) else {
            return f(&mut scratch[..len.min(FRAME_MAX)]);
        };
        // An empty header: a complete frame, nothing for the device to do.
        let hdr = HDR_LEN.min(buf.len());
        buf[..hdr].fill(0);
        let end = (hdr + len).min(buf.len());
        let r = f(buf.get_mut(hdr..end).unwrap_or_default());
        self.stats.tx_frames += 1;
        let (dev, buf) = (&mut self.dev, &buf[..end]);
        // SAFETY: the buffer stays in `self.tx`, untouched, until the device returned
        // it (`reap_tx` takes it back with `transmit_complete`).
        let queued = crate::profile::time(crate::profile::Phase::Send, || unsafe {
            dev.transmit_begin(buf)
        });
        match queued {
            Ok(token) => self.tx_busy.push((token, i)),
            Err(_) => self.tx_free.push(i),
        }
        r
    }

    /// Whether the device hands over whole TCP segments.
    pub fn large_receive(&self) -> bool {
        self.large
    }

    /// Posts again the receive buffers smoltcp is done with (a ring write each: the
    /// device suppresses receive notifications).
    fn repost(&mut self) {
        let Ok(mut back) = self.returned.try_borrow_mut() else {
            return;
        };
        while let Some(mut buf) = back.pop() {
            // SAFETY: as in `open`: kept in `rx`, untouched until returned.
            if let Ok(t) = unsafe { self.dev.receive_begin(&mut buf) } {
                if let Some(slot) = self.rx.get_mut(usize::from(t)) {
                    *slot = Some(buf);
                }
            }
        }
    }

    /// Takes the next received frame from the ring (no exit), in its buffer: no copy;
    /// the buffer comes back for posting once smoltcp consumed the frame.
    fn take_frame(&mut self) -> Option<RxToken> {
        let token = self.dev.poll_receive()?;
        let mut buf = self.rx.get_mut(usize::from(token))?.take()?;
        // SAFETY: `buf` is the buffer posted as `token`.
        let len = match unsafe { self.dev.receive_complete(token, &mut buf) } {
            Ok(len) => len,
            // Returned without a header: the buffer is the driver's again.
            Err(DevError::ShortBuffer) => {
                self.returned.borrow_mut().push(buf);
                return None;
            }
            // Not taken back (cannot happen for the token just peeked): still posted.
            Err(_) => {
                if let Some(slot) = self.rx.get_mut(usize::from(token)) {
                    *slot = Some(buf);
                }
                return None;
            }
        };
        Some(RxToken {
            buf: Some(buf),
            len,
            back: self.returned.clone(),
        })
    }

    /// Asks the device for waiting frames without waiting: one register read.
    fn kick(&mut self) {
        self.stats.kicks += 1;
        // SAFETY: the stub maps the virtio-mmio window user read-write uncached (see
        // `open`); a 32-bit aligned read of a device register has no other effect.
        let _ = crate::profile::time(crate::profile::Phase::Kick, || unsafe {
            core::ptr::read_volatile(CONFIG_GENERATION as *const u32)
        });
    }

    /// Nothing to do until a frame arrives: read the interrupt status, which makes
    /// tvp-vmm send what is queued and, on an idle device, block until a frame
    /// arrives or 0.5 ms passed; the host side gets the CPU instead of a spinning
    /// guest. The status is not acknowledged (nothing uses interrupts).
    pub fn idle(&mut self) {
        self.stats.idle_polls += 1;
        // SAFETY: as in `kick`.
        let _ = crate::profile::time(crate::profile::Phase::Idle, || unsafe {
            core::ptr::read_volatile(INTERRUPT_STATUS as *const u32)
        });
    }
}

/// A received frame in its receive buffer, which goes back to the driver's list of
/// buffers to post when the token is consumed (or dropped).
pub struct RxToken {
    buf: Option<Box<[u8]>>,
    len: usize,
    back: Rc<RefCell<Vec<Box<[u8]>>>>,
}

impl Drop for RxToken {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            if let Ok(mut back) = self.back.try_borrow_mut() {
                back.push(b);
            }
        }
    }
}

/// Largest frame the driver's buffers hold (an Ethernet frame of [`MTU`]).
const FRAME_MAX: usize = MTU + 14;

/// Permission to send one frame.
pub struct TxToken<'a>(&'a mut Phy);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let frame = self
            .buf
            .as_deref()
            .and_then(|b| b.get(HDR_LEN..HDR_LEN + self.len))
            .unwrap_or_default();
        f(frame)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.send(len, f)
    }
}

impl phy::Device for Phy {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(RxToken, TxToken<'_>)> {
        self.repost();
        // Frames already in the ring cost no exit; an empty ring asks the device.
        if self.dev.poll_receive().is_none() {
            if !self.ask_device {
                return None;
            }
            self.kick();
            self.dev.poll_receive()?;
        }
        let t0 = crate::profile::cycles();
        let rx = self.take_frame()?;
        crate::profile::add(
            crate::profile::Phase::Ring,
            crate::profile::cycles().wrapping_sub(t0),
        );
        self.stats.rx_frames += 1;
        Some((rx, TxToken(self)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = FRAME_MAX;
        caps.max_burst_size = Some(1);
        caps.medium = Medium::Ethernet;
        if self.large {
            // GUEST_CSUM: the host may leave checksums to the receiver (a TSO
            // segment's TCP checksum is partial); they are computed when sending and
            // not checked when receiving. The tunnel's integrity is TLS's (AEAD).
            caps.checksum.ipv4 = Checksum::Tx;
            caps.checksum.tcp = Checksum::Tx;
            caps.checksum.udp = Checksum::Tx;
        }
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
    pub fn up(mut phy: Phy, cfg: &Config<'_>, random_seed: u64) -> Self {
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

    /// One round of the stack on the frames the ring already holds, without asking
    /// the device for more (no exit unless something is sent): for a reader that has
    /// data waiting in its socket. Asking on every read cost an exit per TLS record
    /// while the socket held hundreds of KiB, which closed the TCP window.
    pub fn poll_ring(&mut self) {
        self.phy.ask_device = false;
        self.poll();
        self.phy.ask_device = true;
    }
}
