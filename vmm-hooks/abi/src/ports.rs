//! I/O ports of the platform devices `tvp-vmm` emulates.

/// COM1, an 8250/16550 UART; its output goes to the VM's console log.
pub const SERIAL_COM1_BASE: u16 = 0x3f8;
/// Number of ports the UART occupies.
pub const SERIAL_PORT_COUNT: u16 = 8;
/// i8042 command port: writing [`I8042_CMD_RESET`] resets (ends) the VM.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// i8042 "pulse reset line" command.
pub const I8042_CMD_RESET: u8 = 0xfe;
/// Power-off port (ACPI PM1a control style): a 16-bit write of [`POWER_OFF_VALUE`]
/// powers the VM off. Other values are ignored.
pub const POWER_PORT: u16 = 0x604;
/// The value that powers off, SLP_EN with sleep type 0 (as QEMU's PM1a_CNT S5).
pub const POWER_OFF_VALUE: u16 = 0x2000;
/// Boot-timer port: a write of one byte (the milestone code) records a timestamp
/// that `tvp-vmm` logs and reports to `tvpd`.
pub const BOOT_TIMER_PORT: u16 = 0x440;
/// Milestone code the firmware writes as its very first instruction.
pub const MILESTONE_FIRST_INSTRUCTION: u8 = 0;
/// Mailbox doorbell port: any write (any width, any value) asks the platform to
/// process the request block of the attestation mailbox.
pub const MAILBOX_DOORBELL_PORT: u16 = 0x448;
/// ACPI sleep control register (hardware-reduced FADT `SLEEP_CONTROL_REG`, one byte) and
/// reset register (`RESET_REG`): a write of [`ACPI_SLEEP_OFF_VALUE`] powers the VM off,
/// [`ACPI_RESET_VALUE`] asks for a reboot; other values are ignored.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// ACPI sleep status register (`SLEEP_STATUS_REG`); reads as zero.
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// `SLP_EN` (bit 5) with sleep type 5 (`\_S5_`, soft off) in bits 2..5: what an OS writes
/// to the sleep control register to power off.
pub const ACPI_SLEEP_OFF_VALUE: u8 = 0x20 | (5 << 2);
/// The FADT's `RESET_VALUE`, written to the reset register to reboot.
pub const ACPI_RESET_VALUE: u8 = 0x01;
