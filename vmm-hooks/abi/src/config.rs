//! The configuration page: what the platform tells the firmware, in one canonical,
//! versioned, bounded binary encoding of exactly one page.
//!
//! Layout, version 1 (integers little-endian, IPv4 addresses as octets in network order):
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `"TVPC"` |
//! | 4 | 2 | version = 1 |
//! | 6 | 2 | reserved, 0 |
//! | 8 | 4 | `encoded_len`: 96 + the three variable lengths (+ 48 with an image, + 40 with a disk) |
//! | 12 | 4 | flags: bit 0 = a workload image is loaded, bit 1 = a disk is served (descriptors below); others 0 |
//! | 16 | 4 | VIP (IPv4) |
//! | 20 | 1 | prefix length (the netmask), 1..=32 |
//! | 21 | 3 | reserved, 0 |
//! | 24 | 4 | gateway (IPv4), 0.0.0.0 = none |
//! | 28 | 6 | MAC |
//! | 34 | 2 | reserved, 0 |
//! | 36 | 4 | boot server IPv4 |
//! | 40 | 2 | boot server TCP port |
//! | 42 | 2 | vCPU count |
//! | 44 | 4 | memory size in MiB |
//! | 48 | 8 | current time, Unix seconds |
//! | 56 | 32 | entropy seed |
//! | 88 | 2 | auth code length (1..=64) |
//! | 90 | 2 | boot server TLS name length (1..=253) |
//! | 92 | 2 | tenant CA certificate (DER) length |
//! | 94 | 2 | reserved, 0 |
//! | 96 | … | auth code, TLS name, CA certificate DER, concatenated |
//! | … | 48 | with flag bit 0 only, right after the CA certificate: the image descriptor, |
//! |   |    | `u64` guest-physical address (4 KiB aligned, ≥ 32 MiB), `u64` length (≥ 1, the |
//! |   |    | image ends inside RAM), SHA-256 of the image's plaintext (32 bytes) |
//! | … | 40 | with flag bit 1 only, right after the image descriptor (or the CA certificate): |
//! |   |    | the disk descriptor, `u64` plaintext length (≥ 1), SHA-256 of the encrypted |
//! |   |    | disk image's header (32 bytes) |
//!
//! The image (e.g. a tenant's encrypted disk or workload, decrypted by the VMM while
//! loading) is thereby measured into PCR 23 through the page: its digest is part of
//! the page, and the VMM refuses to start unless the bytes it placed hash to it.
//!
//! The disk (a tenant's encrypted tvp-image served read-only over virtio-blk, decrypted
//! chunk by chunk on read) is measured the same way: its header's digest is in every
//! chunk's associated data, so the descriptor names the exact chunks the guest can read.
//!
//! Versioning: a field is added behind a new flag bit, so every page without it keeps its
//! encoding (and PCR 23 value), and a decoder that does not know the bit refuses the page
//! (`NonZeroReserved`) instead of ignoring a field.
//!
//! Every byte from `encoded_len` to the end of the page is zero. Decoding rejects any
//! deviation, so each configuration has exactly one page encoding and the PCR 23 value
//! depends on the configuration alone.

use crate::layout::{MEM_MIB_MAX, MEM_MIB_MIN};
use crate::{rd_u16, rd_u32, rd_u64, wr_u16, wr_u32, wr_u64, PAGE_SIZE};

/// Magic at offset 0, "TVPC".
pub const CONFIG_MAGIC: [u8; 4] = *b"TVPC";
/// The layout version this crate encodes and decodes.
pub const CONFIG_VERSION: u16 = 1;
/// Size of the fixed part.
pub const FIXED_LEN: usize = 96;
/// Longest authentication code U.
pub const AUTH_CODE_MAX: usize = 64;
/// Longest boot server TLS name.
pub const SERVER_NAME_MAX: usize = 253;
/// Most vCPUs a configuration may ask for.
pub const VCPUS_MAX: u16 = 64;
/// Flag bit: the page carries an [`ImageRef`].
pub const FLAG_IMAGE: u32 = 1;
/// Size of the image descriptor.
pub const IMAGE_DESC_LEN: usize = 48;
/// Flag bit: the page carries a [`DiskRef`].
pub const FLAG_DISK: u32 = 2;
/// Size of the disk descriptor.
pub const DISK_DESC_LEN: usize = 40;
/// Flag bit: the VM has a TPM of its own (a CRB device at
/// [`crate::layout::TPM_CRB_GPA`], described in the ACPI tables); a TPM descriptor
/// (its EK's and AK's public digests) follows the disk descriptor.
pub const FLAG_TPM: u32 = 4;
/// TPM descriptor: SHA-256 of the EK's TPMT_PUBLIC, then of the AK's.
pub const TPM_DESC_LEN: usize = 64;

/// Where the VMM placed a workload image, and what its plaintext hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef {
    /// Guest-physical address, 4 KiB aligned, at or above 1 MiB.
    pub gpa: u64,
    /// Length in bytes (≥ 1).
    pub len: u64,
    /// SHA-256 of the plaintext.
    pub digest: [u8; 32],
}

/// The encrypted disk the VMM serves read-only over virtio-blk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskRef {
    /// Plaintext length in bytes (≥ 1).
    pub len: u64,
    /// SHA-256 of the encrypted image's header: every chunk's associated data holds it,
    /// so it names the disk's content exactly.
    pub header_digest: [u8; 32],
}

/// The VM's own TPM, as the host made it: the public areas of its endorsement key and
/// of its attestation key (both primaries of its endorsement hierarchy, so the guest
/// re-creates the same keys), by digest. Measured with the page, so the host's
/// attestation of the VM names the TPM the guest will talk to (docs/vtpm-identity.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpmRef {
    /// SHA-256 of the EK's marshalled TPMT_PUBLIC (its TPM name without the algorithm).
    pub ek_public_digest: [u8; 32],
    /// SHA-256 of the AK's marshalled TPMT_PUBLIC.
    pub ak_public_digest: [u8; 32],
}

/// Why a configuration cannot be encoded or a page cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The page is not exactly 4096 bytes.
    WrongPageSize,
    /// The magic is not "TVPC".
    BadMagic,
    /// The version is not one this crate knows.
    UnsupportedVersion(u16),
    /// A reserved byte or the page tail is not zero.
    NonZeroReserved,
    /// `encoded_len` disagrees with the field lengths, or the fields do not fit a page.
    BadLength,
    /// The VIP is 0.0.0.0, multicast or broadcast.
    BadVip,
    /// The prefix length is not 1..=32.
    BadPrefix,
    /// The gateway is outside the VIP's subnet or equals the VIP.
    BadGateway,
    /// The MAC is all-zero or multicast.
    BadMac,
    /// The boot server address is 0.0.0.0 or its port is 0.
    BadBootServer,
    /// The vCPU count is 0 or above [`VCPUS_MAX`].
    BadVcpus,
    /// The memory size is outside `MEM_MIB_MIN..=MEM_MIB_MAX`.
    BadMemorySize,
    /// The auth code is empty or longer than [`AUTH_CODE_MAX`].
    BadAuthCode,
    /// The TLS name is not a DNS host name of at most 253 characters.
    BadServerName,
    /// The CA certificate is not one DER SEQUENCE of the stated length.
    BadCaCert,
    /// The image descriptor is misaligned, empty, below 32 MiB or beyond RAM.
    BadImage,
    /// The disk descriptor states an empty disk.
    BadDisk,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self {
            ConfigError::WrongPageSize => "configuration page must be exactly 4096 bytes",
            ConfigError::BadMagic => "configuration page magic is not \"TVPC\"",
            ConfigError::UnsupportedVersion(_) => "configuration page version is not 1",
            ConfigError::NonZeroReserved => "a reserved byte or the page tail is not zero",
            ConfigError::BadLength => "encoded length disagrees with the field lengths",
            ConfigError::BadVip => "VIP must be a unicast IPv4 address",
            ConfigError::BadPrefix => "netmask prefix length must be 1..=32",
            ConfigError::BadGateway => "gateway must be 0.0.0.0 or inside the VIP's subnet",
            ConfigError::BadMac => "MAC must be a non-zero unicast address",
            ConfigError::BadBootServer => "boot server address and port must be non-zero",
            ConfigError::BadVcpus => "vCPU count must be 1..=64",
            ConfigError::BadMemorySize => "memory size must be 2..=3072 MiB",
            ConfigError::BadAuthCode => "auth code must be 1..=64 bytes",
            ConfigError::BadServerName => "boot server TLS name must be a DNS host name",
            ConfigError::BadCaCert => "tenant CA certificate must be one DER SEQUENCE",
            ConfigError::BadImage => {
                "image must be non-empty, 4 KiB aligned, at or above 32 MiB and inside RAM"
            }
            ConfigError::BadDisk => "disk must be non-empty",
        };
        f.write_str(s)?;
        if let ConfigError::UnsupportedVersion(v) = self {
            write!(f, " (found {v})")?;
        }
        Ok(())
    }
}

/// A decoded (or to-be-encoded) configuration; the variable fields borrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config<'a> {
    /// The VM's IPv4 address I.
    pub vip: [u8; 4],
    /// Netmask as a prefix length.
    pub prefix_len: u8,
    /// Default gateway, `[0; 4]` for none.
    pub gateway: [u8; 4],
    /// MAC address of the VM's NIC.
    pub mac: [u8; 6],
    /// Boot server IPv4 address.
    pub boot_server_ip: [u8; 4],
    /// Boot server TCP port.
    pub boot_server_port: u16,
    /// Number of vCPUs.
    pub vcpus: u16,
    /// Guest memory in MiB.
    pub mem_size_mib: u32,
    /// Current time at VM creation, Unix seconds.
    pub time_unix_secs: u64,
    /// Entropy seed for the firmware's RNG.
    pub entropy_seed: [u8; 32],
    /// Authentication code U of the tenant's reservation.
    pub auth_code: &'a [u8],
    /// TLS server name of the boot server.
    pub server_name: &'a str,
    /// Tenant CA certificate, DER.
    pub ca_cert_der: &'a [u8],
    /// The workload image the VMM loads, if any.
    pub image: Option<ImageRef>,
    /// The encrypted disk the VMM serves, if any.
    pub disk: Option<DiskRef>,
    /// Whether the VM has a TPM of its own (the vTPM).
    pub tpm: Option<TpmRef>,
}

impl Config<'_> {
    /// Guest memory size in bytes.
    pub fn mem_size(&self) -> u64 {
        u64::from(self.mem_size_mib) << 20
    }

    /// Checks every field (the same checks [`decode`] applies).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let vip = u32::from_be_bytes(self.vip);
        if vip == 0 || vip == u32::MAX || (self.vip[0] & 0xf0) == 0xe0 {
            return Err(ConfigError::BadVip);
        }
        if self.prefix_len == 0 || self.prefix_len > 32 {
            return Err(ConfigError::BadPrefix);
        }
        let gw = u32::from_be_bytes(self.gateway);
        if gw != 0 {
            let mask = u32::MAX << (32 - u32::from(self.prefix_len));
            if gw == vip || (gw & mask) != (vip & mask) {
                return Err(ConfigError::BadGateway);
            }
        }
        if self.mac == [0; 6] || self.mac[0] & 1 == 1 {
            return Err(ConfigError::BadMac);
        }
        if self.boot_server_ip == [0; 4] || self.boot_server_port == 0 {
            return Err(ConfigError::BadBootServer);
        }
        if self.vcpus == 0 || self.vcpus > VCPUS_MAX {
            return Err(ConfigError::BadVcpus);
        }
        if self.mem_size_mib < MEM_MIB_MIN || self.mem_size_mib > MEM_MIB_MAX {
            return Err(ConfigError::BadMemorySize);
        }
        if self.auth_code.is_empty() || self.auth_code.len() > AUTH_CODE_MAX {
            return Err(ConfigError::BadAuthCode);
        }
        if !valid_dns_name(self.server_name) {
            return Err(ConfigError::BadServerName);
        }
        if !valid_der_sequence(self.ca_cert_der) {
            return Err(ConfigError::BadCaCert);
        }
        if let Some(i) = self.image {
            let end = i.gpa.checked_add(i.len);
            if i.len == 0
                || i.gpa % 4096 != 0
                || i.gpa < crate::layout::IMAGE_MIN_GPA
                || end.is_none_or(|e| e > self.mem_size())
            {
                return Err(ConfigError::BadImage);
            }
        }
        if self.disk.is_some_and(|d| d.len == 0) {
            return Err(ConfigError::BadDisk);
        }
        if self.encoded_len() > PAGE_SIZE {
            return Err(ConfigError::BadLength);
        }
        Ok(())
    }

    /// Length of the encoding before the zero tail.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN
            + self.auth_code.len()
            + self.server_name.len()
            + self.ca_cert_der.len()
            + if self.image.is_some() {
                IMAGE_DESC_LEN
            } else {
                0
            }
            + if self.disk.is_some() {
                DISK_DESC_LEN
            } else {
                0
            }
            + if self.tpm.is_some() { TPM_DESC_LEN } else { 0 }
    }

    /// The flags word: which descriptors follow the CA certificate.
    pub fn flags(&self) -> u32 {
        let mut f = 0;
        if self.image.is_some() {
            f |= FLAG_IMAGE;
        }
        if self.disk.is_some() {
            f |= FLAG_DISK;
        }
        if self.tpm.is_some() {
            f |= FLAG_TPM;
        }
        f
    }

    /// Encodes into a full page (validating first).
    pub fn encode(&self) -> Result<[u8; PAGE_SIZE], ConfigError> {
        self.validate()?;
        let mut p = [0u8; PAGE_SIZE];
        p[0..4].copy_from_slice(&CONFIG_MAGIC);
        wr_u16(&mut p, 4, CONFIG_VERSION);
        wr_u32(&mut p, 8, self.encoded_len() as u32);
        p[16..20].copy_from_slice(&self.vip);
        p[20] = self.prefix_len;
        p[24..28].copy_from_slice(&self.gateway);
        p[28..34].copy_from_slice(&self.mac);
        p[36..40].copy_from_slice(&self.boot_server_ip);
        wr_u16(&mut p, 40, self.boot_server_port);
        wr_u16(&mut p, 42, self.vcpus);
        wr_u32(&mut p, 44, self.mem_size_mib);
        wr_u64(&mut p, 48, self.time_unix_secs);
        p[56..88].copy_from_slice(&self.entropy_seed);
        wr_u16(&mut p, 88, self.auth_code.len() as u16);
        wr_u16(&mut p, 90, self.server_name.len() as u16);
        wr_u16(&mut p, 92, self.ca_cert_der.len() as u16);
        let mut o = FIXED_LEN;
        for f in [
            self.auth_code,
            self.server_name.as_bytes(),
            self.ca_cert_der,
        ] {
            p[o..o + f.len()].copy_from_slice(f);
            o += f.len();
        }
        wr_u32(&mut p, 12, self.flags());
        if let Some(i) = self.image {
            wr_u64(&mut p, o, i.gpa);
            wr_u64(&mut p, o + 8, i.len);
            p[o + 16..o + 48].copy_from_slice(&i.digest);
            o += IMAGE_DESC_LEN;
        }
        if let Some(d) = self.disk {
            wr_u64(&mut p, o, d.len);
            p[o + 8..o + 40].copy_from_slice(&d.header_digest);
            o += DISK_DESC_LEN;
        }
        if let Some(t) = self.tpm {
            p[o..o + 32].copy_from_slice(&t.ek_public_digest);
            p[o + 32..o + 64].copy_from_slice(&t.ak_public_digest);
        }
        Ok(p)
    }
}

/// Decodes and validates a configuration page. `page` must be exactly one page.
pub fn decode(page: &[u8]) -> Result<Config<'_>, ConfigError> {
    if page.len() != PAGE_SIZE {
        return Err(ConfigError::WrongPageSize);
    }
    if page[0..4] != CONFIG_MAGIC {
        return Err(ConfigError::BadMagic);
    }
    let version = rd_u16(page, 4);
    if version != CONFIG_VERSION {
        return Err(ConfigError::UnsupportedVersion(version));
    }
    let reserved = [6..8, 21..24, 34..36, 94..96];
    if reserved
        .iter()
        .any(|r| page[r.clone()].iter().any(|b| *b != 0))
    {
        return Err(ConfigError::NonZeroReserved);
    }
    let encoded_len = rd_u32(page, 8) as usize;
    let (la, ln, lc) = (
        rd_u16(page, 88) as usize,
        rd_u16(page, 90) as usize,
        rd_u16(page, 92) as usize,
    );
    let flags = rd_u32(page, 12);
    if flags & !(FLAG_IMAGE | FLAG_DISK | FLAG_TPM) != 0 {
        return Err(ConfigError::NonZeroReserved);
    }
    let desc = if flags & FLAG_IMAGE != 0 {
        IMAGE_DESC_LEN
    } else {
        0
    };
    let disk_desc = if flags & FLAG_DISK != 0 {
        DISK_DESC_LEN
    } else {
        0
    };
    let tpm_desc = if flags & FLAG_TPM != 0 {
        TPM_DESC_LEN
    } else {
        0
    };
    if encoded_len != FIXED_LEN + la + ln + lc + desc + disk_desc + tpm_desc
        || encoded_len > PAGE_SIZE
    {
        return Err(ConfigError::BadLength);
    }
    if page[encoded_len..].iter().any(|b| *b != 0) {
        return Err(ConfigError::NonZeroReserved);
    }
    let arr4 = |o: usize| [page[o], page[o + 1], page[o + 2], page[o + 3]];
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&page[28..34]);
    let mut entropy_seed = [0u8; 32];
    entropy_seed.copy_from_slice(&page[56..88]);
    let a0 = FIXED_LEN;
    let n0 = a0 + la;
    let c0 = n0 + ln;
    let i0 = c0 + lc;
    let server_name =
        core::str::from_utf8(&page[n0..c0]).map_err(|_| ConfigError::BadServerName)?;
    let image = (desc != 0).then(|| {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&page[i0 + 16..i0 + 48]);
        ImageRef {
            gpa: rd_u64(page, i0),
            len: rd_u64(page, i0 + 8),
            digest,
        }
    });
    let d0 = i0 + desc;
    let disk = (disk_desc != 0).then(|| {
        let mut header_digest = [0u8; 32];
        header_digest.copy_from_slice(&page[d0 + 8..d0 + 40]);
        DiskRef {
            len: rd_u64(page, d0),
            header_digest,
        }
    });
    let t0 = d0 + disk_desc;
    let tpm = (tpm_desc != 0).then(|| {
        let mut ek_public_digest = [0u8; 32];
        ek_public_digest.copy_from_slice(&page[t0..t0 + 32]);
        let mut ak_public_digest = [0u8; 32];
        ak_public_digest.copy_from_slice(&page[t0 + 32..t0 + 64]);
        TpmRef {
            ek_public_digest,
            ak_public_digest,
        }
    });
    let cfg = Config {
        vip: arr4(16),
        prefix_len: page[20],
        gateway: arr4(24),
        mac,
        boot_server_ip: arr4(36),
        boot_server_port: rd_u16(page, 40),
        vcpus: rd_u16(page, 42),
        mem_size_mib: rd_u32(page, 44),
        time_unix_secs: rd_u64(page, 48),
        entropy_seed,
        auth_code: &page[a0..n0],
        server_name,
        ca_cert_der: &page[c0..i0],
        image,
        disk,
        tpm,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// A DNS host name: 1..=253 chars, dot-separated labels of 1..=63 letters, digits and
/// inner hyphens.
fn valid_dns_name(s: &str) -> bool {
    if s.is_empty() || s.len() > SERVER_NAME_MAX {
        return false;
    }
    s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// One DER SEQUENCE (tag 0x30) whose definite length covers exactly the rest.
fn valid_der_sequence(d: &[u8]) -> bool {
    if d.len() < 2 || d[0] != 0x30 {
        return false;
    }
    let (len, hdr) = match d[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 if d.len() >= 3 && d[2] >= 0x80 => (d[2] as usize, 3),
        0x82 if d.len() >= 4 && d[2] != 0 => ((d[2] as usize) << 8 | d[3] as usize, 4),
        _ => return false,
    };
    hdr + len == d.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Config<'static> {
        Config {
            vip: [10, 0, 0, 2],
            prefix_len: 24,
            gateway: [10, 0, 0, 1],
            mac: [0x02, 0, 0, 0, 0, 1],
            boot_server_ip: [10, 0, 0, 1],
            boot_server_port: 8443,
            vcpus: 1,
            mem_size_mib: 16,
            time_unix_secs: 1_700_000_000,
            entropy_seed: [7; 32],
            auth_code: b"reservation-code-U",
            server_name: "boot.tenant.example",
            ca_cert_der: &[0x30, 0x03, 1, 2, 3],
            image: None,
            disk: None,
            tpm: None,
        }
    }

    #[test]
    fn a_disk_descriptor_roundtrips_after_the_image_and_alone() {
        let disk = DiskRef {
            len: 8 << 20,
            header_digest: [0xd1; 32],
        };
        let image = ImageRef {
            gpa: 0x280_0000,
            len: 0x1000,
            digest: [9; 32],
        };
        let mut c = sample();
        c.mem_size_mib = 64;
        let without = c.encode().unwrap();
        for img in [None, Some(image)] {
            c.image = img;
            c.disk = Some(disk);
            let p = c.encode().unwrap();
            let flags = if img.is_some() {
                FLAG_IMAGE | FLAG_DISK
            } else {
                FLAG_DISK
            };
            assert_eq!(rd_u32(&p, 12), flags);
            let end = rd_u32(&p, 8) as usize;
            assert_eq!(p[end - 40..end - 32], (8u64 << 20).to_le_bytes());
            assert_eq!(p[end - 32..end], [0xd1; 32]);
            assert_eq!(decode(&p).unwrap(), c);
            assert_eq!(decode(&p).unwrap().encode().unwrap(), p);
            // Without its flag the descriptor is an unexplained tail (or a wrong length).
            let mut q = p;
            q[12] &= !(FLAG_DISK as u8);
            assert!(decode(&q).is_err());
        }
        // A page without a disk is unchanged by the new field: same bytes as before.
        c.image = None;
        c.disk = None;
        assert_eq!(c.encode().unwrap(), without);
        assert_eq!(rd_u32(&without, 12), 0);
        assert_eq!(decode(&without).unwrap().disk, None);
        c.disk = Some(DiskRef { len: 0, ..disk });
        assert_eq!(c.encode(), Err(ConfigError::BadDisk));
        // Unknown flag bits are still refused.
        let mut q = without;
        q[12] = 8;
        assert_eq!(decode(&q), Err(ConfigError::NonZeroReserved));
        // The TPM flag without its descriptor is a wrong length.
        q[12] = FLAG_TPM as u8;
        assert_eq!(decode(&q), Err(ConfigError::BadLength));
        assert_eq!(decode(&without).unwrap().tpm, None);
    }

    #[test]
    fn a_tpm_descriptor_roundtrips_last_and_names_both_keys() {
        let tpm = TpmRef {
            ek_public_digest: [0xe1; 32],
            ak_public_digest: [0xa1; 32],
        };
        let mut c = sample();
        c.mem_size_mib = 64;
        c.disk = Some(DiskRef {
            len: 1 << 20,
            header_digest: [0xd1; 32],
        });
        c.tpm = Some(tpm);
        let p = c.encode().unwrap();
        assert_eq!(rd_u32(&p, 12), FLAG_DISK | FLAG_TPM);
        let end = rd_u32(&p, 8) as usize;
        assert_eq!(p[end - 64..end - 32], [0xe1; 32]);
        assert_eq!(p[end - 32..end], [0xa1; 32]);
        assert_eq!(p[end - 96..end - 64], [0xd1; 32]);
        assert_eq!(decode(&p).unwrap(), c);
        // Without its flag the descriptor is an unexplained tail.
        let mut q = p;
        q[12] &= !(FLAG_TPM as u8);
        assert!(decode(&q).is_err());
    }

    /// A version-1 page as encoded before the disk descriptor existed (fixed bytes) still
    /// decodes, to the same configuration, with no disk.
    #[test]
    fn an_old_page_without_a_disk_still_parses() {
        let mut p = [0u8; PAGE_SIZE];
        p[0..4].copy_from_slice(b"TVPC");
        p[4] = 1;
        let len = FIXED_LEN + 1 + 4 + 5 + IMAGE_DESC_LEN;
        p[8] = len as u8;
        p[12] = FLAG_IMAGE as u8;
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20] = 24;
        p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        p[36..40].copy_from_slice(&[10, 0, 0, 1]);
        p[40..42].copy_from_slice(&8443u16.to_le_bytes());
        p[42] = 1;
        p[44] = 64;
        p[88] = 1;
        p[90] = 4;
        p[92] = 5;
        p[96..106].copy_from_slice(b"Uboot\x30\x03\x02\x01\x01");
        p[106..114].copy_from_slice(&0x280_0000u64.to_le_bytes());
        p[114] = 1;
        p[122..154].copy_from_slice(&[7; 32]);
        let c = decode(&p).unwrap();
        assert_eq!(c.disk, None);
        assert_eq!(c.image.map(|i| (i.gpa, i.len)), Some((0x280_0000, 1)));
        assert_eq!(c.encode().unwrap(), p);
    }

    #[test]
    fn an_image_descriptor_roundtrips_and_is_bounded_by_ram() {
        let mut c = sample();
        c.mem_size_mib = 64;
        c.image = Some(ImageRef {
            gpa: 0x280_0000,
            len: 0x1000,
            digest: [9; 32],
        });
        let p = c.encode().unwrap();
        assert_eq!(rd_u32(&p, 12), FLAG_IMAGE);
        assert_eq!(decode(&p).unwrap(), c);
        assert_eq!(decode(&p).unwrap().encode().unwrap(), p);
        // Without the flag the descriptor bytes are an unexplained tail.
        let mut q = p;
        q[12] = 0;
        assert!(decode(&q).is_err());
        let mut q = p;
        q[13] = 1;
        assert_eq!(decode(&q), Err(ConfigError::NonZeroReserved));
        for bad in [
            ImageRef {
                gpa: 0x280_0001,
                len: 1,
                digest: [0; 32],
            },
            ImageRef {
                gpa: 0x1f0_0000,
                len: 1,
                digest: [0; 32],
            },
            ImageRef {
                gpa: 0x280_0000,
                len: 0,
                digest: [0; 32],
            },
            ImageRef {
                gpa: 0x3ff_f000,
                len: 0x2000,
                digest: [0; 32],
            },
            ImageRef {
                gpa: !0xfff,
                len: 0x2000,
                digest: [0; 32],
            },
        ] {
            c.image = Some(bad);
            assert_eq!(c.encode(), Err(ConfigError::BadImage), "{bad:?}");
        }
    }

    #[test]
    fn roundtrip_is_canonical() {
        let p = sample().encode().unwrap();
        let c = decode(&p).unwrap();
        assert_eq!(c, sample());
        assert_eq!(c.encode().unwrap(), p);
    }

    #[test]
    fn rejects_tampering() {
        let p = sample().encode().unwrap();
        let mut q = p;
        q[4095] = 1;
        assert_eq!(decode(&q), Err(ConfigError::NonZeroReserved));
        let mut q = p;
        q[22] = 1;
        assert_eq!(decode(&q), Err(ConfigError::NonZeroReserved));
        let mut q = p;
        q[88] = 200;
        assert_eq!(decode(&q), Err(ConfigError::BadLength));
        let mut q = p;
        q[4] = 2;
        assert_eq!(decode(&q), Err(ConfigError::UnsupportedVersion(2)));
        assert_eq!(decode(&p[..100]), Err(ConfigError::WrongPageSize));
        let mut c = sample();
        c.gateway = [10, 0, 1, 1];
        assert_eq!(c.encode(), Err(ConfigError::BadGateway));
        c = sample();
        c.server_name = "bad..name";
        assert_eq!(c.encode(), Err(ConfigError::BadServerName));
        c = sample();
        c.ca_cert_der = &[0x30, 0x05, 1];
        assert_eq!(c.encode(), Err(ConfigError::BadCaCert));
    }
}
