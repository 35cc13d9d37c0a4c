//! Loading the workload's ELF64 image into the workload window
//! `[WORKLOAD_BASE, RAM end)`, after `tvp_boot_protocol::elf` validated it.

use core::ptr;
pub use tvp_boot_protocol::elf::ElfError;

/// Lowest guest-physical address a workload segment may use; the firmware's heap ends
/// here (see [`crate::heap`]).
pub const WORKLOAD_BASE: u64 = 0x0200_0000;

/// Validates `image` for a VM of `mem_size` bytes and loads it; returns the entry point.
pub fn load(image: &[u8], mem_size: u64) -> Result<u64, ElfError> {
    let img = tvp_boot_protocol::elf::parse(image, WORKLOAD_BASE, mem_size)?;
    for s in img.loads() {
        let src = image
            .get(s.offset..s.offset + s.filesz)
            .ok_or(ElfError::Truncated)?;
        // SAFETY: the parser checked [paddr, paddr + memsz) lies inside
        // [WORKLOAD_BASE, mem_size), RAM the stub maps user read-write and that neither
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
