//! Firmware loading in tvp-vmm (`loader::load_elf`, as `vm::run` calls it) of a
//! hostile ELF into a VM of hostile size. Input: byte 0 picks the memory size
//! (`FIRMWARE_MIN_GPA` + 16 KiB .. 4 MiB), the rest is the ELF file.
//!
//! Guest memory (one `GuestRam` of the largest size, reused and restored between runs)
//! is filled with a pattern. Asserts: a refusal is a typed
//! `VmmError::Firmware`; when the headers are refused (`validate_elf`) nothing at all
//! is written; whatever happens, every byte that changed lies in a `PT_LOAD` segment
//! the validation accepted, inside `[FIRMWARE_MIN_GPA, mem_size)` (never the boot
//! region, the configuration page or the mailbox); an accepted load leaves memory
//! exactly as a plain model of ELF loading predicts (each segment's file bytes at its
//! physical address, in table order), and its extent and entry point cover the segments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_abi::layout::FIRMWARE_MIN_GPA;
use tvp_vmm::error::VmmError;
use tvp_vmm::loader::{load_elf, validate_elf};
use tvp_vmm::memory::GuestRam;
use vm_memory::{Bytes, GuestMemory, GuestMemoryRegion};

const PATTERN: u8 = 0xa5;
/// Guest memory of every run: the largest size byte 0 can pick. The loader is told a
/// smaller `mem_size`; the memory beyond it must stay untouched too.
const RAM_SIZE: u64 = FIRMWARE_MIN_GPA + 256 * (16 << 10);

/// The `PT_LOAD` segments with file bytes: (file offset, physical address, file size,
/// memory size), in table order. Only called on headers `validate_elf` accepted.
fn segments(elf: &[u8]) -> Vec<(u64, u64, u64, u64)> {
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let phoff = u64_at(32) as usize;
    let phnum = u16::from_le_bytes([elf[56], elf[57]]) as usize;
    (0..phnum)
        .map(|i| phoff + i * 56)
        .filter(|&p| u32::from_le_bytes([elf[p], elf[p + 1], elf[p + 2], elf[p + 3]]) == 1)
        .map(|p| {
            (
                u64_at(p + 8),
                u64_at(p + 24),
                u64_at(p + 32),
                u64_at(p + 40),
            )
        })
        .filter(|s| s.3 != 0)
        .collect()
}

/// Guest memory (the regions are adjacent from 0, so the index is the address),
/// filled with `PATTERN`, and a buffer to read it back into; made once per process.
struct Fixture {
    ram: GuestRam,
    snapshot: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let ram = GuestRam::new(RAM_SIZE).unwrap_or_else(|e| panic!("GuestRam: {e}"));
        for r in ram.mem().iter() {
            ram.place(r.start_addr().0, &vec![PATTERN; r.len() as usize])
                .unwrap_or_else(|e| panic!("fill: {e}"));
        }
        Fixture {
            ram,
            snapshot: vec![0; RAM_SIZE as usize],
        }
    }

    /// The first address of the snapshot that is not `PATTERN` (compared a page at a
    /// time: a byte loop would cost a coverage callback per byte).
    fn changed(&self) -> Option<usize> {
        let page = [PATTERN; 4096];
        let chunk = self
            .snapshot
            .chunks(4096)
            .position(|c| c != &page[..c.len()])?;
        let at = self.snapshot[chunk * 4096..]
            .iter()
            .position(|&b| b != PATTERN)?;
        Some(chunk * 4096 + at)
    }

    fn read(&mut self) {
        for r in self.ram.mem().iter() {
            let (s, n) = (r.start_addr().0 as usize, r.len() as usize);
            self.ram
                .mem()
                .read_slice(&mut self.snapshot[s..s + n], r.start_addr())
                .unwrap_or_else(|e| panic!("cannot read guest memory: {e}"));
        }
    }
}

thread_local! {
    static FIXTURE: std::cell::RefCell<Fixture> = std::cell::RefCell::new(Fixture::new());
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, elf)) = data.split_first() else {
        return;
    };
    let mem_size = FIRMWARE_MIN_GPA + (u64::from(size) + 1) * (16 << 10);
    FIXTURE.with(|f| run(&mut f.borrow_mut(), elf, mem_size));
});

fn run(f: &mut Fixture, elf: &[u8], mem_size: u64) {
    let validated = validate_elf(elf, mem_size);
    let result = load_elf(f.ram.mem(), elf, mem_size);
    if let Err(e) = &result {
        assert!(matches!(e, VmmError::Firmware(m) if !m.is_empty()), "{e:?}");
    }
    f.read();
    let Ok(checked) = validated else {
        assert!(
            result.is_err(),
            "load_elf accepted what validate_elf refused"
        );
        if let Some(at) = f.changed() {
            panic!("refused ELF wrote guest memory at {at:#x}");
        }
        return;
    };
    let segs = segments(elf);
    // The model: each segment's file bytes at its physical address, in table order
    // (file ranges lie inside the input, so this stays small).
    let mut model = std::collections::BTreeMap::new();
    for &(off, paddr, filesz, memsz) in &segs {
        assert!(paddr >= FIRMWARE_MIN_GPA && paddr + memsz <= mem_size);
        assert!(paddr >= checked.start && paddr + memsz <= checked.end);
        let file = &elf[off as usize..(off + filesz) as usize];
        for (i, &b) in file.iter().enumerate() {
            model.insert(paddr + i as u64, b);
        }
    }
    if result.is_ok() {
        for (&gpa, &b) in &model {
            assert_eq!(
                f.snapshot[gpa as usize], b,
                "byte {gpa:#x} is not what the ELF puts there"
            );
        }
    }
    // Nothing changed outside the accepted segments' file bytes (and restore them).
    for &gpa in model.keys() {
        f.snapshot[gpa as usize] = PATTERN;
    }
    if let Some(at) = f.changed() {
        panic!("byte {at:#x} written outside every accepted segment");
    }
    for &(_, paddr, filesz, _) in &segs {
        f.ram
            .place(paddr, &vec![PATTERN; filesz as usize])
            .unwrap_or_else(|e| panic!("restore: {e}"));
    }
    if let Ok(loaded) = result {
        assert_eq!(loaded, checked);
        assert!(loaded.start >= FIRMWARE_MIN_GPA && loaded.end <= mem_size);
        assert!(segs
            .iter()
            .any(|&(_, p, _, m)| (p..p + m).contains(&loaded.entry)));
    }
}
