//! Opening the tenant's encrypted disk for virtio-blk: tvpd passes the open image file
//! and its key through a pipe (as for the workload image, `crate::image`); the header
//! is parsed and the key checked against chunk 0 before the guest starts, so a wrong
//! key or a foreign file ends the VM before its first instruction instead of failing
//! every read. The header must be the one the configuration page's disk descriptor
//! names (its digest, which every chunk's associated data holds, and the plaintext
//! length): the measured page says exactly which disk the guest reads.

use std::io::BufReader;

use tvp_abi::config::DiskRef;
use tvp_image::chunk::ChunkOpener;
use tvp_image::stream::{read_header, TAG_LEN};
use zeroize::Zeroizing;

use crate::error::VmmError;
use crate::virtio_blk::{CipherSource, EncryptedDisk};

/// The disk as tvpd hands it over.
#[derive(Debug, Clone, Copy)]
pub struct DiskInput {
    /// Descriptor of the open encrypted image file.
    pub fd: i32,
    /// Descriptor of the pipe holding its 32-byte key.
    pub key_fd: i32,
}

fn bad(m: impl Into<String>) -> VmmError {
    VmmError::Image(format!("disk: {}", m.into()))
}

/// Opens the disk the page's descriptor `expected` names: header parsed and compared
/// with the descriptor, key read (and its pipe closed), chunk 0 authenticated.
pub fn open(input: &DiskInput, expected: &DiskRef) -> Result<EncryptedDisk, VmmError> {
    let file = crate::image::inherited(input.fd, "disk image")?;
    let header = read_header(&mut BufReader::new(&file)).map_err(|e| bad(e.to_string()))?;
    let digest = header.digest();
    if digest != expected.header_digest || header.plaintext_len != expected.len {
        return Err(bad(format!(
            "the disk's header (SHA-256 {}, {} bytes) is not the one the configuration page's disk descriptor names (SHA-256 {}, {} bytes): another disk?",
            hex::encode(digest),
            header.plaintext_len,
            hex::encode(expected.header_digest),
            expected.len
        )));
    }
    let key = crate::image::read_key(input.key_fd)?;
    let opener = ChunkOpener::new(&header, &key).map_err(|e| bad(e.to_string()))?;
    let span = opener
        .span(0)
        .ok_or_else(|| bad("the image has no chunk"))?;
    let mut first = Zeroizing::new(vec![0u8; span.plain_len + TAG_LEN]);
    CipherSource::read_exact_at(&file, &mut first, span.offset)
        .map_err(|e| bad(format!("cannot read chunk 0: {e}")))?;
    opener.open_in_place(0, &mut first).map_err(|e| {
        bad(format!(
            "{e}: wrong key, or not the image the key belongs to"
        ))
    })?;
    Ok(EncryptedDisk::new(Box::new(file), opener))
}
