//! `tvp-abi`: the binary interfaces between `tvp-vmm` and the guest firmware.
//!
//! One definition per format, `no_std` so the firmware can share it:
//! - [`acpi`]: the ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) for a vCPU count;
//! - [`layout`]: the guest-physical memory map, the boot tables (GDT, page tables), the
//!   boot-info page with its e820-style memory map, and the initial vCPU state;
//! - [`config`]: the configuration page (canonical, versioned, bounded encoding);
//! - [`mailbox`]: the attestation mailbox (request/response blocks, commands, status codes);
//! - [`ports`]: the I/O ports of the platform devices;
//! - [`measure`]: the PCR 23 measurement events and [`measure::expected_pcr23`];
//! - [`tcg_log`]: what the firmware extends into a VM's own TPM and the TCG event log
//!   it leaves for the guest OS.
//!
//! All multi-byte integers are little-endian; IPv4 addresses are stored as their four
//! octets in network order. The documents in `docs/` (`config-page.md`,
//! `mailbox-abi.md`, `pcr-plan.md`) describe the same layouts for other implementers.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod acpi;
pub mod asm;
pub mod config;
pub mod layout;
pub mod mailbox;
pub mod measure;
pub mod ports;
pub mod tcg_log;
pub mod tpm_crb;

/// Size of a guest page, the unit of the layouts here.
pub const PAGE_SIZE: usize = 4096;

pub(crate) fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(crate) fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn rd_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn wr_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn wr_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn wr_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
