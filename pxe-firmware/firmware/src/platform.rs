//! The small platform devices: boot-timer milestones and power off.

use crate::port::{outb, outw};
use tvp_abi::ports::{BOOT_TIMER_PORT, POWER_OFF_VALUE, POWER_PORT};

/// Boot-timer milestone codes the firmware reports (0, the first instruction, is
/// written by the stub). `tvp-vmm` logs each with its time since VMM start and reports
/// it to `tvpd`; `docs/firmware.md` lists them.
pub mod milestone {
    /// The Rust firmware runs at CPL 3.
    pub const RUST_ENTERED: u8 = 1;
    /// The configuration page decoded.
    pub const CONFIG_READ: u8 = 2;
    /// The mailbox answered GET_VERSION.
    pub const MAILBOX_READY: u8 = 3;
    /// The network interface is up.
    pub const NET_UP: u8 = 4;
    /// The TCP connection to the boot server is established.
    pub const TCP_CONNECTED: u8 = 5;
    /// The TLS handshake completed.
    pub const TLS_ESTABLISHED: u8 = 6;
    /// The tunnel measurement was accepted by the platform.
    pub const TUNNEL_MEASURED: u8 = 7;
    /// The firmware is done and powers off (development flow).
    pub const DONE: u8 = 0x7f;
    /// The boot failed (reported just before BOOT_FAILED).
    pub const FAILED: u8 = 0xff;
}

/// Records a boot-timer milestone.
pub fn milestone(code: u8) {
    outb(BOOT_TIMER_PORT, code);
}

/// Powers the VM off. Does not return.
pub fn power_off() -> ! {
    outw(POWER_PORT, POWER_OFF_VALUE);
    // The VMM ends the VM on the write above; spin if it ever does not.
    loop {
        core::hint::spin_loop();
    }
}
