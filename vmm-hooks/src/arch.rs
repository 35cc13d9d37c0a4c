//! The x86 platform KVM provides in the kernel, and each vCPU's architectural state
//! before its first instruction: what an operating system needs beyond the firmware.
//!
//! VM-wide, before any vCPU exists (KVM refuses some of it afterwards): the TSS and
//! identity-map pages KVM needs on Intel for real mode, the in-kernel interrupt
//! controllers (PIC, IOAPIC, one LAPIC per vCPU: `KVM_CREATE_IRQCHIP`) and the PIT
//! (`KVM_CREATE_PIT2`, speaker port as a dummy). Per vCPU: normalised CPUID
//! ([`crate::cpuid`]), the MSRs a booting kernel expects, and the LAPIC's LINT0 as
//! ExtINT (the PIC's output) and LINT1 as NMI, as on a PC.
//!
//! With the in-kernel LAPIC, the application processors (every vCPU but 0) start in
//! KVM's wait-for-SIPI state: the guest starts them itself with INIT/SIPI. None of this
//! is guest memory, so none of it changes the measured boot (docs/vmm.md).

use crate::cpuid::{self, Topology};
use crate::error::VmmError;
use kvm_bindings::{
    kvm_lapic_state, kvm_msr_entry, kvm_pit_config, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

/// KVM's three TSS pages (Intel real-mode emulation): just below the 4 GiB boundary's
/// firmware hole, above any guest RAM (at most 3 GiB) and the virtio-mmio window.
pub const TSS_ADDRESS: u64 = 0xfffb_d000;
/// KVM's identity-map page (Intel, unrestricted-guest off): the page below the TSS.
pub const IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// The legacy IRQ of COM1 (GSI 4 on the PIC and IOAPIC).
pub const COM1_IRQ: u32 = 4;

/// LAPIC register offsets of the local vector table entries for LINT0 and LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
/// LVT delivery modes (bits 10:8).
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// MSRs set before the first instruction (the values a freshly reset CPU or a
/// firmware would leave, as Firecracker and Cloud Hypervisor set them).
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_MISC_ENABLE bit 0: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRdefType: MTRRs enabled (bit 11), default type write-back (6).
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// Creates the VM-wide platform: TSS and identity map, irqchip, PIT. Call once, before
/// the first vCPU.
pub fn setup_vm(vm: &VmFd) -> Result<(), VmmError> {
    vm.set_tss_address(TSS_ADDRESS as usize)
        .map_err(VmmError::kvm("set TSS address"))?;
    vm.set_identity_map_address(IDENTITY_MAP_ADDRESS)
        .map_err(VmmError::kvm("set identity map address"))?;
    vm.create_irq_chip()
        .map_err(VmmError::kvm("create the in-kernel interrupt controllers"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(VmmError::kvm("create the in-kernel PIT"))?;
    Ok(())
}

/// KVM's supported CPUID set (read once per VM; each vCPU's table derives from it).
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, VmmError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmmError::kvm("get supported CPUID"))
}

/// The CPUID table of vCPU `topo.index`: `supported`, normalised.
pub fn cpuid_for(
    supported: &CpuId,
    topo: Topology,
    tsc_khz: Option<u32>,
) -> Result<CpuId, VmmError> {
    let mut entries = supported.as_slice().to_vec();
    cpuid::normalize(&mut entries, topo);
    if let Some(khz) = tsc_khz {
        cpuid::add_timing_leaf(&mut entries, khz);
    }
    CpuId::from_entries(&entries).map_err(|e| {
        VmmError::Unsupported(format!("CPUID table of {} entries: {e:?}", entries.len()))
    })
}

/// Sets vCPU `topo.index`'s CPUID (from KVM's `supported` set), boot MSRs and LAPIC
/// LINT0/LINT1. Registers and segments are the measured entry state's business
/// (vCPU 0 only, [`crate::vcpu`]).
pub fn setup_vcpu(supported: &CpuId, vcpu: &VcpuFd, topo: Topology) -> Result<(), VmmError> {
    // A KVM without KVM_GET_TSC_KHZ leaves the firmware at its assumption.
    let tsc_khz = vcpu.get_tsc_khz().ok();
    vcpu.set_cpuid2(&cpuid_for(supported, topo, tsc_khz)?)
        .map_err(VmmError::kvm("set CPUID"))?;
    set_boot_msrs(vcpu)?;
    set_lint(vcpu)
}

fn set_boot_msrs(vcpu: &VcpuFd) -> Result<(), VmmError> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let list = [
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ];
    let msrs = Msrs::from_entries(&list)
        .map_err(|e| VmmError::Unsupported(format!("boot MSR list: {e:?}")))?;
    let set = vcpu
        .set_msrs(&msrs)
        .map_err(VmmError::kvm("set boot MSRs"))?;
    if set != list.len() {
        let refused = list.get(set).map_or(0, |e| e.index);
        return Err(VmmError::Unsupported(format!(
            "KVM set {set} of {} boot MSRs; it refused MSR {refused:#x}",
            list.len()
        )));
    }
    Ok(())
}

/// Reads a 32-bit LAPIC register from KVM's register page image.
pub fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| lapic.regs.get(offset + i).map_or(0, |v| *v as u8);
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        if let Some(r) = lapic.regs.get_mut(offset + i) {
            *r = *byte as _;
        }
    }
}

/// `reg` with its delivery mode (bits 10:8) replaced by `mode`.
pub fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

fn set_lint(vcpu: &VcpuFd) -> Result<(), VmmError> {
    let mut lapic = vcpu.get_lapic().map_err(VmmError::kvm("get LAPIC"))?;
    let lint0 = lapic_reg(&lapic, APIC_LVT0);
    let lint1 = lapic_reg(&lapic, APIC_LVT1);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT0,
        with_delivery_mode(lint0, APIC_MODE_EXTINT),
    );
    set_lapic_reg(
        &mut lapic,
        APIC_LVT1,
        with_delivery_mode(lint1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&lapic).map_err(VmmError::kvm("set LAPIC"))
}

/// The LINT0 and LINT1 delivery modes of `vcpu`'s LAPIC (for checks and logs).
pub fn lint_modes(vcpu: &VcpuFd) -> Result<(u32, u32), VmmError> {
    let lapic = vcpu.get_lapic().map_err(VmmError::kvm("get LAPIC"))?;
    let mode = |r: u32| (r >> 8) & 0x7;
    Ok((
        mode(lapic_reg(&lapic, APIC_LVT0)),
        mode(lapic_reg(&lapic, APIC_LVT1)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_mode_replaces_only_bits_10_to_8() {
        // Reset value of an LVT entry: masked (bit 16), fixed mode.
        assert_eq!(
            with_delivery_mode(0x0001_0000, APIC_MODE_EXTINT),
            0x0001_0700
        );
        assert_eq!(with_delivery_mode(0x0001_07ff, APIC_MODE_NMI), 0x0001_04ff);
    }

    #[test]
    fn lapic_registers_round_trip_little_endian() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT1, 0x8001_0400);
        assert_eq!(lapic_reg(&l, APIC_LVT1), 0x8001_0400);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0);
        assert_eq!(l.regs[APIC_LVT1 + 3] as u8, 0x80);
    }
}
