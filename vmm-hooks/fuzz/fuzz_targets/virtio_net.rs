//! tvp-vmm's virtio-net device driven by a hostile guest: arbitrary register writes and
//! reads, queue setups with arbitrary ring addresses and sizes, descriptor tables,
//! available rings and event indexes written into a guest-memory image (tvp-vmm's own
//! `GuestRam` layout: boot region, read-only configuration page, RAM above), and frames
//! arriving from the TAP side. Invariants beyond no panic, checked after every device
//! access:
//! - the configuration page (read-only for the guest) and the boot region (the
//!   identity page tables the firmware's stub returns to) are never written;
//! - every byte the device changed lies in a used ring of a queue the guest set up or
//!   in a buffer the guest offered as device-writable (a `WRITE` descriptor, also in
//!   an indirect table): the device writes nowhere else in guest memory;
//! - no transmitted frame exceeds the device's frame limit.
//!
//! The device has its interrupt line and receive-thread wake-up (eventfds); the input
//! may hand over (the receive queue freezes until a reset, then interrupt mode) and
//! run the receive thread's turn (`service`) between accesses, under the same
//! invariants.
#![no_main]

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tvp_abi::layout::{BOOT_REGION_SIZE, CONFIG_PAGE_GPA, VIRTIO_NET_MMIO_GPA};
use tvp_vmm::dma::DmaPolicy;
use tvp_vmm::memory::GuestRam;
use tvp_vmm::offload::VnetHdr;
use tvp_vmm::tap::FrameBackend;
use tvp_vmm::virtio_net::{EventFd, VirtioNet, FRAME_MAX};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: the boot region, the configuration page and 32 KiB above (small: the
/// harness compares all of it around every device access).
const MEM: u64 = 0x11000 + 0x8000;
const CONFIG_FILL: u8 = 0xc5;

#[derive(Default)]
struct Wire {
    inbound: Vec<Vec<u8>>,
    sent: usize,
}

struct Backend(Arc<Mutex<Wire>>);

impl FrameBackend for Backend {
    fn recv_packet(&mut self, buf: &mut [u8]) -> std::io::Result<Option<(usize, VnetHdr)>> {
        let mut w = self.0.lock().unwrap();
        if w.inbound.is_empty() {
            return Ok(None);
        }
        let f = w.inbound.remove(0);
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(Some((n, VnetHdr::default())))
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        assert!(
            frame.len() <= FRAME_MAX,
            "transmitted frame of {} bytes",
            frame.len()
        );
        self.0.lock().unwrap().sent += 1;
        Ok(())
    }
    fn name(&self) -> &str {
        "fuzz"
    }
}

/// Registers a driver writes (virtio-mmio offsets).
const REGS: [u64; 17] = [
    0x014, 0x020, 0x024, 0x030, 0x038, 0x044, 0x050, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094,
    0x0a0, 0x0a4, 0x0fc, 0x100,
];

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        reg: u8,
        value: u32,
    },
    Raw {
        off: u16,
        len: u8,
        value: u64,
        read: bool,
    },
    Read {
        reg: u8,
    },
    Notify {
        queue: u8,
    },
    Setup {
        queue: u8,
        size_log2: u8,
        desc: u32,
        avail: u32,
        used: u32,
    },
    Go {
        features_ok: bool,
    },
    Desc {
        queue: bool,
        index: u8,
        addr: u32,
        len: u16,
        flags: u16,
        next: u16,
    },
    Offer {
        queue: bool,
        heads: Vec<u8>,
        flags: u16,
        used_event: u16,
    },
    Poke {
        addr: u32,
        bytes: Vec<u8>,
    },
    Frame {
        len: u16,
        fill: u8,
    },
    /// The mailbox's handover.
    Handover,
    /// The receive thread's turn (interrupt mode after a reset following the handover).
    Service,
}

/// What the harness told the device about each queue (a superset of what it accepted).
#[derive(Default, Clone, Copy)]
struct Shadow {
    size: u64,
    desc: u64,
    avail: u64,
    used: u64,
}

struct Harness {
    ram: GuestRam,
    dev: VirtioNet,
    wire: Arc<Mutex<Wire>>,
    sel: u32,
    queues: [Shadow; 2],
    /// Every used ring the guest ever configured (the device may still hold one).
    used_rings: Vec<(u64, u64)>,
}

/// Guest memory as the device left it, read through the host mappings (vm-memory's
/// volatile copy is slow under coverage instrumentation).
fn snapshot(ram: &GuestRam) -> Vec<u8> {
    let mut out = Vec::with_capacity(MEM as usize);
    for (p, len) in ram.host_ranges() {
        // SAFETY: each range is a live mapping of `len` bytes owned by `ram`, which
        // outlives this borrow; nothing else touches guest memory meanwhile.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, len) });
    }
    out
}

fn desc_at(m: &[u8], at: u64) -> Option<(u64, u64, u16)> {
    let start = usize::try_from(at).ok()?;
    let b = m.get(start..start.checked_add(16)?)?;
    let addr = u64::from_le_bytes(b[..8].try_into().unwrap());
    let len = u64::from(u32::from_le_bytes(b[8..12].try_into().unwrap()));
    let flags = u16::from_le_bytes(b[12..14].try_into().unwrap());
    Some((addr, len, flags))
}

impl Harness {
    fn mem(&self) -> &GuestMemoryMmap {
        self.ram.mem()
    }

    /// A guest store: the guest cannot write its read-only configuration page (KVM
    /// maps it read-only), so neither does the harness.
    fn poke(&self, at: u64, bytes: &[u8]) {
        let end = at.saturating_add(bytes.len() as u64);
        if end <= CONFIG_PAGE_GPA || at >= CONFIG_PAGE_GPA + 4096 {
            let _ = self.mem().write_slice(bytes, GuestAddress(at));
        }
    }

    /// Device-writable ranges the guest offered in memory image `m`.
    fn writable(&self, m: &[u8], out: &mut Vec<(u64, u64)>) {
        for q in &self.queues {
            for i in 0..256u64 {
                let Some((addr, len, flags)) = desc_at(m, q.desc + 16 * i) else {
                    break;
                };
                if flags & 2 != 0 {
                    out.push((addr, addr.saturating_add(len)));
                }
                if flags & 4 != 0 {
                    for j in 0..(len / 16).min(4096) {
                        if let Some((a, l, f)) = desc_at(m, addr.saturating_add(16 * j)) {
                            if f & 2 != 0 {
                                out.push((a, a.saturating_add(l)));
                            }
                        }
                    }
                }
            }
        }
    }

    fn access(&mut self, off: u64, data: &mut [u8], read: bool) {
        let addr = VIRTIO_NET_MMIO_GPA + off;
        self.checked(|dev, mem| {
            if read {
                dev.mmio_read(mem, addr, data);
            } else {
                dev.mmio_write(mem, addr, data);
            }
        });
    }

    /// Runs `f` on the device and checks what it changed in guest memory.
    fn checked(&mut self, f: impl FnOnce(&mut VirtioNet, &GuestMemoryMmap)) {
        let before = snapshot(&self.ram);
        f(&mut self.dev, self.ram.mem());
        let after = snapshot(&self.ram);
        if before == after {
            return;
        }
        let mut ok: Vec<(u64, u64)> = self.used_rings.clone();
        self.writable(&before, &mut ok);
        self.writable(&after, &mut ok);
        // Compare 64-byte chunks first (memcmp), bytes only in chunks that changed: a
        // byte loop over all of memory would dominate the run time.
        let changed = before
            .chunks(64)
            .zip(after.chunks(64))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .flat_map(|(c, (a, b))| {
                a.iter()
                    .zip(b.iter())
                    .enumerate()
                    .filter(|(_, (x, y))| x != y)
                    .map(move |(i, _)| (c * 64 + i) as u64)
            });
        for gpa in changed {
            assert!(
                !(CONFIG_PAGE_GPA..CONFIG_PAGE_GPA + 4096).contains(&gpa),
                "device wrote the read-only configuration page at {gpa:#x}"
            );
            assert!(
                gpa >= BOOT_REGION_SIZE as u64,
                "device wrote the boot region at {gpa:#x}"
            );
            assert!(
                ok.iter().any(|(s, e)| (*s..*e).contains(&gpa)),
                "device wrote {gpa:#x}, neither a used ring nor a device-writable buffer"
            );
        }
    }

    fn write(&mut self, off: u64, v: u32) {
        let q = self.sel as usize;
        // The device refuses size and address writes to a live queue: the shadow
        // keeps what the device uses.
        let mut ready = [0u8; 4];
        if matches!(off, 0x038 | 0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4) {
            self.access(0x044, &mut ready, true);
        }
        let live = u32::from_le_bytes(ready) == 1;
        if let Some(s) = self.queues.get_mut(q).filter(|_| !live) {
            match off {
                0x038 => s.size = u64::from(v),
                0x080 => s.desc = (s.desc & !0xffff_ffff) | u64::from(v),
                0x084 => s.desc = (s.desc & 0xffff_ffff) | (u64::from(v) << 32),
                0x090 => s.avail = (s.avail & !0xffff_ffff) | u64::from(v),
                0x094 => s.avail = (s.avail & 0xffff_ffff) | (u64::from(v) << 32),
                0x0a0 => s.used = (s.used & !0xffff_ffff) | u64::from(v),
                0x0a4 => s.used = (s.used & 0xffff_ffff) | (u64::from(v) << 32),
                _ => {}
            }
            let s = *s;
            let ring = (s.used, s.used.saturating_add(6 + 8 * s.size.min(1 << 16)));
            if !self.used_rings.contains(&ring) {
                self.used_rings.push(ring);
            }
        }
        if off == 0x030 {
            self.sel = v;
        }
        self.access(off, &mut v.to_le_bytes(), false);
    }

    fn read(&mut self, off: u64) {
        self.access(off, &mut [0u8; 4], true);
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let ram = GuestRam::new(MEM).unwrap();
    ram.place(CONFIG_PAGE_GPA, &[CONFIG_FILL; 4096]).unwrap();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let dev = VirtioNet::new(
        Box::new(Backend(wire.clone())),
        [2, 0, 0, 0, 0, 1],
        [10, 0, 0, 2],
        DmaPolicy::new(MEM),
    )
    .unwrap()
    .with_interrupt(
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    );
    let mut h = Harness {
        ram,
        dev,
        wire,
        sel: 0,
        queues: [Shadow::default(); 2],
        used_rings: Vec::new(),
    };
    for op in ops.iter().take(64) {
        match op {
            Op::Write { reg, value } => h.write(REGS[usize::from(*reg) % REGS.len()], *value),
            Op::Raw {
                off,
                len,
                value,
                read,
            } => {
                let mut data = value.to_le_bytes();
                let n = usize::from(*len % 9);
                h.access(u64::from(*off & 0xfff), &mut data[..n], *read);
            }
            Op::Read { reg } => h.read(REGS[usize::from(*reg) % REGS.len()]),
            Op::Notify { queue } => h.write(0x050, u32::from(*queue % 3)),
            Op::Setup {
                queue,
                size_log2,
                desc,
                avail,
                used,
            } => {
                let m = MEM as u32 + 0x1000;
                h.write(0x030, u32::from(queue % 2));
                h.write(0x038, 1 << (size_log2 % 9));
                h.write(0x080, (desc % m) & !15);
                h.write(0x084, 0);
                h.write(0x090, (avail % m) & !1);
                h.write(0x094, 0);
                h.write(0x0a0, (used % m) & !3);
                h.write(0x0a4, 0);
                h.write(0x044, 1);
            }
            Op::Go { features_ok } => {
                h.write(0x024, 1);
                h.write(0x020, 1);
                h.write(0x024, 0);
                h.write(0x020, 0);
                let fok = if *features_ok { 8 } else { 0 };
                h.write(0x070, 1 | 2 | fok);
                h.write(0x070, 1 | 2 | fok | 4);
            }
            Op::Desc {
                queue,
                index,
                addr,
                len,
                flags,
                next,
            } => {
                let q = h.queues[usize::from(*queue)];
                let at = q.desc.wrapping_add(16 * u64::from(*index));
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&u64::from(addr % (MEM as u32 + 0x2000)).to_le_bytes());
                d[8..12].copy_from_slice(&u32::from(*len).to_le_bytes());
                d[12..14].copy_from_slice(&flags.to_le_bytes());
                d[14..16].copy_from_slice(&next.to_le_bytes());
                h.poke(at, &d);
            }
            Op::Offer {
                queue,
                heads,
                flags,
                used_event,
            } => {
                let q = h.queues[usize::from(*queue)];
                let size = q.size.clamp(1, 256);
                let idx: u16 = h.mem().read_obj(GuestAddress(q.avail + 2)).unwrap_or(0);
                let mut i = idx;
                for head in heads.iter().take(16) {
                    let slot = q.avail + 4 + 2 * (u64::from(i) % size);
                    h.poke(slot, &u16::from(*head).to_le_bytes());
                    i = i.wrapping_add(1);
                }
                h.poke(q.avail, &flags.to_le_bytes());
                h.poke(q.avail + 4 + 2 * size, &used_event.to_le_bytes());
                h.poke(q.avail + 2, &i.to_le_bytes());
            }
            Op::Poke { addr, bytes } => {
                h.poke(u64::from(*addr) % MEM, bytes);
            }
            Op::Frame { len, fill } => {
                let n = usize::from(*len) % (FRAME_MAX + 1);
                h.wire.lock().unwrap().inbound.push(vec![*fill; n]);
            }
            Op::Handover => h.checked(|dev, mem| dev.handed_over(mem)),
            Op::Service => h.checked(|dev, mem| {
                dev.service(mem);
            }),
        }
    }
    let mut page = [0u8; 4096];
    h.mem()
        .read_slice(&mut page, GuestAddress(CONFIG_PAGE_GPA))
        .unwrap();
    assert!(
        page.iter().all(|b| *b == CONFIG_FILL),
        "configuration page changed"
    );
    let _ = h.wire.lock().unwrap().sent;
});
