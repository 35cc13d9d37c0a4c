//! Validation of the workload's ELF64 image (the firmware loads it after the signature
//! verified): a little-endian x86-64 executable whose `PT_LOAD` segments lie in the
//! workload window, whose file ranges lie in the image and whose entry point lies in an
//! executable loaded segment. Pure parsing; the firmware does the copying.

/// Most program headers accepted.
pub const PHDR_MAX: usize = 64;

/// Why the ELF image was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// Not a little-endian x86-64 ELF64 executable (or too many program headers).
    NotElf,
    /// A header or segment lies outside the image.
    Truncated,
    /// A segment lies outside the workload window.
    OutsideWindow,
    /// The entry point is not inside an executable loaded segment.
    BadEntry,
    /// No loadable segment.
    Empty,
}

/// One validated `PT_LOAD` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address.
    pub paddr: u64,
    /// Offset of its bytes in the image.
    pub offset: usize,
    /// Bytes taken from the image (`<= memsz`).
    pub filesz: usize,
    /// Bytes in memory (the rest is zeroed).
    pub memsz: u64,
    /// Executable.
    pub exec: bool,
}

/// A validated image: entry point and its loadable segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Entry point.
    pub entry: u64,
    /// The `PT_LOAD` segments (the first `count`).
    pub segments: [Option<Segment>; PHDR_MAX],
}

impl Image {
    /// The loadable segments.
    pub fn loads(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().flatten()
    }
}

fn bytes<const N: usize>(b: &[u8], o: usize) -> Result<[u8; N], ElfError> {
    let end = o.checked_add(N).ok_or(ElfError::Truncated)?;
    b.get(o..end)
        .and_then(|s| s.try_into().ok())
        .ok_or(ElfError::Truncated)
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, ElfError> {
    bytes::<2>(b, o).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, ElfError> {
    bytes::<4>(b, o).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, ElfError> {
    bytes::<8>(b, o).map(u64::from_le_bytes)
}

/// Validates `image` for the window `[window_start, window_end)`.
pub fn parse(image: &[u8], window_start: u64, window_end: u64) -> Result<Image, ElfError> {
    if image.get(..4) != Some(b"\x7fELF".as_slice())
        || image.get(4) != Some(&2)
        || image.get(5) != Some(&1)
        || u16_at(image, 16)? != 2
        || u16_at(image, 18)? != 62
    {
        return Err(ElfError::NotElf);
    }
    let entry = u64_at(image, 24)?;
    let phoff = usize::try_from(u64_at(image, 32)?).map_err(|_| ElfError::Truncated)?;
    let phentsize = u16_at(image, 54)? as usize;
    let phnum = u16_at(image, 56)? as usize;
    if phentsize != 56 || phnum > PHDR_MAX {
        return Err(ElfError::NotElf);
    }
    let mut segments = [None::<Segment>; PHDR_MAX];
    for (i, slot) in segments.iter_mut().enumerate().take(phnum) {
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
        if paddr < window_start || end > window_end {
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
    let img = Image { entry, segments };
    if img.loads().next().is_none() {
        return Err(ElfError::Empty);
    }
    if !img
        .loads()
        .any(|s| s.exec && entry >= s.paddr && entry - s.paddr < s.memsz)
    {
        return Err(ElfError::BadEntry);
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const W0: u64 = 0x200_0000;
    const W1: u64 = 0x400_0000;

    /// A minimal ELF with one PT_LOAD segment at `paddr` (flags R+X), `code` as content.
    fn elf(paddr: u64, entry: u64, filesz: u64, memsz: u64) -> [u8; 0x100] {
        let mut b = [0u8; 0x100];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let p = 64;
        b[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
        b[p + 4..p + 8].copy_from_slice(&5u32.to_le_bytes());
        b[p + 8..p + 16].copy_from_slice(&0xc0u64.to_le_bytes());
        b[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
        b[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
        b[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        b
    }

    #[test]
    fn accepts_a_segment_in_the_window() {
        let i = parse(&elf(W0, W0 + 4, 0x40, 0x1000), W0, W1).unwrap();
        assert_eq!(i.entry, W0 + 4);
        let s: Vec<_> = i.loads().collect();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].paddr, s[0].offset, s[0].filesz), (W0, 0xc0, 0x40));
    }

    #[test]
    fn refuses_hostile_images() {
        // Below the window (over the firmware), past its end, wrapping around.
        assert_eq!(
            parse(&elf(0x10_0000, 0x10_0000, 0x40, 0x40), W0, W1),
            Err(ElfError::OutsideWindow)
        );
        assert_eq!(
            parse(&elf(W1 - 0x10, W1 - 0x10, 0x40, 0x40), W0, W1),
            Err(ElfError::OutsideWindow)
        );
        assert_eq!(
            parse(&elf(u64::MAX - 8, W0, 0x40, 0x40), W0, W1),
            Err(ElfError::OutsideWindow)
        );
        // File range beyond the image, filesz > memsz.
        assert_eq!(
            parse(&elf(W0, W0, 0x1000, 0x1000), W0, W1),
            Err(ElfError::Truncated)
        );
        assert_eq!(
            parse(&elf(W0, W0, 0x40, 0x10), W0, W1),
            Err(ElfError::Truncated)
        );
        // Entry outside the segment.
        assert_eq!(
            parse(&elf(W0, W0 + 0x2000, 0x40, 0x1000), W0, W1),
            Err(ElfError::BadEntry)
        );
        // Not ELF, truncated header, program headers beyond the image.
        assert_eq!(parse(b"MZ", W0, W1), Err(ElfError::NotElf));
        let e = elf(W0, W0, 0x40, 0x40);
        assert_eq!(parse(&e[..20], W0, W1), Err(ElfError::Truncated));
        let mut far = e;
        far[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&far, W0, W1), Err(ElfError::Truncated));
        let mut many = e;
        many[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(parse(&many, W0, W1), Err(ElfError::NotElf));
    }
}
