//! Port I/O from CPL 3. The stub's TSS I/O bitmap opens exactly the ports used here
//! (serial, boot timer, mailbox doorbell, power off, i8042); any other port faults.

use core::arch::asm;

/// Writes one byte to `port`.
pub fn outb(port: u16, value: u8) {
    // SAFETY: `out` only talks to the platform's emulated devices; it touches no memory
    // of this program. A port the stub did not open raises #GP, reported by the stub.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags)) }
}

/// Writes one 16-bit word to `port`.
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nostack, preserves_flags)) }
}
