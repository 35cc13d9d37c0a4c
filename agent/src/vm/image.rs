//! A measured VM's workload image (`image` of the create request): resolved inside
//! `image_dir`, and, when encrypted (`TVPENC01`), its key released to this host by the
//! tenant's key-management service through the TPM (`image_release.rs`) for exactly
//! the VM that loads it: [`prepare`] reads the header (enough for the descriptor), the
//! caller writes the configuration page, and [`PreparedImage::obtain_key`] asks for
//! the key with that page, firmware and management binding (docs/kms.md). What the
//! VMM gets: the open image file, the key (through a pipe, never on disk), and the
//! image descriptor for the configuration page (address, plaintext length and digest),
//! which measures the image into PCR 23. The VMM decrypts while loading and refuses to
//! start the guest unless every chunk authenticates and the plaintext hashes to the
//! descriptor's digest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tvp_abi::config::ImageRef;
use tvp_image::stream::read_header;
use tvp_image::ImageKey;
use tvp_kms::KeyUse;

use crate::image_release::{ReleaseError, Releaser};

/// `image` of `POST /v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The image file, relative to `image_dir` (or absolute inside it).
    pub path: String,
    /// The tenant's key-management service (Unix socket), for encrypted images.
    #[serde(default)]
    pub kms_socket: Option<String>,
}

/// Why an image cannot be used; each fails the create request with this reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The path is outside `image_dir`, missing, or not a regular file.
    #[error("image {path}: {reason}")]
    Path { path: String, reason: String },
    /// The image is refused (plaintext without the policy, bad header, too big).
    #[error("image {path}: {reason}")]
    Rejected { path: String, reason: String },
    /// The key was not released (or the TPM would not unwrap it).
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

/// Everything the VMM needs for the image.
pub struct PreparedImage {
    /// The image file, at offset 0.
    pub file: File,
    /// The image key of an encrypted image (wiped on drop) once obtained; `None` for
    /// plaintext and before [`PreparedImage::obtain_key`].
    pub key: Option<ImageKey>,
    /// An encrypted image's key-management service and header, until its key is
    /// obtained.
    pub sealed: Option<(PathBuf, Vec<u8>)>,
    /// The descriptor for the configuration page.
    pub image_ref: ImageRef,
}

impl PreparedImage {
    /// For an encrypted image: obtain its key from the tenant's service for the VM
    /// `key_use` describes (the one whose page carries this image's descriptor).
    /// Returns the digest the release's quote committed to, which that VM's
    /// measurement must match; `None` for a plaintext image.
    pub fn obtain_key(
        &mut self,
        releaser: &Releaser,
        key_use: &KeyUse,
    ) -> Result<Option<[u8; 32]>, ImageError> {
        let Some((kms, header)) = self.sealed.take() else {
            return Ok(None);
        };
        let (key, bound) = releaser.obtain_key(&kms, &header, key_use)?;
        self.key = Some(key);
        Ok(Some(bound))
    }
}

/// Resolve `path` inside `image_dir`: relative paths are taken from it, and the
/// canonical result (symbolic links followed) must lie inside it.
pub fn resolve(image_dir: &Path, path: &str) -> Result<PathBuf, ImageError> {
    let err = |reason: String| ImageError::Path {
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

/// Open and classify the image for a VM of `mem_size` bytes and compute its
/// descriptor (an encrypted image's from its header; its key is obtained later, for the
/// finished page). Plaintext images need `allow_plaintext`.
pub fn prepare(
    spec: &ImageSpec,
    image_dir: &Path,
    mem_size: u64,
    allow_plaintext: bool,
) -> Result<PreparedImage, ImageError> {
    let path = resolve(image_dir, &spec.path)?;
    let rejected = |reason: String| ImageError::Rejected {
        path: spec.path.clone(),
        reason,
    };
    let mut file = File::open(&path).map_err(|e| rejected(e.to_string()))?;
    let mut magic = [0u8; 8];
    let n = file.read(&mut magic).map_err(|e| rejected(e.to_string()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| rejected(e.to_string()))?;
    let (sealed, len, digest) = if n == 8 && &magic == tvp_image::header::MAGIC {
        let header = read_header(&mut file).map_err(|e| rejected(e.to_string()))?;
        let kms = spec.kms_socket.as_deref().ok_or_else(|| {
            rejected("encrypted image: kms_socket (the key-management service) is required".into())
        })?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| rejected(e.to_string()))?;
        (
            Some((PathBuf::from(kms), header.encode())),
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
        image_ref,
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
        assert!(resolve(&images, "a.img").is_ok());
        assert!(resolve(&images, images.join("a.img").to_str().unwrap()).is_ok());
        for bad in ["../secret", "/etc/passwd", "link", "missing", "."] {
            assert!(resolve(&images, bad).is_err(), "{bad}");
        }
    }
}
