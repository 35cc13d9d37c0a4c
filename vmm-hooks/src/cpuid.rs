//! CPUID for each vCPU: KVM's supported set, normalised so the guest sees a consistent
//! machine of `count` vCPUs: one package, one thread per core, APIC id = vCPU index,
//! and the hypervisor bit set.
//!
//! Without this every vCPU would report the host's APIC id and topology (the host's
//! core counts, its own APIC id in leaf 1 and leaf 0xb), and an operating system would
//! mis-number or refuse to start its application processors. Pure functions over the
//! entries, so the normalisation is tested without KVM.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf 1 ECX bit 31: running under a hypervisor.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: EBX[23:16] (logical processor count) is valid.
pub const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0xb / 0x1f level type "SMT" (ECX[15:8]).
const LEVEL_SMT: u32 = 1;
/// Leaf 0xb / 0x1f level type "core".
const LEVEL_CORE: u32 = 2;
/// "AuthenticAMD" EBX of leaf 0.
const AMD_EBX: u32 = u32::from_le_bytes(*b"Auth");

/// The vCPU a CPUID table is for, and how many the VM has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// This vCPU's index, which is also its (x2)APIC id.
    pub index: u8,
    /// vCPUs in the VM (all cores of one package, one thread each).
    pub count: u8,
}

impl Topology {
    /// Bits of the APIC id that number the cores of the package: ceil(log2(count)).
    pub fn core_bits(&self) -> u32 {
        let n = u32::from(self.count.max(1));
        u32::BITS - (n - 1).leading_zeros()
    }
}

/// Rewrites `entries` (KVM_GET_SUPPORTED_CPUID's) for the vCPU `topo`. Adds the
/// topology sub-leaves of 0xb (and 0x1f) that are missing when the leaf exists.
pub fn normalize(entries: &mut Vec<kvm_cpuid_entry2>, topo: Topology) {
    let amd = entries
        .iter()
        .any(|e| e.function == 0 && e.index == 0 && e.ebx == AMD_EBX);
    let count = u32::from(topo.count.max(1));
    let apic_id = u32::from(topo.index);
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                // EBX: [31:24] initial APIC id, [23:16] logical processors in the
                // package; CLFLUSH size and brand index kept.
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((count & 0xff) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            4 => {
                // Deterministic cache parameters: EAX[31:26] cores per package - 1,
                // EAX[25:14] logical processors sharing this cache - 1 (one thread per
                // core: 0 for L1/L2, the whole package for L3).
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            0xb | 0x1f => topology_leaf(e, topo),
            0x8000_0008 if amd => {
                // ECX: [7:0] cores - 1, [15:12] APIC id bits for the core number.
                e.ecx = (e.ecx & !0xf0ff) | ((count - 1) & 0xff) | ((topo.core_bits() & 0xf) << 12);
            }
            _ => {}
        }
    }
    for leaf in [0xb, 0x1f] {
        if !entries.iter().any(|e| e.function == leaf) {
            continue;
        }
        for sub in 0..3 {
            if !entries.iter().any(|e| e.function == leaf && e.index == sub) {
                let mut e = kvm_cpuid_entry2 {
                    function: leaf,
                    index: sub,
                    flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                    ..Default::default()
                };
                topology_leaf(&mut e, topo);
                entries.push(e);
            }
        }
    }
}

/// The hypervisor base leaf (KVM's signature; EAX is the highest hypervisor leaf).
pub const HYPERVISOR_BASE_LEAF: u32 = 0x4000_0000;
/// The hypervisor timing leaf (the convention QEMU's `vmware-cpuid-freq` follows):
/// EAX = TSC frequency in kHz, EBX = APIC bus frequency in kHz, for guests that read
/// the frequency from CPUID. Under nested KVM a guest's CPUID at CPL 3 may be answered
/// without it, so the mailbox's GET_VERSION carries the frequency too (the firmware
/// prefers that: with neither it assumes 2 GHz, and on a 2.6 GHz host its 10 s I/O
/// timeout ran out after 7.7 s).
pub const TIMING_LEAF: u32 = 0x4000_0010;
/// KVM's virtual APIC bus runs at 1 GHz.
pub const APIC_BUS_KHZ: u32 = 1_000_000;

/// Adds the timing leaf with `tsc_khz` to `entries` and raises the base leaf's maximum
/// to it; a table without KVM's base leaf (no hypervisor leaves at all) is left as is.
pub fn add_timing_leaf(entries: &mut Vec<kvm_cpuid_entry2>, tsc_khz: u32) {
    let mut has_base = false;
    for e in entries.iter_mut() {
        if e.function == HYPERVISOR_BASE_LEAF {
            e.eax = e.eax.max(TIMING_LEAF);
            has_base = true;
        }
    }
    if !has_base {
        return;
    }
    if let Some(e) = entries.iter_mut().find(|e| e.function == TIMING_LEAF) {
        e.eax = tsc_khz;
        e.ebx = APIC_BUS_KHZ;
        return;
    }
    entries.push(kvm_cpuid_entry2 {
        function: TIMING_LEAF,
        eax: tsc_khz,
        ebx: APIC_BUS_KHZ,
        ..Default::default()
    });
}

/// Leaf 0xb / 0x1f sub-leaf `e.index`: SMT level (1 thread), core level (`count`
/// cores), then the terminating invalid level; EDX is the x2APIC id at every level.
fn topology_leaf(e: &mut kvm_cpuid_entry2, topo: Topology) {
    let count = u32::from(topo.count.max(1));
    let sub = e.index;
    let (eax, ebx, level) = match sub {
        0 => (0, 1, LEVEL_SMT),
        1 => (topo.core_bits(), count, LEVEL_CORE),
        _ => (0, 0, 0),
    };
    e.eax = eax;
    e.ebx = ebx;
    e.ecx = (level << 8) | (sub & 0xff);
    e.edx = u32::from(topo.index);
    e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// A host-like table: the host's APIC id 0x0e and 16 logical processors in leaf 1,
    /// leaf 0xb with two sub-leaves of a 2-thread, 16-core host, two cache levels.
    fn host(amd: bool) -> Vec<kvm_cpuid_entry2> {
        let vendor = if amd {
            AMD_EBX
        } else {
            u32::from_le_bytes(*b"Genu")
        };
        vec![
            entry(0, 0, 0x1f, vendor, 0, 0),
            entry(1, 0, 0x800f12, 0x0e10_0800, 0x7ed8_320b, 0x178b_fbff),
            entry(4, 0, 0x1c00_4121, 0, 0, 0),
            entry(4, 3, 0x1c00_c163, 0, 0, 0),
            entry(0xb, 0, 1, 2, 0x100, 0x0e),
            entry(0xb, 1, 5, 16, 0x201, 0x0e),
            entry(0x8000_0008, 0, 0x3030, 0, 0x0001_400f, 0),
        ]
    }

    fn find(t: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *t.iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap_or_else(|| panic!("leaf {f:#x}.{i} missing"))
    }

    #[test]
    fn each_vcpu_gets_its_own_apic_id_in_leaf_1_and_0xb() {
        for index in 0..4u8 {
            let mut t = host(false);
            normalize(&mut t, Topology { index, count: 4 });
            let l1 = find(&t, 1, 0);
            assert_eq!(l1.ebx >> 24, u32::from(index), "leaf 1 APIC id");
            assert_eq!((l1.ebx >> 16) & 0xff, 4, "leaf 1 logical processor count");
            assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
            for sub in 0..3 {
                assert_eq!(
                    find(&t, 0xb, sub).edx,
                    u32::from(index),
                    "x2APIC id, sub-leaf {sub}"
                );
            }
        }
    }

    #[test]
    fn the_hypervisor_bit_is_set_and_htt_follows_the_count() {
        let mut t = host(false);
        t[1].ecx &= !LEAF1_ECX_HYPERVISOR;
        normalize(&mut t, Topology { index: 0, count: 1 });
        let l1 = find(&t, 1, 0);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(l1.edx & LEAF1_EDX_HTT, 0, "one vCPU: no HTT");
        assert_eq!(
            (l1.ecx & !LEAF1_ECX_HYPERVISOR),
            0x7ed8_320b & !LEAF1_ECX_HYPERVISOR,
            "other features kept"
        );
        let mut t = host(false);
        normalize(&mut t, Topology { index: 1, count: 2 });
        assert_ne!(find(&t, 1, 0).edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn leaf_0xb_describes_one_package_of_count_single_thread_cores() {
        let mut t = host(false);
        normalize(&mut t, Topology { index: 2, count: 3 });
        let smt = find(&t, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx), (0, 1, 0x100));
        let core = find(&t, 0xb, 1);
        assert_eq!(
            (core.eax, core.ebx, core.ecx),
            (2, 3, 0x201),
            "shift ceil(log2 3) = 2"
        );
        // The terminating level was missing on the host table: added, invalid type.
        let end = find(&t, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx >> 8), (0, 0, 0));
        assert_ne!(end.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
        // Leaf 0x1f is absent on this host and not invented.
        assert!(!t.iter().any(|e| e.function == 0x1f));
    }

    #[test]
    fn cache_sharing_and_amd_core_count_follow_the_vcpu_count() {
        let mut t = host(true);
        normalize(&mut t, Topology { index: 0, count: 2 });
        let l1d = find(&t, 4, 0);
        assert_eq!(l1d.eax >> 26, 1, "cores per package - 1");
        assert_eq!((l1d.eax >> 14) & 0xfff, 0, "L1 private to the core");
        assert_eq!(l1d.eax & 0x3fff, 0x0121, "cache type and level kept");
        let l3 = find(&t, 4, 3);
        assert_eq!((l3.eax >> 14) & 0xfff, 1, "L3 shared by both vCPUs");
        let ext = find(&t, 0x8000_0008, 0);
        assert_eq!(ext.ecx & 0xff, 1, "AMD NC = cores - 1");
        assert_eq!((ext.ecx >> 12) & 0xf, 1, "one APIC id bit for the core");
        assert_eq!(ext.ecx & 0xffff_0000, 0x0001_0000, "other bits of ECX kept");
        // On a non-AMD host the leaf is left alone.
        let mut t = host(false);
        normalize(&mut t, Topology { index: 0, count: 2 });
        assert_eq!(find(&t, 0x8000_0008, 0).ecx, 0x0001_400f);
    }

    /// The firmware finds the TSC frequency where it looks (base leaf's maximum at
    /// least the timing leaf, EAX of the timing leaf in kHz).
    #[test]
    fn the_timing_leaf_carries_the_tsc_frequency() {
        let leaf = |t: &[kvm_cpuid_entry2], f: u32| t.iter().find(|e| e.function == f).copied();
        let base = kvm_cpuid_entry2 {
            function: HYPERVISOR_BASE_LEAF,
            eax: 0x4000_0001,
            ..Default::default()
        };
        let mut t = vec![base];
        add_timing_leaf(&mut t, 2_596_130);
        assert_eq!(leaf(&t, HYPERVISOR_BASE_LEAF).unwrap().eax, TIMING_LEAF);
        let e = leaf(&t, TIMING_LEAF).unwrap();
        assert_eq!((e.eax, e.ebx), (2_596_130, APIC_BUS_KHZ));
        // Twice: updated in place, not duplicated.
        add_timing_leaf(&mut t, 3_000_000);
        assert_eq!(t.len(), 2);
        assert_eq!(leaf(&t, TIMING_LEAF).unwrap().eax, 3_000_000);
        // No hypervisor leaves: nothing added.
        let mut t = vec![kvm_cpuid_entry2::default()];
        add_timing_leaf(&mut t, 1);
        assert!(leaf(&t, TIMING_LEAF).is_none());
    }

    #[test]
    fn core_bits_round_up() {
        let bits = |count| Topology { index: 0, count }.core_bits();
        assert_eq!(
            [bits(1), bits(2), bits(3), bits(4), bits(5), bits(64)],
            [0, 1, 2, 2, 3, 6]
        );
    }
}
