//! Guest memory: allocation, the KVM memory slots (the configuration page in its own
//! read-only slot), placing the platform's bytes, and scrubbing at the end.
//!
//! The VMM never reads guest memory except the mailbox request block
//! ([`crate::mailbox`]); there is no other read path and no dump.

use crate::error::VmmError;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use std::sync::atomic::{AtomicBool, Ordering};
use tvp_abi::layout::{BOOT_REGION_SIZE, CONFIG_PAGE_GPA};
use tvp_abi::PAGE_SIZE;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

/// The guest's RAM, as three adjacent regions: `[0, 0x10000)`, the configuration page
/// (read-only for the guest) and `[0x11000, mem_size)`.
/// Dropping it zeroes the memory (unless [`GuestRam::scrub`] already did), so every
/// exit path, including setup failures, scrubs.
pub struct GuestRam {
    mem: GuestMemoryMmap,
    scrubbed: AtomicBool,
}

impl GuestRam {
    /// Allocates `mem_size` bytes (zero-filled anonymous memory).
    pub fn new(mem_size: u64) -> Result<Self, VmmError> {
        let cfg_end = CONFIG_PAGE_GPA + PAGE_SIZE as u64;
        if mem_size <= cfg_end {
            return Err(VmmError::Memory(format!(
                "memory size {mem_size} too small"
            )));
        }
        let ranges = [
            (GuestAddress(0), BOOT_REGION_SIZE),
            (GuestAddress(CONFIG_PAGE_GPA), PAGE_SIZE),
            (GuestAddress(cfg_end), (mem_size - cfg_end) as usize),
        ];
        let mem = GuestMemoryMmap::from_ranges(&ranges)
            .map_err(|e| VmmError::Memory(format!("cannot map {mem_size} bytes: {e}")))?;
        Ok(GuestRam {
            mem,
            scrubbed: AtomicBool::new(false),
        })
    }

    /// The vm-memory view (for the loader and the mailbox).
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Registers the regions as KVM memory slots; the configuration page's slot is
    /// `KVM_MEM_READONLY`, so guest writes to it exit to the VMM and are dropped.
    pub fn register(&self, vm: &VmFd) -> Result<(), VmmError> {
        for (slot, region) in self.mem.iter().enumerate() {
            let readonly = region.start_addr().0 == CONFIG_PAGE_GPA;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| VmmError::Memory(format!("region host address: {e}")))?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: if readonly { KVM_MEM_READONLY } else { 0 },
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of a live mmap of exactly `region.len()` bytes
            // owned by `self.mem`; `GuestRam` outlives the VM file descriptor's use of it
            // (the VM is dropped before `GuestRam` in `vm::run`), and the mapping is never
            // moved or unmapped while the slot exists.
            unsafe { vm.set_user_memory_region(desc) }.map_err(VmmError::kvm("set memory slot"))?;
        }
        Ok(())
    }

    /// Host (address, length) of each region, for `madvise` in [`crate::lockdown`].
    pub fn host_ranges(&self) -> Vec<(*mut u8, usize)> {
        self.mem
            .iter()
            .filter_map(|r| {
                r.get_host_address(vm_memory::MemoryRegionAddress(0))
                    .ok()
                    .map(|h| (h, r.len() as usize))
            })
            .collect()
    }

    /// Writes platform bytes at `gpa` (setup only, before any vCPU runs).
    pub fn place(&self, gpa: u64, bytes: &[u8]) -> Result<(), VmmError> {
        self.mem.write_slice(bytes, GuestAddress(gpa)).map_err(|e| {
            VmmError::Memory(format!(
                "cannot write {} bytes at {gpa:#x}: {e}",
                bytes.len()
            ))
        })
    }

    /// Zeroes all guest memory (when the VM has ended, before unmapping). Idempotent.
    pub fn scrub(&self) {
        if self.scrubbed.swap(true, Ordering::SeqCst) {
            return;
        }
        let zeros = vec![0u8; 1 << 20];
        for region in self.mem.iter() {
            let mut off = 0u64;
            while off < region.len() {
                let n = (region.len() - off).min(zeros.len() as u64) as usize;
                if let Err(e) = region.write_slice(&zeros[..n], vm_memory::MemoryRegionAddress(off))
                {
                    log::error!(offset = format!("{off:#x}"), error = e.to_string(); "scrub failed");
                }
                off += n as u64;
            }
        }
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    /// True if every byte is zero (for tests of [`GuestRam::scrub`]).
    #[cfg(test)]
    fn is_zero(&self) -> bool {
        let mut buf = vec![0u8; 1 << 20];
        self.mem.iter().all(|region| {
            let mut off = 0u64;
            while off < region.len() {
                let n = (region.len() - off).min(buf.len() as u64) as usize;
                if region
                    .read_slice(&mut buf[..n], vm_memory::MemoryRegionAddress(off))
                    .is_err()
                    || buf[..n].iter().any(|b| *b != 0)
                {
                    return false;
                }
                off += n as u64;
            }
            true
        })
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        self.scrub();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_zeroes_every_region() {
        let ram = GuestRam::new(4 << 20).unwrap();
        ram.place(0x1000, &[1; 64]).unwrap();
        ram.place(CONFIG_PAGE_GPA, &[2; 4096]).unwrap();
        ram.place((4 << 20) - 8, &[3; 8]).unwrap();
        assert!(!ram.is_zero());
        ram.scrub();
        assert!(ram.is_zero());
    }
}
