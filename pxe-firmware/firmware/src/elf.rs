//! Loading the workload's ELF64 image into the workload window
//! `[WORKLOAD_BASE, window end)`, after `tvp_boot_protocol::elf` validated it. The window
//! ends at the end of RAM, or where the VM's image (configuration page descriptor)
//! begins.

use core::ptr;
pub use tvp_boot_protocol::elf::ElfError;

/// Lowest guest-physical address a workload segment may use; the firmware's heap ends
/// here (see [`crate::heap`]).
pub const WORKLOAD_BASE: u64 = tvp_boot_protocol::WORKLOAD_WINDOW_BASE;

/// Validates `image` for the window `[WORKLOAD_BASE, window_end)` and loads it; returns
/// the entry point.
pub fn load(image: &[u8], window_end: u64) -> Result<u64, ElfError> {
    let img = tvp_boot_protocol::elf::parse(image, WORKLOAD_BASE, window_end)?;
    for s in img.loads() {
        let src = image
            .get(s.offset..s.offset + s.filesz)
            .ok_or(ElfError::Truncated)?;
        // SAFETY: the parser checked [paddr, paddr + memsz) lies inside
        // [WORKLOAD_BASE, window_end), RAM the stub maps user read-write and that neither
        // the image, the stack nor the heap (which ends at WORKLOAD_BASE) uses; and
        // filesz <= memsz.
        unsafe {
            let dst = s.paddr as *mut u8;
            ptr::copy_nonoverlapping(src.as_ptr(), dst, s.filesz);
            ptr::write_bytes(dst.add(s.filesz), 0, (s.memsz as usize) - s.filesz);
        }
    }
    Ok(img.entry)
}
