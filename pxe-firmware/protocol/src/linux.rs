//! A Linux workload: a bzImage with its command line and initial RAM disk, in a
//! *bundle* the tenant signs as one payload, loaded with the x86 64-bit boot protocol
//! (the kernel's `Documentation/arch/x86/boot.rst`). Pure parsing and layout; the
//! firmware does the copying.
//!
//! Bundle (all integers little endian):
//! ```text
//! magic "TVPL" | version u16 = 1 | reserved u16 = 0 | cmdline_len u32 | initrd_len u32 |
//! kernel_len u32 | cmdline (no NUL) | initrd | kernel (bzImage)
//! ```
//!
//! Layout in the workload window `[start, end)`: the zero page (`boot_params`) at
//! `start`, the command line at `start + 0x1000`, the kernel's protected-mode part at
//! the first `kernel_alignment` boundary from `start + 0x2000` with its `init_size`
//! free, the initrd at the top of the window. The kernel must be relocatable and have
//! the 64-bit entry point (`XLF_KERNEL_64`); the firmware jumps to `kernel + 0x200`
//! with `RSI` = the zero page, at CPL 0 on the VMM's identity map.

/// Magic of a Linux bundle.
pub const MAGIC: [u8; 4] = *b"TVPL";
/// Bundle version.
pub const VERSION: u16 = 1;
/// Size of the bundle header.
pub const HEADER_LEN: usize = 20;
/// Longest command line (without its NUL).
pub const CMDLINE_MAX: usize = 2047;
/// Most e820 entries in the zero page.
pub const E820_MAX: usize = 128;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

// Offsets in the bzImage's setup header and in the zero page (`struct boot_params`).
const SETUP_SECTS: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const JUMP_END: usize = 0x201;
const HEADER_MAGIC: usize = 0x202;
const PROTOCOL: usize = 0x206;
const TYPE_OF_LOADER: usize = 0x210;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const CMD_LINE_PTR: usize = 0x228;
const INITRD_ADDR_MAX: usize = 0x22c;
const KERNEL_ALIGNMENT: usize = 0x230;
const RELOCATABLE: usize = 0x234;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const INIT_SIZE: usize = 0x260;
const EXT_RAMDISK_IMAGE: usize = 0x0c0;
const EXT_RAMDISK_SIZE: usize = 0x0c4;
const EXT_CMD_LINE_PTR: usize = 0x0c8;
const E820_ENTRIES: usize = 0x1e8;
const E820_TABLE: usize = 0x2d0;
/// The 64-bit entry point's offset from the protected-mode part's start.
pub const ENTRY_64: u64 = 0x200;
const XLF_KERNEL_64: u16 = 1;
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 2;
/// Boot protocol 2.12: `xloadflags` and the 64-bit entry.
const PROTOCOL_MIN: u16 = 0x020c;
/// `type_of_loader`: undefined boot loader.
const LOADER_UNDEFINED: u8 = 0xff;
/// Largest kernel alignment accepted.
const ALIGN_MAX: u64 = 1 << 30;

/// Why a Linux workload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinuxError {
    /// The bundle's header or lengths are wrong.
    BadBundle,
    /// The command line is too long or not printable ASCII.
    BadCmdline,
    /// Not a bzImage (boot flag, `HdrS`, setup size).
    NotBzImage,
    /// Boot protocol older than 2.12, no 64-bit entry, or not relocatable.
    Unsupported,
    /// Kernel, its `init_size` and the initrd do not fit the window.
    TooLarge,
}

impl core::fmt::Display for LinuxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LinuxError::BadBundle => "the bundle's header or lengths are wrong",
            LinuxError::BadCmdline => {
                "the command line is longer than 2047 bytes (or the kernel's cmdline_size), or not printable ASCII"
            }
            LinuxError::NotBzImage => "the kernel is not a bzImage (boot flag, HdrS, setup size)",
            LinuxError::Unsupported => {
                "the kernel needs boot protocol 2.12+, the 64-bit entry (XLF_KERNEL_64), a relocatable build and a sane kernel_alignment"
            }
            LinuxError::TooLarge => {
                "the kernel's init_size and the initrd do not fit the workload window (give the VM more memory)"
            }
        })
    }
}

/// A parsed bundle, borrowing the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bundle<'a> {
    /// The kernel command line (printable ASCII, no NUL).
    pub cmdline: &'a [u8],
    /// The initial RAM disk (may be empty).
    pub initrd: &'a [u8],
    /// The bzImage.
    pub kernel: &'a [u8],
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Whether `payload` is a Linux bundle (rather than an ELF image).
pub fn is_bundle(payload: &[u8]) -> bool {
    payload.starts_with(&MAGIC)
}

/// The bundle header for these lengths (the signing tool writes header, cmdline,
/// initrd, kernel).
pub fn bundle_header(
    cmdline_len: usize,
    initrd_len: usize,
    kernel_len: usize,
) -> Result<[u8; HEADER_LEN], LinuxError> {
    let len = |n: usize| u32::try_from(n).map_err(|_| LinuxError::BadBundle);
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&len(cmdline_len)?.to_le_bytes());
    h[12..16].copy_from_slice(&len(initrd_len)?.to_le_bytes());
    h[16..20].copy_from_slice(&len(kernel_len)?.to_le_bytes());
    Ok(h)
}

/// Parses a bundle: the lengths must add up to the payload exactly.
pub fn parse_bundle(b: &[u8]) -> Result<Bundle<'_>, LinuxError> {
    let bad = LinuxError::BadBundle;
    if !is_bundle(b) || u16_at(b, 4) != Some(VERSION) || u16_at(b, 6) != Some(0) {
        return Err(bad);
    }
    let len = |o: usize| u32_at(b, o).map(|v| v as usize).ok_or(bad);
    let (c, i, k) = (len(8)?, len(12)?, len(16)?);
    let total = HEADER_LEN
        .checked_add(c)
        .and_then(|n| n.checked_add(i))
        .and_then(|n| n.checked_add(k))
        .ok_or(bad)?;
    if total != b.len() {
        return Err(bad);
    }
    let cmdline = &b[HEADER_LEN..HEADER_LEN + c];
    if c > CMDLINE_MAX || !cmdline.iter().all(|&ch| (0x20..0x7f).contains(&ch)) {
        return Err(LinuxError::BadCmdline);
    }
    Ok(Bundle {
        cmdline,
        initrd: &b[HEADER_LEN + c..HEADER_LEN + c + i],
        kernel: &b[HEADER_LEN + c + i..],
    })
}

/// Where everything goes, validated for the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The zero page (`boot_params`, 4 KiB).
    pub boot_params: u64,
    /// The NUL-terminated command line.
    pub cmdline: u64,
    /// Load address of the protected-mode part.
    pub kernel: u64,
    /// Offset of the protected-mode part in the bzImage.
    pub kernel_offset: usize,
    /// The 64-bit entry point (`kernel + 0x200`).
    pub entry: u64,
    /// The initrd's address (the window's end if there is none).
    pub initrd: u64,
}

/// Validates the bzImage and places everything in `[start, end)` (4 KiB aligned).
pub fn layout(b: &Bundle<'_>, start: u64, end: u64) -> Result<Layout, LinuxError> {
    let k = b.kernel;
    let hdr = |o| u32_at(k, o).ok_or(LinuxError::NotBzImage);
    if u16_at(k, BOOT_FLAG) != Some(0xaa55)
        || k.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS")
    {
        return Err(LinuxError::NotBzImage);
    }
    let protocol = u16_at(k, PROTOCOL).ok_or(LinuxError::NotBzImage)?;
    let xload = u16_at(k, XLOADFLAGS).ok_or(LinuxError::NotBzImage)?;
    if protocol < PROTOCOL_MIN || xload & XLF_KERNEL_64 == 0 || k.get(RELOCATABLE) != Some(&1) {
        return Err(LinuxError::Unsupported);
    }
    if b.cmdline.len() > hdr(CMDLINE_SIZE)? as usize {
        return Err(LinuxError::BadCmdline);
    }
    let sects = match k.get(SETUP_SECTS) {
        Some(0) => 4,
        Some(&s) => usize::from(s),
        None => return Err(LinuxError::NotBzImage),
    };
    let kernel_offset = (sects + 1) * 512;
    if kernel_offset >= k.len() {
        return Err(LinuxError::NotBzImage);
    }
    let align = u64::from(hdr(KERNEL_ALIGNMENT)?);
    if !align.is_power_of_two() || !(0x1000..=ALIGN_MAX).contains(&align) {
        return Err(LinuxError::Unsupported);
    }
    let too_large = LinuxError::TooLarge;
    let kernel = start.checked_add(0x2000 + align - 1).ok_or(too_large)? & !(align - 1);
    let pm_len = (k.len() - kernel_offset) as u64;
    let kernel_end = kernel
        .checked_add(pm_len.max(u64::from(hdr(INIT_SIZE)?)))
        .ok_or(too_large)?;
    // The initrd at the top of the window, below the kernel's initrd_addr_max.
    let top = if xload & XLF_CAN_BE_LOADED_ABOVE_4G != 0 || b.initrd.is_empty() {
        end
    } else {
        end.min(u64::from(hdr(INITRD_ADDR_MAX)?) + 1)
    };
    let initrd = top.checked_sub(b.initrd.len() as u64).ok_or(too_large)? & !0xfff;
    if kernel_end > initrd || start & 0xfff != 0 {
        return Err(too_large);
    }
    Ok(Layout {
        boot_params: start,
        cmdline: start + 0x1000,
        kernel,
        kernel_offset,
        entry: kernel + ENTRY_64,
        initrd,
    })
}

fn put(p: &mut [u8; 4096], o: usize, v: &[u8]) {
    p[o..o + v.len()].copy_from_slice(v);
}

/// The zero page for `b` placed at `l`, with the memory map `e820` (address, size,
/// type; at most [`E820_MAX`], the rest dropped).
pub fn zero_page(b: &Bundle<'_>, l: &Layout, e820: &[(u64, u64, u32)]) -> [u8; 4096] {
    let mut p = [0u8; 4096];
    // The setup header as the kernel carries it: 0x1f1 .. 0x202 + the jump's offset.
    let hdr_end = (HEADER_MAGIC + usize::from(b.kernel.get(JUMP_END).copied().unwrap_or(0)))
        .min(b.kernel.len())
        .min(E820_TABLE);
    if let Some(h) = b.kernel.get(SETUP_SECTS..hdr_end) {
        put(&mut p, SETUP_SECTS, h);
    }
    p[TYPE_OF_LOADER] = LOADER_UNDEFINED;
    put(&mut p, CMD_LINE_PTR, &(l.cmdline as u32).to_le_bytes());
    put(
        &mut p,
        EXT_CMD_LINE_PTR,
        &((l.cmdline >> 32) as u32).to_le_bytes(),
    );
    if !b.initrd.is_empty() {
        let size = b.initrd.len() as u64;
        put(&mut p, RAMDISK_IMAGE, &(l.initrd as u32).to_le_bytes());
        put(&mut p, RAMDISK_SIZE, &(size as u32).to_le_bytes());
        put(
            &mut p,
            EXT_RAMDISK_IMAGE,
            &((l.initrd >> 32) as u32).to_le_bytes(),
        );
        put(
            &mut p,
            EXT_RAMDISK_SIZE,
            &((size >> 32) as u32).to_le_bytes(),
        );
    }
    let n = e820.len().min(E820_MAX);
    p[E820_ENTRIES] = n as u8;
    for (i, &(addr, size, kind)) in e820.iter().take(n).enumerate() {
        let o = E820_TABLE + i * 20;
        put(&mut p, o, &addr.to_le_bytes());
        put(&mut p, o + 8, &size.to_le_bytes());
        put(&mut p, o + 16, &kind.to_le_bytes());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A minimal bzImage: 1 setup sector, protocol 2.15, 64-bit, relocatable.
    fn bzimage(pm_len: usize) -> Vec<u8> {
        let mut k = std::vec![0u8; 1024 + pm_len];
        k[SETUP_SECTS] = 1;
        k[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        k[0x200] = 0xeb;
        k[JUMP_END] = 0x66;
        k[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        k[PROTOCOL..PROTOCOL + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        k[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        k[KERNEL_ALIGNMENT..KERNEL_ALIGNMENT + 4].copy_from_slice(&0x20_0000u32.to_le_bytes());
        k[RELOCATABLE] = 1;
        k[XLOADFLAGS..XLOADFLAGS + 2].copy_from_slice(&1u16.to_le_bytes());
        k[CMDLINE_SIZE..CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        k[INIT_SIZE..INIT_SIZE + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
        k
    }

    fn bundle(cmdline: &[u8], initrd: &[u8], kernel: &[u8]) -> Vec<u8> {
        let mut b = bundle_header(cmdline.len(), initrd.len(), kernel.len())
            .unwrap()
            .to_vec();
        b.extend_from_slice(cmdline);
        b.extend_from_slice(initrd);
        b.extend_from_slice(kernel);
        b
    }

    const START: u64 = 0x200_0000;
    const END: u64 = 0x400_0000;

    #[test]
    fn a_bundle_is_laid_out_and_its_zero_page_filled() {
        let k = bzimage(0x3000);
        let raw = bundle(b"console=ttyS0", b"INITRD", &k);
        let b = parse_bundle(&raw).unwrap();
        assert_eq!(b.cmdline, b"console=ttyS0");
        let l = layout(&b, START, END).unwrap();
        assert_eq!(l.boot_params, START);
        assert_eq!(l.cmdline, START + 0x1000);
        assert_eq!(
            l.kernel, 0x220_0000,
            "next 2 MiB boundary after the zero page"
        );
        assert_eq!(l.kernel_offset, 1024);
        assert_eq!(l.entry, 0x220_0200);
        assert_eq!(l.initrd, END - 0x1000);
        let e820 = [
            (0, 0x9f000, E820_RAM),
            (0x10_0000, END - 0x10_0000, E820_RAM),
        ];
        let p = zero_page(&b, &l, &e820);
        assert_eq!(p[TYPE_OF_LOADER], 0xff);
        assert_eq!(&p[HEADER_MAGIC..HEADER_MAGIC + 4], b"HdrS");
        assert_eq!(u32_at(&p, CMD_LINE_PTR), Some(START as u32 + 0x1000));
        assert_eq!(u32_at(&p, RAMDISK_IMAGE), Some((END - 0x1000) as u32));
        assert_eq!(u32_at(&p, RAMDISK_SIZE), Some(6));
        assert_eq!(p[E820_ENTRIES], 2);
        assert_eq!(u32_at(&p, E820_TABLE + 20 + 16), Some(E820_RAM));
    }

    #[test]
    fn hostile_bundles_are_refused() {
        let k = bzimage(0x3000);
        let good = bundle(b"x", b"", &k);
        // Lengths that do not add up, overflow, or another version.
        let mut short = good.clone();
        short.pop();
        assert_eq!(parse_bundle(&short), Err(LinuxError::BadBundle));
        let mut huge = good.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_bundle(&huge), Err(LinuxError::BadBundle));
        let mut v2 = good.clone();
        v2[4] = 2;
        assert_eq!(parse_bundle(&v2), Err(LinuxError::BadBundle));
        assert_eq!(parse_bundle(&good[..10]), Err(LinuxError::BadBundle));
        // A command line with a NUL or control characters, or too long.
        let raw = bundle(b"a\0b", b"", &k);
        assert_eq!(parse_bundle(&raw), Err(LinuxError::BadCmdline));
        let long = std::vec![b'a'; CMDLINE_MAX + 1];
        assert_eq!(
            parse_bundle(&bundle(&long, b"", &k)),
            Err(LinuxError::BadCmdline)
        );
    }

    #[test]
    fn kernels_the_protocol_cannot_load_are_refused() {
        let check = |k: &[u8]| {
            let raw = bundle(b"", b"", k);
            layout(&parse_bundle(&raw).unwrap(), START, END)
        };
        let k = bzimage(0x3000);
        let mut no_magic = k.clone();
        no_magic[HEADER_MAGIC] = b'X';
        assert_eq!(check(&no_magic), Err(LinuxError::NotBzImage));
        let mut old = k.clone();
        old[PROTOCOL..PROTOCOL + 2].copy_from_slice(&0x0206u16.to_le_bytes());
        assert_eq!(check(&old), Err(LinuxError::Unsupported));
        let mut fixed = k.clone();
        fixed[RELOCATABLE] = 0;
        assert_eq!(check(&fixed), Err(LinuxError::Unsupported));
        let mut no64 = k.clone();
        no64[XLOADFLAGS] = 0;
        assert_eq!(check(&no64), Err(LinuxError::Unsupported));
        let mut align = k.clone();
        align[KERNEL_ALIGNMENT..KERNEL_ALIGNMENT + 4].copy_from_slice(&0x3000u32.to_le_bytes());
        assert_eq!(check(&align), Err(LinuxError::Unsupported));
        let mut sects = k.clone();
        sects[SETUP_SECTS] = 200;
        assert_eq!(check(&sects), Err(LinuxError::NotBzImage));
        assert_eq!(check(&k[..0x100]), Err(LinuxError::NotBzImage));
        // init_size beyond the window, or an initrd that meets the kernel.
        let mut big = k.clone();
        big[INIT_SIZE..INIT_SIZE + 4].copy_from_slice(&0x400_0000u32.to_le_bytes());
        assert_eq!(check(&big), Err(LinuxError::TooLarge));
        let initrd = std::vec![0u8; 0x1d0_1000];
        let raw = bundle(b"", &initrd, &k);
        assert_eq!(
            layout(&parse_bundle(&raw).unwrap(), START, END),
            Err(LinuxError::TooLarge)
        );
        // An initrd goes below the kernel's initrd_addr_max, however large the window.
        let mut low = k.clone();
        low[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&0x2ff_ffffu32.to_le_bytes());
        let raw = bundle(b"", b"RD", &low);
        let l = layout(&parse_bundle(&raw).unwrap(), START, 4 << 30).unwrap();
        assert_eq!(l.initrd, 0x2ff_f000);
        // The kernel's own limit on the command line.
        let mut small = k.clone();
        small[CMDLINE_SIZE..CMDLINE_SIZE + 4].copy_from_slice(&3u32.to_le_bytes());
        let raw = bundle(b"quiet", b"", &small);
        assert_eq!(
            layout(&parse_bundle(&raw).unwrap(), START, END),
            Err(LinuxError::BadCmdline)
        );
    }
}
