//! Loading the VM's workload image into guest memory, decrypting while loading: tvpd
//! passes the open image file (and, for an encrypted image, its key through a pipe);
//! the configuration page's image descriptor says where it goes and what its plaintext
//! hashes to. Encrypted chunks are authenticated one by one and written straight into
//! guest memory; nothing is written anywhere else. The key is wiped as soon as the
//! image is in, and the load fails if the tenant's key lease runs out first. Any
//! failure ends the VM before its first instruction. Speed: AES-256-GCM is ring's
//! (AES-NI, carry-less multiply), the plaintext SHA-256 runs on a second thread
//! (`tvp_image::decrypt`), and the destination is backed by huge pages where the
//! kernel allows, so first-touch page faults do not dominate.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tvp_abi::config::ImageRef;
use tvp_image::stream::read_header;
use tvp_image::{decrypt, ImageKey};
use zeroize::Zeroizing;

use crate::error::VmmError;
use crate::memory::GuestRam;

/// Plaintext copy unit.
const COPY_CHUNK: usize = 1 << 20;

/// The image as tvpd hands it over.
#[derive(Debug, Clone, Copy)]
pub struct ImageInput {
    /// Descriptor of the open image file.
    pub fd: i32,
    /// Descriptor of the pipe holding the 32-byte key; `None`: plaintext image.
    pub key_fd: Option<i32>,
    /// How long the key may stay in memory before the image is loaded.
    pub key_lease: Duration,
}

/// What a load did (for the log and the benchmark).
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// Plaintext bytes placed.
    pub bytes: u64,
    /// Whether they were decrypted.
    pub encrypted: bool,
    /// Time taken.
    pub elapsed: Duration,
}

fn bad(m: impl Into<String>) -> VmmError {
    VmmError::Image(m.into())
}

/// Ask for transparent huge pages under the image's destination. Loading an image
/// touches every one of its guest pages for the first time; with 4 KiB pages those
/// faults cost as much as the decryption itself, with 2 MiB pages they are few. Advice
/// only: a kernel that refuses it (THP off) loads at the slower speed, correctly.
fn prefer_huge_pages(ram: &GuestRam, gpa: u64, len: u64) {
    use vm_memory::{GuestAddress, GuestMemory};
    const HUGE: usize = 2 << 20;
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    // The whole range must be one host mapping (get_slice checks it lies in one region).
    let Ok(slice) = ram.mem().get_slice(GuestAddress(gpa), len) else {
        return;
    };
    let start = slice.ptr_guard_mut().as_ptr() as usize;
    let (Some(first), Some(end)) = (
        start.checked_next_multiple_of(HUGE),
        start.checked_add(len).map(|e| e - e % HUGE),
    ) else {
        return;
    };
    if end <= first {
        return;
    }
    // SAFETY: [first, end) lies inside the live guest RAM mapping (checked above);
    // MADV_HUGEPAGE changes only how the kernel backs those pages, not their contents.
    let rc = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        log::debug!(
            "madvise(MADV_HUGEPAGE) on the image's guest pages: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Take ownership of an inherited descriptor, checking it is open.
fn inherited(fd: i32, what: &str) -> Result<File, VmmError> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad(format!("{what} descriptor {fd} is not open")));
    }
    // SAFETY: `fd` is open, was inherited for this purpose, and nothing else in this
    // process owns it; the File closes it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Read exactly the 32-byte key and then end of file from the key pipe.
fn read_key(fd: i32) -> Result<ImageKey, VmmError> {
    let mut pipe = inherited(fd, "image key")?;
    let mut buf = Zeroizing::new([0u8; 33]);
    let mut n = 0;
    loop {
        match pipe.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(bad(format!("cannot read the image key: {e}"))),
        }
    }
    if n != 32 {
        return Err(bad(format!(
            "the image key pipe held {n} bytes, expected 32"
        )));
    }
    ImageKey::from_bytes(&buf[..32]).map_err(|e| bad(e.to_string()))
}

/// Load the image described by `r` from `input` into `ram`, above `firmware_end`.
pub fn load(
    ram: &GuestRam,
    r: &ImageRef,
    input: &ImageInput,
    firmware_end: u64,
) -> Result<Loaded, VmmError> {
    let started = Instant::now();
    if r.gpa < firmware_end {
        return Err(bad(format!(
            "image at {:#x} would overlap the firmware (loaded up to {firmware_end:#x}); give the VM more memory",
            r.gpa
        )));
    }
    prefer_huge_pages(ram, r.gpa, r.len);
    let mut file = BufReader::with_capacity(COPY_CHUNK, inherited(input.fd, "image")?);
    let mut offset = 0u64;
    let mut place = |chunk: &[u8]| -> Result<(), VmmError> {
        let end = offset + chunk.len() as u64;
        if end > r.len {
            return Err(bad(format!(
                "image is longer than the {} bytes the configuration page states",
                r.len
            )));
        }
        ram.place(r.gpa + offset, chunk)?;
        offset = end;
        Ok(())
    };
    let encrypted = input.key_fd.is_some();
    if let Some(key_fd) = input.key_fd {
        let key = read_key(key_fd)?;
        let got_key = Instant::now();
        let header = read_header(&mut file).map_err(|e| bad(e.to_string()))?;
        if header.plaintext_len != r.len || header.image_digest != r.digest {
            return Err(bad(
                "the image header does not match the configuration page's descriptor (another image?)",
            ));
        }
        decrypt(&mut file, &header, &key, |chunk| {
            if got_key.elapsed() > input.key_lease {
                return Err(tvp_image::ImageError::Sink(format!(
                    "the image key's lease of {} s ran out before the image was loaded",
                    input.key_lease.as_secs()
                )));
            }
            place(chunk).map_err(|e| tvp_image::ImageError::Sink(e.to_string()))
        })
        .map_err(|e| bad(e.to_string()))?;
        drop(key);
    } else {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; COPY_CHUNK];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad(format!("cannot read the image: {e}"))),
            };
            hasher.update(&buf[..n]);
            place(&buf[..n])?;
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if digest != r.digest {
            return Err(bad(format!(
                "plaintext image digest {} differs from the configuration page's {}",
                hex::encode(digest),
                hex::encode(r.digest)
            )));
        }
    }
    if offset != r.len {
        return Err(bad(format!(
            "image has {offset} bytes, the configuration page states {}",
            r.len
        )));
    }
    Ok(Loaded {
        bytes: offset,
        encrypted,
        elapsed: started.elapsed(),
    })
}
