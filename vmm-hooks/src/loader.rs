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
        if memsz == 0 {
            continue;
        }
        if filesz > memsz {
            return Err(bad(format!(
                "segment at {paddr:#x}: file size exceeds memory size"
            )));
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
