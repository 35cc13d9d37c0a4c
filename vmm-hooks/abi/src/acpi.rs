//! The ACPI tables of a VM: RSDP, XSDT, FADT (hardware-reduced), MADT, DSDT and, for a VM
//! with a TPM of its own, TPM2, generated deterministically from the configuration
//! page (its vCPU count and TPM flag) and the platform's fixed devices, so `tvp-vmm`
//! places and measures them and a verifier recomputes the very same bytes.
//!
//! The tables live in one [`ACPI_REGION_SIZE`] region at [`ACPI_GPA`] (inside the
//! reserved first MiB, where an OS scans for the RSDP on a 16-byte boundary):
//!
//! ```text
//! +0x0000  RSDP (ACPI 2.0, 36 bytes)       -> XSDT
//! +0x0040  XSDT (FADT, MADT[, TPM2])
//! +0x0100  FADT (revision 6, 276 bytes)    -> DSDT; hardware-reduced, sleep/reset ports
//! +0x0280  TPM2 (revision 4, 76 bytes, only with a TPM): CRB start method, the
//!          event log area (LAML, LASA: TPM_EVENT_LOG_SIZE at TPM_EVENT_LOG_GPA)
//! +0x0400  MADT: one LAPIC per vCPU, the IOAPIC, LAPIC NMI on LINT1
//! +0x1000  DSDT: \_SB_.COM1 (PNP0501), \_SB_.VRxx (LNRO0005 virtio-mmio),
//!          \_SB_.TPM0 (MSFT0101, only with a TPM), \_S5_
//! ```
//!
//! Unused bytes of the region are zero; the region is measured as a whole
//! ([`crate::measure`]). Everything here is written by hand (a few hundred bytes of
//! fixed-layout tables and AML) so the firmware-side `no_std` crate can share it.

use crate::layout::{
    ACPI_GPA, ACPI_REGION_SIZE, IOAPIC_GPA, LAPIC_GPA, TPM_CRB_GPA, TPM_CRB_SIZE,
    TPM_EVENT_LOG_GPA, TPM_EVENT_LOG_SIZE, VIRTIO_BLK_GSI, VIRTIO_BLK_MMIO_GPA, VIRTIO_MMIO_SIZE,
    VIRTIO_NET_GSI, VIRTIO_NET_MMIO_GPA,
};
use crate::ports::{
    ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, SERIAL_COM1_BASE,
    SERIAL_PORT_COUNT,
};
use crate::{wr_u16, wr_u32, wr_u64};

/// Offset of the RSDP in the region.
pub const RSDP_OFFSET: usize = 0x0;
/// Offset of the XSDT in the region.
pub const XSDT_OFFSET: usize = 0x40;
/// Offset of the FADT in the region.
pub const FADT_OFFSET: usize = 0x100;
/// Offset of the TPM2 table in the region (a VM with a TPM only).
pub const TPM2_OFFSET: usize = 0x280;
/// Offset of the MADT in the region.
pub const MADT_OFFSET: usize = 0x400;
/// Offset of the DSDT in the region.
pub const DSDT_OFFSET: usize = 0x1000;
/// OEM id in every table header.
pub const OEM_ID: [u8; 6] = *b"TVP   ";
/// OEM table id in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"TVPVMM  ";
/// ACPI sleep type of S5 (soft off) in `\_S5_`; the guest writes
/// `SLP_EN | S5_SLEEP_TYPE << 2` to the sleep control register to power off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// COM1's ISA interrupt.
pub const COM1_IRQ: u32 = 4;

/// The virtio-mmio devices the DSDT describes: (register window, GSI). The platform's
/// slots, present whatever the VM's backends (a slot without a backend reads as no
/// device: the guest's driver finds no virtio magic and skips it).
pub const VIRTIO_MMIO_DEVICES: [(u64, u32); 2] = [
    (VIRTIO_NET_MMIO_GPA, VIRTIO_NET_GSI),
    (VIRTIO_BLK_MMIO_GPA, VIRTIO_BLK_GSI),
];

const HEADER_LEN: usize = 36;
const FADT_LEN: usize = 276;
/// TPM2 table, revision 4, with the start method's 12 parameter bytes (zero for the
/// CRB) and the log area: minimum length (LAML, u32 at 64) and start address (LASA,
/// u64 at 68). Linux reads the log only from a table of at least 76 bytes.
const TPM2_LEN: usize = 76;
/// TPM2 start method: the Command Response Buffer interface.
const TPM2_START_CRB: u32 = 7;
/// The CRB control area (`CTRL_REQ` onwards) in the TPM's window.
const TPM_CRB_CONTROL_OFFSET: u64 = 0x40;
const RSDP_LEN: usize = 36;

/// Why the tables cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// The vCPU count is 0 or does not fit the MADT's space (more than 64 here).
    VcpuCount(u16),
    /// A table outgrew its place in the region (a bug in this module's layout).
    Overflow(&'static str),
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiError::VcpuCount(n) => write!(f, "cannot describe {n} vCPUs (1..=64)"),
            AcpiError::Overflow(t) => write!(f, "ACPI table {t} does not fit its region"),
        }
    }
}

/// Largest vCPU count the MADT's place holds (and the configuration page allows).
pub const MAX_VCPUS: u16 = 64;

/// Sum-to-zero checksum byte of `b` (with the checksum field zero).
pub fn checksum(b: &[u8]) -> u8 {
    0u8.wrapping_sub(b.iter().fold(0u8, |a, x| a.wrapping_add(*x)))
}

/// Writes a standard table header at `t[0..36]`; the checksum is set by [`finish`].
fn header(t: &mut [u8], sig: &[u8; 4], len: usize, revision: u8) {
    t[0..4].copy_from_slice(sig);
    wr_u32(t, 4, len as u32);
    t[8] = revision;
    t[10..16].copy_from_slice(&OEM_ID);
    t[16..24].copy_from_slice(&OEM_TABLE_ID);
    wr_u32(t, 24, 1); // OEM revision
    t[28..32].copy_from_slice(b"TVPA"); // creator id
    wr_u32(t, 32, 1); // creator revision
}

/// Sets the header checksum of the table `t` (exactly its length).
fn finish(t: &mut [u8]) {
    t[9] = 0;
    t[9] = checksum(t);
}

/// Generic address structure: system I/O, `width` bits at `port`.
fn gas_io(t: &mut [u8], off: usize, port: u16, width_bytes: u8) {
    t[off] = 1; // SystemIO
    t[off + 1] = width_bytes * 8;
    t[off + 2] = 0;
    t[off + 3] = width_bytes; // access size: 1 byte, 2 word...
    wr_u64(t, off + 4, u64::from(port));
}

/// Builds the ACPI region for a VM of `vcpus` vCPUs into `out` (every byte written).
pub fn build_tables(
    vcpus: u16,
    tpm: bool,
    out: &mut [u8; ACPI_REGION_SIZE],
) -> Result<(), AcpiError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(AcpiError::VcpuCount(vcpus));
    }
    out.fill(0);
    let gpa = |off: usize| ACPI_GPA + off as u64;

    // DSDT.
    let dsdt_len = {
        let t = &mut out[DSDT_OFFSET..];
        let mut w = Writer::new(&mut t[HEADER_LEN..]);
        dsdt_body(&mut w, tpm);
        let n = w.finish().ok_or(AcpiError::Overflow("DSDT"))?;
        HEADER_LEN + n
    };
    {
        let t = &mut out[DSDT_OFFSET..DSDT_OFFSET + dsdt_len];
        header(t, b"DSDT", dsdt_len, 2);
        finish(t);
    }

    // MADT.
    let madt_len = 44 + 12 + 6 + 8 * usize::from(vcpus);
    if MADT_OFFSET + madt_len > DSDT_OFFSET {
        return Err(AcpiError::Overflow("MADT"));
    }
    {
        let t = &mut out[MADT_OFFSET..MADT_OFFSET + madt_len];
        header(t, b"APIC", madt_len, 5);
        wr_u32(t, 36, LAPIC_GPA as u32);
        wr_u32(t, 40, 1); // PCAT_COMPAT: the 8259 PICs exist (KVM's in-kernel pair)
        let mut o = 44;
        for i in 0..vcpus {
            // Processor local APIC: uid, APIC id (= vCPU index, as CPUID says), enabled.
            t[o] = 0;
            t[o + 1] = 8;
            t[o + 2] = i as u8;
            t[o + 3] = i as u8;
            wr_u32(t, o + 4, 1);
            o += 8;
        }
        // I/O APIC id 0 at its default address, GSI base 0 (pin n = ISA IRQ n, KVM's
        // default routing: no interrupt source override is needed).
        t[o] = 1;
        t[o + 1] = 12;
        t[o + 2] = 0;
        wr_u32(t, o + 4, IOAPIC_GPA as u32);
        wr_u32(t, o + 8, 0);
        o += 12;
        // Local APIC NMI: all processors, LINT1 (as tvp-vmm programs it).
        t[o] = 4;
        t[o + 1] = 6;
        t[o + 2] = 0xff;
        wr_u16(t, o + 3, 0);
        t[o + 5] = 1;
        finish(t);
    }

    // FADT: hardware-reduced, sleep control/status and reset on I/O ports.
    {
        let t = &mut out[FADT_OFFSET..FADT_OFFSET + FADT_LEN];
        header(t, b"FACP", FADT_LEN, 6);
        // IAPC_BOOT_ARCH: VGA not present (bit 2), MSI not supported (bit 3), CMOS RTC
        // not present (bit 5); no legacy devices and no 8042 to probe.
        wr_u16(t, 109, (1 << 2) | (1 << 3) | (1 << 5));
        // Flags: WBINVD (0), PWR_BUTTON and SLP_BUTTON absent (4, 5), RESET_REG_SUP
        // (10), HW_REDUCED_ACPI (20).
        wr_u32(t, 112, 1 | (1 << 4) | (1 << 5) | (1 << 10) | (1 << 20));
        gas_io(t, 116, ACPI_SLEEP_CONTROL_PORT, 1); // RESET_REG
        t[128] = ACPI_RESET_VALUE;
        t[131] = 0; // FADT minor version
        wr_u64(t, 140, gpa(DSDT_OFFSET)); // X_DSDT
        gas_io(t, 244, ACPI_SLEEP_CONTROL_PORT, 1); // SLEEP_CONTROL_REG
        gas_io(t, 256, ACPI_SLEEP_STATUS_PORT, 1); // SLEEP_STATUS_REG
        t[268..276].copy_from_slice(b"TVPVMM\0\0"); // hypervisor vendor identity
        finish(t);
    }

    // TPM2 (with a TPM): a client platform's TPM on the CRB interface.
    if tpm {
        let t = &mut out[TPM2_OFFSET..TPM2_OFFSET + TPM2_LEN];
        header(t, b"TPM2", TPM2_LEN, 4);
        wr_u16(t, 36, 0); // platform class: client
        wr_u64(t, 40, TPM_CRB_GPA + TPM_CRB_CONTROL_OFFSET);
        wr_u32(t, 48, TPM2_START_CRB);
        // 52..64: start method parameters, none for the CRB.
        wr_u32(t, 64, TPM_EVENT_LOG_SIZE as u32);
        wr_u64(t, 68, TPM_EVENT_LOG_GPA);
        finish(t);
    }

    // XSDT: FADT, MADT[, TPM2].
    {
        let len = HEADER_LEN + if tpm { 24 } else { 16 };
        let t = &mut out[XSDT_OFFSET..XSDT_OFFSET + len];
        header(t, b"XSDT", len, 1);
        wr_u64(t, 36, gpa(FADT_OFFSET));
        wr_u64(t, 44, gpa(MADT_OFFSET));
        if tpm {
            wr_u64(t, 52, gpa(TPM2_OFFSET));
        }
        finish(t);
    }

    // RSDP (ACPI 2.0): checksum over the first 20 bytes, extended over all 36.
    {
        let t = &mut out[RSDP_OFFSET..RSDP_OFFSET + RSDP_LEN];
        t[0..8].copy_from_slice(b"RSD PTR ");
        t[9..15].copy_from_slice(&OEM_ID);
        t[15] = 2;
        wr_u32(t, 20, RSDP_LEN as u32);
        wr_u64(t, 24, gpa(XSDT_OFFSET));
        t[8] = checksum(&t[0..20]);
        t[32] = checksum(&t[0..36]);
    }
    Ok(())
}

/// A bounded byte writer; overflow is remembered and reported by [`Writer::finish`].
struct Writer<'a> {
    b: &'a mut [u8],
    n: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    fn new(b: &'a mut [u8]) -> Self {
        Writer {
            b,
            n: 0,
            overflow: false,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        match self.b.get_mut(self.n..self.n + bytes.len()) {
            Some(d) if !self.overflow => {
                d.copy_from_slice(bytes);
                self.n += bytes.len();
            }
            _ => self.overflow = true,
        }
    }

    fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.n)
    }

    /// Writes `body` (built by `f` in a scratch buffer) preceded by its AML PkgLength.
    fn pkg(&mut self, f: impl FnOnce(&mut Writer<'_>)) {
        let mut scratch = [0u8; 1024];
        let mut inner = Writer::new(&mut scratch);
        f(&mut inner);
        let Some(n) = inner.finish() else {
            self.overflow = true;
            return;
        };
        // PkgLength counts itself: one byte up to 63, two bytes up to 4095.
        if n + 1 < 64 {
            self.put(&[(n + 1) as u8]);
        } else if n + 2 < 4096 {
            let l = n + 2;
            self.put(&[0x40 | (l & 0xf) as u8, (l >> 4) as u8]);
        } else {
            self.overflow = true;
            return;
        }
        self.put(&scratch[..n]);
    }
}

/// AML: `Name(seg, <data>)`.
fn name(w: &mut Writer<'_>, seg: &[u8; 4], data: &[u8]) {
    w.put(&[0x08]);
    w.put(seg);
    w.put(data);
}

/// AML: `Name(seg, ResourceTemplate() { res })` (a Buffer ending with an EndTag).
fn name_crs(w: &mut Writer<'_>, res: &[u8]) {
    w.put(&[0x08]);
    w.put(b"_CRS");
    w.put(&[0x11]); // BufferOp
    let size = res.len() + 2;
    w.pkg(|b| {
        b.put(&[0x0a, size as u8]); // BufferSize (BytePrefix)
        b.put(res);
        b.put(&[0x79, 0x00]); // EndTag, checksum 0 (= not checked)
    });
}

/// `Scope(\_SB_) { COM1; VR00..; [TPM0;] }  Name(_S5_, Package() { 5 })`.
fn dsdt_body(w: &mut Writer<'_>, tpm: bool) {
    w.put(&[0x10]); // ScopeOp
    w.pkg(|s| {
        s.put(b"\\_SB_");
        // COM1: 8250 UART, ports 0x3f8..0x3ff, IRQ 4.
        s.put(&[0x5b, 0x82]); // DeviceOp
        s.pkg(|d| {
            d.put(b"COM1");
            name(d, b"_HID", &[0x0c, 0x41, 0xd0, 0x05, 0x01]); // EisaId("PNP0501")
            name(d, b"_UID", &[0x00]);
            let base = SERIAL_COM1_BASE.to_le_bytes();
            let irq_mask = (1u16 << COM1_IRQ).to_le_bytes();
            name_crs(
                d,
                &[
                    0x47, // IO, 16-bit decode
                    0x01,
                    base[0],
                    base[1],
                    base[0],
                    base[1],
                    0x01,
                    SERIAL_PORT_COUNT as u8,
                    0x22, // IRQNoFlags
                    irq_mask[0],
                    irq_mask[1],
                ],
            );
        });
        for (i, (mmio, irq)) in VIRTIO_MMIO_DEVICES.iter().enumerate() {
            s.put(&[0x5b, 0x82]);
            s.pkg(|d| {
                d.put(&[b'V', b'R', b'0' + (i / 10) as u8, b'0' + (i % 10) as u8]);
                name(d, b"_HID", b"\x0dLNRO0005\0");
                name(d, b"_UID", &[0x0a, i as u8]);
                let base = (*mmio as u32).to_le_bytes();
                let size = (VIRTIO_MMIO_SIZE as u32).to_le_bytes();
                let gsi = irq.to_le_bytes();
                name_crs(
                    d,
                    &[
                        0x86, 0x09, 0x00, // Memory32Fixed
                        0x01, // read-write
                        base[0], base[1], base[2], base[3], size[0], size[1], size[2], size[3],
                        0x89, 0x06, 0x00, // Extended Interrupt
                        0x03, // consumer, edge-triggered, active-high, exclusive
                        0x01, gsi[0], gsi[1], gsi[2], gsi[3],
                    ],
                );
            });
        }
        if tpm {
            // The TPM: MSFT0101 (TPM 2.0), its CRB window.
            s.put(&[0x5b, 0x82]);
            s.pkg(|d| {
                d.put(b"TPM0");
                name(d, b"_HID", b"\x0dMSFT0101\0");
                name(d, b"_UID", &[0x00]);
                let base = (TPM_CRB_GPA as u32).to_le_bytes();
                let size = (TPM_CRB_SIZE as u32).to_le_bytes();
                name_crs(
                    d,
                    &[
                        0x86, 0x09, 0x00, // Memory32Fixed
                        0x01, // read-write
                        base[0], base[1], base[2], base[3], size[0], size[1], size[2], size[3],
                    ],
                );
            });
        }
    });
    // Name(_S5_, Package() { 5 }): the sleep type of soft-off.
    name(w, b"_S5_", &[0x12, 0x04, 0x01, 0x0a, S5_SLEEP_TYPE]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{rd_u32, rd_u64};

    fn build(vcpus: u16) -> [u8; ACPI_REGION_SIZE] {
        let mut r = [0u8; ACPI_REGION_SIZE];
        build_tables(vcpus, false, &mut r).unwrap();
        r
    }

    /// The table at guest address `gpa`: its bytes (length from its header).
    fn table(r: &[u8; ACPI_REGION_SIZE], gpa: u64) -> &[u8] {
        let off = (gpa - ACPI_GPA) as usize;
        let len = rd_u32(r, off + 4) as usize;
        &r[off..off + len]
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    /// Walks RSDP -> XSDT -> tables as an OS does; returns (signature, bytes) pairs.
    fn walk(r: &[u8; ACPI_REGION_SIZE]) -> [([u8; 4], &[u8]); 3] {
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(sum(&r[0..20]), 0, "RSDP checksum");
        assert_eq!(sum(&r[0..36]), 0, "RSDP extended checksum");
        let xsdt = table(r, rd_u64(r, 24));
        assert_eq!(&xsdt[0..4], b"XSDT");
        assert_eq!(xsdt.len(), 36 + 16);
        let fadt = table(r, rd_u64(xsdt, 36));
        let madt = table(r, rd_u64(xsdt, 44));
        let dsdt = table(r, rd_u64(fadt, 140));
        let sig = |t: &[u8]| [t[0], t[1], t[2], t[3]];
        [(sig(fadt), fadt), (sig(madt), madt), (sig(dsdt), dsdt)]
    }

    #[test]
    fn every_table_checksums_to_zero() {
        for n in [1, 2, 7, 64] {
            let r = build(n);
            let t = walk(&r);
            assert_eq!(&t[0].0, b"FACP");
            assert_eq!(&t[1].0, b"APIC");
            assert_eq!(&t[2].0, b"DSDT");
            assert_eq!(sum(&r[XSDT_OFFSET..XSDT_OFFSET + 52]), 0, "XSDT");
            for (s, b) in t {
                assert_eq!(sum(b), 0, "{:?} checksum", core::str::from_utf8(&s));
            }
        }
    }

    #[test]
    fn madt_has_one_enabled_lapic_per_vcpu_and_the_ioapic() {
        for n in [1u16, 2, 3, 64] {
            let r = build(n);
            let madt = walk(&r)[1].1;
            let (mut lapics, mut ioapics, mut o) = (0u16, 0, 44);
            while o < madt.len() {
                match madt[o] {
                    0 => {
                        assert_eq!(madt[o + 3] as u16, lapics, "APIC id = vCPU index");
                        assert_eq!(rd_u32(madt, o + 4), 1, "enabled");
                        lapics += 1;
                    }
                    1 => {
                        assert_eq!(rd_u32(madt, o + 4), IOAPIC_GPA as u32);
                        ioapics += 1;
                    }
                    _ => {}
                }
                o += madt[o + 1] as usize;
            }
            assert_eq!(o, madt.len(), "entries fill the table exactly");
            assert_eq!(lapics, n);
            assert_eq!(ioapics, 1);
        }
    }

    #[test]
    fn same_spec_same_bytes_other_spec_other_bytes() {
        assert_eq!(build(2), build(2));
        assert_ne!(build(2), build(3));
        // Stale bytes in the buffer do not leak into the tables.
        let mut r = [0xa5u8; ACPI_REGION_SIZE];
        build_tables(2, false, &mut r).unwrap();
        assert_eq!(r, build(2));
    }

    #[test]
    fn bad_vcpu_counts_are_refused() {
        let mut r = [0u8; ACPI_REGION_SIZE];
        assert_eq!(build_tables(0, false, &mut r), Err(AcpiError::VcpuCount(0)));
        assert_eq!(
            build_tables(65, false, &mut r),
            Err(AcpiError::VcpuCount(65))
        );
    }

    #[test]
    fn fadt_is_hardware_reduced_with_sleep_and_reset_ports() {
        let r = build(1);
        let fadt = walk(&r)[0].1;
        assert_eq!(fadt.len(), 276);
        let flags = rd_u32(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(fadt[116], 1, "reset register in system I/O space");
        assert_eq!(rd_u64(fadt, 120), u64::from(ACPI_SLEEP_CONTROL_PORT));
        assert_eq!(fadt[128], ACPI_RESET_VALUE);
        assert_eq!(rd_u64(fadt, 248), u64::from(ACPI_SLEEP_CONTROL_PORT));
        assert_eq!(rd_u64(fadt, 260), u64::from(ACPI_SLEEP_STATUS_PORT));
        assert_eq!(
            crate::ports::ACPI_SLEEP_OFF_VALUE,
            0x20 | (S5_SLEEP_TYPE << 2)
        );
    }

    #[test]
    fn dsdt_describes_com1_virtio_mmio_and_s5() {
        let r = build(1);
        let dsdt = walk(&r)[2].1;
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"\\_SB_"));
        assert!(has(b"COM1"));
        assert!(has(&[0x0c, 0x41, 0xd0, 0x05, 0x01]), "EisaId PNP0501");
        assert!(
            has(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]),
            "COM1 ports"
        );
        assert!(has(&[0x22, 0x10, 0x00]), "IRQ 4");
        assert!(has(b"LNRO0005\0"));
        let mut mem = [0x86, 0x09, 0x00, 0x01, 0, 0, 0, 0, 0, 0x10, 0, 0];
        mem[4..8].copy_from_slice(&(VIRTIO_NET_MMIO_GPA as u32).to_le_bytes());
        assert!(has(&mem), "virtio-net window");
        assert!(has(&[
            0x89,
            0x06,
            0x00,
            0x03,
            0x01,
            VIRTIO_NET_GSI as u8,
            0,
            0,
            0
        ]));
        assert!(has(&[
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x01, 0x0a, 5
        ]));
        // The Scope's PkgLength covers exactly the rest of the scope: the _S5_ name
        // follows it.
        let body = &dsdt[36..];
        assert_eq!(body[0], 0x10);
        let len = (body[1] & 0xf) as usize | ((body[2] as usize) << 4);
        assert_eq!(body[1] >> 6, 1, "two-byte PkgLength");
        assert_eq!(body[1 + len], 0x08, "Name(_S5_) follows the scope");
        assert_eq!(1 + len + 10, body.len());
    }

    #[test]
    fn a_vm_with_a_tpm_gets_a_tpm2_table_and_an_msft0101_device_and_others_do_not() {
        let mut r = [0u8; ACPI_REGION_SIZE];
        build_tables(2, true, &mut r).unwrap();
        assert_ne!(r, build(2), "the TPM is part of the measured tables");
        assert_eq!(sum(&r[0..36]), 0, "RSDP extended checksum");
        let xsdt = table(&r, rd_u64(&r, 24));
        assert_eq!(xsdt.len(), 36 + 24, "three entries");
        assert_eq!(sum(xsdt), 0);
        let tpm2 = table(&r, rd_u64(xsdt, 52));
        assert_eq!(&tpm2[0..4], b"TPM2");
        assert_eq!(tpm2.len(), 76, "Linux reads the log area from 76 bytes on");
        assert_eq!(tpm2[8], 4, "revision");
        assert_eq!(sum(tpm2), 0);
        assert_eq!(rd_u64(tpm2, 40), TPM_CRB_GPA + 0x40, "CRB control area");
        assert_eq!(rd_u32(tpm2, 48), 7, "start method: CRB");
        assert!(tpm2[52..64].iter().all(|b| *b == 0), "no CRB parameters");
        assert_eq!(rd_u32(tpm2, 64), 0x1_0000, "LAML: the event log's 64 KiB");
        assert_eq!(rd_u64(tpm2, 68), 0xa_0000, "LASA: the event log's address");
        assert!(
            rd_u64(xsdt, 52) + tpm2.len() as u64 <= rd_u64(xsdt, 44),
            "the TPM2 table ends before the MADT"
        );
        let fadt = table(&r, rd_u64(xsdt, 36));
        let dsdt = table(&r, rd_u64(fadt, 140));
        assert_eq!(sum(dsdt), 0);
        let has = |t: &[u8], needle: &[u8]| t.windows(needle.len()).any(|w| w == needle);
        assert!(has(dsdt, b"MSFT0101\0"));
        let mut mem = [0x86, 0x09, 0x00, 0x01, 0, 0, 0, 0, 0, 0x10, 0, 0];
        mem[4..8].copy_from_slice(&(TPM_CRB_GPA as u32).to_le_bytes());
        assert!(has(dsdt, &mem), "the CRB window");
        // Without a TPM: neither.
        let plain = build(2);
        let (xsdt, dsdt) = (table(&plain, rd_u64(&plain, 24)), walk(&plain)[2].1);
        assert_eq!(xsdt.len(), 36 + 16);
        assert!(!has(dsdt, b"MSFT0101"));
        assert!(plain[TPM2_OFFSET..TPM2_OFFSET + 76].iter().all(|b| *b == 0));
    }
}
