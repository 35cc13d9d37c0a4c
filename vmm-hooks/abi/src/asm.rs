//! The ABI constants as a C-preprocessor header for assembly code (the firmware's
//! ring-0 stub, the test guests): one definition, generated from this crate.

use crate::{layout, mailbox, ports};
use core::fmt::{self, Write};

/// Writes `#define NAME value` lines for the ports, addresses, mailbox magic, version
/// and command numbers.
pub fn write_header(w: &mut impl Write) -> fmt::Result {
    let defs: [(&str, u64); 25] = [
        ("SERIAL_PORT", ports::SERIAL_COM1_BASE as u64),
        ("BOOT_TIMER_PORT", ports::BOOT_TIMER_PORT as u64),
        ("DOORBELL_PORT", ports::MAILBOX_DOORBELL_PORT as u64),
        ("POWER_PORT", ports::POWER_PORT as u64),
        ("POWER_OFF_VALUE", ports::POWER_OFF_VALUE as u64),
        ("ACPI_SLEEP_PORT", ports::ACPI_SLEEP_CONTROL_PORT as u64),
        ("ACPI_SLEEP_OFF", ports::ACPI_SLEEP_OFF_VALUE as u64),
        ("ACPI_RESET", ports::ACPI_RESET_VALUE as u64),
        ("ACPI_TABLES", layout::ACPI_GPA),
        ("I8042_PORT", ports::I8042_COMMAND_PORT as u64),
        ("I8042_CMD_RESET", ports::I8042_CMD_RESET as u64),
        ("BOOT_INFO", layout::BOOT_INFO_GPA),
        ("CONFIG_PAGE", layout::CONFIG_PAGE_GPA),
        ("FIRMWARE_BASE", layout::FIRMWARE_MIN_GPA),
        ("TPM_CRB", layout::TPM_CRB_GPA),
        (
            "MBOX_REQ",
            layout::MAILBOX_GPA + mailbox::REQUEST_OFFSET as u64,
        ),
        (
            "MBOX_RESP",
            layout::MAILBOX_GPA + mailbox::RESPONSE_OFFSET as u64,
        ),
        ("MBOX_VERSION", mailbox::MAILBOX_ABI_VERSION as u64),
        (
            "REQ_MAGIC",
            u32::from_le_bytes(mailbox::REQUEST_MAGIC) as u64,
        ),
        (
            "RESP_MAGIC",
            u32::from_le_bytes(mailbox::RESPONSE_MAGIC) as u64,
        ),
        ("CMD_GET_VERSION", mailbox::Command::GetVersion as u64),
        ("CMD_TUNNEL", mailbox::Command::TunnelEstablished as u64),
        ("CMD_QUOTE", mailbox::Command::QuoteRequest as u64),
        ("CMD_HANDOVER", mailbox::Command::Handover as u64),
        ("CMD_BOOT_FAILED", mailbox::Command::BootFailed as u64),
    ];
    w.write_str("/* generated from tvp-abi (tvp-vmm abi-header); do not edit */\n")?;
    for (k, v) in defs {
        writeln!(w, "#define {k} {v:#x}")?;
    }
    Ok(())
}
