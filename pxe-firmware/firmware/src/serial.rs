//! The console: COM1 (an 8250 UART emulated by tvp-vmm, output to the VM's console
//! log). Transmit only; the emulated UART never holds bytes back.

use crate::port::outb;
use core::fmt;
use tvp_abi::ports::SERIAL_COM1_BASE;

/// The serial console, as a `fmt::Write` sink. `\n` is sent as `\r\n`.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                outb(SERIAL_COM1_BASE, b'\r');
            }
            outb(SERIAL_COM1_BASE, b);
        }
        Ok(())
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Serial, $($arg)*);
    }};
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}
