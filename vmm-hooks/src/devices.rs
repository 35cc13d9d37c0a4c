//! Port-I/O devices: the 8250 UART (console log, IRQ 4), power-off (legacy port and the
//! ACPI sleep control register), ACPI and i8042 reset, the boot
//! timer and the mailbox doorbell. Each port access is decoded into an [`IoAction`]
//! the vCPU loop acts on; nothing here reads guest memory.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use tvp_abi::ports::*;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::error::VmmError;

/// What a port write asks the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    /// Nothing beyond the device's own effect.
    None,
    /// The guest powered off.
    PowerOff,
    /// The guest asked for a reset.
    Reset,
    /// A boot-timer milestone.
    Milestone(u8),
    /// The mailbox doorbell rang.
    Doorbell,
}

/// The UART's interrupt line: an eventfd registered with KVM as an irqfd for COM1's
/// IRQ 4, so a write raises the line on the in-kernel PIC and IOAPIC without a trip
/// through the vCPU loop. The UART raises it only when the guest enabled interrupts in
/// its IER (the firmware polls and never does).
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// The console log: a file capped at `limit` bytes, so a chatty or hostile guest cannot
/// fill the host's disk. Output past the cap is dropped (noted once in the log).
pub struct ConsoleLog {
    file: File,
    written: u64,
    limit: u64,
    failed: bool,
}

impl ConsoleLog {
    /// Creates (truncates) the console log.
    pub fn create(path: &Path, limit: u64) -> Result<Self, VmmError> {
        let file = File::create(path).map_err(|source| VmmError::ConsoleLog {
            path: path.to_owned(),
            source,
        })?;
        Ok(ConsoleLog {
            file,
            written: 0,
            limit,
            failed: false,
        })
    }
}

impl Write for ConsoleLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.written) as usize;
        let n = buf.len().min(room);
        if n > 0 && !self.failed {
            if let Err(e) = self.file.write_all(&buf[..n]) {
                // Never fail the guest's UART write; stop logging instead.
                log::error!(error = e.to_string(); "console log write failed, console output dropped from now on");
                self.failed = true;
                return Ok(buf.len());
            }
            self.written += n as u64;
            if self.written == self.limit {
                log::warn!(limit = self.limit; "console log reached its byte cap; further output dropped");
            }
        }
        // Report everything as written: dropped bytes are not an error for the guest.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// All port-I/O devices of a VM.
pub struct Devices {
    serial: Serial<IrqLine, NoEvents, ConsoleLog>,
    unhandled_logged: u32,
}

/// How many unhandled port accesses are logged before going quiet.
const UNHANDLED_LOG_LIMIT: u32 = 16;

impl Devices {
    /// Devices with the UART writing to `console` and interrupting through `irq`.
    pub fn new(console: ConsoleLog, irq: IrqLine) -> Self {
        Devices {
            serial: Serial::new(irq, console),
            unhandled_logged: 0,
        }
    }

    fn note_unhandled(&mut self, dir: &str, port: u16, len: usize) {
        if self.unhandled_logged < UNHANDLED_LOG_LIMIT {
            self.unhandled_logged += 1;
            log::debug!(dir = dir, port = format!("{port:#x}"), bytes = len; "unhandled port");
        }
    }

    /// A guest `out` of `data` to `port`.
    pub fn io_out(&mut self, port: u16, data: &[u8]) -> IoAction {
        let first = data.first().copied().unwrap_or(0);
        match port {
            p if (SERIAL_COM1_BASE..SERIAL_COM1_BASE + SERIAL_PORT_COUNT).contains(&p) => {
                if let Err(e) = self.serial.write((p - SERIAL_COM1_BASE) as u8, first) {
                    log::warn!(error = format!("{e:?}"); "serial write failed");
                }
                IoAction::None
            }
            POWER_PORT
                if data.len() == 2 && u16::from_le_bytes([data[0], data[1]]) == POWER_OFF_VALUE =>
            {
                IoAction::PowerOff
            }
            I8042_COMMAND_PORT if first == I8042_CMD_RESET => IoAction::Reset,
            // The hardware-reduced FADT's sleep control and reset register (one port).
            ACPI_SLEEP_CONTROL_PORT if data.len() == 1 && first == ACPI_SLEEP_OFF_VALUE => {
                IoAction::PowerOff
            }
            ACPI_SLEEP_CONTROL_PORT if data.len() == 1 && first == ACPI_RESET_VALUE => {
                IoAction::Reset
            }
            BOOT_TIMER_PORT => IoAction::Milestone(first),
            MAILBOX_DOORBELL_PORT => IoAction::Doorbell,
            _ => {
                self.note_unhandled("out", port, data.len());
                IoAction::None
            }
        }
    }

    /// A guest `in` from `port`; unhandled ports read as all-ones (no device).
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) {
        match port {
            p if (SERIAL_COM1_BASE..SERIAL_COM1_BASE + SERIAL_PORT_COUNT).contains(&p) => {
                let v = self.serial.read((p - SERIAL_COM1_BASE) as u8);
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = v;
                }
            }
            I8042_COMMAND_PORT | ACPI_SLEEP_CONTROL_PORT | ACPI_SLEEP_STATUS_PORT => data.fill(0),
            _ => {
                self.note_unhandled("in", port, data.len());
                data.fill(0xff);
            }
        }
    }
}
