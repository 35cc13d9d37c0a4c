//! The firmware's virtio-net driver: virtio-drivers' transport and virtqueues, with the
//! features of our choosing. virtio-drivers' raw driver negotiates a fixed set (MAC,
//! STATUS, EVENT_IDX, VERSION_1); taking whole TCP segments from the device (issue #18,
//! "fewer, bigger frames") needs `VIRTIO_NET_F_GUEST_CSUM` and `VIRTIO_NET_F_GUEST_TSO4`
//! too: tvp-vmm then hands over the host's TSO segments (up to 64 KiB) as they came from
//! the TAP device, one receive buffer each, their TCP checksum left unchecked (TLS
//! authenticates every byte of the tunnel; see `net.rs`).
//!
//! Polled: the device is never asked for interrupts. Buffers are the caller's; a token
//! (the chain's head descriptor) names each until the device returns it, in order.

use crate::hal::FwHal;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, Transport};

/// `VIRTIO_NET_F_GUEST_CSUM`: the driver takes packets with partial checksums.
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// `VIRTIO_NET_F_GUEST_TSO4`: the driver takes TCP/IPv4 segments larger than the MTU.
pub const F_GUEST_TSO4: u64 = 1 << 7;
const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;
const F_EVENT_IDX: u64 = 1 << 29;
const F_VERSION_1: u64 = 1 << 32;
/// What the driver accepts of what the device offers.
const WANTED: u64 = F_GUEST_CSUM | F_GUEST_TSO4 | F_MAC | F_STATUS | F_EVENT_IDX | F_VERSION_1;

/// `struct virtio_net_hdr_v1` (virtio 1.x, with `num_buffers`).
pub const HDR_LEN: usize = 12;
/// A receive buffer for a TSO segment: the header and an IPv4 packet of 64 KiB with
/// its Ethernet header (what the spec asks of a driver with `GUEST_TSO4` and without
/// mergeable buffers: 65562 bytes).
pub const LARGE_BUF_LEN: usize = 65562;

const QUEUE_RECEIVE: u16 = 0;
const QUEUE_TRANSMIT: u16 = 1;

/// Why the device could not be driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevError {
    /// Not a network device, or without `VIRTIO_F_VERSION_1`.
    NotSupported,
    /// The device refused the features (no `FEATURES_OK`).
    FeaturesRefused,
    /// A virtqueue could not be set up or used.
    Queue(virtio_drivers::Error),
    /// The device returned fewer bytes than a header.
    ShortBuffer,
}

impl From<virtio_drivers::Error> for DevError {
    fn from(e: virtio_drivers::Error) -> Self {
        DevError::Queue(e)
    }
}

/// The virtio-net device with its two queues of `Q` entries.
pub struct NetDevice<const Q: usize> {
    transport: MmioTransport<'static>,
    rx: VirtQueue<FwHal, Q>,
    tx: VirtQueue<FwHal, Q>,
    features: u64,
}

impl<const Q: usize> NetDevice<Q> {
    /// Initializes the device (virtio 3.1.1): negotiates [`WANTED`] (without the
    /// whole-segment features unless `large`: the caller cannot give 64 KiB receive
    /// buffers) and sets up both queues; the device is live when this returns.
    pub fn new(mut transport: MmioTransport<'static>, large: bool) -> Result<Self, DevError> {
        if transport.device_type() != DeviceType::Network {
            return Err(DevError::NotSupported);
        }
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = transport.read_device_features();
        if offered & F_VERSION_1 == 0 {
            return Err(DevError::NotSupported);
        }
        // GUEST_TSO4 depends on GUEST_CSUM (virtio 5.1.3.1).
        let mut features = offered & WANTED;
        if !large {
            features &= !(F_GUEST_CSUM | F_GUEST_TSO4);
        }
        if features & F_GUEST_CSUM == 0 {
            features &= !F_GUEST_TSO4;
        }
        transport.write_driver_features(features);
        let ok = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
        transport.set_status(ok);
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            return Err(DevError::FeaturesRefused);
        }
        let event_idx = features & F_EVENT_IDX != 0;
        let tx = VirtQueue::new(&mut transport, QUEUE_TRANSMIT, false, event_idx)?;
        let rx = VirtQueue::new(&mut transport, QUEUE_RECEIVE, false, event_idx)?;
        transport.finish_init();
        Ok(NetDevice {
            transport,
            rx,
            tx,
            features,
        })
    }

    /// Whether the device hands over whole TCP segments (receive buffers must then be
    /// [`LARGE_BUF_LEN`] bytes).
    pub fn large_receive(&self) -> bool {
        self.features & F_GUEST_TSO4 != 0
    }

    /// Posts `buf` for a frame; its token.
    ///
    /// # Safety
    /// `buf` must stay valid and untouched until [`Self::receive_complete`] took it back.
    pub unsafe fn receive_begin(&mut self, buf: &mut [u8]) -> Result<u16, DevError> {
        // SAFETY: the caller keeps `buf` valid and untouched until it is popped.
        let token = unsafe { self.rx.add(&[], &mut [buf]) }?;
        if self.rx.should_notify() {
            self.transport.notify(QUEUE_RECEIVE);
        }
        Ok(token)
    }

    /// The token of the next received frame, if the device returned one.
    pub fn poll_receive(&self) -> Option<u16> {
        self.rx.peek_used()
    }

    /// Takes back `buf` (posted as `token`, the next returned); the frame's length
    /// after the [`HDR_LEN`]-byte header.
    ///
    /// # Safety
    /// `buf` must be the buffer posted as `token`.
    pub unsafe fn receive_complete(
        &mut self,
        token: u16,
        buf: &mut [u8],
    ) -> Result<usize, DevError> {
        // SAFETY: the caller passes the buffer posted as `token`.
        let len = unsafe { self.rx.pop_used(token, &[], &mut [buf]) }? as usize;
        len.checked_sub(HDR_LEN).ok_or(DevError::ShortBuffer)
    }

    /// Queues `buf` (an empty header, then the frame) for sending; its token.
    ///
    /// # Safety
    /// `buf` must stay valid and unchanged until [`Self::transmit_complete`] took it
    /// back.
    pub unsafe fn transmit_begin(&mut self, buf: &[u8]) -> Result<u16, DevError> {
        // SAFETY: the caller keeps `buf` valid and unchanged until it is popped.
        let token = unsafe { self.tx.add(&[buf], &mut []) }?;
        if self.tx.should_notify() {
            self.transport.notify(QUEUE_TRANSMIT);
        }
        Ok(token)
    }

    /// The token of the next sent frame, if the device returned one.
    pub fn poll_transmit(&self) -> Option<u16> {
        self.tx.peek_used()
    }

    /// Takes back `buf` (queued as `token`, the next returned).
    ///
    /// # Safety
    /// `buf` must be the buffer queued as `token`.
    pub unsafe fn transmit_complete(&mut self, token: u16, buf: &[u8]) -> Result<(), DevError> {
        // SAFETY: the caller passes the buffer queued as `token`.
        unsafe { self.tx.pop_used(token, &[buf], &mut []) }?;
        Ok(())
    }
}
