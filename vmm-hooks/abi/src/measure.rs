//! PCR 23: the measurement events `tvp-vmm` reports before the first vCPU runs, and the
//! computation of the value they extend PCR 23 to (from a reset PCR of 32 zero bytes,
//! `new = SHA-256(old || digest)` per event).
//!
//! Events, always exactly these, in this order:
//!
//! | # | [`EventType`] | digest |
//! |---|---|---|
//! | 0 | `Scheme` | SHA-256 of the ASCII bytes [`SCHEME_TAG`] |
//! | 1 | `FirmwareImage` | SHA-256 of the whole firmware ELF file, byte for byte |
//! | 2 | `ConfigPage` | SHA-256 of the 4096-byte configuration page |
//! | 3 | `BootRegion` | SHA-256 of the 64 KiB boot region ([`crate::layout::build_boot_region`]) |
//! | 4 | `AcpiTables` | SHA-256 of the 8 KiB ACPI region ([`crate::acpi::build_tables`] for the page's vCPU count) |
//! | 5 | `VcpuState` | SHA-256 of [`crate::layout::EntryState::encode`] for the ELF's entry point |
//!
//! The firmware's loaded bytes are a deterministic function of the file (its `PT_LOAD`
//! segments at their physical addresses, the rest of RAM zero), so hashing the file
//! covers them; the boot region, the ACPI tables and the vCPU state are functions of the
//! memory size and vCPU count in the configuration page and of the ELF entry point. Hence [`expected_pcr23`] needs only
//! the firmware file and the configuration page.
//!
//! After these six events, before the first vCPU runs, `tvpd` extends one more: the
//! VM's **management binding** ([`MANAGEMENT_EVENT`], the digest of the tenant's
//! management public key and policy, computed by `tvp_audit::policy::management_digest`).
//! The value a verifier expects for a measured VM is therefore
//! [`expected_pcr23_managed`]; `tvp-vmm` itself reports the six-event value.

use crate::acpi::{self, AcpiError};
use crate::config::{self, ConfigError};
use crate::layout::ACPI_REGION_SIZE;
use crate::layout::{build_boot_region, EntryState, BOOT_REGION_SIZE};
use sha2::{Digest, Sha256};

/// Domain tag of the first event; changes whenever this scheme changes.
pub const SCHEME_TAG: &str = "tvp-pcr23-scheme-v2";
/// Number of events in a VM measurement.
pub const EVENT_COUNT: usize = 6;

/// Kinds of PCR 23 events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum EventType {
    /// The measurement scheme tag.
    Scheme = 1,
    /// The firmware ELF file.
    FirmwareImage = 2,
    /// The configuration page.
    ConfigPage = 3,
    /// The boot region (GDT, boot info with the memory map, page tables).
    BootRegion = 4,
    /// The initial vCPU state.
    VcpuState = 5,
    /// The ACPI tables (RSDP, XSDT, FADT, MADT, DSDT).
    AcpiTables = 6,
}

impl EventType {
    /// Stable lowercase name, used in logs and on the `tvpd` channel.
    pub fn name(self) -> &'static str {
        match self {
            EventType::Scheme => "scheme",
            EventType::FirmwareImage => "firmware-image",
            EventType::ConfigPage => "config-page",
            EventType::BootRegion => "boot-region",
            EventType::VcpuState => "vcpu-state",
            EventType::AcpiTables => "acpi-tables",
        }
    }

    /// The type with this stable name.
    pub fn from_name(s: &str) -> Option<Self> {
        [
            EventType::Scheme,
            EventType::FirmwareImage,
            EventType::ConfigPage,
            EventType::BootRegion,
            EventType::VcpuState,
            EventType::AcpiTables,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

/// One measurement event: what was measured and its SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Kind of the event.
    pub event_type: EventType,
    /// SHA-256 digest extended into PCR 23.
    pub digest: [u8; 32],
}

/// Why the expected events cannot be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureError {
    /// The configuration page does not decode.
    Config(ConfigError),
    /// The firmware is not a 64-bit little-endian ELF file.
    NotElf64,
    /// The ACPI tables cannot be built for this configuration.
    Acpi(AcpiError),
}

impl core::fmt::Display for MeasureError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MeasureError::Config(e) => write!(f, "invalid configuration page: {e}"),
            MeasureError::NotElf64 => {
                f.write_str("firmware is not a 64-bit little-endian ELF file")
            }
            MeasureError::Acpi(e) => write!(f, "ACPI tables: {e}"),
        }
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `new = SHA-256(old || digest)`, the TPM2_PCR_Extend of a SHA-256 PCR.
pub fn extend(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}

/// Replays digests from a reset PCR (32 zero bytes).
pub fn replay<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    digests
        .into_iter()
        .fold([0u8; 32], |pcr, d| extend(&pcr, d))
}

/// The entry point of a 64-bit little-endian ELF file.
pub fn elf_entry(elf: &[u8]) -> Result<u64, MeasureError> {
    if elf.len() < 64 || elf[0..4] != *b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(MeasureError::NotElf64);
    }
    let mut e = [0u8; 8];
    e.copy_from_slice(&elf[24..32]);
    Ok(u64::from_le_bytes(e))
}

/// The digest of the boot region for a VM of `mem_size` bytes.
pub fn boot_region_digest(mem_size: u64) -> [u8; 32] {
    let mut region = [0u8; BOOT_REGION_SIZE];
    build_boot_region(mem_size, &mut region);
    sha256(&region)
}

/// The digest of the ACPI region for a VM of `vcpus` vCPUs, with a TPM or not.
pub fn acpi_tables_digest(vcpus: u16, tpm: bool) -> Result<[u8; 32], MeasureError> {
    let mut region = [0u8; ACPI_REGION_SIZE];
    acpi::build_tables(vcpus, tpm, &mut region).map_err(MeasureError::Acpi)?;
    Ok(sha256(&region))
}

/// The events of a VM given the firmware digest (so callers that stream a large file
/// hash it only once), the firmware's entry point and the configuration page.
pub fn events_from_parts(
    firmware_digest: [u8; 32],
    entry: u64,
    config_page: &[u8],
) -> Result<[Event; EVENT_COUNT], MeasureError> {
    let cfg = config::decode(config_page).map_err(MeasureError::Config)?;
    Ok([
        Event {
            event_type: EventType::Scheme,
            digest: sha256(SCHEME_TAG.as_bytes()),
        },
        Event {
            event_type: EventType::FirmwareImage,
            digest: firmware_digest,
        },
        Event {
            event_type: EventType::ConfigPage,
            digest: sha256(config_page),
        },
        Event {
            event_type: EventType::BootRegion,
            digest: boot_region_digest(cfg.mem_size()),
        },
        Event {
            event_type: EventType::AcpiTables,
            digest: acpi_tables_digest(cfg.vcpus, cfg.tpm.is_some())?,
        },
        Event {
            event_type: EventType::VcpuState,
            digest: sha256(&EntryState::for_entry(entry).encode()),
        },
    ])
}

/// The events `tvp-vmm` reports for this firmware file and configuration page.
pub fn expected_events(
    firmware: &[u8],
    config_page: &[u8],
) -> Result<[Event; EVENT_COUNT], MeasureError> {
    events_from_parts(sha256(firmware), elf_entry(firmware)?, config_page)
}

/// Name of the sixth PCR 23 event, which `tvpd` (not `tvp-vmm`) extends: the VM's
/// management binding (tenant management key and policy).
pub const MANAGEMENT_EVENT: &str = "management";

/// The PCR 23 value of a measured VM as `tvpd` leaves it: the six `tvp-vmm` events,
/// then the management binding digest.
pub fn expected_pcr23_managed(
    firmware: &[u8],
    config_page: &[u8],
    management_digest: &[u8; 32],
) -> Result<[u8; 32], MeasureError> {
    Ok(extend(
        &expected_pcr23(firmware, config_page)?,
        management_digest,
    ))
}

/// The PCR 23 value after `tvp-vmm` has measured a VM with this firmware file and
/// configuration page (without `tvpd`'s management event).
pub fn expected_pcr23(firmware: &[u8], config_page: &[u8]) -> Result<[u8; 32], MeasureError> {
    let ev = expected_events(firmware, config_page)?;
    Ok(replay(ev.iter().map(|e| &e.digest)))
}
