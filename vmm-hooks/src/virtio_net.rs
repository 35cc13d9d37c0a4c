//! virtio-net over the virtio-mmio transport ([`crate::virtio_mmio`]), backed by a TAP
//! device. A notify on the transmit queue sends what the guest queued; every register
//! access first moves waiting frames from the TAP device into the guest's receive
//! buffers.
//!
//! Two modes. **Polled** (the firmware, which runs with interrupts off, and any VM
//! without an irqfd): no interrupt; the guest polls by reading `InterruptStatus`, and
//! every register access moves waiting frames in. With the receive thread
//! ([`crate::net_rx`], given with the irqfd) the thread also fills the receive ring as
//! frames arrive and sends what the guest queued (a transmit notify only wakes it;
//! an idle `InterruptStatus` poll and the handover send what is still queued), so the
//! guest's exits end sooner and the host's work runs beside it (issue #18). The
//! receive queue never needs a notify, so the device tells the driver not to send one:
//! with `VIRTIO_F_EVENT_IDX` negotiated it keeps the receive queue's `avail_event` one
//! queue's worth ahead of what it consumed, otherwise it sets `VRING_USED_F_NO_NOTIFY`.
//! Recycling a receive buffer is then a ring write in the guest, not a VM exit.
//! **Interrupts** (once the workload's driver reset the device after the handover,
//! when the VM was given an irqfd for [`tvp_abi::layout::VIRTIO_NET_GSI`]): the
//! receive thread ([`crate::net_rx`]) moves
//! frames in as they arrive on the TAP device, and the device raises its interrupt
//! whenever it returned buffers on either queue and the driver did not suppress it;
//! the receive queue asks for a notify again, so a driver that refills an empty queue
//! wakes the receive thread. The transmit queue's `avail_event` asks for a notify at
//! the next frame in both modes.
//!
//! **At the handover** the receive queue freezes until the next reset: the buffers
//! the firmware posted lie in memory that is the workload's from then on (Linux
//! reuses it at once), so no frame may be written there. The firmware's last frame
//! (its handover status) still goes out. The workload's driver resets the device before
//! using it (Linux does), and its own queues start fresh.
//!
//! Guest input is hostile: the transport validates the queues (see
//! [`crate::virtio_mmio`]); descriptor chains are bounded by the queue size so loops
//! end, every frame is bounded ([`FRAME_MAX`]), each pass handles at most one queue's
//! worth of chains, and every failure drops the frame or marks the device broken
//! (`DEVICE_NEEDS_RESET`) instead of ending the VMM.
//!
//! **Offloads** (issue #18): the TAP device hands over whole TSO segments and
//! frames with partial checksums ([`crate::tap`]). A driver that negotiated
//! `GUEST_TSO4` and `GUEST_CSUM` (the firmware, Linux) gets them as they are, with
//! the host's vnet header (checked first, [`crate::offload::check_pass_through`]),
//! in receive buffers large enough for 64 KiB; any other driver gets them split into
//! MTU-sized frames with their checksums completed.
//!
//! The device writes only device-writable guest RAM ([`crate::dma`]): a receive buffer
//! on the boot region, the configuration page, the mailbox or (before the handover) the
//! firmware image is dropped, never written. Transmitted frames pass the source filter
//! ([`crate::netfilter`]) or are dropped.

use crate::dma::DmaPolicy;
use crate::netfilter::{DropCounts, TxFilter};
use crate::offload;
use crate::tap::FrameBackend;
use crate::virtio_mmio::{reg, MmioTransport, Written, F_VERSION_1, INT_USED_BUFFER};
use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::RawFd;
use tvp_abi::layout::{VIRTIO_MMIO_SIZE, VIRTIO_NET_MMIO_GPA};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
/// The eventfd type [`VirtioNet::with_interrupt`] takes (re-exported for the fuzz
/// target, which has no direct dependency on vmm-sys-util).
pub use vmm_sys_util::eventfd::EventFd;

pub use crate::virtio_mmio::F_EVENT_IDX;

/// Size of `struct virtio_net_hdr` with `num_buffers` (virtio 1.x).
pub const NET_HDR_LEN: usize = 12;
/// Largest Ethernet frame either way (no GSO offered; generous for jumbo frames).
pub const FRAME_MAX: usize = 9216;
/// Queue size offered to the driver.
pub const QUEUE_SIZE_MAX: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;

const DEVICE_ID_NET: u32 = 1;

/// `VIRTIO_NET_F_GUEST_CSUM`: the driver takes packets with partial checksums.
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// `VIRTIO_NET_F_GUEST_TSO4`: the driver takes TCP/IPv4 segments larger than the MTU.
pub const F_GUEST_TSO4: u64 = 1 << 7;
/// Offered features: GUEST_CSUM, GUEST_TSO4, MAC, STATUS, EVENT_IDX, VERSION_1.
const FEATURES: u64 =
    F_GUEST_CSUM | F_GUEST_TSO4 | (1 << 5) | (1 << 16) | F_EVENT_IDX | F_VERSION_1;
const NET_S_LINK_UP: u16 = 1;

/// Longest a guest's read of `InterruptStatus` waits for a frame when the device has
/// nothing to deliver (a polling guest then sleeps instead of spinning; short enough
/// for its TCP timers).
pub const IDLE_WAIT: std::time::Duration = std::time::Duration::from_micros(500);

/// Frame counters, logged at the end of the VM.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetStats {
    /// Frames sent to the TAP device.
    pub tx_frames: u64,
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frames or chains dropped (malformed, too large, no buffer, I/O error).
    pub dropped: u64,
    /// Transmitted frames the source filter dropped, per reason.
    pub filtered: DropCounts,
    /// Rings and receive buffers refused because they pointed at memory the device
    /// must not write.
    pub dma_refused: u64,
    /// Idle polls that waited (at most [`IDLE_WAIT`]) for the TAP device.
    pub idle_waits: u64,
    /// TSO segments from the TAP device split into frames for the guest.
    pub rx_segmented: u64,
}

/// What the receive thread waits for next ([`VirtioNet::service`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxWait {
    /// Polled mode (until the workload's driver reset the device after the handover,
    /// or no irqfd): the thread has nothing to do until the device wakes it.
    Inactive,
    /// Frames on the TAP device (the receive queue has room).
    Frames,
    /// Receive buffers: a frame waits for one, or the queue is not live. The driver's
    /// notify (or a reset) wakes the thread.
    Buffers,
}

/// The interrupt line and the receive thread's wake-up, given when the VM has an irqfd
/// for virtio-net.
struct Interrupt {
    /// An eventfd registered as an irqfd for the device's GSI.
    irq: EventFd,
    /// Written when the receive thread must look again (handover, notify, reset).
    wake: EventFd,
    /// Interrupt mode: from the first reset after the handover on.
    active: bool,
    /// The receive thread waits for the wake-up alone (not for the TAP device): no
    /// receive buffer, a frame waiting for one, or the queue not live.
    parked: bool,
}

/// The virtio-net device and its virtio-mmio registers.
pub struct VirtioNet {
    tap: Box<dyn FrameBackend>,
    mac: [u8; 6],
    mmio: MmioTransport,
    /// Frames read from the TAP device (a TSO segment's pieces, or whole packets for a
    /// driver that takes them) with the header the guest gets, that found no receive
    /// buffer yet; at most [`crate::offload::MAX_SEGMENTS`].
    rx_pending: VecDeque<([u8; NET_HDR_LEN], Vec<u8>)>,
    /// Where a TSO segment is split.
    rx_split: VecDeque<Vec<u8>>,
    /// What one TAP read fills: a vnet header's packet, up to a 64 KiB TSO segment.
    rx_buf: Vec<u8>,
    stats: NetStats,
    filter: TxFilter,
    interrupt: Option<Interrupt>,
    /// The firmware handed over.
    handed_over: bool,
    /// No frame goes into the receive queue (from the handover to the next reset).
    rx_frozen: bool,
    /// `stats.rx_frames` when the guest's last register access ended: frames the
    /// receive thread delivered since then may not have been seen by the guest yet.
    rx_seen: u64,
}

impl VirtioNet {
    /// A device with `mac` for a VM whose address is `vip`, backed by `tap`, writing
    /// only what `dma` allows; `None` only if the queue size constant is invalid (a bug).
    pub fn new(
        tap: Box<dyn FrameBackend>,
        mac: [u8; 6],
        vip: [u8; 4],
        dma: DmaPolicy,
    ) -> Option<Self> {
        Some(VirtioNet {
            tap,
            mac,
            mmio: MmioTransport::new(
                "virtio-net",
                DEVICE_ID_NET,
                FEATURES,
                2,
                QUEUE_SIZE_MAX,
                dma,
            )?,
            rx_pending: VecDeque::new(),
            rx_split: VecDeque::new(),
            rx_buf: vec![0; offload::PACKET_MAX],
            stats: NetStats::default(),
            filter: TxFilter::new(mac, vip),
            interrupt: None,
            handed_over: false,
            rx_frozen: false,
            rx_seen: 0,
        })
    }

    /// Gives the device its interrupt line `irq` (an eventfd registered as an irqfd)
    /// and the eventfd `wake` it writes when the receive thread must look again. The
    /// device still runs polled until the workload's driver resets it after the
    /// handover ([`Self::handed_over`]).
    pub fn with_interrupt(mut self, irq: EventFd, wake: EventFd) -> Self {
        self.interrupt = Some(Interrupt {
            irq,
            wake,
            active: false,
            parked: false,
        });
        self
    }

    /// Whether the device is in interrupt mode (reset by the workload, with an irqfd).
    pub fn interrupts(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|i| i.active)
    }

    /// The TAP device's descriptor, for the receive thread to wait on (`None` for
    /// backends without one).
    pub fn tap_fd(&self) -> Option<RawFd> {
        self.tap.raw_fd()
    }

    /// Wakes the receive thread (both modes).
    fn wake_rx_thread(&mut self) {
        if let Some(i) = self.interrupt.as_mut() {
            i.parked = false;
            if let Err(e) = i.wake.write(1) {
                self.mmio
                    .note(format!("waking the receive thread failed: {e}"));
            }
        }
    }

    /// The receive thread's turn: delivers the frames waiting on the TAP device
    /// (raising the interrupt in interrupt mode), and says what to wait for next.
    /// In polled mode too (the firmware): the thread fills the receive ring while the
    /// vCPU runs, so the guest finds frames there without a device-poll exit.
    pub fn service(&mut self, mem: &GuestMemoryMmap) -> RxWait {
        if self.interrupt.is_none() {
            return RxWait::Inactive;
        }
        if self.tx_in_thread() {
            self.process_tx(mem);
        }
        self.pump_rx(mem);
        let wait = if !self.rx_pending.is_empty() || !self.can_fill() {
            RxWait::Buffers
        } else {
            RxWait::Frames
        };
        if let Some(i) = self.interrupt.as_mut() {
            i.parked = wait == RxWait::Buffers;
        }
        wait
    }

    /// Whether the receive thread also sends (the firmware's polled mode, with a
    /// thread): a notify of the transmit queue only wakes it, so the vCPU's exit ends
    /// at once and the host's work for the frame (its TCP answering an ACK) runs
    /// beside the guest. From the handover on the vCPU sends again: the firmware's
    /// last frame goes out before its buffers become the workload's memory.
    fn tx_in_thread(&self) -> bool {
        self.interrupt.is_some() && !self.handed_over
    }

    /// Whether frames can go into the receive queue now: live, ready, its rings in
    /// device-writable memory (else the device is marked failed) and not frozen.
    fn can_fill(&mut self) -> bool {
        !self.rx_frozen && self.mmio.queue_live(RX_QUEUE)
    }

    /// The end of a guest register access. In polled mode the driver recycles receive
    /// buffers without a notify (suppressed), so the access is when a receive thread
    /// parked for buffers (or for the queue to go live) learns it may deliver again.
    fn access_done(&mut self) {
        self.rx_seen = self.stats.rx_frames;
        let parked = self
            .interrupt
            .as_ref()
            .is_some_and(|i| i.parked && !i.active);
        if parked && self.rx_pending.is_empty() && self.can_fill() {
            self.wake_rx_thread();
        }
    }

    /// Protects the measured firmware image from device writes until the handover.
    pub fn protect_firmware(&mut self, image: Range<u64>) {
        self.mmio.protect_firmware(image);
    }

    /// The firmware handed over to the workload (the mailbox said so): the firmware
    /// image is the workload's memory now, and the transmit filter's workload rules
    /// apply.
    /// The receive queue freezes until the workload's driver resets the device: the
    /// firmware's receive buffers are the workload's memory now.
    /// Frames the firmware queued and the receive thread did not send yet are sent
    /// first, under the firmware's rules and while its buffers are still its own.
    pub fn handed_over(&mut self, mem: &GuestMemoryMmap) {
        if self.tx_in_thread() {
            self.process_tx(mem);
        }
        self.mmio.release_firmware();
        self.filter.handed_over();
        self.handed_over = true;
        self.rx_frozen = self.mmio.live();
        self.rx_pending.clear();
        log::info!(
            receive_frozen = self.rx_frozen,
            rx_frames = self.stats.rx_frames,
            rx_segmented = self.stats.rx_segmented,
            tx_frames = self.stats.tx_frames,
            dropped = self.stats.dropped;
            "virtio-net: handover, receive queue frozen until the workload resets the device"
        );
    }

    /// The driver reset the device (status 0): its frame in wait is dropped; after the
    /// handover this is the workload's driver, so receiving resumes, in interrupt mode
    /// if the VM has an irqfd.
    fn reset(&mut self) {
        self.rx_pending.clear();
        if !self.handed_over {
            return;
        }
        self.rx_frozen = false;
        if let Some(i) = self.interrupt.as_mut().filter(|i| !i.active) {
            i.active = true;
            log::info!(
                gsi = tvp_abi::layout::VIRTIO_NET_GSI;
                "virtio-net: reset by the workload, interrupt mode (receive thread)"
            );
        }
        self.wake_rx_thread();
    }

    /// Whether `addr` is one of this device's registers.
    pub fn contains(addr: u64) -> bool {
        (VIRTIO_NET_MMIO_GPA..VIRTIO_NET_MMIO_GPA + VIRTIO_MMIO_SIZE).contains(&addr)
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        NetStats {
            filtered: self.filter.counts(),
            dma_refused: self.mmio.dma_refused,
            ..self.stats
        }
    }

    /// Logs the counters (at the end of the VM).
    pub fn log_totals(&self) {
        let st = self.stats();
        let f = st.filtered;
        log::info!(tx_frames = st.tx_frames, rx_frames = st.rx_frames, dropped = st.dropped, dropped_spoofed_source_mac = f.source_mac, dropped_spoofed_source_ip = f.source_ip, dropped_ethertype = f.ethertype, dropped_malformed_header = f.malformed, dropped_spoofed_ndp = f.ndp, dma_refused = st.dma_refused, idle_waits = st.idle_waits, rx_segmented = st.rx_segmented; "virtio-net totals");
    }

    /// Whether an idle poll may wait for the TAP device: the receive queue is live
    /// and no frame is already waiting for a buffer.
    fn can_wait(&self) -> bool {
        self.mmio.live()
            && self.mmio.queues[RX_QUEUE].ready()
            && self.rx_pending.is_empty()
            && !self.rx_frozen
    }

    fn config(&self) -> [u8; 12] {
        let mut cfg = [0u8; 12];
        cfg[..6].copy_from_slice(&self.mac);
        cfg[6..8].copy_from_slice(&NET_S_LINK_UP.to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        cfg[10..12].copy_from_slice(&1500u16.to_le_bytes()); // mtu
        cfg
    }

    /// A guest read of `data.len()` bytes at `addr` (inside the register window).
    pub fn mmio_read(&mut self, mem: &GuestMemoryMmap, addr: u64, data: &mut [u8]) {
        let off = addr.wrapping_sub(VIRTIO_NET_MMIO_GPA);
        // A polling guest's frames go out now if the receive thread has not sent them
        // yet: the frame it waits for may be the answer to one.
        if off == reg::INTERRUPT_STATUS && self.tx_in_thread() {
            self.process_tx(mem);
        }
        self.pump_rx(mem);
        // Nothing delivered since the guest's last access (by this read or by the
        // receive thread meanwhile, which the guest may not have seen) before waiting.
        if off == reg::INTERRUPT_STATUS
            && self.stats.rx_frames == self.rx_seen
            && !self.interrupts()
            && self.can_wait()
        {
            // The guest polls an idle device: block the vCPU (bounded) until a frame
            // arrives instead of letting it spin through exits, so the host side (the
            // boot server, the host's TCP) gets the CPU.
            self.stats.idle_waits += 1;
            if self.tap.wait(IDLE_WAIT) {
                self.pump_rx(mem);
            }
        }
        let cfg = self.config();
        self.mmio.read(off, data, &cfg);
        self.access_done();
    }

    /// A guest write of `data` at `addr` (inside the register window).
    pub fn mmio_write(&mut self, mem: &GuestMemoryMmap, addr: u64, data: &[u8]) {
        let off = addr.wrapping_sub(VIRTIO_NET_MMIO_GPA);
        match self.mmio.write(mem, off, data) {
            Written::Done => {}
            Written::Reset => self.reset(),
            Written::Notify(v) => match v as usize {
                TX_QUEUE if self.tx_in_thread() => self.wake_rx_thread(),
                TX_QUEUE => self.process_tx(mem),
                // New receive buffers: the receive thread may deliver again.
                RX_QUEUE => self.wake_rx_thread(),
                _ => self.mmio.note(format!("notify of unknown queue {v}")),
            },
        }
        self.pump_rx(mem);
        self.access_done();
    }

    /// Sends every frame the guest queued on the transmit queue, then asks for the
    /// next notify (EVENT_IDX: `avail_event` = the next chain; otherwise the used ring's
    /// flags stay 0) and sends again if frames were queued meanwhile, so none waits for
    /// a notify the driver will not send. One queue's worth of frames per round; a
    /// round that takes none while the ring claims more ends it.
    fn process_tx(&mut self, mem: &GuestMemoryMmap) {
        if !self.mmio.live()
            || !self.mmio.queues[TX_QUEUE].ready()
            || !self.mmio.queue_usable(TX_QUEUE)
        {
            return;
        }
        let mut frame = Vec::with_capacity(NET_HDR_LEN + FRAME_MAX);
        let mut returned = false;
        loop {
            let sent = self.send_tx_round(mem, &mut frame);
            if !self.mmio.live() {
                return;
            }
            returned |= sent > 0;
            // The ring was checked writable above.
            match self.mmio.queues[TX_QUEUE].enable_notification(mem) {
                Ok(true) if sent > 0 => continue,
                Ok(_) => break,
                Err(_) => {
                    self.mmio
                        .broken("transmit used ring not writable".to_string());
                    return;
                }
            }
        }
        if returned && self.interrupts() {
            let irq = self.interrupt.as_ref().map(|i| &i.irq);
            self.mmio.signal_used(mem, TX_QUEUE, irq);
        }
    }

    /// Sends up to one queue's worth of queued frames; returns how many chains it
    /// returned (0 also when the used ring broke: the device is then not live).
    fn send_tx_round(&mut self, mem: &GuestMemoryMmap, frame: &mut Vec<u8>) -> u32 {
        let mut returned = 0;
        for _ in 0..QUEUE_SIZE_MAX {
            let chain = match self.mmio.queues[TX_QUEUE].pop_descriptor_chain(mem) {
                Some(c) => c,
                None => break,
            };
            let head = chain.head_index();
            frame.clear();
            let mut ok = true;
            for desc in chain {
                let len = desc.len() as usize;
                if desc.is_write_only() || frame.len() + len > NET_HDR_LEN + FRAME_MAX {
                    ok = false;
                    break;
                }
                let start = frame.len();
                frame.resize(start + len, 0);
                if mem.read_slice(&mut frame[start..], desc.addr()).is_err() {
                    ok = false;
                    break;
                }
            }
            match frame.get(NET_HDR_LEN..).filter(|f| ok && !f.is_empty()) {
                None => {
                    self.stats.dropped += 1;
                    self.mmio
                        .note(format!("malformed transmit chain {head} dropped"));
                }
                // A refused frame is counted and logged by the filter.
                Some(f) if !self.filter.allow(f) => {}
                Some(f) => match self.tap.send(f) {
                    Ok(()) => self.stats.tx_frames += 1,
                    Err(e) => {
                        self.stats.dropped += 1;
                        self.mmio
                            .note(format!("TAP {} send failed: {e}", self.tap.name()));
                    }
                },
            }
            if self.mmio.queues[TX_QUEUE].add_used(mem, head, 0).is_err() {
                self.mmio
                    .broken("transmit used ring not writable".to_string());
                return 0;
            }
            self.mmio.interrupt_status |= INT_USED_BUFFER;
            returned += 1;
        }
        returned
    }

    /// Tells the driver it need not notify the receive queue (the device refills it on
    /// every register access): `avail_event` one queue's worth past what the device
    /// consumed (EVENT_IDX; the driver cannot get further ahead than that before the
    /// device moves it again) or `VRING_USED_F_NO_NOTIFY`.
    fn suppress_rx_notify(&mut self, mem: &GuestMemoryMmap) {
        let q = &mut self.mmio.queues[RX_QUEUE];
        let ok = if q.event_idx_enabled() {
            let n = q.size();
            let event = q.next_avail().wrapping_add(n);
            // virtq_used: flags u16, idx u16, ring[n] of 8 bytes, then avail_event u16;
            // inside the 6 + 8n bytes checked by `rings_refusal`.
            let at = q.used_ring().wrapping_add(4 + 8 * u64::from(n));
            mem.write_obj(u16::to_le(event), GuestAddress(at)).is_ok()
        } else {
            q.disable_notification(mem).is_ok()
        };
        if !ok {
            self.mmio
                .broken("receive used ring not writable".to_string());
        }
    }

    /// Moves frames waiting on the TAP device into the guest's receive buffers, then
    /// renews the receive queue's notification suppression.
    fn pump_rx(&mut self, mem: &GuestMemoryMmap) {
        if self.rx_frozen
            || !self.mmio.live()
            || !self.mmio.queues[RX_QUEUE].ready()
            || !self.mmio.queue_usable(RX_QUEUE)
        {
            return;
        }
        let returned = self.fill_rx(mem);
        if !self.mmio.live() {
            return;
        }
        if self.interrupts() {
            if returned {
                let irq = self.interrupt.as_ref().map(|i| &i.irq);
                self.mmio.signal_used(mem, RX_QUEUE, irq);
            }
            // The driver refills from its interrupt handler: its notify wakes the
            // receive thread when a frame waits for a buffer.
            if self.mmio.queues[RX_QUEUE].enable_notification(mem).is_err() {
                self.mmio
                    .broken("receive used ring not writable".to_string());
            }
        } else {
            self.suppress_rx_notify(mem);
        }
    }

    /// Whether the driver takes packets as the TAP device gives them: TSO segments
    /// and partial checksums (it negotiated `GUEST_TSO4` and `GUEST_CSUM`).
    fn takes_offloads(&self) -> bool {
        let both = F_GUEST_CSUM | F_GUEST_TSO4;
        self.mmio.driver_features & both == both
    }

    /// Reads packets from the TAP device until one gives frames for the guest
    /// (queued in `rx_pending`): as they are for a driver that takes offloads (their
    /// header checked), else a TSO segment split and a partial checksum completed
    /// ([`crate::offload`]); whether there are frames to deliver. A packet the guest
    /// cannot take (refused by the offload checks, or larger than it accepts) is
    /// dropped and counted. Bounded: at most a queue's worth of reads.
    fn read_tap(&mut self) -> bool {
        let whole = self.takes_offloads();
        let max = if whole {
            offload::PACKET_MAX
        } else {
            FRAME_MAX
        };
        for _ in 0..QUEUE_SIZE_MAX {
            let (n, hdr) = match self.tap.recv_packet(&mut self.rx_buf) {
                Ok(Some(p)) => p,
                Ok(None) => return false,
                Err(e) => {
                    self.mmio
                        .note(format!("TAP {} receive failed: {e}", self.tap.name()));
                    return false;
                }
            };
            let packet = &self.rx_buf[..n.min(self.rx_buf.len())];
            let taken = if whole {
                offload::check_pass_through(&hdr, packet.len()).map(|()| {
                    self.rx_split.push_back(packet.to_vec());
                    1
                })
            } else {
                offload::to_frames(&hdr, packet, &mut self.rx_split)
            };
            let header = if whole {
                hdr.to_bytes()
            } else {
                offload::VnetHdr::default().to_bytes()
            };
            match taken {
                Ok(k) => self.stats.rx_segmented += u64::from(k > 1),
                Err(e) => {
                    self.stats.dropped += 1;
                    self.mmio
                        .note(format!("TAP {} packet dropped: {e}", self.tap.name()));
                }
            }
            for f in self.rx_split.drain(..) {
                if f.len() <= max {
                    self.rx_pending.push_back((header, f));
                } else {
                    self.stats.dropped += 1;
                }
            }
            if !self.rx_pending.is_empty() {
                return true;
            }
        }
        false
    }

    /// Delivers waiting frames, at most one queue's worth; whether it returned any
    /// buffer to the driver.
    fn fill_rx(&mut self, mem: &GuestMemoryMmap) -> bool {
        let mut returned = false;
        for _ in 0..QUEUE_SIZE_MAX {
            if self.rx_pending.is_empty() && !self.read_tap() {
                return returned;
            }
            let Some(chain) = self.mmio.queues[RX_QUEUE].pop_descriptor_chain(mem) else {
                // No buffer: the frame waits for the next pass.
                return returned;
            };
            let Some((hdr, frame)) = self.rx_pending.pop_front() else {
                return returned;
            };
            let head = chain.head_index();
            let mut written = 0usize;
            let total = NET_HDR_LEN + frame.len();
            for desc in chain {
                if written == total {
                    break;
                }
                if !desc.is_write_only() {
                    written = 0;
                    break;
                }
                let (gpa, len) = (desc.addr().0, u64::from(desc.len()));
                if let Err(why) = self.mmio.dma.check(gpa, len) {
                    self.mmio.dma_refused("receive-buffer", gpa, len, why);
                    written = 0;
                    break;
                }
                let n = (desc.len() as usize).min(total - written);
                let mut ok = true;
                let mut addr = desc.addr().0;
                let mut left = n;
                let mut pos = written;
                while left > 0 && ok {
                    let (src, take): (&[u8], usize) = if pos < NET_HDR_LEN {
                        let t = (NET_HDR_LEN - pos).min(left);
                        (&hdr[pos..pos + t], t)
                    } else {
                        let s = pos - NET_HDR_LEN;
                        (&frame[s..s + left], left)
                    };
                    ok = mem.write_slice(src, GuestAddress(addr)).is_ok();
                    addr = addr.wrapping_add(take as u64);
                    pos += take;
                    left -= take;
                }
                if !ok {
                    written = 0;
                    break;
                }
                written += n;
            }
            if written == total {
                self.stats.rx_frames += 1;
            } else {
                self.stats.dropped += 1;
                self.mmio.note(format!(
                    "receive chain {head} unusable or too short; frame dropped"
                ));
                written = 0;
            }
            if self.mmio.queues[RX_QUEUE]
                .add_used(mem, head, written as u32)
                .is_err()
            {
                self.mmio
                    .broken("receive used ring not writable".to_string());
                return returned;
            }
            self.mmio.interrupt_status |= INT_USED_BUFFER;
            returned = true;
        }
        returned
    }
}

/// Hostile-guest tests: the device driven through its registers with crafted rings.
#[cfg(test)]
mod hostile {
    use super::*;
    use crate::virtio_mmio::{STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
    use std::io;
    use std::sync::{Arc, Mutex};
    use tvp_abi::layout::{CONFIG_PAGE_GPA, MAILBOX_GPA};
    use tvp_abi::PAGE_SIZE;

    /// Frames sent, and frames to deliver.
    #[derive(Default)]
    struct Wire {
        sent: Vec<Vec<u8>>,
        inbound: Vec<Vec<u8>>,
        /// Packets with a vnet header (TSO segments), read before `inbound`.
        offloaded: Vec<(offload::VnetHdr, Vec<u8>)>,
        /// Idle waits the device made.
        waits: u32,
        /// A frame that arrives during the next wait.
        arrives: Option<Vec<u8>>,
    }

    struct MemBackend(Arc<Mutex<Wire>>);

    impl FrameBackend for MemBackend {
        fn recv_packet(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, offload::VnetHdr)>> {
            let mut w = self.0.lock().unwrap();
            let (h, p) = if !w.offloaded.is_empty() {
                w.offloaded.remove(0)
            } else if !w.inbound.is_empty() {
                (offload::VnetHdr::default(), w.inbound.remove(0))
            } else {
                return Ok(None);
            };
            buf[..p.len()].copy_from_slice(&p);
            Ok(Some((p.len(), h)))
        }
        fn send(&mut self, frame: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().sent.push(frame.to_vec());
            Ok(())
        }
        fn name(&self) -> &str {
            "mem"
        }
        fn wait(&mut self, _timeout: std::time::Duration) -> bool {
            let mut w = self.0.lock().unwrap();
            w.waits += 1;
            // A frame "arrives" during the wait when one is queued for it.
            if let Some(f) = w.arrives.take() {
                w.inbound.push(f);
                return true;
            }
            false
        }
    }

    const BASE: u64 = VIRTIO_NET_MMIO_GPA;
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const DESC: u64 = 0x40000;
    const AVAIL: u64 = 0x41000;
    const USED: u64 = 0x42000;

    fn setup() -> (GuestMemoryMmap, VirtioNet, Arc<Mutex<Wire>>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let wire = Arc::new(Mutex::new(Wire::default()));
        let mut dev = VirtioNet::new(
            Box::new(MemBackend(wire.clone())),
            MAC,
            [10, 0, 0, 2],
            DmaPolicy::new(1 << 20),
        )
        .unwrap();
        let w =
            |d: &mut VirtioNet, off: u64, v: u32| d.mmio_write(&mem, BASE + off, &v.to_le_bytes());
        w(&mut dev, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut dev, reg::DRIVER_FEATURES, 1); // VERSION_1
        w(&mut dev, reg::STATUS, 1 | 2 | STATUS_FEATURES_OK);
        (mem, dev, wire)
    }

    /// Enables queue `q` with 4 entries at the fixed ring addresses (offset per queue).
    fn enable(mem: &GuestMemoryMmap, dev: &mut VirtioNet, q: u32, desc: u64) -> bool {
        let o = u64::from(q) * 0x4000;
        let mut w = |off: u64, v: u32| dev.mmio_write(mem, BASE + off, &v.to_le_bytes());
        w(reg::QUEUE_SEL, q);
        w(reg::QUEUE_NUM, 4);
        w(reg::QUEUE_DESC_LOW, desc as u32);
        w(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        w(reg::QUEUE_DRIVER_LOW, (AVAIL + o) as u32);
        w(reg::QUEUE_DEVICE_LOW, (USED + o) as u32);
        w(reg::QUEUE_READY, 1);
        let mut r = [0u8; 4];
        dev.mmio_read(mem, BASE + reg::QUEUE_READY, &mut r);
        u32::from_le_bytes(r) == 1
    }

    fn desc(mem: &GuestMemoryMmap, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let d = table + i * 16;
        mem.write_obj(addr, GuestAddress(d)).unwrap();
        mem.write_obj(len, GuestAddress(d + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
        mem.write_obj(next, GuestAddress(d + 14)).unwrap();
    }

    /// Publishes head 0 in queue `q`'s avail ring.
    fn offer(mem: &GuestMemoryMmap, q: u64) {
        let avail = AVAIL + q * 0x4000;
        mem.write_obj(0u16, GuestAddress(avail + 4)).unwrap();
        mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
    }

    fn used_idx(mem: &GuestMemoryMmap, q: u64) -> u16 {
        mem.read_obj(GuestAddress(USED + q * 0x4000 + 2)).unwrap()
    }

    /// A 60-byte frame arrives from the wire; reading the interrupt status lets the
    /// device deliver it. Returns that status.
    fn receive_frame(mem: &GuestMemoryMmap, dev: &mut VirtioNet, wire: &Arc<Mutex<Wire>>) -> u32 {
        wire.lock().unwrap().inbound.push(vec![0xab; 60]);
        let mut r = [0u8; 4];
        dev.mmio_read(mem, BASE + reg::INTERRUPT_STATUS, &mut r);
        u32::from_le_bytes(r)
    }

    fn go(mem: &GuestMemoryMmap, dev: &mut VirtioNet) {
        dev.mmio_write(
            mem,
            BASE + reg::STATUS,
            &(1u32 | 2 | STATUS_FEATURES_OK | STATUS_DRIVER_OK).to_le_bytes(),
        );
    }

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    #[test]
    fn descriptor_loop_in_the_transmit_queue_terminates() {
        let (mem, mut dev, _wire) = setup();
        let t = DESC + 0x4000;
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        desc(&mem, t, 0, 0x50000, 100, NEXT, 1);
        desc(&mem, t, 1, 0x51000, 100, NEXT, 0);
        offer(&mem, 1);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        assert_eq!(used_idx(&mem, 1), 1, "the looping chain is consumed once");
    }

    #[test]
    fn oversized_transmit_descriptor_is_dropped_not_read() {
        let (mem, mut dev, wire) = setup();
        let t = DESC + 0x4000;
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        desc(&mem, t, 0, 0x50000, u32::MAX, 0, 0);
        offer(&mem, 1);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        assert_eq!(used_idx(&mem, 1), 1);
        assert!(wire.lock().unwrap().sent.is_empty());
        assert_eq!(dev.stats().dropped, 1);
    }

    #[test]
    fn receive_buffer_on_the_configuration_page_is_never_written() {
        let (mem, mut dev, wire) = setup();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, CONFIG_PAGE_GPA, 2048, WRITE, 0);
        offer(&mem, 0);
        receive_frame(&mem, &mut dev, &wire);
        let mut page = [0u8; PAGE_SIZE];
        mem.read_slice(&mut page, GuestAddress(CONFIG_PAGE_GPA))
            .unwrap();
        assert!(page.iter().all(|b| *b == 0));
        assert_eq!(used_idx(&mem, 0), 1);
        assert_eq!(dev.stats().rx_frames, 0);
        assert_eq!(dev.stats().dropped, 1);
    }

    #[test]
    fn frame_reaches_a_good_receive_buffer() {
        let (mem, mut dev, wire) = setup();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        let status = receive_frame(&mem, &mut dev, &wire);
        assert_eq!(status, INT_USED_BUFFER);
        let mut got = [0u8; 72];
        mem.read_slice(&mut got, GuestAddress(0x60000)).unwrap();
        assert_eq!(got[10], 1);
        assert!(got[12..].iter().all(|b| *b == 0xab));
        assert_eq!(dev.stats().rx_frames, 1);
    }

    /// Fuzzing found (virtio_net): a used ring placed on the configuration page was
    /// enabled, and the device's used-ring writes then changed the page the guest
    /// cannot write itself.
    #[test]
    fn used_ring_on_the_configuration_page_is_not_enabled() {
        let (mem, mut dev, _wire) = setup();
        let mut w = |off: u64, v: u32| dev.mmio_write(&mem, BASE + off, &v.to_le_bytes());
        w(reg::QUEUE_SEL, 1);
        w(reg::QUEUE_NUM, 4);
        w(reg::QUEUE_DESC_LOW, DESC as u32);
        w(reg::QUEUE_DRIVER_LOW, AVAIL as u32);
        w(reg::QUEUE_DEVICE_LOW, CONFIG_PAGE_GPA as u32 + 0x100);
        w(reg::QUEUE_READY, 1);
        let mut r = [0u8; 4];
        dev.mmio_read(&mem, BASE + reg::QUEUE_READY, &mut r);
        assert_eq!(u32::from_le_bytes(r), 0);
        assert_eq!(dev.stats().dma_refused, 1);
        assert_ne!(
            dev.mmio.status & STATUS_NEEDS_RESET,
            0,
            "the device marks itself failed"
        );
    }

    /// A guest enabled a queue with good rings, then moved its used ring onto the
    /// configuration page while the queue was live (virtio-queue accepts address writes
    /// on a ready queue): the move is refused and the page never written.
    #[test]
    fn moving_a_live_used_ring_onto_the_configuration_page_is_refused() {
        let (mem, mut dev, wire) = setup();
        let t = DESC + 0x4000;
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        let cfg = CONFIG_PAGE_GPA as u32;
        dev.mmio_write(&mem, BASE + reg::QUEUE_DEVICE_LOW, &cfg.to_le_bytes());
        desc(&mem, t, 0, 0x50000, 100, 0, 0);
        mem.write_slice(&legit_frame(), GuestAddress(0x50000 + NET_HDR_LEN as u64))
            .unwrap();
        offer(&mem, 1);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        let mut page = [0u8; PAGE_SIZE];
        mem.read_slice(&mut page, GuestAddress(CONFIG_PAGE_GPA))
            .unwrap();
        assert!(page.iter().all(|b| *b == 0));
        assert!(wire.lock().unwrap().sent.is_empty());
        assert_ne!(dev.mmio.status & STATUS_NEEDS_RESET, 0);
        // Writing DRIVER_OK again does not clear the failure; only a reset does.
        go(&mem, &mut dev);
        assert_ne!(dev.mmio.status & STATUS_NEEDS_RESET, 0);
        dev.mmio_write(&mem, BASE + reg::STATUS, &0u32.to_le_bytes());
        assert_eq!(dev.mmio.status, 0);
    }

    #[test]
    fn notifying_a_queue_that_was_never_enabled_does_nothing() {
        let (mem, mut dev, wire) = setup();
        go(&mem, &mut dev);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        assert_eq!(dev.mmio.status & STATUS_NEEDS_RESET, 0);
        assert!(wire.lock().unwrap().sent.is_empty());
    }

    #[test]
    fn rings_on_platform_pages_are_not_enabled() {
        let (mem, mut dev, _wire) = setup();
        // A descriptor table on the mailbox, on the boot region's page tables.
        assert!(!enable(&mem, &mut dev, 1, MAILBOX_GPA));
        assert!(!enable(&mem, &mut dev, 1, 0x9000));
        assert_eq!(dev.stats().dma_refused, 2);
    }

    /// Before the handover, a receive buffer on the firmware image (its stub and page
    /// tables) is dropped; after it, that memory is the workload's.
    #[test]
    fn receive_buffer_on_the_firmware_image_is_refused_until_handover() {
        let (mem, mut dev, wire) = setup();
        dev.protect_firmware(0x60000..0x70000);
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        receive_frame(&mem, &mut dev, &wire);
        let mut got = [0u8; 72];
        mem.read_slice(&mut got, GuestAddress(0x60000)).unwrap();
        assert!(got.iter().all(|b| *b == 0));
        assert_eq!(dev.stats().dma_refused, 1);
        // The workload's driver takes the device over (reset, new queue).
        take_over(&mem, &mut dev, false);
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        receive_frame(&mem, &mut dev, &wire);
        mem.read_slice(&mut got, GuestAddress(0x60000)).unwrap();
        assert_eq!(got[12], 0xab);
        assert_eq!(dev.stats().rx_frames, 1);
    }

    /// The handover, then the workload's driver resets the device and negotiates
    /// VERSION_1 (and EVENT_IDX if `event_idx`); the rings are cleared (the new
    /// driver's queues start at index 0).
    fn take_over(mem: &GuestMemoryMmap, dev: &mut VirtioNet, event_idx: bool) {
        dev.handed_over(mem);
        let mut w = |off: u64, v: u32| dev.mmio_write(mem, BASE + off, &v.to_le_bytes());
        w(reg::STATUS, 0);
        w(reg::DRIVER_FEATURES_SEL, 1);
        w(reg::DRIVER_FEATURES, 1);
        w(reg::DRIVER_FEATURES_SEL, 0);
        w(
            reg::DRIVER_FEATURES,
            if event_idx { F_EVENT_IDX as u32 } else { 0 },
        );
        w(reg::STATUS, 1 | 2 | STATUS_FEATURES_OK);
        for ring in [AVAIL, USED, AVAIL + 0x4000, USED + 0x4000] {
            mem.write_slice(&[0u8; 0x100], GuestAddress(ring)).unwrap();
        }
    }

    /// Attack on the workload's memory: the firmware posted receive buffers, then
    /// handed over; the workload reuses that memory (Linux at once). A frame arriving
    /// after the handover, with a register access before the workload's driver reset
    /// the device (Linux's probe reads the magic value and version first), must not be
    /// written into the firmware's old buffers or used ring.
    #[test]
    fn after_the_handover_the_firmwares_receive_buffers_are_never_written() {
        let (mem, mut dev, wire) = setup();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        dev.handed_over(&mem);
        // The workload's data where the firmware's buffer was.
        mem.write_slice(&[0x5a; 72], GuestAddress(0x60000)).unwrap();
        let mut r = [0u8; 4];
        dev.mmio_read(&mem, BASE + reg::MAGIC, &mut r);
        assert_eq!(receive_frame(&mem, &mut dev, &wire), 0);
        let mut got = [0u8; 72];
        mem.read_slice(&mut got, GuestAddress(0x60000)).unwrap();
        assert!(
            got.iter().all(|b| *b == 0x5a),
            "the workload's memory is unchanged"
        );
        assert_eq!(used_idx(&mem, 0), 0, "the old used ring is not written");
        assert_eq!(dev.stats().rx_frames, 0);
        assert_eq!(
            wire.lock().unwrap().waits,
            0,
            "a frozen queue does not wait"
        );
    }

    fn legit_frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        f
    }

    #[test]
    fn spoofed_frames_are_not_sent_and_are_counted() {
        let (mem, mut dev, wire) = setup();
        let t = DESC + 0x4000;
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        let mut spoof_mac = legit_frame();
        spoof_mac[11] = 9;
        let mut spoof_ip = legit_frame();
        spoof_ip[31] = 1; // ARP sender 10.0.0.1: the gateway
        let frames = [spoof_mac, spoof_ip, legit_frame()];
        let avail = AVAIL + 0x4000;
        for (i, f) in frames.iter().enumerate() {
            let at = 0x50000 + 0x1000 * i as u64;
            mem.write_slice(f, GuestAddress(at + NET_HDR_LEN as u64))
                .unwrap();
            desc(&mem, t, i as u64, at, (NET_HDR_LEN + f.len()) as u32, 0, 0);
            mem.write_obj(i as u16, GuestAddress(avail + 4 + 2 * i as u64))
                .unwrap();
        }
        mem.write_obj(3u16, GuestAddress(avail + 2)).unwrap();
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        assert_eq!(used_idx(&mem, 1), 3);
        assert_eq!(wire.lock().unwrap().sent, vec![legit_frame()]);
        let st = dev.stats();
        assert_eq!((st.filtered.source_mac, st.filtered.source_ip), (1, 1));
        assert_eq!(st.tx_frames, 1);
    }

    /// [`setup`], but the driver also negotiates `VIRTIO_F_EVENT_IDX`.
    fn setup_event_idx() -> (GuestMemoryMmap, VirtioNet, Arc<Mutex<Wire>>) {
        let (mem, mut dev, wire) = setup();
        let mut w = |off: u64, v: u32| dev.mmio_write(&mem, BASE + off, &v.to_le_bytes());
        w(reg::DRIVER_FEATURES_SEL, 0);
        w(reg::DRIVER_FEATURES, F_EVENT_IDX as u32);
        w(reg::STATUS, 1 | 2 | STATUS_FEATURES_OK);
        (mem, dev, wire)
    }

    /// `avail_event` of queue `q` (4 entries): after the used ring's 4 + 8 * 4 bytes.
    fn avail_event(mem: &GuestMemoryMmap, q: u64) -> u16 {
        mem.read_obj(GuestAddress(USED + q * 0x4000 + 4 + 8 * 4))
            .unwrap()
    }

    #[test]
    fn event_idx_is_offered_and_accepted() {
        let (mem, mut dev, _wire) = setup_event_idx();
        assert_ne!(dev.mmio.status & STATUS_FEATURES_OK, 0, "FEATURES_OK kept");
        let mut r = [0u8; 4];
        dev.mmio_write(&mem, BASE + reg::DEVICE_FEATURES_SEL, &0u32.to_le_bytes());
        dev.mmio_read(&mem, BASE + reg::DEVICE_FEATURES, &mut r);
        assert_ne!(u64::from(u32::from_le_bytes(r)) & F_EVENT_IDX, 0);
    }

    /// With EVENT_IDX the receive queue's avail_event stays a queue ahead of what the
    /// device consumed, so a driver recycling buffers never needs to notify; the frame
    /// is still delivered.
    #[test]
    fn event_idx_suppresses_receive_notifications() {
        let (mem, mut dev, wire) = setup_event_idx();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        assert_eq!(receive_frame(&mem, &mut dev, &wire), INT_USED_BUFFER);
        assert_eq!(dev.stats().rx_frames, 1);
        assert_eq!(used_idx(&mem, 0), 1);
        assert_eq!(avail_event(&mem, 0), 1 + 4, "next_avail + queue size");
        let flags: u16 = mem.read_obj(GuestAddress(USED)).unwrap();
        assert_eq!(flags, 0, "EVENT_IDX replaces the flag");
    }

    /// Without EVENT_IDX the receive queue's used ring carries VRING_USED_F_NO_NOTIFY.
    #[test]
    fn receive_notifications_are_suppressed_without_event_idx() {
        let (mem, mut dev, wire) = setup();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        receive_frame(&mem, &mut dev, &wire);
        let flags: u16 = mem.read_obj(GuestAddress(USED)).unwrap();
        assert_eq!(flags, 1);
        assert_eq!(avail_event(&mem, 0), 0, "no avail_event without EVENT_IDX");
    }

    /// With EVENT_IDX the transmit queue asks for a notify at the next frame queued
    /// (avail_event = the next index), else the driver would stop notifying and the
    /// polled device would never send.
    #[test]
    fn event_idx_transmit_asks_for_the_next_notify() {
        let (mem, mut dev, wire) = setup_event_idx();
        let t = DESC + 0x4000;
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        desc(&mem, t, 0, 0x50000, (NET_HDR_LEN + 42) as u32, 0, 0);
        mem.write_slice(&legit_frame(), GuestAddress(0x50000 + NET_HDR_LEN as u64))
            .unwrap();
        offer(&mem, 1);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        assert_eq!(wire.lock().unwrap().sent.len(), 1);
        assert_eq!(avail_event(&mem, 1), 1);
    }

    /// Hostile event-idx values: a used_event of 0xffff and an avail index far beyond
    /// the queue size. The device neither panics nor takes more than a queue's worth,
    /// and writes nothing outside the rings and the posted buffer.
    #[test]
    fn hostile_event_idx_values_are_harmless() {
        let (mem, mut dev, wire) = setup_event_idx();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        // used_event (after the avail ring's 4 entries) and a bogus avail index.
        mem.write_obj(0xffffu16, GuestAddress(AVAIL + 4 + 2 * 4))
            .unwrap();
        mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        mem.write_obj(0x8000u16, GuestAddress(AVAIL + 2)).unwrap();
        for _ in 0..8 {
            receive_frame(&mem, &mut dev, &wire);
        }
        assert_eq!(
            used_idx(&mem, 0),
            0,
            "an avail index a queue beyond is not served"
        );
        assert_eq!(dev.stats().rx_frames, 0);
        let mut page = [0u8; PAGE_SIZE];
        mem.read_slice(&mut page, GuestAddress(CONFIG_PAGE_GPA))
            .unwrap();
        assert!(page.iter().all(|b| *b == 0));
        // The device is either still working or marked itself failed; a reset works.
        dev.mmio_write(&mem, BASE + reg::STATUS, &0u32.to_le_bytes());
        assert_eq!(dev.mmio.status, 0);
    }

    /// A guest polling `InterruptStatus` on an idle device waits for the TAP device
    /// (the frame arriving meanwhile is delivered by that same read); a poll that
    /// delivered a frame, or one whose queue is not live, does not wait.
    #[test]
    fn an_idle_status_poll_waits_for_the_tap_and_delivers_what_arrives() {
        let (mem, mut dev, wire) = setup_event_idx();
        let status = |dev: &mut VirtioNet| {
            let mut r = [0u8; 4];
            dev.mmio_read(&mem, BASE + reg::INTERRUPT_STATUS, &mut r);
            u32::from_le_bytes(r)
        };
        status(&mut dev);
        assert_eq!(wire.lock().unwrap().waits, 0, "not live: no wait");
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        wire.lock().unwrap().arrives = Some(vec![0xcd; 60]);
        assert_eq!(
            status(&mut dev),
            INT_USED_BUFFER,
            "delivered after the wait"
        );
        assert_eq!(wire.lock().unwrap().waits, 1);
        assert_eq!(dev.stats().rx_frames, 1);
        assert_eq!(dev.stats().idle_waits, 1);
        // A poll that finds a frame at once does not wait.
        wire.lock().unwrap().inbound.push(vec![0xab; 60]);
        mem.write_obj(0u16, GuestAddress(AVAIL + 6)).unwrap();
        mem.write_obj(2u16, GuestAddress(AVAIL + 2)).unwrap();
        status(&mut dev);
        assert_eq!(dev.stats().rx_frames, 2);
        assert_eq!(wire.lock().unwrap().waits, 1);
    }

    /// [`setup_event_idx`] with an interrupt line and a wake-up eventfd (both
    /// non-blocking; a read says how often each was written).
    fn setup_interrupt() -> (
        GuestMemoryMmap,
        VirtioNet,
        Arc<Mutex<Wire>>,
        EventFd,
        EventFd,
    ) {
        let (mem, dev, wire) = setup_event_idx();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let wake = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = dev.with_interrupt(irq.try_clone().unwrap(), wake.try_clone().unwrap());
        (mem, dev, wire, irq, wake)
    }

    fn raised(e: &EventFd) -> u64 {
        e.read().unwrap_or(0)
    }

    /// Before the handover the device stays polled (the firmware runs with interrupts
    /// off): no interrupt, no receive-thread work, receive notifications suppressed;
    /// between the handover and the workload's reset, nothing is received. From that
    /// reset on a delivered frame raises the interrupt, the receive thread is woken and
    /// serves the queue, and the receive queue asks for a notify again.
    #[test]
    fn the_interrupt_is_raised_only_once_the_workload_reset_the_device() {
        let (mem, mut dev, wire, irq, wake) = setup_interrupt();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        assert_eq!(receive_frame(&mem, &mut dev, &wire), INT_USED_BUFFER);
        assert_eq!(raised(&irq), 0, "polled before the handover");
        assert_eq!(
            dev.service(&mem),
            RxWait::Frames,
            "the thread waits for frames"
        );
        assert_eq!(
            raised(&irq),
            0,
            "the thread raises nothing before the handover"
        );
        assert_eq!(avail_event(&mem, 0), 1 + 4, "receive notify suppressed");

        dev.handed_over(&mem);
        assert!(!dev.interrupts(), "not before the workload's reset");
        assert_eq!(dev.service(&mem), RxWait::Buffers, "frozen");
        take_over(&mem, &mut dev, true);
        assert!(dev.interrupts());
        assert_eq!(raised(&wake), 1, "the reset wakes the receive thread");
        assert_eq!(dev.service(&mem), RxWait::Buffers, "no live queue yet");
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        offer(&mem, 0);
        // The frame arrives with no register access at all: the receive thread
        // delivers it.
        wire.lock().unwrap().inbound.push(vec![0xcd; 60]);
        assert_eq!(dev.service(&mem), RxWait::Frames);
        assert_eq!(dev.stats().rx_frames, 2);
        assert_eq!(used_idx(&mem, 0), 1);
        assert_eq!(raised(&irq), 1, "interrupt for the delivered frame");
        assert_eq!(
            avail_event(&mem, 0),
            1,
            "the driver's refill notifies again"
        );
        // Nothing arrived: no interrupt; a status read no longer waits for the TAP.
        assert_eq!(dev.service(&mem), RxWait::Frames);
        let mut r = [0u8; 4];
        dev.mmio_read(&mem, BASE + reg::INTERRUPT_STATUS, &mut r);
        assert_eq!(raised(&irq), 0);
        assert_eq!(
            wire.lock().unwrap().waits,
            0,
            "no idle wait in interrupt mode"
        );
    }

    /// A frame with no receive buffer waits; the thread then waits for buffers, and
    /// the driver's notify of the receive queue wakes it.
    #[test]
    fn a_frame_without_a_buffer_waits_for_the_drivers_notify() {
        let (mem, mut dev, wire, irq, wake) = setup_interrupt();
        take_over(&mem, &mut dev, true);
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        raised(&wake);
        wire.lock().unwrap().inbound.push(vec![0xab; 60]);
        assert_eq!(dev.service(&mem), RxWait::Buffers);
        assert_eq!(raised(&irq), 0);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        offer(&mem, 0);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &0u32.to_le_bytes());
        assert_eq!(raised(&wake), 1, "the notify wakes the receive thread");
        assert_eq!(
            dev.stats().rx_frames,
            1,
            "the notify's own pass delivered it"
        );
        assert_eq!(raised(&irq), 1);
        assert_eq!(dev.service(&mem), RxWait::Frames);
    }

    /// The driver's `used_event` suppresses the interrupt (EVENT_IDX): a frame
    /// delivered while the driver asked for none raises nothing.
    #[test]
    fn used_event_suppresses_the_interrupt() {
        let (mem, mut dev, wire, irq, _wake) = setup_interrupt();
        take_over(&mem, &mut dev, true);
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        desc(&mem, DESC, 1, 0x61000, 2048, WRITE, 0);
        mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        mem.write_obj(1u16, GuestAddress(AVAIL + 6)).unwrap();
        mem.write_obj(2u16, GuestAddress(AVAIL + 2)).unwrap();
        // used_event (after the avail ring's 4 entries) = 1: interrupt when the used
        // index passes 1, not at the first frame.
        mem.write_obj(1u16, GuestAddress(AVAIL + 4 + 2 * 4))
            .unwrap();
        wire.lock().unwrap().inbound.push(vec![0xab; 60]);
        dev.service(&mem);
        assert_eq!(dev.stats().rx_frames, 1);
        assert_eq!(raised(&irq), 0, "suppressed by used_event");
        wire.lock().unwrap().inbound.push(vec![0xab; 60]);
        dev.service(&mem);
        assert_eq!(raised(&irq), 1);
    }

    /// In interrupt mode, transmitted frames' buffers returned raise the interrupt too
    /// (Linux frees its sent buffers from it).
    #[test]
    fn returned_transmit_buffers_raise_the_interrupt_after_the_handover() {
        let (mem, mut dev, wire, irq, _wake) = setup_interrupt();
        let t = DESC + 0x4000;
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        desc(&mem, t, 0, 0x50000, (NET_HDR_LEN + 42) as u32, 0, 0);
        mem.write_slice(&legit_frame(), GuestAddress(0x50000 + NET_HDR_LEN as u64))
            .unwrap();
        offer(&mem, 1);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        assert_eq!(raised(&irq), 0, "polled before the handover");
        take_over(&mem, &mut dev, true);
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        offer(&mem, 1);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        assert_eq!(wire.lock().unwrap().sent.len(), 2);
        assert_eq!(raised(&irq), 1);
    }

    /// Before the handover (the firmware, polled) the receive thread fills the ring as
    /// frames arrive, raising no interrupt and keeping receive notifications
    /// suppressed; a guest access wakes it when it waited for buffers.
    #[test]
    fn the_thread_fills_the_polled_ring_without_an_exit() {
        let (mem, mut dev, wire, irq, wake) = setup_interrupt();
        assert_eq!(dev.service(&mem), RxWait::Buffers, "queue not live yet");
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        assert!(raised(&wake) >= 1, "the queue going live wakes the thread");
        for i in 0..4u64 {
            desc(&mem, DESC, i, 0x60000 + 0x1000 * i, 2048, WRITE, 0);
            mem.write_obj(i as u16, GuestAddress(AVAIL + 4 + 2 * i))
                .unwrap();
        }
        mem.write_obj(4u16, GuestAddress(AVAIL + 2)).unwrap();
        wire.lock().unwrap().inbound.push(vec![0xab; 60]);
        assert_eq!(dev.service(&mem), RxWait::Frames);
        assert_eq!(used_idx(&mem, 0), 1, "delivered with no register access");
        assert_eq!(raised(&irq), 0);
        assert_eq!(avail_event(&mem, 0), 1 + 4, "receive notify suppressed");
        // Five frames for three buffers: one waits, the thread waits for buffers.
        for _ in 0..5 {
            wire.lock().unwrap().inbound.push(vec![0xcd; 60]);
        }
        assert_eq!(dev.service(&mem), RxWait::Buffers);
        assert_eq!(used_idx(&mem, 0), 4);
        // The guest recycles a buffer (no notify) and polls: the access delivers the
        // waiting frame and wakes the thread for the rest.
        raised(&wake);
        mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        mem.write_obj(5u16, GuestAddress(AVAIL + 2)).unwrap();
        let mut r = [0u8; 4];
        dev.mmio_read(&mem, BASE + reg::CONFIG_GENERATION, &mut r);
        assert_eq!(used_idx(&mem, 0), 5);
        assert_eq!(raised(&wake), 0, "the ring is full again: no wake-up");
        assert_eq!(dev.stats().rx_frames, 5);
    }

    /// Frames the thread delivered since the guest's last access: the guest's idle
    /// poll does not wait for the TAP device (it may not have seen them).
    #[test]
    fn an_idle_poll_after_a_thread_delivery_does_not_wait() {
        let (mem, mut dev, wire, _irq, _wake) = setup_interrupt();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        desc(&mem, DESC, 0, 0x60000, 2048, WRITE, 0);
        desc(&mem, DESC, 1, 0x61000, 2048, WRITE, 0);
        mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        mem.write_obj(1u16, GuestAddress(AVAIL + 6)).unwrap();
        mem.write_obj(2u16, GuestAddress(AVAIL + 2)).unwrap();
        wire.lock().unwrap().inbound.push(vec![0xab; 60]);
        dev.service(&mem);
        let mut r = [0u8; 4];
        dev.mmio_read(&mem, BASE + reg::INTERRUPT_STATUS, &mut r);
        assert_eq!(wire.lock().unwrap().waits, 0, "a delivery the guest missed");
        dev.mmio_read(&mem, BASE + reg::INTERRUPT_STATUS, &mut r);
        assert_eq!(wire.lock().unwrap().waits, 1, "then it waits");
    }

    /// Before the handover a transmit notify only wakes the thread, which sends; an
    /// idle poll sends what is queued itself; the handover sends what is left before
    /// the firmware's buffers become the workload's, and from then on the vCPU sends.
    #[test]
    fn the_thread_sends_for_the_firmware_and_the_handover_drains_the_queue() {
        let (mem, mut dev, wire, irq, wake) = setup_interrupt();
        let t = DESC + 0x4000;
        let avail = AVAIL + 0x4000;
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        raised(&wake);
        let queue = |i: u16| {
            let at = 0x50000 + 0x1000 * u64::from(i % 4);
            mem.write_slice(&legit_frame(), GuestAddress(at + NET_HDR_LEN as u64))
                .unwrap();
            desc(
                &mem,
                t,
                u64::from(i % 4),
                at,
                (NET_HDR_LEN + 42) as u32,
                0,
                0,
            );
            mem.write_obj(i % 4, GuestAddress(avail + 4 + 2 * u64::from(i % 4)))
                .unwrap();
            mem.write_obj(i + 1, GuestAddress(avail + 2)).unwrap();
        };
        let notify = |dev: &mut VirtioNet| {
            dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes())
        };
        queue(0);
        notify(&mut dev);
        assert_eq!(wire.lock().unwrap().sent.len(), 0, "the exit only wakes");
        assert_eq!(raised(&wake), 1);
        dev.service(&mem);
        assert_eq!(wire.lock().unwrap().sent.len(), 1, "the thread sent it");
        assert_eq!(used_idx(&mem, 1), 1);
        queue(1);
        notify(&mut dev);
        let mut r = [0u8; 4];
        dev.mmio_read(&mem, BASE + reg::INTERRUPT_STATUS, &mut r);
        assert_eq!(wire.lock().unwrap().sent.len(), 2, "the idle poll sent it");
        queue(2);
        notify(&mut dev);
        dev.handed_over(&mem);
        assert_eq!(wire.lock().unwrap().sent.len(), 3, "the handover sent it");
        queue(3);
        notify(&mut dev);
        assert_eq!(
            wire.lock().unwrap().sent.len(),
            4,
            "after the handover the vCPU sends"
        );
        assert_eq!(raised(&irq), 0);
    }

    /// The thread's polled-mode pass on hostile rings: a looping receive chain, a
    /// buffer outside RAM, one over the configuration page, and event indexes out of
    /// range. Nothing outside the posted good buffer and the rings is written, the
    /// thread does not spin on a frame it cannot deliver, and a reset recovers.
    #[test]
    fn the_threads_polled_pass_on_hostile_rings_writes_nothing_else() {
        let (mem, mut dev, wire, irq, _wake) = setup_interrupt();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        // 0: loops to itself; 1: outside guest RAM; 2: the configuration page;
        // 3: a good buffer.
        desc(&mem, DESC, 0, 0x60000, 4, WRITE | NEXT, 0);
        desc(&mem, DESC, 1, 0xffff_0000_0000, 2048, WRITE, 0);
        desc(&mem, DESC, 2, CONFIG_PAGE_GPA, 2048, WRITE, 0);
        desc(&mem, DESC, 3, 0x63000, 2048, WRITE, 0);
        for i in 0..4u64 {
            mem.write_obj(i as u16, GuestAddress(AVAIL + 4 + 2 * i))
                .unwrap();
        }
        // used_event far out of range.
        mem.write_obj(0xfff0u16, GuestAddress(AVAIL + 4 + 2 * 4))
            .unwrap();
        mem.write_obj(4u16, GuestAddress(AVAIL + 2)).unwrap();
        for _ in 0..4 {
            wire.lock().unwrap().inbound.push(vec![0xee; 1500]);
        }
        let mut turns = 0;
        while dev.service(&mem) == RxWait::Frames && turns < 8 {
            turns += 1;
        }
        let mut page = [0u8; PAGE_SIZE];
        mem.read_slice(&mut page, GuestAddress(CONFIG_PAGE_GPA))
            .unwrap();
        assert!(page.iter().all(|b| *b == 0), "configuration page untouched");
        let mut good = [0u8; 1500];
        mem.read_slice(&mut good, GuestAddress(0x63000 + NET_HDR_LEN as u64))
            .unwrap();
        assert!(
            good.iter().all(|b| *b == 0xee),
            "the good buffer got its frame"
        );
        assert_eq!(dev.stats().rx_frames, 1);
        assert_eq!(raised(&irq), 0);
        // An avail index a queue beyond: not served, no spin.
        mem.write_obj(0x8000u16, GuestAddress(AVAIL + 2)).unwrap();
        wire.lock().unwrap().inbound.push(vec![0xee; 60]);
        assert_eq!(dev.service(&mem), RxWait::Buffers);
        dev.mmio_write(&mem, BASE + reg::STATUS, &0u32.to_le_bytes());
        assert_eq!(dev.mmio.status, 0);
        assert_eq!(
            dev.service(&mem),
            RxWait::Buffers,
            "not live after the reset"
        );
    }

    /// The guest's transmit header is not passed on: bogus offload fields (GSO type,
    /// checksum start beyond the frame) change nothing; the frame after it is sent
    /// as it is (it goes to the TAP device with an empty vnet header).
    #[test]
    fn bogus_transmit_vnet_header_fields_are_ignored() {
        let (mem, mut dev, wire) = setup();
        let t = DESC + 0x4000;
        assert!(enable(&mem, &mut dev, 1, t));
        go(&mem, &mut dev);
        let mut hdr = [0u8; NET_HDR_LEN];
        hdr[0] = 0xff; // flags
        hdr[1] = 0x84; // gso_type: TCPv6 | ECN
        hdr[2..4].copy_from_slice(&0xffffu16.to_le_bytes()); // hdr_len
        hdr[4..6].copy_from_slice(&1u16.to_le_bytes()); // gso_size
        hdr[6..8].copy_from_slice(&0xfff0u16.to_le_bytes()); // csum_start
        hdr[8..10].copy_from_slice(&0xfff0u16.to_le_bytes()); // csum_offset
        mem.write_slice(&hdr, GuestAddress(0x50000)).unwrap();
        mem.write_slice(&legit_frame(), GuestAddress(0x50000 + NET_HDR_LEN as u64))
            .unwrap();
        desc(&mem, t, 0, 0x50000, (NET_HDR_LEN + 42) as u32, 0, 0);
        offer(&mem, 1);
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &1u32.to_le_bytes());
        assert_eq!(wire.lock().unwrap().sent, vec![legit_frame()]);
        assert_eq!(used_idx(&mem, 1), 1);
    }

    /// Publishes heads `0..n` of the receive queue (4 entries) in its avail ring, after
    /// `base` published before.
    fn offer_rx(mem: &GuestMemoryMmap, base: u16, heads: &[u16]) {
        for (i, h) in heads.iter().enumerate() {
            let slot = u64::from((base + i as u16) % 4);
            mem.write_obj(*h, GuestAddress(AVAIL + 4 + 2 * slot))
                .unwrap();
        }
        mem.write_obj(base + heads.len() as u16, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// Four device-writable receive buffers of `len` bytes, `stride` apart from
    /// 0x60000, as descriptors 0..4 of the receive queue.
    fn rx_buffers(mem: &GuestMemoryMmap, stride: u64, len: u32) {
        for i in 0..4u16 {
            let at = 0x60000 + u64::from(i) * stride;
            desc(mem, DESC, u64::from(i), at, len, WRITE, 0);
        }
    }

    fn seq_in(mem: &GuestMemoryMmap, buf: u64) -> u32 {
        let mut b = [0u8; 4];
        mem.read_slice(&mut b, GuestAddress(buf + NET_HDR_LEN as u64 + 38))
            .unwrap();
        u32::from_be_bytes(b)
    }

    #[test]
    fn a_tso_segment_reaches_the_guest_as_mss_frames_across_ring_refills() {
        let (mem, mut dev, wire) = setup();
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        rx_buffers(&mem, 0x1000, 2048);
        // A refused packet first (TCPv6 GSO, never offered): dropped, counted, and the
        // next packet still delivered.
        let bad = offload::VnetHdr {
            gso_type: 4,
            ..offload::tests::gso(1448)
        };
        let packet = offload::tests::gso_packet(6000);
        {
            let mut w = wire.lock().unwrap();
            w.offloaded.push((bad, packet.clone()));
            w.offloaded.push((offload::tests::gso(1448), packet));
        }
        offer_rx(&mem, 0, &[0, 1, 2, 3]);
        let mut r = [0u8; 4];
        dev.mmio_read(&mem, BASE + reg::INTERRUPT_STATUS, &mut r);
        assert_eq!(used_idx(&mem, 0), 4, "a ring's worth of the 5 segments");
        assert_eq!(dev.stats().rx_frames, 4);
        assert_eq!(dev.stats().dropped, 1);
        assert_eq!(dev.stats().rx_segmented, 1);
        for i in 0..4u64 {
            let len: u32 = mem.read_obj(GuestAddress(USED + 4 + 8 * i + 4)).unwrap();
            assert_eq!(len as usize, NET_HDR_LEN + 66 + 1448);
            assert_eq!(seq_in(&mem, 0x60000 + i * 0x1000), 1000 + 1448 * i as u32);
        }
        // The guest recycles one buffer: the last segment (6000 - 4 * 1448 = 208
        // bytes) follows from what was kept, not from a new read.
        offer_rx(&mem, 4, &[2]);
        dev.mmio_read(&mem, BASE + reg::INTERRUPT_STATUS, &mut r);
        assert_eq!(used_idx(&mem, 0), 5);
        let len: u32 = mem.read_obj(GuestAddress(USED + 4 + 4)).unwrap();
        assert_eq!(len as usize, NET_HDR_LEN + 66 + 208);
        assert_eq!(seq_in(&mem, 0x62000), 1000 + 4 * 1448);
        assert_eq!(dev.stats().rx_frames, 5);
    }

    #[test]
    fn a_driver_taking_offloads_gets_the_tso_segment_whole_with_its_header() {
        let (mem, mut dev, wire) = setup();
        {
            let mut w = |off: u64, v: u32| dev.mmio_write(&mem, BASE + off, &v.to_le_bytes());
            w(reg::DRIVER_FEATURES_SEL, 0);
            w(reg::DRIVER_FEATURES, (F_GUEST_CSUM | F_GUEST_TSO4) as u32);
            w(reg::STATUS, 1 | 2 | STATUS_FEATURES_OK);
        }
        assert!(enable(&mem, &mut dev, 0, DESC));
        go(&mem, &mut dev);
        rx_buffers(&mem, 0x4000, 0x4000);
        let packet = offload::tests::gso_packet(6000);
        let good = offload::tests::gso(1448);
        // A header with a flag the spec does not define: dropped, counted, and the
        // next packet still delivered; a packet larger than the buffer: dropped.
        let bad = offload::VnetHdr {
            flags: 0x80,
            ..good
        };
        {
            let mut w = wire.lock().unwrap();
            w.offloaded.push((bad, packet.clone()));
            w.offloaded.push((good, packet.clone()));
            w.offloaded.push((good, offload::tests::gso_packet(20000)));
        }
        offer_rx(&mem, 0, &[0, 1, 2, 3]);
        let mut r = [0u8; 4];
        dev.mmio_read(&mem, BASE + reg::INTERRUPT_STATUS, &mut r);
        assert_eq!(dev.stats().rx_frames, 1, "one frame for the whole segment");
        assert_eq!(dev.stats().rx_segmented, 0, "nothing split");
        assert_eq!(dev.stats().dropped, 2);
        let len: u32 = mem.read_obj(GuestAddress(USED + 4 + 4)).unwrap();
        assert_eq!(len as usize, NET_HDR_LEN + packet.len());
        let mut got = vec![0u8; NET_HDR_LEN + packet.len()];
        mem.read_slice(&mut got, GuestAddress(0x60000)).unwrap();
        let mut h = [0u8; NET_HDR_LEN];
        h.copy_from_slice(&got[..NET_HDR_LEN]);
        assert_eq!(
            offload::VnetHdr::parse(&h),
            good,
            "the host's offload header"
        );
        assert_eq!(
            &got[NET_HDR_LEN..],
            &packet[..],
            "the packet as the host gave it"
        );
    }

    #[test]
    fn rings_outside_guest_memory_are_not_enabled() {
        let (mem, mut dev, _wire) = setup();
        assert!(!enable(&mem, &mut dev, 1, 0xffff_f000_0000));
    }
}
