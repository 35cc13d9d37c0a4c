//! virtio-blk (virtio 1.x, read-only) over the virtio-mmio transport
//! ([`crate::virtio_mmio`]), serving the tenant's encrypted image as the disk.
//!
//! The disk's bytes are the image's plaintext; a request's sectors map to tvp-image
//! chunks, and every chunk is read from the encrypted file, authenticated and
//! decrypted inside tvp-vmm when a request needs it ([`EncryptedDisk`]; a small
//! bounded cache of decrypted chunks, wiped on eviction). A chunk that fails
//! authentication is a `VIRTIO_BLK_S_IOERR` to the guest and a [`DiskEvent::Tamper`]
//! for tvpd, never plaintext.
//!
//! Guest input is hostile. Requests: `IN` reads, `FLUSH` succeeds (nothing to write
//! back), `GET_ID` returns the serial; `OUT` (writes) gets `IOERR` (the device offers
//! `VIRTIO_BLK_F_RO`), other types `UNSUPP`; a request past the end of the disk, longer
//! than [`REQUEST_MAX`], or whose chain is malformed (header not device-readable or
//! short, data buffers of the wrong direction, no device-writable status byte) gets
//! `IOERR` without any data written. Every buffer the device writes passes the DMA
//! policy ([`crate::dma`]) first: a chain pointing at the configuration page, the boot
//! region, the mailbox, the firmware stub (before the handover) or outside RAM is
//! refused whole. Descriptor loops end (chains are bounded by the queue size), each
//! notify serves at most one queue's worth of chains, and a used ring that cannot be
//! written marks the device `DEVICE_NEEDS_RESET`.
//!
//! Interrupts: with an irqfd (GSI [`tvp_abi::layout::VIRTIO_BLK_GSI`]) the device
//! raises its line when it returned buffers and the driver did not suppress the
//! interrupt (`VRING_AVAIL_F_NO_INTERRUPT` / `used_event`); without one the guest polls
//! `InterruptStatus`.

use crate::dma::DmaPolicy;
use crate::virtio_mmio::{MmioTransport, Written, F_EVENT_IDX, F_VERSION_1};
use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use tvp_abi::layout::{VIRTIO_BLK_MMIO_GPA, VIRTIO_MMIO_SIZE};
use tvp_image::chunk::ChunkOpener;
use tvp_image::stream::TAG_LEN;
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use zeroize::Zeroizing;

/// Sector size of the disk.
pub const SECTOR: u64 = 512;
/// Queue size offered to the driver.
pub const QUEUE_SIZE_MAX: u16 = 256;
/// Largest data transfer of one request (also announced as `size_max`).
pub const REQUEST_MAX: u32 = 1 << 20;
/// Most data segments per request (announced as `seg_max`).
pub const SEG_MAX: u32 = 128;
/// Bytes of decrypted chunks the cache holds at most (at least one chunk).
pub const CACHE_BYTES: usize = 4 << 20;
/// Most chunks reported to tvpd as tampered (each once); further ones are counted.
const EVENTS_MAX: usize = 64;

const DEVICE_ID_BLK: u32 = 2;
/// `VIRTIO_BLK_F_SIZE_MAX`, `F_SEG_MAX`, `F_RO`, `F_FLUSH`.
const F_SIZE_MAX: u64 = 1 << 1;
const F_SEG_MAX: u64 = 1 << 2;
/// `VIRTIO_BLK_F_RO`: the disk is read-only.
pub const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const FEATURES: u64 = F_SIZE_MAX | F_SEG_MAX | F_RO | F_FLUSH | F_EVENT_IDX | F_VERSION_1;

/// Request types.
pub const T_IN: u32 = 0;
/// A write: refused on this read-only disk.
pub const T_OUT: u32 = 1;
/// Flush: nothing to write back.
pub const T_FLUSH: u32 = 4;
/// The device's serial (20 bytes).
pub const T_GET_ID: u32 = 8;
/// Status: done.
pub const S_OK: u8 = 0;
/// Status: I/O error (also: writes, past the end, tampered chunk, malformed request).
pub const S_IOERR: u8 = 1;
/// Status: request type not supported.
pub const S_UNSUPP: u8 = 2;
/// `struct virtio_blk_outhdr`: type u32, reserved u32, sector u64.
const HDR_LEN: u32 = 16;
/// Serial returned by `GET_ID`.
const SERIAL: &[u8; 20] = b"tvp-encrypted-disk\0\0";

/// Why a disk read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    /// A chunk failed authentication: altered, reordered or from another image.
    #[error("chunk {0} of the encrypted disk fails authentication")]
    Tampered(u64),
    /// The range lies (partly) past the end of the disk.
    #[error("read of {len} bytes at {offset} is past the end of the {size}-byte disk")]
    PastEnd { offset: u64, len: u64, size: u64 },
    /// Reading the encrypted file failed.
    #[error("reading chunk {index} of the encrypted disk failed: {detail}")]
    Io { index: u64, detail: String },
}

/// Where the ciphertext comes from: the image file (tvpd's fd) or, in tests, memory.
pub trait CipherSource: Send {
    /// Fills `buf` from byte `offset` of the encrypted file.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl CipherSource for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl CipherSource for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// The plaintext view of an encrypted image, chunk by chunk, with a bounded cache of
/// decrypted chunks (wiped when evicted or dropped).
pub struct EncryptedDisk {
    source: Box<dyn CipherSource>,
    opener: ChunkOpener,
    cache: VecDeque<(u64, Zeroizing<Vec<u8>>)>,
    cache_max: usize,
}

impl EncryptedDisk {
    /// A disk reading `source` with `opener` (the image's header and key).
    pub fn new(source: Box<dyn CipherSource>, opener: ChunkOpener) -> Self {
        let cs = opener.chunk_size().max(1) as usize;
        EncryptedDisk {
            source,
            opener,
            cache: VecDeque::new(),
            cache_max: (CACHE_BYTES / cs).max(1),
        }
    }

    /// Plaintext size in bytes.
    pub fn size(&self) -> u64 {
        self.opener.plaintext_len()
    }

    /// Decrypted chunk `index`, from the cache or the file.
    fn chunk(&mut self, index: u64) -> Result<&[u8], DiskError> {
        if let Some(pos) = self.cache.iter().position(|(i, _)| *i == index) {
            if let Some(hit) = self.cache.remove(pos) {
                self.cache.push_front(hit);
            }
        } else {
            let span = self.opener.span(index).ok_or(DiskError::Tampered(index))?;
            let mut buf = Zeroizing::new(vec![0u8; span.plain_len + TAG_LEN]);
            self.source
                .read_exact_at(&mut buf, span.offset)
                .map_err(|e| DiskError::Io {
                    index,
                    detail: e.to_string(),
                })?;
            let n = self
                .opener
                .open_in_place(index, &mut buf)
                .map_err(|_| DiskError::Tampered(index))?;
            buf.truncate(n);
            while self.cache.len() >= self.cache_max {
                self.cache.pop_back();
            }
            self.cache.push_front((index, buf));
        }
        self.cache
            .front()
            .map(|(_, b)| b.as_slice())
            .ok_or(DiskError::Tampered(index))
    }

    /// Fills `out` with the plaintext at byte `offset`; every chunk touched is
    /// authenticated first.
    pub fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<(), DiskError> {
        let len = out.len() as u64;
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(DiskError::PastEnd { offset, len, size });
        }
        let cs = u64::from(self.opener.chunk_size().max(1));
        let mut done = 0usize;
        while done < out.len() {
            let at = offset + done as u64;
            let index = at / cs;
            let within = (at % cs) as usize;
            let chunk = self.chunk(index)?;
            let avail = chunk.get(within..).unwrap_or(&[]);
            if avail.is_empty() {
                return Err(DiskError::PastEnd { offset, len, size });
            }
            let n = avail.len().min(out.len() - done);
            out[done..done + n].copy_from_slice(&avail[..n]);
            done += n;
        }
        Ok(())
    }
}

/// Something tvpd must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskEvent {
    /// Chunk `chunk` of the disk image failed authentication (`disk-tamper`).
    Tamper {
        /// The chunk's index.
        chunk: u64,
    },
}

/// Request counters, logged at the end of the VM.
#[derive(Debug, Default, Clone, Copy)]
pub struct BlkStats {
    /// Requests completed with `S_OK`.
    pub ok: u64,
    /// Requests answered `S_IOERR` (writes, past the end, tampered, malformed).
    pub ioerr: u64,
    /// Requests answered `S_UNSUPP`.
    pub unsupp: u64,
    /// Bytes of plaintext delivered to the guest.
    pub bytes_read: u64,
    /// Chunks that failed authentication.
    pub tampered: u64,
    /// Chains or rings refused by the DMA policy.
    pub dma_refused: u64,
}

/// A parsed request, before any data moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `T_*`.
    pub kind: u32,
    /// First sector.
    pub sector: u64,
    /// Data buffers: guest address and length.
    pub data: Vec<(u64, u32)>,
    /// Whether the data buffers are device-writable (all of them).
    pub data_writable: bool,
    /// The status byte's guest address.
    pub status: u64,
}

/// Why a chain is not a well-formed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The chain has fewer than two descriptors (header, status).
    #[error("chain of {0} descriptors: a request needs a header and a status byte")]
    TooShort(usize),
    /// The header descriptor is device-writable or shorter than 16 bytes.
    #[error("header descriptor unusable (write-only, or {0} bytes < 16)")]
    BadHeader(u32),
    /// The last descriptor is not a device-writable byte.
    #[error("status descriptor is not device-writable or empty")]
    BadStatus,
    /// Data buffers of both directions in one request.
    #[error("data buffers mix device-readable and device-writable")]
    MixedData,
    /// Too many data segments or bytes.
    #[error("request of {segments} segments / {bytes} bytes exceeds the limits")]
    TooLarge { segments: usize, bytes: u64 },
    /// The header could not be read from guest memory.
    #[error("request header not readable at {0:#x}")]
    Unreadable(u64),
}

/// One descriptor as the parser sees it: address, length, device-writable.
pub type Desc = (u64, u32, bool);

/// Parses a chain's descriptors into a [`Request`]; `header` reads the 16-byte header
/// at an address. Pure over its inputs (unit-tested and fuzzed).
pub fn parse_request(
    descs: &[Desc],
    header: impl FnOnce(u64) -> Option<[u8; 16]>,
) -> Result<Request, RequestError> {
    let (Some(first), Some(last)) = (descs.first(), descs.last()) else {
        return Err(RequestError::TooShort(0));
    };
    if descs.len() < 2 {
        return Err(RequestError::TooShort(descs.len()));
    }
    let &(haddr, hlen, hw) = first;
    if hw || hlen < HDR_LEN {
        return Err(RequestError::BadHeader(hlen));
    }
    let &(saddr, slen, sw) = last;
    if !sw || slen < 1 {
        return Err(RequestError::BadStatus);
    }
    let middle = descs.get(1..descs.len() - 1).unwrap_or(&[]);
    let bytes: u64 = middle.iter().map(|d| u64::from(d.1)).sum();
    if middle.len() > SEG_MAX as usize || bytes > u64::from(REQUEST_MAX) {
        return Err(RequestError::TooLarge {
            segments: middle.len(),
            bytes,
        });
    }
    let data_writable = middle.iter().all(|d| d.2);
    if !data_writable && middle.iter().any(|d| d.2) {
        return Err(RequestError::MixedData);
    }
    let h = header(haddr).ok_or(RequestError::Unreadable(haddr))?;
    let mut kind = [0u8; 4];
    kind.copy_from_slice(&h[..4]);
    let mut sector = [0u8; 8];
    sector.copy_from_slice(&h[8..]);
    Ok(Request {
        kind: u32::from_le_bytes(kind),
        sector: u64::from_le_bytes(sector),
        data: middle.iter().map(|d| (d.0, d.1)).collect(),
        data_writable,
        status: saddr,
    })
}

/// The virtio-blk device and its virtio-mmio registers.
pub struct VirtioBlk {
    disk: EncryptedDisk,
    mmio: MmioTransport,
    irq: Option<EventFd>,
    events: Vec<DiskEvent>,
    /// Chunks already reported (each once; at most [`EVENTS_MAX`]).
    reported: std::collections::BTreeSet<u64>,
    stats: BlkStats,
    buf: Zeroizing<Vec<u8>>,
}

impl VirtioBlk {
    /// A device serving `disk`, writing only what `dma` allows, interrupting through
    /// `irq` (an eventfd registered as an irqfd) if given; `None` only if the queue size
    /// constant is invalid (a bug).
    pub fn new(disk: EncryptedDisk, dma: DmaPolicy, irq: Option<EventFd>) -> Option<Self> {
        Some(VirtioBlk {
            disk,
            mmio: MmioTransport::new(
                "virtio-blk",
                DEVICE_ID_BLK,
                FEATURES,
                1,
                QUEUE_SIZE_MAX,
                dma,
            )?,
            irq,
            events: Vec::new(),
            reported: std::collections::BTreeSet::new(),
            stats: BlkStats::default(),
            // Sized once: growing would leave plaintext in freed allocations.
            buf: Zeroizing::new(Vec::with_capacity(REQUEST_MAX as usize)),
        })
    }

    /// Whether `addr` is one of this device's registers.
    pub fn contains(addr: u64) -> bool {
        (VIRTIO_BLK_MMIO_GPA..VIRTIO_BLK_MMIO_GPA + VIRTIO_MMIO_SIZE).contains(&addr)
    }

    /// Protects the measured firmware image from device writes until the handover.
    pub fn protect_firmware(&mut self, image: Range<u64>) {
        self.mmio.protect_firmware(image);
    }

    /// The firmware handed over: its image is the workload's memory now.
    pub fn handed_over(&mut self) {
        self.mmio.release_firmware();
    }

    /// The counters.
    pub fn stats(&self) -> BlkStats {
        BlkStats {
            dma_refused: self.mmio.dma_refused,
            ..self.stats
        }
    }

    /// The device status register (`DEVICE_NEEDS_RESET` shows a broken queue).
    pub fn status(&self) -> u32 {
        self.mmio.status
    }

    /// Events for tvpd since the last call.
    pub fn take_events(&mut self) -> Vec<DiskEvent> {
        std::mem::take(&mut self.events)
    }

    /// Logs the counters (at the end of the VM).
    pub fn log_totals(&self) {
        let s = self.stats();
        log::info!(ok = s.ok, ioerr = s.ioerr, unsupp = s.unsupp, bytes_read = s.bytes_read, tampered = s.tampered, dma_refused = s.dma_refused; "virtio-blk totals");
    }

    fn config(&self) -> [u8; 16] {
        let mut cfg = [0u8; 16];
        cfg[..8].copy_from_slice(&(self.disk.size() / SECTOR).to_le_bytes());
        cfg[8..12].copy_from_slice(&REQUEST_MAX.to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        cfg
    }

    /// A guest read of `data.len()` bytes at `addr` (inside the register window).
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        let off = addr.wrapping_sub(VIRTIO_BLK_MMIO_GPA);
        let cfg = self.config();
        self.mmio.read(off, data, &cfg);
    }

    /// A guest write of `data` at `addr` (inside the register window).
    pub fn mmio_write(&mut self, mem: &GuestMemoryMmap, addr: u64, data: &[u8]) {
        let off = addr.wrapping_sub(VIRTIO_BLK_MMIO_GPA);
        match self.mmio.write(mem, off, data) {
            Written::Done | Written::Reset => {}
            Written::Notify(0) => self.process(mem),
            Written::Notify(v) => self.mmio.note(format!("notify of unknown queue {v}")),
        }
    }

    /// Serves the request queue until it is empty, then asks for the next notify.
    ///
    /// With `VIRTIO_F_EVENT_IDX` the driver notifies only when its available index
    /// passes `avail_event`, so after draining the device re-arms it
    /// (`enable_notification`: `avail_event` = the next chain it will take) and drains
    /// again if requests arrived meanwhile; without that, a driver that queued a second
    /// request while the first was served would never notify again (Linux's first
    /// reads hung so). Each round serves at most one queue's worth of chains; a round
    /// that takes none while the ring claims more (a bogus available index) ends it.
    fn process(&mut self, mem: &GuestMemoryMmap) {
        if !self.mmio.queue_live(0) {
            return;
        }
        let mut returned = false;
        loop {
            let mut served = 0u32;
            for _ in 0..QUEUE_SIZE_MAX {
                let Some(chain) = self.mmio.queues[0].pop_descriptor_chain(mem) else {
                    break;
                };
                let head = chain.head_index();
                let written = self.serve(mem, chain);
                if self.mmio.queues[0].add_used(mem, head, written).is_err() {
                    self.mmio.broken("used ring not writable".to_string());
                    return;
                }
                served += 1;
                returned = true;
            }
            match self.mmio.queues[0].enable_notification(mem) {
                Ok(true) if served > 0 => continue,
                Ok(_) => break,
                Err(e) => {
                    self.mmio.broken(format!("used ring not writable: {e}"));
                    return;
                }
            }
        }
        if returned {
            self.mmio.signal_used(mem, 0, self.irq.as_ref());
        }
    }

    /// Serves one chain; returns the bytes written into its buffers (used length).
    fn serve(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        let head = chain.head_index();
        // The iterator is bounded by the queue size (a loop ends); take one more than a
        // request may hold so an oversized chain is seen as such.
        let descs: Vec<Desc> = chain
            .take(SEG_MAX as usize + 3)
            .map(|d| (d.addr().0, d.len(), d.is_write_only()))
            .collect();
        let req = parse_request(&descs, |at| {
            let mut h = [0u8; 16];
            mem.read_slice(&mut h, GuestAddress(at)).ok().map(|()| h)
        });
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                self.mmio.note(format!("request {head} refused: {e}"));
                self.stats.ioerr += 1;
                // Report the error if the last descriptor is a usable status byte.
                if let Some(&(at, len, true)) = descs.last() {
                    if len >= 1 && self.put_status(mem, at, S_IOERR) {
                        return 1;
                    }
                }
                return 0;
            }
        };
        // Every byte the device will write, checked before any is written.
        let mut writes: Vec<(u64, u64)> = vec![(req.status, 1)];
        if req.data_writable {
            writes.extend(req.data.iter().map(|d| (d.0, u64::from(d.1))));
        }
        for (gpa, len) in writes {
            if let Err(why) = self.mmio.dma.check(gpa, len) {
                self.mmio.dma_refused("request-buffer", gpa, len, why);
                self.stats.ioerr += 1;
                return 0;
            }
        }
        let (status, data_len) = self.execute(mem, &req);
        match status {
            S_OK => self.stats.ok += 1,
            S_UNSUPP => self.stats.unsupp += 1,
            _ => self.stats.ioerr += 1,
        }
        if !self.put_status(mem, req.status, status) {
            return 0;
        }
        data_len.saturating_add(1)
    }

    /// Runs a parsed request; returns its status and the data bytes written.
    fn execute(&mut self, mem: &GuestMemoryMmap, req: &Request) -> (u8, u32) {
        let total: u64 = req.data.iter().map(|d| u64::from(d.1)).sum();
        match req.kind {
            T_IN if req.data_writable && !req.data.is_empty() => {
                let Some(offset) = req.sector.checked_mul(SECTOR) else {
                    return (S_IOERR, 0);
                };
                self.buf.clear();
                self.buf.resize(total as usize, 0);
                if let Err(e) = self.disk.read(offset, &mut self.buf) {
                    self.buf.fill(0);
                    if let DiskError::Tampered(chunk) = e {
                        self.stats.tampered += 1;
                        if self.reported.len() < EVENTS_MAX && self.reported.insert(chunk) {
                            self.events.push(DiskEvent::Tamper { chunk });
                        }
                        log::error!(chunk = chunk; "disk-tamper: a chunk of the encrypted disk failed authentication; I/O error to the guest");
                    } else {
                        self.mmio.note(format!("read refused: {e}"));
                    }
                    return (S_IOERR, 0);
                }
                let mut done = 0usize;
                for &(gpa, len) in &req.data {
                    let len = len as usize;
                    let part = self.buf.get(done..done + len).unwrap_or(&[]);
                    if mem.write_slice(part, GuestAddress(gpa)).is_err() {
                        return (S_IOERR, done as u32);
                    }
                    done += len;
                }
                self.stats.bytes_read += total;
                (S_OK, total as u32)
            }
            T_IN => (S_IOERR, 0),
            T_OUT => (S_IOERR, 0),
            T_FLUSH => (S_OK, 0),
            T_GET_ID if req.data_writable => {
                let mut left: &[u8] = SERIAL;
                let mut done = 0u32;
                for &(gpa, len) in &req.data {
                    let n = (len as usize).min(left.len());
                    if mem.write_slice(&left[..n], GuestAddress(gpa)).is_err() {
                        return (S_IOERR, done);
                    }
                    left = &left[n..];
                    done += n as u32;
                }
                (S_OK, done)
            }
            _ => (S_UNSUPP, 0),
        }
    }

    /// Writes the status byte (already checked against the DMA policy, or checked
    /// here); false if it could not be written.
    fn put_status(&mut self, mem: &GuestMemoryMmap, at: u64, status: u8) -> bool {
        if let Err(why) = self.mmio.dma.check(at, 1) {
            self.mmio.dma_refused("status-byte", at, 1, why);
            return false;
        }
        mem.write_obj(status, GuestAddress(at)).is_ok()
    }
}

#[cfg(test)]
#[path = "virtio_blk_tests.rs"]
mod tests;
