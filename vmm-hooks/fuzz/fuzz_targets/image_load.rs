//! Loading the workload image into guest memory in tvp-vmm (`image::load`, as `vm::run`
//! calls it): a plain or encrypted image file and a key pipe (real file descriptors,
//! memfds), an image descriptor (address, length, digest) and the firmware's end, all
//! from the input (layout: `tvp_vmm_fuzz::ImageCase`). Seeds: plain images, and real
//! encrypted images from `tvp_image::encrypt` with their keys.
//!
//! Guest memory (one `GuestRam` of `RAM_SIZE`, filled with a pattern, restored between
//! runs) is compared before and after. Asserts:
//! - a refusal is a typed `VmmError::Image` (or `Memory`, for a descriptor outside
//!   guest memory) with a message;
//! - the load succeeds exactly when it should: the image lies at or above the firmware
//!   end and inside guest memory, and its plaintext has the descriptor's length and
//!   digest (an encrypted one: the key is 32 bytes, the header states the
//!   descriptor's length and digest, and every chunk authenticates, as `tvp_image`'s
//!   own `decrypt` finds with the same key); a length or digest mismatch is refused;
//! - after a success, the descriptor's range holds exactly that plaintext (its SHA-256
//!   is the descriptor's digest);
//! - whatever happens, every byte that changed lies in the descriptor's range, at or
//!   above the firmware end, and is the plaintext byte for that offset; nothing at all
//!   changes when the address is below the firmware end, the key is unusable or an
//!   encrypted image's header does not match the descriptor.
#![no_main]

use std::io::{Cursor, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tvp_abi::config::ImageRef;
use tvp_image::stream::read_header;
use tvp_image::{decrypt, ImageKey};
use tvp_vmm::error::VmmError;
use tvp_vmm::image::{load, ImageInput};
use tvp_vmm::memory::GuestRam;
use tvp_vmm_fuzz::{ImageCase, RAM_SIZE};
use vm_memory::{Bytes, GuestMemory, GuestMemoryRegion};

const PATTERN: u8 = 0xa5;
const PAGE: usize = 4096;

/// Guest memory filled with `PATTERN` (its regions are adjacent from 0, so an index of
/// the snapshot is a guest address) and a buffer to read it back into.
struct Fixture {
    ram: GuestRam,
    snapshot: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let ram = GuestRam::new(RAM_SIZE).unwrap_or_else(|e| panic!("GuestRam: {e}"));
        for r in ram.mem().iter() {
            ram.place(r.start_addr().0, &vec![PATTERN; r.len() as usize])
                .unwrap_or_else(|e| panic!("fill: {e}"));
        }
        Fixture {
            ram,
            snapshot: vec![0; RAM_SIZE as usize],
        }
    }

    fn read(&mut self) {
        for r in self.ram.mem().iter() {
            let (s, n) = (r.start_addr().0 as usize, r.len() as usize);
            self.ram
                .mem()
                .read_slice(&mut self.snapshot[s..s + n], r.start_addr())
                .unwrap_or_else(|e| panic!("cannot read guest memory: {e}"));
        }
    }

    /// Every changed byte (pages compared whole first: a byte loop would cost a
    /// coverage callback per byte) is checked by `allowed`; changed pages are restored.
    fn check_and_restore(&mut self, allowed: impl Fn(u64, u8) -> Result<(), String>) {
        let clean = [PATTERN; PAGE];
        for (p, page) in self.snapshot.chunks(PAGE).enumerate() {
            if page == &clean[..page.len()] {
                continue;
            }
            for (i, &b) in page.iter().enumerate() {
                if b != PATTERN {
                    let gpa = (p * PAGE + i) as u64;
                    if let Err(why) = allowed(gpa, b) {
                        panic!("guest byte {gpa:#x} = {b:#04x}: {why}");
                    }
                }
            }
            self.ram
                .place((p * PAGE) as u64, &clean[..page.len()])
                .unwrap_or_else(|e| panic!("restore: {e}"));
        }
    }
}

thread_local! {
    static FIXTURE: std::cell::RefCell<Fixture> = std::cell::RefCell::new(Fixture::new());
}

/// A memfd holding `bytes`, positioned at 0 (what tvpd passes: an open image file, a
/// key pipe that holds the key and then ends).
fn memfd(bytes: &[u8]) -> i32 {
    // SAFETY: a plain system call with a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c"tvp-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and nothing else owns it.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("memfd write: {e}"));
    f.seek(SeekFrom::Start(0))
        .unwrap_or_else(|e| panic!("memfd seek: {e}"));
    f.into_raw_fd()
}

/// Closes `fd` unless `load` already took it over (it takes a descriptor only when it
/// gets to it; nothing in between opens descriptors, so the number is still ours).
fn close_if_open(fd: i32) {
    // SAFETY: F_GETFD only reads flags; `fd` is ours if it is still open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}

/// What `load` must do: the plaintext it may place (a byte at offset i of the
/// descriptor's range may only ever be `plaintext[i]`) and whether it must succeed.
struct Expected {
    plaintext: Vec<u8>,
    ok: bool,
}

fn expected(case: &ImageCase, r: &ImageRef) -> Expected {
    let in_ram = r.len == 0 || r.gpa.checked_add(r.len).is_some_and(|e| e <= RAM_SIZE);
    let placed = r.gpa >= case.firmware_end;
    if !case.encrypted {
        let ok = placed
            && in_ram
            && case.image.len() as u64 == r.len
            && <[u8; 32]>::from(Sha256::digest(case.image)) == r.digest;
        let plaintext = if placed {
            case.image.to_vec()
        } else {
            Vec::new()
        };
        return Expected { plaintext, ok };
    }
    let nothing = Expected {
        plaintext: Vec::new(),
        ok: false,
    };
    if !placed || case.key.len() != 32 {
        return nothing;
    }
    let Ok(key) = ImageKey::from_bytes(case.key) else {
        return nothing;
    };
    let mut file = Cursor::new(case.image);
    let Ok(header) = read_header(&mut file) else {
        return nothing;
    };
    if header.plaintext_len != r.len || header.image_digest != r.digest {
        return nothing;
    }
    // tvp-image's own decryption with the same key: what authenticates, in order.
    let mut plaintext = Vec::new();
    let decrypted = decrypt(&mut file, &header, &key, |chunk| {
        plaintext.extend_from_slice(chunk);
        Ok(())
    });
    Expected {
        ok: decrypted.is_ok() && in_ram,
        plaintext,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = ImageCase::decode(data) else {
        return;
    };
    FIXTURE.with(|f| run(&mut f.borrow_mut(), &case));
});

fn run(f: &mut Fixture, case: &ImageCase) {
    let r = ImageRef {
        gpa: case.gpa,
        len: case.descriptor_len(),
        digest: case.descriptor_digest(),
    };
    let want = expected(case, &r);
    let fd = memfd(case.image);
    let key_fd = case.encrypted.then(|| memfd(case.key));
    let input = ImageInput {
        fd,
        key_fd,
        // Long enough never to run out here: the lease is a clock, not an input.
        key_lease: Duration::from_secs(3600),
    };
    let result = load(&f.ram, &r, &input, case.firmware_end);
    close_if_open(fd);
    if let Some(k) = key_fd {
        close_if_open(k);
    }
    match &result {
        Ok(l) => {
            assert_eq!(l.bytes, r.len);
            assert_eq!(l.encrypted, case.encrypted);
        }
        Err(VmmError::Image(m) | VmmError::Memory(m)) => assert!(!m.is_empty()),
        Err(e) => panic!("untyped refusal: {e:?}"),
    }
    assert_eq!(
        result.is_ok(),
        want.ok,
        "load returned {result:?} for a descriptor {r:?} (firmware end {:#x})",
        case.firmware_end
    );
    f.read();
    if result.is_ok() {
        // (An empty image places nothing, wherever its descriptor points.)
        let range = match r.len {
            0 => &[][..],
            n => &f.snapshot[r.gpa as usize..(r.gpa + n) as usize],
        };
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(range)),
            r.digest,
            "the loaded range does not hash to the descriptor's digest"
        );
        assert_eq!(
            range,
            &want.plaintext[..],
            "loaded bytes are not the image's"
        );
    }
    let limit = r.len.min(want.plaintext.len() as u64);
    f.check_and_restore(|gpa, b| {
        if gpa < case.firmware_end {
            return Err(format!("below the firmware end {:#x}", case.firmware_end));
        }
        let off = gpa
            .checked_sub(r.gpa)
            .filter(|&o| o < limit)
            .ok_or_else(|| format!("outside the image's range {:#x}+{:#x}", r.gpa, limit))?;
        if want.plaintext[off as usize] != b {
            return Err(format!("not the plaintext byte at offset {off}"));
        }
        Ok(())
    });
}
