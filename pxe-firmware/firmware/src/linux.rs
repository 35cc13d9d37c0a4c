//! Loading a Linux bundle (`tvp_boot_protocol::linux`: bzImage, command line, initrd)
//! into the workload window with the x86 64-bit boot protocol, after the signature
//! verified and `tvp_boot_protocol::linux` validated the layout. The handover then
//! jumps to the 64-bit entry with `RSI` = the zero page.

use core::ptr;
use tvp_boot_protocol::linux::{self, LinuxError, E820_RAM, E820_RESERVED};

use crate::elf::WORKLOAD_BASE;
use tvp_abi::layout::{ACPI_GPA, ACPI_REGION_SIZE, TPM_EVENT_LOG_GPA, TPM_EVENT_LOG_SIZE};

/// Conventional RAM below the legacy video/BIOS hole.
const LOW_RAM_END: u64 = 0x9_f000;
/// Start of the RAM above 1 MiB.
const HIGH_RAM: u64 = 0x10_0000;

/// Loads the bundle `payload` into `[WORKLOAD_BASE, place_end)` (below the staged
/// container, which ends the window at `window_end`); returns the entry point and the
/// zero page's address. The whole window is RAM to the kernel (the staged container is
/// free once it runs); RAM from `window_end` to `mem_end` (the VM's image) is reported
/// reserved, and so are the platform's ACPI tables (where the kernel finds its CPUs,
/// IOAPIC and devices by scanning for the RSDP) and, for a VM with a TPM (`tpm`), the
/// TPM event log area.
pub fn load(
    payload: &[u8],
    place_end: u64,
    window_end: u64,
    mem_end: u64,
    tpm: bool,
) -> Result<(u64, u64), LinuxError> {
    let b = linux::parse_bundle(payload)?;
    let l = linux::layout(&b, WORKLOAD_BASE, place_end.min(window_end))?;
    let mut map = [(0, 0, 0); 5];
    let mut used = 0;
    let mut push = |e: (u64, u64, u32)| {
        map[used] = e;
        used += 1;
    };
    push((0, LOW_RAM_END, E820_RAM));
    if tpm {
        push((TPM_EVENT_LOG_GPA, TPM_EVENT_LOG_SIZE, E820_RESERVED));
    }
    push((ACPI_GPA, ACPI_REGION_SIZE as u64, E820_RESERVED));
    push((HIGH_RAM, window_end - HIGH_RAM, E820_RAM));
    if mem_end > window_end {
        push((window_end, mem_end - window_end, E820_RESERVED));
    }
    let zero_page = linux::zero_page(&b, &l, &map[..used]);
    let kernel = b
        .kernel
        .get(l.kernel_offset..)
        .ok_or(LinuxError::NotBzImage)?;
    // SAFETY: `layout` placed the zero page, the command line (at most 2047 bytes and
    // its NUL in its 4 KiB page), the kernel with its `init_size` and the initrd
    // without overlap inside [WORKLOAD_BASE, place_end): RAM the stub maps user
    // read-write and that neither this image, its stack nor its heap (which ends at
    // WORKLOAD_BASE) uses; `payload` is staged at or above place_end.
    unsafe {
        ptr::copy_nonoverlapping(zero_page.as_ptr(), l.boot_params as *mut u8, 4096);
        let cmdline = l.cmdline as *mut u8;
        ptr::copy_nonoverlapping(b.cmdline.as_ptr(), cmdline, b.cmdline.len());
        cmdline.add(b.cmdline.len()).write(0);
        ptr::copy_nonoverlapping(kernel.as_ptr(), l.kernel as *mut u8, kernel.len());
        ptr::copy_nonoverlapping(b.initrd.as_ptr(), l.initrd as *mut u8, b.initrd.len());
    }
    Ok((l.entry, l.boot_params))
}
