//! A measured VM's workload image (`image` of the create request): resolved inside
//! `image_dir`, and, when encrypted (`TVPENC01`), its key released to this host by the
//! tenant's key-management service through the TPM (`image_release.rs`) for exactly
//! the VM that loads it: [`prepare`] reads the header (enough for the descriptor), the
//! caller writes the configuration page, and [`Prepared::obtain_key`] asks for
//! the key with that page, firmware and management binding (docs/kms.md). What the
//! VMM gets: the open image file, the key (through a pipe, never on disk), and the
//! image descriptor for the configuration page (address, plaintext length and digest),
//! which measures the image into PCR 23. The VMM decrypts while loading and refuses to
//! start the guest unless every chunk authenticates and the plaintext hashes to the
//! descriptor's digest.
//!
//! A VM's `disk` (the same shape) goes the same way ([`prepare_disk`]): it must be an
//! encrypted image, its descriptor in the page is its plaintext length and header
//! digest, its key is released for the page that names it, and tvp-vmm serves it
//! read-only over virtio-blk, authenticating and decrypting each chunk on read.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tvp_abi::config::{DiskRef, ImageRef};
use tvp_image::stream::read_header;
use tvp_image::{ImageHeader, ImageKey};
use tvp_kms::KeyUse;

use crate::image_release::{ReleaseError, Releaser};

/// `image` (and `disk`) of `POST /v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The image file, relative to `image_dir` (or absolute inside it).
    pub path: String,
    /// The tenant's key-management service (Unix socket), for encrypted images.
    #[serde(default)]
    pub kms_socket: Option<String>,
}

/// The request field an image file comes from: `image` or `disk`.
pub type Field = &'static str;
/// `image` of the create request.
pub const IMAGE: Field = "image";
/// `disk` of the create request.
pub const DISK: Field = "disk";

/// Why an image cannot be used; each fails the create request with this reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The path is outside `image_dir`, missing, or not a regular file.
    #[error("{field} {path}: {reason}")]
    Path {
        field: Field,
        path: String,
        reason: String,
    },
    /// The image is refused (plaintext without the policy, bad header, too big).
    #[error("{field} {path}: {reason}")]
    Rejected {
        field: Field,
        path: String,
        reason: String,
    },
    /// A disk that is not an encrypted tvp image: tvp-vmm serves only encrypted disks.
    #[error("disk {path}: not an encrypted tvp image (TVPENC01); tvp-vmm serves only encrypted disks, whose every chunk it authenticates on read (policy.allow_plaintext_images governs the image only; encrypt it with tvpctl image encrypt)")]
    PlaintextDisk { path: String },
    /// The key was not released (or the TPM would not unwrap it).
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

/// An encrypted image whose key is still to be obtained: its service and header.
pub struct Sealed {
    kms: PathBuf,
    header: Vec<u8>,
}

impl Sealed {
    /// Obtain the key from the tenant's service for the VM `key_use` describes; returns
    /// it with the digest the release's quote committed to.
    fn obtain(
        self,
        releaser: &Releaser,
        key_use: &KeyUse,
    ) -> Result<(ImageKey, [u8; 32]), ImageError> {
        Ok(releaser.obtain_key(&self.kms, &self.header, key_use)?)
    }
}

/// Everything the VMM needs for an encrypted file the VM gets (the workload image, with
/// `R` = [`ImageRef`], or the disk, with `R` = [`DiskRef`]): the open file, its key once
/// released, and the descriptor the configuration page carries for it.
pub struct Prepared<R> {
    /// The file, at offset 0.
    pub file: File,
    /// Its key (wiped on drop) once obtained; `None` for a plaintext image and before
    /// [`Prepared::obtain_key`].
    pub key: Option<ImageKey>,
    /// An encrypted file's key-management service and header, until its key is
    /// obtained.
    pub sealed: Option<Sealed>,
    /// The descriptor for the configuration page.
    pub descriptor: R,
}

/// The workload image, prepared.
pub type PreparedImage = Prepared<ImageRef>;
/// The disk, prepared.
pub type PreparedDisk = Prepared<DiskRef>;

impl<R> Prepared<R> {
    /// For an encrypted file: obtain its key from the tenant's service for the VM
    /// `key_use` describes (the one whose page carries this file's descriptor).
    /// Returns the digest the release's quote committed to, which that VM's
    /// measurement must match; `None` for a plaintext image.
    pub fn obtain_key(
        &mut self,
        releaser: &Releaser,
        key_use: &KeyUse,
    ) -> Result<Option<[u8; 32]>, ImageError> {
        let Some(sealed) = self.sealed.take() else {
            return Ok(None);
        };
        let (key, bound) = sealed.obtain(releaser, key_use)?;
        self.key = Some(key);
        Ok(Some(bound))
    }
}

/// Resolve `path` inside `image_dir`: relative paths are taken from it, and the
/// canonical result (symbolic links followed) must lie inside it.
pub fn resolve(field: Field, image_dir: &Path, path: &str) -> Result<PathBuf, ImageError> {
    let err = |reason: String| ImageError::Path {
        field,
        path: path.to_string(),
        reason,
    };
    let dir = image_dir.canonicalize().map_err(|e| {
        err(format!(
            "image_dir {} is not usable: {e}",
            image_dir.display()
        ))
    })?;
    let full = dir
        .join(path)
        .canonicalize()
        .map_err(|e| err(e.to_string()))?;
    if !full.starts_with(&dir) {
        return Err(err(format!(
            "outside image_dir {} (tvpd opens images only there)",
            dir.display()
        )));
    }
    if !full.is_file() {
        return Err(err("not a regular file".into()));
    }
    Ok(full)
}

/// An image file opened inside `image_dir`, at offset 0, with its header if it is an
/// encrypted tvp image (`TVPENC01`).
fn open(
    field: Field,
    spec: &ImageSpec,
    image_dir: &Path,
) -> Result<(File, Option<ImageHeader>), ImageError> {
    let path = resolve(field, image_dir, &spec.path)?;
    let rejected = |reason: String| ImageError::Rejected {
        field,
        path: spec.path.clone(),
        reason,
    };
    let mut file = File::open(&path).map_err(|e| rejected(e.to_string()))?;
    let mut magic = [0u8; 8];
    let n = file.read(&mut magic).map_err(|e| rejected(e.to_string()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| rejected(e.to_string()))?;
    let header = if n == 8 && &magic == tvp_image::header::MAGIC {
        let h = read_header(&mut file).map_err(|e| rejected(e.to_string()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| rejected(e.to_string()))?;
        Some(h)
    } else {
        None
    };
    Ok((file, header))
}

/// An encrypted image's key, to be obtained from `spec.kms_socket` (required).
fn sealed(field: Field, spec: &ImageSpec, header: &ImageHeader) -> Result<Sealed, ImageError> {
    let kms = spec
        .kms_socket
        .as_deref()
        .ok_or_else(|| ImageError::Rejected {
            field,
            path: spec.path.clone(),
            reason: "encrypted image: kms_socket (the key-management service) is required".into(),
        })?;
    Ok(Sealed {
        kms: PathBuf::from(kms),
        header: header.encode(),
    })
}

/// Open the VM's disk and compute its descriptor from the header (its key is obtained
/// later, for the finished page). Only encrypted images are disks.
pub fn prepare_disk(spec: &ImageSpec, image_dir: &Path) -> Result<PreparedDisk, ImageError> {
    let (file, header) = open(DISK, spec, image_dir)?;
    let header = header.ok_or_else(|| ImageError::PlaintextDisk {
        path: spec.path.clone(),
    })?;
    if header.plaintext_len == 0 {
        return Err(ImageError::Rejected {
            field: DISK,
            path: spec.path.clone(),
            reason: "the disk is empty (0 plaintext bytes)".into(),
        });
    }
    Ok(PreparedDisk {
        sealed: Some(sealed(DISK, spec, &header)?),
        file,
        key: None,
        descriptor: DiskRef {
            len: header.plaintext_len,
            header_digest: header.digest(),
        },
    })
}

/// Open and classify the image for a VM of `mem_size` bytes and compute its
/// descriptor (an encrypted image's from its header; its key is obtained later, for the
/// finished page). Plaintext images need `allow_plaintext`.
pub fn prepare(
    spec: &ImageSpec,
    image_dir: &Path,
    mem_size: u64,
    allow_plaintext: bool,
) -> Result<PreparedImage, ImageError> {
    let rejected = |reason: String| ImageError::Rejected {
        field: IMAGE,
        path: spec.path.clone(),
        reason,
    };
    let (mut file, header) = open(IMAGE, spec, image_dir)?;
    let (sealed, len, digest) = if let Some(header) = header {
        (
            Some(sealed(IMAGE, spec, &header)?),
            header.plaintext_len,
            header.image_digest,
        )
    } else {
        if !allow_plaintext {
            return Err(rejected(
                "not an encrypted tvp image (TVPENC01), and the VM's policy does not allow plaintext images (policy.allow_plaintext_images)".into(),
            ));
        }
        let mut h = Sha256::new();
        let len = std::io::copy(&mut file, &mut h).map_err(|e| rejected(e.to_string()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| rejected(e.to_string()))?;
        (None, len, h.finalize().into())
    };
    let image_ref = place(len, digest, mem_size).ok_or_else(|| {
        rejected(format!(
            "{len} bytes do not fit a VM of {} MiB above the firmware; give it more memory_mib",
            mem_size >> 20
        ))
    })?;
    Ok(PreparedImage {
        file,
        key: None,
        sealed,
        descriptor: image_ref,
    })
}

/// Where an image of `len` bytes goes: the top of RAM, 4 KiB aligned, leaving the
/// lower half of RAM and at least the first 32 MiB (firmware, its heap) free.
pub fn place(len: u64, digest: [u8; 32], mem_size: u64) -> Option<ImageRef> {
    let gpa = mem_size.checked_sub(len)? & !0xfff;
    (len > 0 && gpa >= mem_size / 2 && gpa >= tvp_abi::layout::IMAGE_MIN_GPA).then_some(ImageRef {
        gpa,
        len,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_go_to_the_top_of_ram_aligned_and_never_into_the_lower_half() {
        let mem = 64 << 20;
        let r = place(5000, [1; 32], mem).unwrap();
        assert_eq!(r.gpa % 4096, 0);
        assert!(r.gpa + r.len <= mem && r.gpa + r.len > mem - 8192);
        assert!(place(33 << 20, [1; 32], mem).is_none());
        assert!(place(0, [1; 32], mem).is_none());
        assert!(place(mem + 1, [1; 32], mem).is_none());
    }

    #[test]
    fn paths_outside_the_image_dir_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("images");
        std::fs::create_dir(&images).unwrap();
        std::fs::write(images.join("a.img"), b"x").unwrap();
        std::fs::write(d.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), images.join("link")).unwrap();
        assert!(resolve(IMAGE, &images, "a.img").is_ok());
        assert!(resolve(IMAGE, &images, images.join("a.img").to_str().unwrap()).is_ok());
        for bad in ["../secret", "/etc/passwd", "link", "missing", "."] {
            assert!(resolve(DISK, &images, bad).is_err(), "{bad}");
        }
        // A disk must be encrypted, whatever the policy says about images.
        let spec = ImageSpec {
            path: "a.img".into(),
            kms_socket: None,
        };
        let e = prepare_disk(&spec, &images).err().unwrap();
        assert!(matches!(e, ImageError::PlaintextDisk { .. }), "{e}");
    }
}
