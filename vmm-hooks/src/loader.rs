//! Loading the firmware: an x86-64 ELF placed at its segments' physical addresses.
//!
//! The program headers are validated here first (every loadable segment inside
//! `[FIRMWARE_MIN_GPA, mem_size)`, file ranges inside the file, entry point inside a
//! loaded segment) so a firmware can never overwrite the boot region, the
//! configuration page or the mailbox; then linux-loader copies the segments. The
//! loader reads from the same in-memory bytes that were measured, so what runs is what
//! was hashed. Other kernel formats (bzImage) can be added beside [`load_elf`].

use crate::error::VmmError;
use linux_loader::loader::{elf::Elf, KernelLoader};
use tvp_abi::layout::FIRMWARE_MIN_GPA;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const PT_LOAD: u32 = 1;
const EM_X86_64: u16 = 62;
const PHDR_SIZE: usize = 56;
const MAX_PHDRS: usize = 64;

/// Where the firmware was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Entry point (guest-physical, identity-mapped).
    pub entry: u64,
    /// Lowest loaded address.
    pub start: u64,
    /// End of the highest segment (exclusive).
    pub end: u64,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Checks the ELF headers against a VM of `mem_size` bytes; returns the load extent.
pub fn validate_elf(elf: &[u8], mem_size: u64) -> Result<Loaded, VmmError> {
    let bad = |m: String| VmmError::Firmware(m);
    if elf.len() < 64 || elf[0..4] != *b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF file".into()));
    }
    if u16_at(elf, 18) != EM_X86_64 {
        return Err(bad("ELF machine is not x86-64".into()));
    }
    let entry = u64_at(elf, 24);
    let phoff = u64_at(elf, 32) as usize;
    let phentsize = u16_at(elf, 54) as usize;
    let phnum = u16_at(elf, 56) as usize;
    if phentsize != PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
        return Err(bad(format!(
            "bad program header table ({phnum} x {phentsize} bytes)"
        )));
    }
    let table_end = phoff
        .checked_add(phnum * PHDR_SIZE)
        .filter(|e| *e <= elf.len())
        .ok_or_else(|| bad("program header table outside the file".into()))?;
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut entry_ok = false;
    for ph in elf[phoff..table_end].chunks_exact(PHDR_SIZE) {
        if u32_at(ph, 0) != PT_LOAD {
            continue;
        }
        let (off, paddr, filesz, memsz) = (
            u64_at(ph, 8),
            u64_at(ph, 24),
            u64_at(ph, 32),
            u64_at(ph, 40),
        );
        // Before the empty-segment skip: linux-loader copies every segment with file
        // bytes, whatever its memory size, so a segment of memory size 0 with file
        // bytes would be written unchecked (found by the `elf_load` fuzz target).
        if filesz > memsz {
            return Err(bad(format!(
                "segment at {paddr:#x}: file size exceeds memory size"
            )));
        }
        if memsz == 0 {
            continue;
        }
        if off.checked_add(filesz).is_none_or(|e| e > elf.len() as u64) {
            return Err(bad(format!(
                "segment at {paddr:#x}: file range outside the file"
            )));
        }
        let seg_end = paddr
            .checked_add(memsz)
            .ok_or_else(|| bad(format!("segment at {paddr:#x}: address overflow")))?;
        if paddr < FIRMWARE_MIN_GPA || seg_end > mem_size {
            return Err(bad(format!(
                "segment {paddr:#x}..{seg_end:#x} outside firmware RAM {FIRMWARE_MIN_GPA:#x}..{mem_size:#x}"
            )));
        }
        entry_ok |= (paddr..seg_end).contains(&entry);
        start = start.min(paddr);
        end = end.max(seg_end);
    }
    if end == 0 {
        return Err(bad("no loadable segment".into()));
    }
    if !entry_ok {
        return Err(bad(format!(
            "entry point {entry:#x} is not inside a loaded segment"
        )));
    }
    Ok(Loaded { entry, start, end })
}

/// Validates and loads `elf` into guest memory.
pub fn load_elf(mem: &GuestMemoryMmap, elf: &[u8], mem_size: u64) -> Result<Loaded, VmmError> {
    let loaded = validate_elf(elf, mem_size)?;
    let mut image = std::io::Cursor::new(elf);
    Elf::load(mem, None, &mut image, Some(GuestAddress(FIRMWARE_MIN_GPA)))
        .map_err(|e| VmmError::Firmware(format!("ELF load failed: {e}")))?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_LOAD segment.
    fn elf(entry: u64, paddr: u64, offset: u64, filesz: u64, memsz: u64) -> Vec<u8> {
        let mut b = vec![0u8; 64 + PHDR_SIZE + 16];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let p = 64;
        b[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[p + 8..p + 16].copy_from_slice(&offset.to_le_bytes());
        b[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
        b[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
        b[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        b
    }

    const MEM: u64 = 16 << 20;
    const BASE: u64 = FIRMWARE_MIN_GPA;

    #[test]
    fn accepts_a_well_formed_firmware() {
        let l = validate_elf(&elf(BASE, BASE, 120, 16, 4096), MEM).unwrap();
        assert_eq!((l.entry, l.start, l.end), (BASE, BASE, BASE + 4096));
    }

    #[test]
    fn rejects_segments_that_would_overwrite_the_platform_area_or_escape_ram() {
        let reject = |b: Vec<u8>| assert!(validate_elf(&b, MEM).is_err());
        reject(elf(0x10000, 0x10000, 120, 16, 16)); // config page
        reject(elf(BASE, BASE - 8, 120, 16, 16)); // straddles 1 MiB
        reject(elf(BASE, MEM - 8, 120, 16, 16)); // past the end of RAM
        reject(elf(BASE, u64::MAX - 4, 120, 16, 16)); // overflow
        reject(elf(BASE, BASE, 120, 32, 16)); // filesz > memsz
        reject(elf(BASE, BASE, 1 << 20, 16, 16)); // file range outside the file
        reject(elf(BASE + 4096, BASE, 120, 16, 16)); // entry outside any segment
        reject(b"not an elf".to_vec());
        let mut b = elf(BASE, BASE, 120, 16, 16);
        b[56..58].copy_from_slice(&2u16.to_le_bytes()); // phdr table outside the file
        reject(b);
    }

    /// Fuzz finding (`elf_load`, regression-zero-memsz-segment-writes-anywhere): a
    /// second PT_LOAD with file bytes but memory size 0 was skipped by the checks and
    /// then copied by linux-loader to its address, here the configuration page.
    #[test]
    fn a_segment_of_memory_size_zero_cannot_write_past_the_checks() {
        use tvp_abi::layout::CONFIG_PAGE_GPA;
        use vm_memory::Bytes;
        let mut b = elf(BASE, BASE, 176, 16, 16);
        b.resize(176, 0);
        b.extend_from_slice(&[0xee; 16]);
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        let p = 64 + PHDR_SIZE;
        b[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[p + 8..p + 16].copy_from_slice(&176u64.to_le_bytes());
        b[p + 24..p + 32].copy_from_slice(&CONFIG_PAGE_GPA.to_le_bytes());
        b[p + 32..p + 40].copy_from_slice(&16u64.to_le_bytes()); // filesz 16, memsz 0
        let ram = crate::memory::GuestRam::new(MEM).unwrap();
        let e = load_elf(ram.mem(), &b, MEM).unwrap_err().to_string();
        assert!(e.contains("file size exceeds memory size"), "{e}");
        let mut page = [0u8; 16];
        ram.mem()
            .read_slice(&mut page, GuestAddress(CONFIG_PAGE_GPA))
            .unwrap();
        assert_eq!(page, [0u8; 16], "the configuration page was written");
    }
}
