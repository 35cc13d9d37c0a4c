//! Loading the workload's ELF64 image into the workload window
//! `[WORKLOAD_BASE, RAM end)`: every `PT_LOAD` segment must lie inside it, the file
//! ranges inside the image, and the entry point inside an executable segment.

use core::ptr;

/// Lowest guest-physical address a workload segment may use; the firmware's heap ends
/// here (see [`crate::heap`]).
pub const WORKLOAD_BASE: u64 = 0x0200_0000;
/// Most program headers accepted.
const PHDR_MAX: usize = 64;

/// Why the ELF image was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// Not a little-endian x86-64 ELF64 executable.
    NotElf,
    /// A header or segment lies outside the image.
    Truncated,
    /// A segment lies outside the workload window (or memory is too small for one).
    OutsideWindow,
    /// The entry point is not inside an executable loaded segment.
    BadEntry,
    /// No loadable segment.
    Empty,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, ElfError> {
    let s = b.get(o..o + 2).ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, ElfError> {
    let s = b.get(o..o + 4).ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, ElfError> {
    let s = b.get(o..o + 8).ok_or(ElfError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// One validated `PT_LOAD` segment.
#[derive(Clone, Copy)]
struct Segment {
    paddr: u64,
    offset: usize,
    filesz: usize,
    memsz: u64,
    exec: bool,
}

/// Validates `image` for a VM of `mem_size` bytes and loads it; returns the entry point.
pub fn load(image: &[u8], mem_size: u64) -> Result<u64, ElfError> {
    if image.get(..4) != Some(b"\x7fELF".as_slice())
        || image.get(4) != Some(&2)
        || image.get(5) != Some(&1)
        || u16_at(image, 16)? != 2
        || u16_at(image, 18)? != 62
    {
        return Err(ElfError::NotElf);
    }
    let entry = u64_at(image, 24)?;
    let phoff = u64_at(image, 32)? as usize;
    let phentsize = u16_at(image, 54)? as usize;
    let phnum = u16_at(image, 56)? as usize;
    if phentsize != 56 || phnum > PHDR_MAX {
        return Err(ElfError::NotElf);
    }
    let mut segs = [None::<Segment>; PHDR_MAX];
    for (i, slot) in segs.iter_mut().enumerate().take(phnum) {
        let o = phoff.checked_add(i * 56).ok_or(ElfError::Truncated)?;
        if u32_at(image, o)? != 1 {
            continue;
        }
        let flags = u32_at(image, o + 4)?;
        let offset = u64_at(image, o + 8)?;
        let paddr = u64_at(image, o + 24)?;
        let filesz = u64_at(image, o + 32)?;
        let memsz = u64_at(image, o + 40)?;
        let file_end = offset.checked_add(filesz).ok_or(ElfError::Truncated)?;
        if filesz > memsz || file_end > image.len() as u64 {
            return Err(ElfError::Truncated);
        }
        let end = paddr.checked_add(memsz).ok_or(ElfError::OutsideWindow)?;
        if paddr < WORKLOAD_BASE || end > mem_size {
            return Err(ElfError::OutsideWindow);
        }
        *slot = Some(Segment {
            paddr,
            offset: offset as usize,
            filesz: filesz as usize,
            memsz,
            exec: flags & 1 != 0,
        });
    }
    let loaded = || segs.iter().flatten();
    if loaded().next().is_none() {
        return Err(ElfError::Empty);
    }
    if !loaded().any(|s| s.exec && entry >= s.paddr && entry < s.paddr + s.memsz) {
        return Err(ElfError::BadEntry);
    }
    for s in loaded() {
        let src = &image[s.offset..s.offset + s.filesz];
        // SAFETY: [paddr, paddr + memsz) lies inside [WORKLOAD_BASE, mem_size), RAM the
        // stub maps user read-write and that neither the image, the stack nor the heap
        // (which ends at WORKLOAD_BASE) uses.
        unsafe {
            let dst = s.paddr as *mut u8;
            ptr::copy_nonoverlapping(src.as_ptr(), dst, s.filesz);
            ptr::write_bytes(dst.add(s.filesz), 0, (s.memsz as usize) - s.filesz);
        }
    }
    Ok(entry)
}
