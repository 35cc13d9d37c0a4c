//! The request parser, and the device driven through its registers by a hostile
//! guest with crafted rings, over a real encrypted image.

use super::*;
use crate::virtio_mmio::{
    reg, INT_USED_BUFFER, STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
};
use rsa::RsaPrivateKey;
use std::io::Cursor;
use std::sync::OnceLock;
use tvp_abi::layout::{CONFIG_PAGE_GPA, MAILBOX_GPA};
use tvp_abi::PAGE_SIZE;
use tvp_image::stream::{encrypt, read_header};
use tvp_image::ImageKey;

const BASE: u64 = VIRTIO_BLK_MMIO_GPA;
const DESC: u64 = 0x40000;
const AVAIL: u64 = 0x41000;
const USED: u64 = 0x42000;
const HDR: u64 = 0x50000;
const DATA: u64 = 0x60000;
const STATUS: u64 = 0x51000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
/// 3 chunks of 4 KiB and a short last one: 13 000 bytes, 25 whole sectors.
const IMAGE_LEN: usize = 13_000;

fn plaintext() -> Vec<u8> {
    (0..IMAGE_LEN).map(|i| (i * 31 / 7 + 5) as u8).collect()
}

/// The encrypted image and its key (RSA key generation is slow: once).
fn image() -> &'static (Vec<u8>, tvp_image::ImageHeader, [u8; 32]) {
    static IMG: OnceLock<(Vec<u8>, tvp_image::ImageHeader, [u8; 32])> = OnceLock::new();
    IMG.get_or_init(|| {
        let kms = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let mut file = Vec::new();
        encrypt(
            &mut Cursor::new(plaintext()),
            &mut file,
            &kms.to_public_key(),
            4096,
        )
        .unwrap();
        let header = read_header(&mut Cursor::new(&file)).unwrap();
        let key = ImageKey::unwrap(&header.wrapped_key, &kms).unwrap();
        (file, header, *key.as_bytes())
    })
}

fn disk(file: Vec<u8>) -> EncryptedDisk {
    let (_, header, key) = image();
    let key = ImageKey::from_bytes(key).unwrap();
    EncryptedDisk::new(Box::new(file), ChunkOpener::new(header, &key).unwrap())
}

fn setup_with(file: Vec<u8>, irq: Option<EventFd>) -> (GuestMemoryMmap, VirtioBlk) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let mut dev = VirtioBlk::new(disk(file), DmaPolicy::new(1 << 20), irq).unwrap();
    let mut w = |off: u64, v: u32| dev.mmio_write(&mem, BASE + off, &v.to_le_bytes());
    w(reg::DRIVER_FEATURES_SEL, 1);
    w(reg::DRIVER_FEATURES, 1); // VERSION_1
    w(reg::DRIVER_FEATURES_SEL, 0);
    w(reg::DRIVER_FEATURES, F_RO as u32);
    w(reg::STATUS, 1 | 2 | STATUS_FEATURES_OK);
    (mem, dev)
}

/// A device over the good image with its queue (4 entries) live.
fn setup() -> (GuestMemoryMmap, VirtioBlk) {
    let (mem, mut dev) = setup_with(image().0.clone(), None);
    assert!(enable(&mem, &mut dev, DESC, USED));
    go(&mem, &mut dev);
    (mem, dev)
}

fn enable(mem: &GuestMemoryMmap, dev: &mut VirtioBlk, desc: u64, used: u64) -> bool {
    let mut w = |off: u64, v: u32| dev.mmio_write(mem, BASE + off, &v.to_le_bytes());
    w(reg::QUEUE_SEL, 0);
    w(reg::QUEUE_NUM, 4);
    w(reg::QUEUE_DESC_LOW, desc as u32);
    w(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
    w(reg::QUEUE_DRIVER_LOW, AVAIL as u32);
    w(reg::QUEUE_DEVICE_LOW, used as u32);
    w(reg::QUEUE_READY, 1);
    let mut r = [0u8; 4];
    dev.mmio_read(BASE + reg::QUEUE_READY, &mut r);
    u32::from_le_bytes(r) == 1
}

fn go(mem: &GuestMemoryMmap, dev: &mut VirtioBlk) {
    let v = 1u32 | 2 | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
    dev.mmio_write(mem, BASE + reg::STATUS, &v.to_le_bytes());
}

fn desc(mem: &GuestMemoryMmap, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
    let d = DESC + i * 16;
    mem.write_obj(addr, GuestAddress(d)).unwrap();
    mem.write_obj(len, GuestAddress(d + 8)).unwrap();
    mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
    mem.write_obj(next, GuestAddress(d + 14)).unwrap();
}

/// Writes a request header, a three-descriptor chain (header, `len` bytes at `data`
/// with `data_flags`, status), offers it and notifies. Returns the status byte.
fn request(
    mem: &GuestMemoryMmap,
    dev: &mut VirtioBlk,
    kind: u32,
    sector: u64,
    data: u64,
    len: u32,
    data_flags: u16,
) -> u8 {
    mem.write_obj(kind, GuestAddress(HDR)).unwrap();
    mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
    mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    desc(mem, 0, HDR, 16, NEXT, 1);
    desc(mem, 1, data, len, data_flags | NEXT, 2);
    desc(mem, 2, STATUS, 1, WRITE, 0);
    offer(mem, dev);
    mem.read_obj(GuestAddress(STATUS)).unwrap()
}

/// Publishes head 0 as the next available entry and notifies queue 0.
fn offer(mem: &GuestMemoryMmap, dev: &mut VirtioBlk) {
    let idx: u16 = mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
    mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(idx % 4)))
        .unwrap();
    mem.write_obj(idx.wrapping_add(1), GuestAddress(AVAIL + 2))
        .unwrap();
    dev.mmio_write(mem, BASE + reg::QUEUE_NOTIFY, &0u32.to_le_bytes());
}

fn used_idx(mem: &GuestMemoryMmap) -> u16 {
    mem.read_obj(GuestAddress(USED + 2)).unwrap()
}

fn read_guest(mem: &GuestMemoryMmap, at: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(at)).unwrap();
    v
}

// --- the parser ---

fn hdr(kind: u32, sector: u64) -> impl FnOnce(u64) -> Option<[u8; 16]> {
    move |_| {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        Some(h)
    }
}

#[test]
fn parser_accepts_a_read_and_returns_its_parts() {
    let r = parse_request(
        &[
            (0x1000, 16, false),
            (0x2000, 512, true),
            (0x3000, 512, true),
            (0x4000, 1, true),
        ],
        hdr(T_IN, 7),
    )
    .unwrap();
    assert_eq!(r.kind, T_IN);
    assert_eq!(r.sector, 7);
    assert_eq!(r.data, vec![(0x2000, 512), (0x3000, 512)]);
    assert!(r.data_writable);
    assert_eq!(r.status, 0x4000);
}

#[test]
fn parser_refuses_malformed_chains() {
    let p = |d: &[Desc]| parse_request(d, hdr(T_IN, 0));
    assert_eq!(p(&[]), Err(RequestError::TooShort(0)));
    assert_eq!(p(&[(0, 16, false)]), Err(RequestError::TooShort(1)));
    assert_eq!(
        p(&[(0, 16, true), (1, 1, true)]),
        Err(RequestError::BadHeader(16)),
        "a device-writable header"
    );
    assert_eq!(
        p(&[(0, 8, false), (1, 1, true)]),
        Err(RequestError::BadHeader(8))
    );
    assert_eq!(
        p(&[(0, 16, false), (1, 1, false)]),
        Err(RequestError::BadStatus)
    );
    assert_eq!(
        p(&[(0, 16, false), (1, 0, true)]),
        Err(RequestError::BadStatus)
    );
    assert_eq!(
        p(&[
            (0, 16, false),
            (2, 512, true),
            (3, 512, false),
            (1, 1, true)
        ]),
        Err(RequestError::MixedData)
    );
    assert_eq!(
        p(&[(0, 16, false), (2, u32::MAX, true), (1, 1, true)]),
        Err(RequestError::TooLarge {
            segments: 1,
            bytes: u64::from(u32::MAX)
        })
    );
    let many: Vec<Desc> = std::iter::once((0, 16, false))
        .chain((0..SEG_MAX + 1).map(|i| (u64::from(i) * 512, 512, true)))
        .chain(std::iter::once((1, 1, true)))
        .collect();
    assert!(matches!(p(&many), Err(RequestError::TooLarge { .. })));
    assert_eq!(
        parse_request(&[(0x1000, 16, false), (1, 1, true)], |_| None),
        Err(RequestError::Unreadable(0x1000))
    );
}

// --- the device ---

#[test]
fn reads_across_chunks_return_the_plaintext() {
    let (mem, mut dev) = setup();
    let plain = plaintext();
    // Sectors 6..=17: bytes 3072..9216, across the chunk boundaries at 4096 and 8192.
    assert_eq!(
        request(&mem, &mut dev, T_IN, 6, DATA, 12 * 512, WRITE),
        S_OK
    );
    assert_eq!(read_guest(&mem, DATA, 12 * 512), plain[3072..9216]);
    assert_eq!(used_idx(&mem), 1);
    let used_len: u32 = mem.read_obj(GuestAddress(USED + 8)).unwrap();
    assert_eq!(used_len, 12 * 512 + 1);
    // The last whole sector.
    assert_eq!(request(&mem, &mut dev, T_IN, 24, DATA, 512, WRITE), S_OK);
    assert_eq!(read_guest(&mem, DATA, 512), plain[24 * 512..25 * 512]);
    let mut cap = [0u8; 8];
    dev.mmio_read(BASE + reg::CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (IMAGE_LEN / 512) as u64);
    assert_eq!(dev.stats().ok, 2);
}

#[test]
fn a_tampered_chunk_is_an_io_error_and_an_event_never_plaintext() {
    let (file, header, _) = image();
    let mut bad = file.clone();
    // One ciphertext byte of chunk 1.
    let chunk1 = header.encode().len() + 4096 + TAG_LEN + 100;
    bad[chunk1] ^= 0x40;
    let (mem, mut dev) = setup_with(bad, None);
    assert!(enable(&mem, &mut dev, DESC, USED));
    go(&mem, &mut dev);
    // Sectors 6..=9 touch chunks 0 and 1: nothing is delivered, not even chunk 0.
    assert_eq!(
        request(&mem, &mut dev, T_IN, 6, DATA, 4 * 512, WRITE),
        S_IOERR
    );
    assert!(read_guest(&mem, DATA, 4 * 512).iter().all(|b| *b == 0));
    assert_eq!(dev.take_events(), vec![DiskEvent::Tamper { chunk: 1 }]);
    // Read again: still an error, counted, but tvpd hears of each chunk once.
    assert_eq!(request(&mem, &mut dev, T_IN, 8, DATA, 512, WRITE), S_IOERR);
    assert!(dev.take_events().is_empty());
    assert_eq!(dev.stats().tampered, 2, "both reads counted");
    // Chunk 0 alone still reads; the device keeps working.
    assert_eq!(request(&mem, &mut dev, T_IN, 0, DATA, 512, WRITE), S_OK);
    assert_eq!(read_guest(&mem, DATA, 512), plaintext()[..512]);
    assert_eq!(dev.status() & STATUS_NEEDS_RESET, 0);
}

#[test]
fn writes_are_io_errors_and_change_nothing() {
    let (mem, mut dev) = setup();
    mem.write_slice(&[0xee; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(request(&mem, &mut dev, T_OUT, 0, DATA, 512, 0), S_IOERR);
    assert_eq!(
        request(&mem, &mut dev, T_IN, 0, DATA + 0x1000, 512, WRITE),
        S_OK
    );
    assert_eq!(read_guest(&mem, DATA + 0x1000, 512), plaintext()[..512]);
    let mut f = [0u8; 4];
    dev.mmio_read(BASE + reg::DEVICE_FEATURES, &mut f);
    assert_ne!(u64::from(u32::from_le_bytes(f)) & F_RO, 0, "F_RO offered");
}

#[test]
fn requests_past_the_end_are_io_errors() {
    let (mem, mut dev) = setup();
    // Sector 25 holds the image's last 200 bytes only: a whole sector is past the end.
    assert_eq!(request(&mem, &mut dev, T_IN, 25, DATA, 512, WRITE), S_IOERR);
    assert_eq!(
        request(&mem, &mut dev, T_IN, u64::MAX / 512, DATA, 512, WRITE),
        S_IOERR
    );
    assert_eq!(
        request(&mem, &mut dev, T_IN, u64::MAX, DATA, 512, WRITE),
        S_IOERR
    );
    assert!(read_guest(&mem, DATA, 512).iter().all(|b| *b == 0));
}

#[test]
fn flush_succeeds_get_id_returns_the_serial_and_unknown_types_are_unsupported() {
    let (mem, mut dev) = setup();
    assert_eq!(request(&mem, &mut dev, T_FLUSH, 0, DATA, 0, 0), S_OK);
    assert_eq!(request(&mem, &mut dev, T_GET_ID, 0, DATA, 20, WRITE), S_OK);
    assert_eq!(read_guest(&mem, DATA, 20), SERIAL);
    assert_eq!(request(&mem, &mut dev, 11, 0, DATA, 512, WRITE), S_UNSUPP);
}

#[test]
fn a_read_into_the_configuration_page_writes_nothing() {
    let (mem, mut dev) = setup();
    for target in [CONFIG_PAGE_GPA, MAILBOX_GPA, 0x9000] {
        request(&mem, &mut dev, T_IN, 0, target, 512, WRITE);
    }
    assert!(read_guest(&mem, CONFIG_PAGE_GPA, PAGE_SIZE)
        .iter()
        .all(|b| *b == 0));
    assert!(read_guest(&mem, MAILBOX_GPA, 512).iter().all(|b| *b == 0));
    assert!(read_guest(&mem, 0x9000, 512).iter().all(|b| *b == 0));
    assert_eq!(dev.stats().dma_refused, 3);
    assert_eq!(used_idx(&mem), 3, "each chain is returned");
    // A status byte on the configuration page is refused too.
    desc(&mem, 0, HDR, 16, NEXT, 1);
    desc(&mem, 1, DATA, 512, WRITE | NEXT, 2);
    desc(&mem, 2, CONFIG_PAGE_GPA + 8, 1, WRITE, 0);
    offer(&mem, &mut dev);
    assert!(read_guest(&mem, CONFIG_PAGE_GPA, PAGE_SIZE)
        .iter()
        .all(|b| *b == 0));
}

#[test]
fn a_read_into_the_firmware_stub_is_refused_until_handover() {
    let (mem, mut dev) = setup_with(image().0.clone(), None);
    dev.protect_firmware(0x70000..0x80000);
    assert!(enable(&mem, &mut dev, DESC, USED));
    go(&mem, &mut dev);
    request(&mem, &mut dev, T_IN, 0, 0x70000, 512, WRITE);
    assert!(read_guest(&mem, 0x70000, 512).iter().all(|b| *b == 0));
    dev.handed_over();
    assert_eq!(request(&mem, &mut dev, T_IN, 0, 0x70000, 512, WRITE), S_OK);
    assert_eq!(read_guest(&mem, 0x70000, 512), plaintext()[..512]);
}

#[test]
fn descriptors_outside_ram_oversized_or_looping_are_refused_without_crashing() {
    let (mem, mut dev) = setup();
    // Data buffer outside guest RAM.
    assert_eq!(
        request(&mem, &mut dev, T_IN, 0, 0xffff_f000_0000, 512, WRITE),
        0xff
    );
    assert_eq!(dev.stats().dma_refused, 1);
    // Oversized buffer: IOERR, nothing written.
    // (virtio-queue ends the chain at a descriptor whose buffer overflows guest
    // memory, so the status byte may be unreachable: the request fails either way.)
    let st = request(&mem, &mut dev, T_IN, 0, DATA, u32::MAX, WRITE);
    assert!(st == S_IOERR || st == 0xff, "status {st}");
    assert_eq!(dev.stats().ioerr, 2, "this one and the refused one before");
    assert!(read_guest(&mem, DATA, 4096).iter().all(|b| *b == 0));
    // A loop: header -> data -> header ...
    desc(&mem, 0, HDR, 16, NEXT, 1);
    desc(&mem, 1, DATA, 512, WRITE | NEXT, 0);
    offer(&mem, &mut dev);
    assert_eq!(
        used_idx(&mem),
        3,
        "every chain, the loop included, is returned once"
    );
    // (The looping chain's last descriptor, device-writable, got its IOERR byte.)
    mem.write_slice(&[0u8; 512], GuestAddress(DATA)).unwrap();
    // Header outside RAM.
    desc(&mem, 0, 0xffff_f000_0000, 16, NEXT, 1);
    desc(&mem, 1, STATUS, 1, WRITE, 0);
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    offer(&mem, &mut dev);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
    assert!(read_guest(&mem, DATA, 512).iter().all(|b| *b == 0));
    // Still serving.
    assert_eq!(request(&mem, &mut dev, T_IN, 1, DATA, 512, WRITE), S_OK);
    assert_eq!(dev.status() & STATUS_NEEDS_RESET, 0);
}

#[test]
fn rings_on_platform_pages_are_not_enabled_and_mark_the_device_failed() {
    let (mem, mut dev) = setup_with(image().0.clone(), None);
    assert!(!enable(&mem, &mut dev, DESC, CONFIG_PAGE_GPA + 0x100));
    assert_ne!(dev.status() & STATUS_NEEDS_RESET, 0);
    assert!(read_guest(&mem, CONFIG_PAGE_GPA, PAGE_SIZE)
        .iter()
        .all(|b| *b == 0));
    // Only a reset clears it.
    dev.mmio_write(&mem, BASE + reg::STATUS, &0u32.to_le_bytes());
    assert_eq!(dev.status(), 0);
    assert!(!enable(&mem, &mut dev, 0xffff_f000_0000, USED));
}

#[test]
fn moving_a_live_ring_breaks_the_queue_and_it_is_not_served() {
    let (mem, mut dev) = setup();
    let cfg = CONFIG_PAGE_GPA as u32;
    dev.mmio_write(&mem, BASE + reg::QUEUE_DEVICE_LOW, &cfg.to_le_bytes());
    assert_ne!(dev.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(request(&mem, &mut dev, T_IN, 0, DATA, 512, WRITE), 0xff);
    assert!(read_guest(&mem, CONFIG_PAGE_GPA, PAGE_SIZE)
        .iter()
        .all(|b| *b == 0));
}

/// A device over the good image whose driver negotiated `VIRTIO_F_EVENT_IDX`, its
/// queue (4 entries) live.
fn setup_event_idx() -> (GuestMemoryMmap, VirtioBlk) {
    let (mem, mut dev) = setup_with(image().0.clone(), None);
    let mut w = |off: u64, v: u32| dev.mmio_write(&mem, BASE + off, &v.to_le_bytes());
    w(reg::DRIVER_FEATURES, (F_RO | F_EVENT_IDX) as u32);
    w(reg::STATUS, 1 | 2 | STATUS_FEATURES_OK);
    assert!(enable(&mem, &mut dev, DESC, USED));
    go(&mem, &mut dev);
    (mem, dev)
}

#[test]
fn hostile_event_idx_values_are_harmless() {
    let (mem, mut dev) = setup_event_idx();
    // used_event 0xffff and an avail index far past the queue size.
    mem.write_obj(0xffffu16, GuestAddress(AVAIL + 4 + 2 * 4))
        .unwrap();
    mem.write_obj(0x8000u16, GuestAddress(AVAIL + 2)).unwrap();
    desc(&mem, 0, HDR, 16, NEXT, 1);
    desc(&mem, 1, DATA, 512, WRITE | NEXT, 2);
    desc(&mem, 2, STATUS, 1, WRITE, 0);
    for _ in 0..4 {
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &0u32.to_le_bytes());
    }
    assert_eq!(
        used_idx(&mem),
        0,
        "an avail index a queue beyond is not served"
    );
    assert!(read_guest(&mem, CONFIG_PAGE_GPA, PAGE_SIZE)
        .iter()
        .all(|b| *b == 0));
    dev.mmio_write(&mem, BASE + reg::STATUS, &0u32.to_le_bytes());
    assert_eq!(dev.status(), 0);
}

/// Linux's `vring_need_event`: whether moving the available index from `old` to `new`
/// crosses `event` (the device's `avail_event`).
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[test]
fn with_event_idx_the_device_re_arms_avail_event_so_a_linux_driver_keeps_notifying() {
    let (mem, mut dev) = setup_event_idx();
    desc(&mem, 0, HDR, 16, NEXT, 1);
    desc(&mem, 1, DATA, 512, WRITE | NEXT, 2);
    desc(&mem, 2, STATUS, 1, WRITE, 0);
    let avail_event_at = USED + 4 + 8 * 4;
    // Three reads queued one after the other, each notified only when Linux's rule
    // says so (as virtio_ring.c's virtqueue_kick_prepare does).
    for n in 1..=3u16 {
        mem.write_obj(T_IN, GuestAddress(HDR)).unwrap();
        mem.write_obj(u64::from(n), GuestAddress(HDR + 8)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let old: u16 = mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
        mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(old % 4)))
            .unwrap();
        mem.write_obj(old.wrapping_add(1), GuestAddress(AVAIL + 2))
            .unwrap();
        let event: u16 = mem.read_obj(GuestAddress(avail_event_at)).unwrap();
        assert!(
            need_event(event, old.wrapping_add(1), old),
            "request {n}: avail_event {event} tells the driver not to notify; the request would wait forever"
        );
        dev.mmio_write(&mem, BASE + reg::QUEUE_NOTIFY, &0u32.to_le_bytes());
        assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
        assert_eq!(used_idx(&mem), n);
        let at = usize::from(n) * 512;
        assert_eq!(read_guest(&mem, DATA, 512), plaintext()[at..at + 512]);
    }
}

#[test]
fn a_completed_request_raises_the_irqfd_unless_suppressed() {
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let (mem, mut dev) = setup_with(image().0.clone(), Some(irq.try_clone().unwrap()));
    assert!(enable(&mem, &mut dev, DESC, USED));
    go(&mem, &mut dev);
    assert_eq!(request(&mem, &mut dev, T_IN, 0, DATA, 512, WRITE), S_OK);
    assert_eq!(irq.read().unwrap(), 1);
    let mut st = [0u8; 4];
    dev.mmio_read(BASE + reg::INTERRUPT_STATUS, &mut st);
    assert_eq!(u32::from_le_bytes(st), INT_USED_BUFFER);
    // VRING_AVAIL_F_NO_INTERRUPT: no interrupt.
    mem.write_obj(1u16, GuestAddress(AVAIL)).unwrap();
    assert_eq!(request(&mem, &mut dev, T_IN, 0, DATA, 512, WRITE), S_OK);
    assert!(irq.read().is_err(), "suppressed");
}

#[test]
fn the_cache_stays_bounded_and_wipes_on_eviction() {
    let mut d = disk(image().0.clone());
    let mut out = vec![0u8; IMAGE_LEN];
    d.read(0, &mut out).unwrap();
    assert_eq!(out, plaintext());
    assert!(d.cache.len() <= d.cache_max);
    assert_eq!(
        d.read(IMAGE_LEN as u64 - 1, &mut [0u8; 2]),
        Err(DiskError::PastEnd {
            offset: IMAGE_LEN as u64 - 1,
            len: 2,
            size: IMAGE_LEN as u64
        })
    );
}
