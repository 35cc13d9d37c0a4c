//! The guest-physical memory map and everything the VMM writes below 1 MiB.
//!
//! ```text
//! 0x0000_0000 .. 0x0001_0000  boot region (measured as a whole, 64 KiB):
//!     0x1000  GDT (null, 64-bit code 0x08, data 0x10)
//!     0x2000  boot-info page (magic "TVPB", e820-style memory map)
//!     0x7000  boot stack page (RSP = 0x8000 at entry)
//!     0x9000  PML4, 0xA000 PDPT, 0xB000..0xF000 four page directories
//!             (identity map of the first 4 GiB with 2 MiB pages)
//! 0x0001_0000 .. 0x0001_1000  configuration page (read-only for the guest)
//! 0x0002_0000 .. 0x0003_0000  attestation mailbox (see `mailbox`)
//! 0x000a_0000 .. 0x000b_0000  the VM's TPM event log (written by the firmware, only
//!                             for a VM with a TPM; the ACPI TPM2 table points at it)
//! 0x000e_0000 .. 0x000e_2000  ACPI tables (RSDP, XSDT, FADT, MADT, DSDT; see `acpi`)
//! 0x0010_0000 .. mem_size     RAM for the firmware (its ELF segments load here)
//! ```
//!
//! The firmware is entered in 64-bit long mode at its ELF entry point with
//! `RSI` = [`BOOT_INFO_GPA`], interrupts disabled and no IDT.

use crate::{rd_u16, rd_u64, wr_u16, wr_u32, wr_u64, PAGE_SIZE};

/// Size of the boot region, `[0, BOOT_REGION_SIZE)`.
pub const BOOT_REGION_SIZE: usize = 0x10000;
/// Guest-physical address of the GDT.
pub const GDT_GPA: u64 = 0x1000;
/// Guest-physical address of the boot-info page.
pub const BOOT_INFO_GPA: u64 = 0x2000;
/// Initial stack pointer (the stack page is `0x7000..0x8000`).
pub const BOOT_STACK_TOP: u64 = 0x8000;
/// Guest-physical address of the PML4 (CR3).
pub const PML4_GPA: u64 = 0x9000;
/// Guest-physical address of the PDPT.
pub const PDPT_GPA: u64 = 0xa000;
/// Guest-physical address of the first of four page directories.
pub const PD_GPA: u64 = 0xb000;
/// Guest-physical address of the configuration page.
pub const CONFIG_PAGE_GPA: u64 = 0x10000;
/// Guest-physical address of the attestation mailbox.
pub const MAILBOX_GPA: u64 = 0x20000;
/// Size of the attestation mailbox.
pub const MAILBOX_SIZE: usize = 0x10000;
/// Guest-physical address of the virtio-net device's virtio-mmio (version 2)
/// registers, above the largest RAM and below 4 GiB (`docs/vmm-boot.md`).
pub const VIRTIO_NET_MMIO_GPA: u64 = 0xd000_0000;
/// The virtio-net device's interrupt, as the DSDT describes it: GSI (IOAPIC pin and PIC
/// IRQ) 5, edge-triggered, raised through an irqfd from the handover on (the firmware
/// polls).
pub const VIRTIO_NET_GSI: u32 = 5;
/// Guest-physical address of the ACPI tables (RSDP first, see [`crate::acpi`]): in the
/// reserved first MiB, in the 0xE0000..0x100000 window an OS scans for the RSDP.
pub const ACPI_GPA: u64 = 0xe_0000;
/// Size of the ACPI region, measured as a whole.
pub const ACPI_REGION_SIZE: usize = 0x2000;
/// The I/O APIC's register page (KVM's in-kernel IOAPIC).
pub const IOAPIC_GPA: u64 = 0xfec0_0000;
/// The local APICs' register page.
pub const LAPIC_GPA: u64 = 0xfee0_0000;
/// The VM's TPM: the TPM 2.0 CRB interface's locality-0 window, at the address the
/// PC Client platform profile fixes (an OS finds it there, or through ACPI).
pub const TPM_CRB_GPA: u64 = 0xfed4_0000;
/// Size of the TPM CRB window (registers, then the command/response buffer).
pub const TPM_CRB_SIZE: u64 = 0x1000;
/// The VM's TPM event log (TCG2 crypto-agile format): the firmware of a VM with a TPM
/// writes the log of what it extended into the TPM's PCRs here, and the ACPI TPM2
/// table names this range (`LASA`, `LAML`), so the guest OS can read it. In the
/// reserved first MiB, in the legacy video window that no OS takes as RAM and that
/// nothing else in this layout uses (the firmware and every workload load at or above
/// 1 MiB); never written by a device (`tvp-vmm`'s DMA policy).
pub const TPM_EVENT_LOG_GPA: u64 = 0xa_0000;
/// Size of the TPM event log area.
pub const TPM_EVENT_LOG_SIZE: u64 = 0x1_0000;
/// Size of a virtio-mmio register window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Guest-physical address of the virtio-blk device's virtio-mmio (version 2)
/// registers: the slot after virtio-net's.
pub const VIRTIO_BLK_MMIO_GPA: u64 = VIRTIO_NET_MMIO_GPA + VIRTIO_MMIO_SIZE;
/// The virtio-blk device's interrupt: GSI (IOAPIC pin and PIC IRQ) 6, edge-triggered,
/// raised through an irqfd. Free on this platform (no floppy controller).
pub const VIRTIO_BLK_GSI: u32 = 6;
/// Lowest address a firmware ELF segment may be loaded at.
pub const FIRMWARE_MIN_GPA: u64 = 0x10_0000;
/// Lowest address of a VM's image (configuration page descriptor): below it lie the
/// firmware and its heap (the network-boot firmware's heap ends at 32 MiB).
pub const IMAGE_MIN_GPA: u64 = 0x0200_0000;
/// Smallest VM memory size, in MiB.
pub const MEM_MIB_MIN: u32 = 2;
/// Largest VM memory size, in MiB (stays below the 32-bit MMIO hole).
pub const MEM_MIB_MAX: u32 = 3072;

/// GDT selectors.
pub const CODE_SELECTOR: u16 = 0x08;
/// Data selector (DS, ES, SS, FS, GS).
pub const DATA_SELECTOR: u16 = 0x10;
/// The GDT entries.
pub const GDT_ENTRIES: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// Boot-info magic, "TVPB".
pub const BOOT_INFO_MAGIC: [u8; 4] = *b"TVPB";
/// Boot-info layout version.
pub const BOOT_INFO_VERSION: u16 = 1;
/// Offset of the first e820 entry in the boot-info page.
pub const E820_OFFSET: usize = 0x40;
/// Size of one e820 entry: `u64 addr, u64 size, u32 type, u32 reserved`.
pub const E820_ENTRY_SIZE: usize = 24;
/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved (the platform area below 1 MiB).
pub const E820_RESERVED: u32 = 2;

/// CR0 at entry: PE | ET | NE | PG.
pub const ENTRY_CR0: u64 = 0x8000_0031;
/// CR4 at entry: PAE.
pub const ENTRY_CR4: u64 = 0x20;
/// EFER at entry: LME | LMA.
pub const ENTRY_EFER: u64 = 0x500;
/// RFLAGS at entry (reserved bit 1 only; interrupts off).
pub const ENTRY_RFLAGS: u64 = 0x2;

/// One e820-style memory map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The memory map of a VM with `mem_size` bytes of RAM.
pub fn e820_map(mem_size: u64) -> [E820Entry; 2] {
    [
        E820Entry {
            addr: 0,
            size: FIRMWARE_MIN_GPA,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: FIRMWARE_MIN_GPA,
            size: mem_size.saturating_sub(FIRMWARE_MIN_GPA),
            kind: E820_RAM,
        },
    ]
}

/// Fills the boot region `[0, BOOT_REGION_SIZE)` exactly as the VMM places it in guest
/// memory for a VM of `mem_size` bytes. `out` must be [`BOOT_REGION_SIZE`] long; every
/// byte is written (unused bytes are zero).
pub fn build_boot_region(mem_size: u64, out: &mut [u8; BOOT_REGION_SIZE]) {
    out.fill(0);
    // GDT.
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        wr_u64(out, GDT_GPA as usize + i * 8, *e);
    }
    // Boot info.
    let bi = BOOT_INFO_GPA as usize;
    let map = e820_map(mem_size);
    out[bi..bi + 4].copy_from_slice(&BOOT_INFO_MAGIC);
    wr_u16(out, bi + 4, BOOT_INFO_VERSION);
    wr_u16(out, bi + 6, map.len() as u16);
    wr_u64(out, bi + 0x08, CONFIG_PAGE_GPA);
    wr_u64(out, bi + 0x10, MAILBOX_GPA);
    wr_u64(out, bi + 0x18, MAILBOX_SIZE as u64);
    wr_u64(out, bi + 0x20, mem_size);
    for (i, e) in map.iter().enumerate() {
        let o = bi + E820_OFFSET + i * E820_ENTRY_SIZE;
        wr_u64(out, o, e.addr);
        wr_u64(out, o + 8, e.size);
        wr_u32(out, o + 16, e.kind);
    }
    // Page tables: PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; PDs map 2 MiB pages.
    wr_u64(out, PML4_GPA as usize, PDPT_GPA | 0x3);
    for i in 0..4u64 {
        wr_u64(
            out,
            PDPT_GPA as usize + i as usize * 8,
            (PD_GPA + i * 0x1000) | 0x3,
        );
        for j in 0..512u64 {
            let phys = (i * 512 + j) << 21;
            wr_u64(
                out,
                (PD_GPA + i * 0x1000) as usize + j as usize * 8,
                phys | 0x83,
            );
        }
    }
}

/// Reads the memory size back from a boot-info page (for the firmware), or `None`
/// if the page is not a version-1 boot-info page.
pub fn boot_info_mem_size(page: &[u8; PAGE_SIZE]) -> Option<u64> {
    if page[0..4] != BOOT_INFO_MAGIC || rd_u16(page, 4) != BOOT_INFO_VERSION {
        return None;
    }
    Some(rd_u64(page, 0x20))
}

/// The initial vCPU state the VMM sets, in the order it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryState {
    /// Entry point (the ELF `e_entry`).
    pub rip: u64,
    /// [`BOOT_STACK_TOP`].
    pub rsp: u64,
    /// [`BOOT_INFO_GPA`].
    pub rsi: u64,
    /// [`ENTRY_RFLAGS`].
    pub rflags: u64,
    /// [`ENTRY_CR0`].
    pub cr0: u64,
    /// [`PML4_GPA`].
    pub cr3: u64,
    /// [`ENTRY_CR4`].
    pub cr4: u64,
    /// [`ENTRY_EFER`].
    pub efer: u64,
    /// GDT base.
    pub gdt_base: u64,
    /// GDT limit.
    pub gdt_limit: u64,
    /// IDT base (0: no IDT).
    pub idt_base: u64,
    /// IDT limit (0: no IDT, any exception triple-faults).
    pub idt_limit: u64,
}

/// Size of [`EntryState::encode`]'s output.
pub const ENTRY_STATE_LEN: usize = 96;

impl EntryState {
    /// The state for a firmware entered at `rip`.
    pub fn for_entry(rip: u64) -> Self {
        EntryState {
            rip,
            rsp: BOOT_STACK_TOP,
            rsi: BOOT_INFO_GPA,
            rflags: ENTRY_RFLAGS,
            cr0: ENTRY_CR0,
            cr3: PML4_GPA,
            cr4: ENTRY_CR4,
            efer: ENTRY_EFER,
            gdt_base: GDT_GPA,
            gdt_limit: (GDT_ENTRIES.len() * 8 - 1) as u64,
            idt_base: 0,
            idt_limit: 0,
        }
    }

    /// Canonical encoding: the twelve fields as `u64` little-endian, in declaration order.
    pub fn encode(&self) -> [u8; ENTRY_STATE_LEN] {
        let mut b = [0u8; ENTRY_STATE_LEN];
        let f = [
            self.rip,
            self.rsp,
            self.rsi,
            self.rflags,
            self.cr0,
            self.cr3,
            self.cr4,
            self.efer,
            self.gdt_base,
            self.gdt_limit,
            self.idt_base,
            self.idt_limit,
        ];
        for (i, v) in f.iter().enumerate() {
            wr_u64(&mut b, i * 8, *v);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_region_has_tables_and_map() {
        let mut r = [0u8; BOOT_REGION_SIZE];
        build_boot_region(64 << 20, &mut r);
        assert_eq!(rd_u64(&r, GDT_GPA as usize + 8), GDT_ENTRIES[1]);
        assert_eq!(rd_u64(&r, PML4_GPA as usize), PDPT_GPA | 3);
        // Last PD entry maps 4 GiB - 2 MiB.
        assert_eq!(
            rd_u64(&r, 0xe000 + 511 * 8),
            ((4u64 << 30) - (2 << 20)) | 0x83
        );
        let mut page = [0u8; PAGE_SIZE];
        page.copy_from_slice(&r[0x2000..0x3000]);
        assert_eq!(boot_info_mem_size(&page), Some(64 << 20));
    }
}
