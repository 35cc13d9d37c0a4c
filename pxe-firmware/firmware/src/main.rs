//! tvp guest firmware: the measured VM's BIOS.
//!
//! A freestanding x86-64 image (see `docs/firmware.md`). [`stub`] is hand-written
//! ring-0 assembly: GDT/TSS/IDT, page tables with the stub supervisor-only, SSE on,
//! then it enters [`firmware_main`] at CPL 3. Everything in Rust runs at CPL 3:
//! [`serial`] (console), [`config`] (configuration page), [`mailbox`] (attestation
//! mailbox), [`platform`] (boot timer, power off), [`failure`] (reason codes), [`heap`],
//! [`clock`], [`entropy`], [`hal`] + [`net`] (virtio-net and smoltcp), [`tcp`], [`tls`], [`frames`] (boot protocol), [`workload`] +
//! [`elf`] (signed workload), [`tpm`] + [`measured`] (the VM's own TPM: CRB driver,
//! measured boot and event log), [`boot`]
//! (the flow). [`rt`] provides the memory functions; [`port`] the I/O instructions.
#![no_std]
#![no_main]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

extern crate alloc;

pub mod boot;
pub mod clock;
pub mod config;
pub mod elf;
pub mod entropy;
pub mod failure;
pub mod frames;
pub mod hal;
pub mod heap;
pub mod linux;
pub mod mailbox;
pub mod measured;
pub mod net;
pub mod platform;
pub mod port;
pub mod profile;
pub mod rt;
#[cfg(feature = "selftest")]
pub mod selftest;
pub mod serial;
pub mod stub;
pub mod tcp;
pub mod tls;
pub mod tpm;
pub mod tpm_quote;
pub mod virtio_net;
pub mod workload;

/// The firmware version printed at start and sent in the boot request.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Rust entry point, reached from the stub's `iretq` at CPL 3 with `mem_size` =
/// the VM's RAM size from the boot-info page.
pub extern "C" fn firmware_main(mem_size: u64) -> ! {
    boot::run(mem_size)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("tvp-firmware: panic: {info}");
    failure::fail(failure::Failure::Panic)
}
