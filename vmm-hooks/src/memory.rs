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
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

/// The guest's RAM, as three adjacent regions: `[0, 0x10000)`, the configuration page
/// (read-only for the guest) and `[0x11000, mem_size)`.
/// Dropping it zeroes the memory (unless [`GuestRam::scrub`] already did), so every
/// exit path, including setup failures, scrubs.
pub struct GuestRam {
    mem: GuestMemoryMmap,
    mapping: HugeAlignedMapping,
    scrubbed: AtomicBool,
}

/// Flags of the guest RAM mapping: private, anonymous, no swap reservation (as
/// vm-memory's own anonymous regions).
const MAP_FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// A huge page (2 MiB on x86-64).
const HUGE_PAGE: usize = 2 << 20;

/// The whole guest RAM as one anonymous mapping whose start is 2 MiB aligned, so a
/// guest-physical 2 MiB frame is a 2 MiB frame of the host's address space too, with
/// `MADV_HUGEPAGE` on it: the host backs the guest with transparent huge pages where
/// it can, and KVM maps each with one large EPT entry. The guest then takes one EPT
/// fault per 2 MiB it first touches instead of one per 4 KiB: streaming a 64 MiB
/// workload into fresh RAM took 16 384 of them (an exit to the host's kernel each;
/// on nested KVM, to the outer hypervisor too).
///
/// The address range is never unmapped: vm-memory's regions (and their clones held by
/// the devices and threads) point into it, so it lives as long as the process (one VM
/// per `tvp-vmm`). [`GuestRam`]'s drop scrubs it and then releases its pages.
struct HugeAlignedMapping {
    start: usize,
    len: usize,
}

impl HugeAlignedMapping {
    fn new(len: usize) -> Result<Self, VmmError> {
        let padded = len
            .checked_add(HUGE_PAGE)
            .ok_or_else(|| VmmError::Memory(format!("memory size {len} too large")))?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing
        // touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                padded,
                libc::PROT_READ | libc::PROT_WRITE,
                MAP_FLAGS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(VmmError::Memory(format!(
                "cannot map {len} bytes: {}",
                std::io::Error::last_os_error()
            )));
        }
        let raw = raw as usize;
        let start = raw.next_multiple_of(HUGE_PAGE);
        let end = start + len;
        // SAFETY: both trimmed pieces are parts of the mapping just made, outside
        // [start, end), and nothing points into them.
        unsafe {
            if start > raw {
                libc::munmap(raw as *mut libc::c_void, start - raw);
            }
            if raw + padded > end {
                libc::munmap(end as *mut libc::c_void, raw + padded - end);
            }
        }
        // SAFETY: advice on our own mapping; it changes how pages are backed, not
        // their contents. It fails only where the kernel has no transparent huge
        // pages, and the guest then runs on small pages.
        if unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) } != 0 {
            log::info!(error = std::io::Error::last_os_error().to_string(); "guest RAM on small pages: no transparent huge pages");
        }
        Ok(HugeAlignedMapping { start, len })
    }

    /// The host address of guest-physical `offset` (< the mapping's length).
    fn at(&self, offset: usize) -> *mut u8 {
        (self.start + offset.min(self.len)) as *mut u8
    }

    /// Gives the pages back to the host (after the scrub): the range stays mapped and
    /// reads as zero.
    fn release(&self) {
        // SAFETY: our own private anonymous mapping; MADV_DONTNEED drops its pages and
        // later accesses see zero-filled pages, so any stale pointer into it stays valid.
        let rc = unsafe {
            libc::madvise(
                self.start as *mut libc::c_void,
                self.len,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            log::warn!(error = std::io::Error::last_os_error().to_string(); "cannot release guest RAM pages");
        }
    }
}

impl GuestRam {
    /// Allocates `mem_size` bytes (zero-filled anonymous memory) in one mapping aligned
    /// to 2 MiB and asks for transparent huge pages on it (see [`HugeAlignedMapping`]).
    pub fn new(mem_size: u64) -> Result<Self, VmmError> {
        let cfg_end = CONFIG_PAGE_GPA + PAGE_SIZE as u64;
        if mem_size <= cfg_end {
            return Err(VmmError::Memory(format!(
                "memory size {mem_size} too small"
            )));
        }
        let size = usize::try_from(mem_size)
            .map_err(|_| VmmError::Memory(format!("memory size {mem_size} too large")))?;
        let mapping = HugeAlignedMapping::new(size)?;
        let ranges = [
            (0, BOOT_REGION_SIZE),
            (CONFIG_PAGE_GPA, PAGE_SIZE),
            (cfg_end, (mem_size - cfg_end) as usize),
        ];
        let mut regions = Vec::with_capacity(ranges.len());
        for (gpa, len) in ranges {
            let region = MmapRegionBuilder::new(len)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(MAP_FLAGS);
            // SAFETY: [gpa, gpa + len) lies inside the mapping (the ranges tile
            // [0, size)), which stays mapped for the life of the process
            // (`HugeAlignedMapping` never unmaps), so every clone of the region's
            // pointer stays valid.
            let region = unsafe { region.with_raw_mmap_pointer(mapping.at(gpa as usize)) }
                .build()
                .map_err(|e| VmmError::Memory(format!("region at {gpa:#x}: {e}")))?;
            regions.push(
                GuestRegionMmap::new(region, GuestAddress(gpa))
                    .map_err(|e| VmmError::Memory(format!("region at {gpa:#x}: {e}")))?,
            );
        }
        let mem = GuestMemoryMmap::from_regions(regions)
            .map_err(|e| VmmError::Memory(format!("cannot map {mem_size} bytes: {e}")))?;
        Ok(GuestRam {
            mem,
            mapping,
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
        self.mapping.release();
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

    /// Each region's host address is congruent to its guest-physical address modulo
    /// 2 MiB, so a guest 2 MiB frame can be one huge page on the host and in the EPT.
    #[test]
    fn guest_ram_is_huge_page_aligned_to_its_guest_physical_addresses() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let regions: Vec<_> = ram.mem().iter().collect();
        assert_eq!(regions.len(), 3);
        let base = regions[0]
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .unwrap() as usize;
        assert_eq!(base % HUGE_PAGE, 0, "the mapping starts on a huge page");
        for r in regions {
            let host = r
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap() as usize;
            assert_eq!(
                host - base,
                r.start_addr().0 as usize,
                "one contiguous mapping"
            );
        }
    }

    /// Released pages read as zero and stay mapped (stale pointers stay valid).
    #[test]
    fn released_ram_reads_as_zero() {
        let ram = GuestRam::new(4 << 20).unwrap();
        ram.place((4 << 20) - 4096, &[7; 4096]).unwrap();
        ram.scrub();
        ram.mapping.release();
        assert!(ram.is_zero());
        ram.place(0x20000, &[1; 16]).unwrap();
    }
}
