//! Which guest memory the virtio device may use: its rings must lie, and the buffers it
//! writes must lie, in *device-writable* guest RAM.
//!
//! The VMM's view of guest memory is writable everywhere, also where the guest's is not
//! (the configuration page's KVM slot is read-only) and where the guest's firmware keeps
//! its supervisor-only stub and page tables away from its own CPL-3 code. A device that
//! wrote wherever a guest pointed it would let the guest write through it what it
//! cannot write itself. So the device never writes, and never places a ring, on:
//! - the boot region (GDT, boot info, the identity page tables the stub returns to at
//!   handover), the configuration page, the attestation mailbox and the ACPI tables:
//!   always;
//! - the firmware image (stub text, stub data and page tables, firmware code): from its
//!   measurement until the handover, after which the workload owns that memory;
//! - anything outside guest RAM.

use std::fmt;
use std::ops::Range;
use tvp_abi::layout::{
    ACPI_GPA, ACPI_REGION_SIZE, BOOT_REGION_SIZE, CONFIG_PAGE_GPA, MAILBOX_GPA, MAILBOX_SIZE,
    TPM_EVENT_LOG_GPA, TPM_EVENT_LOG_SIZE,
};
use tvp_abi::PAGE_SIZE;

/// Why a ring or buffer address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaRefusal {
    /// It overlaps the measured boot region (GDT, boot info, identity page tables).
    BootRegion,
    /// It overlaps the read-only configuration page.
    ConfigPage,
    /// It overlaps the attestation mailbox.
    Mailbox,
    /// It overlaps the measured ACPI tables.
    AcpiTables,
    /// It overlaps the TPM event log area.
    TpmEventLog,
    /// It overlaps the measured firmware image (its stub included) before the handover.
    FirmwareImage,
    /// It does not lie inside guest RAM (or its end overflows).
    OutsideRam,
}

impl DmaRefusal {
    /// A short stable name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            DmaRefusal::BootRegion => "boot-region",
            DmaRefusal::ConfigPage => "config-page",
            DmaRefusal::Mailbox => "mailbox",
            DmaRefusal::AcpiTables => "acpi-tables",
            DmaRefusal::TpmEventLog => "tpm-event-log",
            DmaRefusal::FirmwareImage => "firmware-image",
            DmaRefusal::OutsideRam => "outside-ram",
        }
    }
}

impl fmt::Display for DmaRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DmaRefusal::BootRegion => "it overlaps the measured boot region",
            DmaRefusal::ConfigPage => "it overlaps the read-only configuration page",
            DmaRefusal::Mailbox => "it overlaps the attestation mailbox",
            DmaRefusal::AcpiTables => "it overlaps the measured ACPI tables",
            DmaRefusal::TpmEventLog => "it overlaps the TPM event log area",
            DmaRefusal::FirmwareImage => {
                "it overlaps the measured firmware image (stub) before the handover"
            }
            DmaRefusal::OutsideRam => "it is not inside guest RAM",
        })
    }
}

/// The device-writable part of one VM's guest memory.
#[derive(Debug, Clone)]
pub struct DmaPolicy {
    ram_end: u64,
    firmware: Option<Range<u64>>,
}

/// Platform ranges the device never writes, with the reason each is refused.
const PLATFORM: [(u64, u64, DmaRefusal); 5] = [
    (0, BOOT_REGION_SIZE as u64, DmaRefusal::BootRegion),
    (
        CONFIG_PAGE_GPA,
        CONFIG_PAGE_GPA + PAGE_SIZE as u64,
        DmaRefusal::ConfigPage,
    ),
    (
        MAILBOX_GPA,
        MAILBOX_GPA + MAILBOX_SIZE as u64,
        DmaRefusal::Mailbox,
    ),
    (
        ACPI_GPA,
        ACPI_GPA + ACPI_REGION_SIZE as u64,
        DmaRefusal::AcpiTables,
    ),
    (
        TPM_EVENT_LOG_GPA,
        TPM_EVENT_LOG_GPA + TPM_EVENT_LOG_SIZE,
        DmaRefusal::TpmEventLog,
    ),
];

impl DmaPolicy {
    /// The policy for a VM whose RAM is `[0, ram_end)`; the firmware image is not yet
    /// protected (see [`DmaPolicy::protect_firmware`]).
    pub fn new(ram_end: u64) -> Self {
        DmaPolicy {
            ram_end,
            firmware: None,
        }
    }

    /// Protects the measured firmware image `[start, end)` until [`DmaPolicy::release_firmware`].
    pub fn protect_firmware(&mut self, image: Range<u64>) {
        self.firmware = Some(image);
    }

    /// The handover happened: the workload owns the firmware's memory now.
    pub fn release_firmware(&mut self) {
        self.firmware = None;
    }

    /// Whether the device may place a ring on, or write, `[addr, addr + len)`.
    pub fn check(&self, addr: u64, len: u64) -> Result<(), DmaRefusal> {
        let end = addr.checked_add(len).ok_or(DmaRefusal::OutsideRam)?;
        let overlaps = |s: u64, e: u64| addr < e && end > s && len > 0;
        for (s, e, why) in PLATFORM {
            if overlaps(s, e) {
                return Err(why);
            }
        }
        if let Some(fw) = &self.firmware {
            if overlaps(fw.start, fw.end) {
                return Err(DmaRefusal::FirmwareImage);
            }
        }
        if end > self.ram_end {
            return Err(DmaRefusal::OutsideRam);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_pages_firmware_and_outside_ram_are_refused() {
        let mut p = DmaPolicy::new(16 << 20);
        assert_eq!(p.check(0x9000, 8), Err(DmaRefusal::BootRegion));
        assert_eq!(p.check(CONFIG_PAGE_GPA + 8, 2), Err(DmaRefusal::ConfigPage));
        assert_eq!(
            p.check(CONFIG_PAGE_GPA + 4095, 1),
            Err(DmaRefusal::ConfigPage)
        );
        assert_eq!(p.check(MAILBOX_GPA + 0x1000, 16), Err(DmaRefusal::Mailbox));
        assert_eq!(p.check(CONFIG_PAGE_GPA + 4096, 100), Ok(()));
        assert_eq!(p.check(ACPI_GPA + 0x1ff0, 32), Err(DmaRefusal::AcpiTables));
        assert_eq!(p.check(ACPI_GPA - 16, 17), Err(DmaRefusal::AcpiTables));
        assert_eq!(p.check(ACPI_GPA + ACPI_REGION_SIZE as u64, 16), Ok(()));
        assert_eq!(
            p.check(TPM_EVENT_LOG_GPA + 0xfff0, 8),
            Err(DmaRefusal::TpmEventLog)
        );
        assert_eq!(p.check(TPM_EVENT_LOG_GPA - 8, 8), Ok(()));
        assert_eq!(p.check(TPM_EVENT_LOG_GPA + TPM_EVENT_LOG_SIZE, 8), Ok(()));
        assert_eq!(p.check(u64::MAX - 4, 8), Err(DmaRefusal::OutsideRam));
        assert_eq!(p.check((16 << 20) - 4, 8), Err(DmaRefusal::OutsideRam));
        p.protect_firmware(0x10_0000..0x10_3000);
        assert_eq!(p.check(0x10_2ff0, 32), Err(DmaRefusal::FirmwareImage));
        assert_eq!(p.check(0x10_3000, 32), Ok(()));
        p.release_firmware();
        assert_eq!(p.check(0x10_2ff0, 32), Ok(()));
        assert_eq!(p.check(CONFIG_PAGE_GPA, 1), Err(DmaRefusal::ConfigPage));
    }
}
