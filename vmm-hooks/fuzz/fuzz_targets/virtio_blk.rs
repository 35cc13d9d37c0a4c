//! tvp-vmm's virtio-blk device driven by a hostile guest over a real encrypted image
//! (3 chunks of 4 KiB and a short one), one chunk of which the input may tamper with:
//! register writes and reads at any offset and width, queue setups with arbitrary ring
//! addresses and sizes, descriptors (chains, loops, indirect and write flags),
//! requests of any type, sector and buffer, available rings with arbitrary `idx` and
//! event-index values, stores anywhere in RAM. Memory is tvp-vmm's own `GuestRam`
//! layout. Invariants beyond no panic:
//! - after every device access: the configuration page and the boot region are never
//!   written, and every byte the device changed lies in a used ring the guest set up
//!   or in a buffer the guest offered as device-writable;
//! - the device reports tampering only of the chunk the input altered;
//! - at the end: no 32-byte run of the tampered chunk's plaintext is anywhere in guest
//!   memory (a tampered chunk's plaintext never reaches the guest).
//!
//! Input: byte 0 picks the tampered chunk (`% 5`; 4: none), then operations, each an
//! opcode byte and fixed-size operands (see `step`).
#![no_main]

use std::collections::HashSet;
use std::io::Cursor;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tvp_abi::layout::{BOOT_REGION_SIZE, CONFIG_PAGE_GPA, VIRTIO_BLK_MMIO_GPA};
use tvp_image::chunk::ChunkOpener;
use tvp_image::stream::{encrypt, read_header, TAG_LEN};
use tvp_image::{ImageHeader, ImageKey};
use tvp_vmm::dma::DmaPolicy;
use tvp_vmm::memory::GuestRam;
use tvp_vmm::virtio_blk::{DiskEvent, EncryptedDisk, VirtioBlk};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: the boot region, the configuration page and 32 KiB above.
const MEM: u64 = 0x11000 + 0x8000;
const CONFIG_FILL: u8 = 0xc5;
const CHUNK: usize = 4096;
const IMAGE_LEN: usize = 3 * CHUNK + 700;

/// Registers a driver writes (virtio-mmio offsets).
const REGS: [u64; 18] = [
    0x014, 0x020, 0x024, 0x030, 0x038, 0x044, 0x050, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094,
    0x0a0, 0x0a4, 0x0fc, 0x100, 0x060,
];

/// Plaintext: every 32-byte run distinct across the image (a counter in each 8 bytes).
fn plaintext() -> Vec<u8> {
    (0..IMAGE_LEN / 8 + 1)
        .flat_map(|i| {
            (i as u64)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(1)
                .to_le_bytes()
        })
        .take(IMAGE_LEN)
        .collect()
}

/// The encrypted image, its header and key, made once per process with the image fuzz
/// folder's fixed test key: generating an RSA key under coverage instrumentation took
/// 1 to 6 s, and on a loaded machine the first input ran into libFuzzer's timeout.
fn image() -> &'static (Vec<u8>, ImageHeader, [u8; 32]) {
    static IMG: OnceLock<(Vec<u8>, ImageHeader, [u8; 32])> = OnceLock::new();
    IMG.get_or_init(|| {
        use rsa::pkcs8::DecodePrivateKey;
        let kms = rsa::RsaPrivateKey::from_pkcs8_pem(include_str!(
            "../../../agent/image/fuzz/fixtures/kms-test-key.pem"
        ))
        .unwrap();
        let mut file = Vec::new();
        encrypt(
            &mut Cursor::new(plaintext()),
            &mut file,
            &kms.to_public_key(),
            CHUNK as u32,
        )
        .unwrap();
        let header = read_header(&mut Cursor::new(&file)).unwrap();
        let key = ImageKey::unwrap(&header.wrapped_key, &kms).unwrap();
        (file, header, *key.as_bytes())
    })
}

#[derive(Default, Clone, Copy)]
struct Shadow {
    size: u64,
    desc: u64,
    avail: u64,
    used: u64,
}

struct Harness {
    ram: GuestRam,
    dev: VirtioBlk,
    sel: u32,
    queue: Shadow,
    used_rings: Vec<(u64, u64)>,
}

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

/// Reads `N` operand bytes (zero past the end of the input).
fn take<const N: usize>(input: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(input.len());
    out[..n].copy_from_slice(&input[..n]);
    *input = &input[n..];
    out
}

fn u16_of(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Harness {
    fn mem(&self) -> &GuestMemoryMmap {
        self.ram.mem()
    }

    /// A guest store: never on the read-only configuration page.
    fn poke(&self, at: u64, bytes: &[u8]) {
        let end = at.saturating_add(bytes.len() as u64);
        if end <= CONFIG_PAGE_GPA || at >= CONFIG_PAGE_GPA + 4096 {
            let _ = self.mem().write_slice(bytes, GuestAddress(at));
        }
    }

    fn writable(&self, m: &[u8], out: &mut Vec<(u64, u64)>) {
        let q = self.queue;
        for i in 0..256u64 {
            let Some((addr, len, flags)) = desc_at(m, q.desc.saturating_add(16 * i)) else {
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

    fn access(&mut self, off: u64, data: &mut [u8], read: bool) {
        let before = snapshot(&self.ram);
        let addr = VIRTIO_BLK_MMIO_GPA + off;
        if read {
            self.dev.mmio_read(addr, data);
        } else {
            self.dev.mmio_write(self.ram.mem(), addr, data);
        }
        let after = snapshot(&self.ram);
        if before == after {
            return;
        }
        let mut ok: Vec<(u64, u64)> = self.used_rings.clone();
        self.writable(&before, &mut ok);
        self.writable(&after, &mut ok);
        for (c, (a, b)) in before.chunks(64).zip(after.chunks(64)).enumerate() {
            if a == b {
                continue;
            }
            for (i, _) in a
                .iter()
                .zip(b.iter())
                .enumerate()
                .filter(|(_, (x, y))| x != y)
            {
                let gpa = (c * 64 + i) as u64;
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
    }

    fn write(&mut self, off: u64, v: u32) {
        let mut ready = [0u8; 4];
        if matches!(off, 0x038 | 0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4) {
            self.access(0x044, &mut ready, true);
        }
        let live = u32::from_le_bytes(ready) == 1;
        if self.sel == 0 && !live {
            let s = &mut self.queue;
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
            let s = self.queue;
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

    /// Publishes `head` in the available ring and notifies.
    fn offer(&mut self, head: u16, flags: u16, used_event: u16) {
        let q = self.queue;
        let size = q.size.clamp(1, 256);
        let idx: u16 = self.mem().read_obj(GuestAddress(q.avail + 2)).unwrap_or(0);
        self.poke(
            q.avail + 4 + 2 * (u64::from(idx) % size),
            &head.to_le_bytes(),
        );
        self.poke(q.avail, &flags.to_le_bytes());
        self.poke(q.avail + 4 + 2 * size, &used_event.to_le_bytes());
        self.poke(q.avail + 2, &idx.wrapping_add(1).to_le_bytes());
        self.write(0x050, 0);
    }

    /// One operation; false when the input is used up.
    fn step(&mut self, input: &mut &[u8]) -> bool {
        let Some((&op, rest)) = input.split_first() else {
            return false;
        };
        *input = rest;
        match op % 8 {
            // Register write: register, value.
            0 => {
                let b = take::<5>(input);
                self.write(REGS[usize::from(b[0]) % REGS.len()], u32_of(&b[1..]));
            }
            // Queue setup: size (log2), descriptor table, avail and used rings (u16 in
            // units of 16, 2 and 4 bytes; may point anywhere, also past RAM).
            1 => {
                let b = take::<7>(input);
                self.write(0x030, 0);
                self.write(0x038, 1 << (b[0] % 9));
                self.write(0x080, u32::from(u16_of(&b[1..])) * 16);
                self.write(0x084, 0);
                self.write(0x090, u32::from(u16_of(&b[3..])) * 2);
                self.write(0x094, 0);
                self.write(0x0a0, u32::from(u16_of(&b[5..])) * 4);
                self.write(0x0a4, 0);
                self.write(0x044, 1);
            }
            // Driver setup: features (EVENT_IDX or not), FEATURES_OK, DRIVER_OK.
            2 => {
                let b = take::<1>(input);
                self.write(0x024, 1);
                self.write(0x020, 1);
                self.write(0x024, 0);
                self.write(
                    0x020,
                    if b[0] & 1 != 0 {
                        1 << 29 | 1 << 5
                    } else {
                        1 << 5
                    },
                );
                let fok = if b[0] & 2 == 0 { 8 } else { 0 };
                self.write(0x070, 1 | 2 | fok);
                self.write(0x070, 1 | 2 | fok | 4);
            }
            // Descriptor: index, addr (u32), len (u32), flags, next.
            3 => {
                let b = take::<13>(input);
                let at = self.queue.desc.wrapping_add(16 * u64::from(b[0]));
                let mut d = [0u8; 16];
                d[..4].copy_from_slice(&b[1..5]);
                d[8..16].copy_from_slice(&b[5..13]);
                self.poke(at, &d);
            }
            // A whole request: type, sector (u32), data address (u16 * 16), data length
            // (u16), data flags, status address (u16 * 2); header at 0x12000, chain at
            // descriptors 0..3, head 0 offered.
            4 => {
                let b = take::<12>(input);
                let mut hdr = [0u8; 16];
                hdr[0] = b[0];
                hdr[8..12].copy_from_slice(&b[1..5]);
                self.poke(0x12000, &hdr);
                let data = u64::from(u16_of(&b[5..])) * 16;
                let status = u64::from(u16_of(&b[10..])) * 2;
                let mk = |addr: u64, len: u32, flags: u16, next: u16| {
                    let mut d = [0u8; 16];
                    d[..8].copy_from_slice(&addr.to_le_bytes());
                    d[8..12].copy_from_slice(&len.to_le_bytes());
                    d[12..14].copy_from_slice(&flags.to_le_bytes());
                    d[14..].copy_from_slice(&next.to_le_bytes());
                    d
                };
                let t = self.queue.desc;
                self.poke(t, &mk(0x12000, 16, 1, 1));
                self.poke(
                    t + 16,
                    &mk(data, u32::from(u16_of(&b[7..])), u16::from(b[9]) | 1, 2),
                );
                self.poke(t + 32, &mk(status, 1, 2, 0));
                self.offer(0, 0, 0);
            }
            // Offer a head: head, avail flags, used_event.
            5 => {
                let b = take::<5>(input);
                self.offer(u16_of(&b), u16_of(&b[2..]), u16_of(&b[3..]));
            }
            // Store 8 bytes anywhere in RAM.
            6 => {
                let b = take::<10>(input);
                self.poke(u64::from(u16_of(&b)) % MEM, &b[2..]);
            }
            // Raw register access: offset, width, direction, value.
            _ => {
                let b = take::<12>(input);
                let mut data = [0u8; 8];
                data.copy_from_slice(&b[4..]);
                let n = usize::from(b[2] % 9);
                self.access(u64::from(u16_of(&b) & 0xfff), &mut data[..n], b[3] & 1 != 0);
            }
        }
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut input)) = data.split_first() else {
        return;
    };
    let (file, header, key) = image();
    let mut file = file.clone();
    let tampered = u64::from(pick % 5);
    let opener = ChunkOpener::new(header, &ImageKey::from_bytes(key).unwrap()).unwrap();
    if let Some(span) = opener.span(tampered) {
        file[span.offset as usize + (span.plain_len + TAG_LEN) / 2] ^= 0x01;
    }
    let ram = GuestRam::new(MEM).unwrap();
    ram.place(CONFIG_PAGE_GPA, &[CONFIG_FILL; 4096]).unwrap();
    let dev = VirtioBlk::new(
        EncryptedDisk::new(Box::new(file), opener),
        DmaPolicy::new(MEM),
        None,
    )
    .unwrap();
    let mut h = Harness {
        ram,
        dev,
        sel: 0,
        queue: Shadow::default(),
        used_rings: Vec::new(),
    };
    let mut ops = 0;
    while ops < 64 && h.step(&mut input) {
        ops += 1;
    }
    for e in h.dev.take_events() {
        let DiskEvent::Tamper { chunk } = e;
        assert_eq!(
            chunk, tampered,
            "tamper reported for chunk {chunk}, not the altered one"
        );
    }
    let m = snapshot(&h.ram);
    let plain = plaintext();
    let start = tampered as usize * CHUNK;
    if let Some(secret) = plain.get(start..(start + CHUNK).min(IMAGE_LEN)) {
        // Every 8-byte word of the plaintext is distinct: look each guest word up, then
        // compare 32 bytes where one matches.
        let words: HashSet<[u8; 8]> = secret
            .chunks_exact(8)
            .map(|w| w.try_into().unwrap())
            .collect();
        for (at, w) in m.windows(8).enumerate() {
            if words.contains(w) {
                let end = (at + 32).min(m.len());
                assert!(
                    !secret.windows(end - at).any(|s| s == &m[at..end]) || end - at < 32,
                    "plaintext of tampered chunk {tampered} reached guest memory at {at:#x}"
                );
            }
        }
    }
    assert!(m[CONFIG_PAGE_GPA as usize..][..4096]
        .iter()
        .all(|b| *b == CONFIG_FILL));
});
