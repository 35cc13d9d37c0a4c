//! The virtio-mmio transport (version 2, virtio 1.x) shared by tvp-vmm's virtio
//! devices (net, blk): the register file, feature negotiation, queue setup checked
//! against the DMA policy, the device status with `DEVICE_NEEDS_RESET`, and the
//! interrupt status. A device owns one [`MmioTransport`], hands it its config space on
//! reads and acts on what [`MmioTransport::write`] reports (a queue notify, a reset).
//!
//! Guest input is hostile: queues are rust-vmm's `virtio-queue` (ring addresses
//! validated against guest memory before a queue goes live); every ring must lie in
//! device-writable memory ([`crate::dma`]) or the queue is refused and the device marks
//! itself failed; ring sizes and addresses cannot change while a queue is live; only
//! a reset clears `DEVICE_NEEDS_RESET`.

use crate::dma::{DmaPolicy, DmaRefusal};
use std::ops::Range;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// `VIRTIO_F_EVENT_IDX`: `used_event` / `avail_event` notification suppression.
pub const F_EVENT_IDX: u64 = 1 << 29;
/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x0074_7670; // "tvp"

/// Device status: `DRIVER_OK`.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Device status: `FEATURES_OK`.
pub const STATUS_FEATURES_OK: u32 = 8;
/// Device status: `DEVICE_NEEDS_RESET`, set by the device when the guest broke it.
pub const STATUS_NEEDS_RESET: u32 = 0x40;
/// Interrupt status: a used buffer was returned.
pub const INT_USED_BUFFER: u32 = 1;
/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver does not want an interrupt.
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Most individual problems logged per device before going quiet.
const LOG_LIMIT: u32 = 32;

/// virtio-mmio register offsets.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// What a register write asks of the device behind the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Nothing beyond the transport's own state.
    Done,
    /// The driver notified queue `n` (any value: the device checks it).
    Notify(u32),
    /// The driver reset the device (status 0): the device drops its own state too.
    Reset,
}

/// One virtio-mmio register window and its queues.
pub struct MmioTransport {
    name: &'static str,
    device_id: u32,
    features: u64,
    queue_size_max: u16,
    device_features_sel: u32,
    driver_features_sel: u32,
    /// Features the driver accepted.
    pub driver_features: u64,
    queue_sel: u32,
    /// The device's queues, by index.
    pub queues: Vec<Queue>,
    /// Device status register.
    pub status: u32,
    /// Interrupt status register.
    pub interrupt_status: u32,
    logged: u32,
    /// What the device may write.
    pub dma: DmaPolicy,
    /// Rings and buffers refused by the DMA policy.
    pub dma_refused: u64,
}

impl MmioTransport {
    /// A transport for device `device_id` (logged as `name`) offering `features`, with
    /// `queues` queues of up to `queue_size_max` entries; `None` only if that size is
    /// invalid (a bug).
    pub fn new(
        name: &'static str,
        device_id: u32,
        features: u64,
        queues: usize,
        queue_size_max: u16,
        dma: DmaPolicy,
    ) -> Option<Self> {
        let queues = (0..queues)
            .map(|_| Queue::new(queue_size_max).ok())
            .collect::<Option<Vec<_>>>()?;
        Some(MmioTransport {
            name,
            device_id,
            features,
            queue_size_max,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            status: 0,
            interrupt_status: 0,
            logged: 0,
            dma,
            dma_refused: 0,
        })
    }

    /// Protects the measured firmware image from device writes until the handover.
    pub fn protect_firmware(&mut self, image: Range<u64>) {
        self.dma.protect_firmware(image);
    }

    /// The firmware handed over: its image is the workload's memory now.
    pub fn release_firmware(&mut self) {
        self.dma.release_firmware();
    }

    /// Logs a problem (within the log budget).
    pub fn note(&mut self, what: String) {
        if self.logged < LOG_LIMIT {
            self.logged += 1;
            log::warn!(problem = what.as_str(); "{}", self.name);
        }
    }

    /// The guest broke the device: logged, and `DEVICE_NEEDS_RESET` set until a reset.
    pub fn broken(&mut self, why: String) {
        self.note(why);
        self.status |= STATUS_NEEDS_RESET;
    }

    /// A ring or buffer at `[gpa, gpa + len)` was refused: counted, logged.
    pub fn dma_refused(&mut self, what: &str, gpa: u64, len: u64, why: DmaRefusal) {
        self.dma_refused += 1;
        if self.logged < LOG_LIMIT {
            self.logged += 1;
            log::warn!(what = what, gpa = format!("{gpa:#x}"), bytes = len, reason = why.name(); "{}: refused to write guest memory: {why}", self.name);
        }
    }

    /// Whether the driver is done setting up and the device is not failed.
    pub fn live(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_NEEDS_RESET == 0
    }

    /// Whether queue `i` is live and usable: the device is live, the queue ready, its
    /// rings still in device-writable memory (else the device is marked failed).
    pub fn queue_live(&mut self, i: usize) -> bool {
        self.live() && self.queues.get(i).is_some_and(|q| q.ready()) && self.queue_usable(i)
    }

    /// Checks a queue's three rings against the device-writable memory.
    fn rings_refusal(&self, q: &Queue) -> Option<(&'static str, u64, u64, DmaRefusal)> {
        let n = u64::from(q.size());
        [
            ("descriptor-table", q.desc_table(), 16 * n),
            ("available-ring", q.avail_ring(), 6 + 2 * n),
            ("used-ring", q.used_ring(), 6 + 8 * n),
        ]
        .into_iter()
        .find_map(|(what, gpa, len)| self.dma.check(gpa, len).err().map(|e| (what, gpa, len, e)))
    }

    /// Whether queue `i` may be used now; a queue whose rings became off-limits is
    /// refused and the device marked failed.
    pub fn queue_usable(&mut self, i: usize) -> bool {
        let Some(q) = self.queues.get(i) else {
            return false;
        };
        match self.rings_refusal(q) {
            None => true,
            Some((what, gpa, len, why)) => {
                self.dma_refused(what, gpa, len, why);
                self.broken(format!("queue {i} {what} refused: {why}"));
                false
            }
        }
    }

    fn reset(&mut self) {
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.interrupt_status = 0;
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A guest read of `data` at register offset `off`; `config` is the device's
    /// configuration space (read bytewise, zero past its end).
    pub fn read(&mut self, off: u64, data: &mut [u8], config: &[u8]) {
        data.fill(0);
        if off >= reg::CONFIG {
            for (i, b) in data.iter_mut().enumerate() {
                let at = (off - reg::CONFIG).saturating_add(i as u64);
                *b = usize::try_from(at)
                    .ok()
                    .and_then(|at| config.get(at).copied())
                    .unwrap_or(0);
            }
            return;
        }
        if data.len() != 4 {
            self.note(format!(
                "{}-byte read of register {off:#x} ignored",
                data.len()
            ));
            return;
        }
        let max = u32::from(self.queue_size_max);
        let v: u32 = match off {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device_id,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.features as u32,
                1 => (self.features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX if self.selected().is_some() => max,
            reg::QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// A guest write of `data` at register offset `off`.
    pub fn write(&mut self, mem: &GuestMemoryMmap, off: u64, data: &[u8]) -> Written {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.note(format!(
                "{}-byte write to register {off:#x} ignored",
                data.len()
            ));
            return Written::Done;
        };
        let v = u32::from_le_bytes(bytes);
        match off {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
                if self.selected().is_some_and(|q| q.ready()) =>
            {
                // The rings were checked when the queue went live: moving them now
                // (onto the configuration page, say) is refused.
                let q = self.queue_sel;
                self.broken(format!(
                    "queue {q} is live: write of {v:#x} to register {off:#x} (ring size or address) refused"
                ));
            }
            reg::QUEUE_NUM => {
                if let Some(q) = self.selected() {
                    // try_set_size rejects 0 (drivers write it when tearing a queue
                    // down), > max and non-powers of two.
                    if q.try_set_size(v.min(u32::from(u16::MAX)) as u16).is_err() && v != 0 {
                        self.note(format!("invalid queue size {v} ignored"));
                    }
                }
            }
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH => {
                let (lo, hi) = split(off == reg::QUEUE_DESC_LOW, v);
                if let Some(q) = self.selected() {
                    q.set_desc_table_address(lo, hi);
                }
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH => {
                let (lo, hi) = split(off == reg::QUEUE_DRIVER_LOW, v);
                if let Some(q) = self.selected() {
                    q.set_avail_ring_address(lo, hi);
                }
            }
            reg::QUEUE_DEVICE_LOW | reg::QUEUE_DEVICE_HIGH => {
                let (lo, hi) = split(off == reg::QUEUE_DEVICE_LOW, v);
                if let Some(q) = self.selected() {
                    q.set_used_ring_address(lo, hi);
                }
            }
            reg::QUEUE_READY => self.set_ready(mem, v),
            reg::QUEUE_NOTIFY => return Written::Notify(v),
            reg::INTERRUPT_ACK => self.interrupt_status &= !v,
            reg::STATUS => {
                // DEVICE_NEEDS_RESET is the device's: only a reset clears it.
                let failed = self.status & STATUS_NEEDS_RESET;
                if v == 0 {
                    self.reset();
                    return Written::Reset;
                } else if v & STATUS_FEATURES_OK != 0 && self.driver_features & !self.features != 0
                {
                    // Features we did not offer: refuse FEATURES_OK.
                    self.status = (v & !STATUS_FEATURES_OK) | failed;
                } else {
                    self.status = v | failed;
                }
            }
            _ => self.note(format!("write to register {off:#x} ignored")),
        }
        Written::Done
    }

    /// Queue `queue` returned buffers: sets `USED_BUFFER` in the interrupt status and
    /// raises `irq` (an eventfd registered as an irqfd) unless the driver suppressed
    /// the interrupt (`used_event` with `VIRTIO_F_EVENT_IDX`, else the available
    /// ring's `VRING_AVAIL_F_NO_INTERRUPT`). An unreadable ring marks the device
    /// failed.
    pub fn signal_used(&mut self, mem: &GuestMemoryMmap, queue: usize, irq: Option<&EventFd>) {
        self.interrupt_status |= INT_USED_BUFFER;
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        // virtio-queue honours used_event (EVENT_IDX) but not the ring flag.
        let wanted = if q.event_idx_enabled() {
            q.needs_notification(mem)
        } else {
            mem.read_obj::<u16>(GuestAddress(q.avail_ring()))
                .map(|flags| u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT == 0)
                .map_err(virtio_queue::Error::GuestMemory)
        };
        match wanted {
            Ok(true) => {
                if let Some(irq) = irq {
                    if let Err(e) = irq.write(1) {
                        self.note(format!("raising the interrupt failed: {e}"));
                    }
                }
            }
            Ok(false) => {}
            Err(e) => self.broken(format!("event index unreadable: {e}")),
        }
    }

    /// `QUEUE_READY` written with `v`.
    fn set_ready(&mut self, mem: &GuestMemoryMmap, v: u32) {
        let sel = self.queue_sel as usize;
        let event_idx = self.driver_features & F_EVENT_IDX != 0;
        let ok = match self.selected() {
            Some(q) if v == 1 => {
                // is_valid checks a ready queue's sizes and ring addresses against
                // guest memory; then every ring must lie in memory the device may
                // write.
                q.set_ready(true);
                q.set_event_idx(event_idx);
                let valid = q.is_valid(mem);
                q.set_ready(valid);
                if valid && !self.queue_usable(sel) {
                    if let Some(q) = self.selected() {
                        q.set_ready(false);
                    }
                    return;
                }
                valid
            }
            Some(q) => {
                q.set_ready(false);
                true
            }
            None => false,
        };
        if !ok {
            self.note(format!(
                "queue {} not enabled: rings outside guest memory or misaligned",
                self.queue_sel
            ));
        }
    }
}

/// The (low, high) halves for a 64-bit queue address register write.
fn split(low: bool, v: u32) -> (Option<u32>, Option<u32>) {
    if low {
        (Some(v), None)
    } else {
        (None, Some(v))
    }
}
