//! The vCPU: register setup for direct 64-bit boot, the run loop, and kicking it out of
//! KVM_RUN from another thread.

use crate::channel::{ChannelHost, ChannelTx};
use crate::devices::{Devices, IoAction};
use crate::error::VmmError;
use crate::mailbox::Mailbox;
use crate::shutdown::Shutdown;
use crate::virtio_net::VirtioNet;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_segment, CpuId, KVM_EXIT_INTERNAL_ERROR, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tvp_abi::layout::{EntryState, CODE_SELECTOR, CONFIG_PAGE_GPA, DATA_SELECTOR};
use tvp_abi::PAGE_SIZE;
use tvp_vmm_channel::VmmMessage;
use vm_memory::GuestMemoryMmap;

/// How the guest's run ended (from the guest's side, or a stop request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEnd {
    /// Power-off port written.
    PoweredOff,
    /// i8042 reset.
    Reset,
    /// HLT with no interrupt source.
    Halted {
        /// RIP after the HLT.
        rip: u64,
    },
    /// KVM_EXIT_SHUTDOWN.
    TripleFault {
        /// RIP at the shutdown, if readable.
        rip: Option<u64>,
    },
    /// KVM_EXIT_INTERNAL_ERROR.
    InternalError {
        /// `kvm_run.internal.suberror` (1 = emulation failure).
        suberror: u32,
        /// Guest RIP at the failure, if readable.
        rip: Option<u64>,
        /// `kvm_run.internal.data[..ndata]`.
        data: Vec<u64>,
    },
    /// Failed entry, unexpected exit or ioctl error.
    KvmError(String),
    /// A stop was requested.
    Stopped,
}

/// Most milestones reported to tvpd (the rest are only counted).
const MILESTONE_LIMIT: u32 = 64;
/// Most read-only-page or unmapped MMIO accesses logged individually.
const MMIO_LOG_LIMIT: u32 = 16;

/// Everything the vCPU loop needs.
pub struct VcpuContext {
    /// Port devices.
    pub devices: Devices,
    /// The attestation mailbox.
    pub mailbox: Mailbox,
    /// The mailbox's route to tvpd.
    pub host: ChannelHost,
    /// For milestones.
    pub tx: ChannelTx,
    /// Guest memory (only the mailbox reads it).
    pub mem: GuestMemoryMmap,
    /// Stop flag.
    pub shutdown: Arc<Shutdown>,
    /// Process start, for milestone timestamps.
    pub started: Instant,
    /// Milestones seen.
    pub milestones: u32,
    /// MMIO accesses seen.
    pub mmio_seen: u32,
    /// The virtio-net device, if the VM has a NIC.
    pub net: Option<VirtioNet>,
}

/// The hypervisor base leaf (KVM's signature; EAX is the highest hypervisor leaf).
const HYPERVISOR_BASE_LEAF: u32 = 0x4000_0000;
/// The hypervisor timing leaf (the convention QEMU's `vmware-cpuid-freq` follows):
/// EAX = TSC frequency in kHz, EBX = APIC bus frequency in kHz, for guests that read
/// the frequency from CPUID. Under nested KVM a guest's CPUID at CPL 3 may be answered
/// without it, so the mailbox's GET_VERSION carries the frequency too (the firmware
/// prefers that: with neither it assumes 2 GHz, and on a 2.6 GHz host its 10 s I/O
/// timeout ran out after 7.7 s).
const TIMING_LEAF: u32 = 0x4000_0010;
/// KVM's virtual APIC bus runs at 1 GHz.
const APIC_BUS_KHZ: u32 = 1_000_000;

/// Add the timing leaf with `tsc_khz` to `cpuid` and raise the base leaf's maximum to
/// it; a CPUID without KVM's base leaf (no hypervisor leaves at all) is left as is.
fn add_timing_leaf(cpuid: &mut CpuId, tsc_khz: u32) -> Result<(), VmmError> {
    let mut has_base = false;
    for e in cpuid.as_mut_slice() {
        if e.function == HYPERVISOR_BASE_LEAF {
            e.eax = e.eax.max(TIMING_LEAF);
            has_base = true;
        }
    }
    if !has_base {
        return Ok(());
    }
    if let Some(e) = cpuid
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == TIMING_LEAF)
    {
        e.eax = tsc_khz;
        e.ebx = APIC_BUS_KHZ;
        return Ok(());
    }
    cpuid
        .push(kvm_cpuid_entry2 {
            function: TIMING_LEAF,
            eax: tsc_khz,
            ebx: APIC_BUS_KHZ,
            ..Default::default()
        })
        .map_err(|e| VmmError::Unsupported(format!("CPUID has no room for the timing leaf: {e:?}")))
}

/// Sets CPUID (KVM's supported set plus the TSC frequency in the timing leaf),
/// segments, control registers and general registers for `state`.
pub fn configure(kvm: &Kvm, vcpu: &VcpuFd, state: &EntryState) -> Result<(), VmmError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmmError::kvm("get supported CPUID"))?;
    // A KVM without KVM_GET_TSC_KHZ leaves the firmware at its assumption.
    if let Ok(khz) = vcpu.get_tsc_khz() {
        add_timing_leaf(&mut cpuid, khz)?;
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(VmmError::kvm("set CPUID"))?;

    let mut sregs = vcpu.get_sregs().map_err(VmmError::kvm("get sregs"))?;
    let seg = |selector: u16, type_: u8, l: u8, db: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = seg(CODE_SELECTOR, 0xb, 1, 0);
    let data = seg(DATA_SELECTOR, 0x3, 0, 1);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = state.gdt_base;
    sregs.gdt.limit = state.gdt_limit as u16;
    sregs.idt.base = state.idt_base;
    sregs.idt.limit = state.idt_limit as u16;
    sregs.cr0 = state.cr0;
    sregs.cr3 = state.cr3;
    sregs.cr4 = state.cr4;
    sregs.efer = state.efer;
    vcpu.set_sregs(&sregs).map_err(VmmError::kvm("set sregs"))?;

    let mut regs = vcpu.get_regs().map_err(VmmError::kvm("get regs"))?;
    regs.rip = state.rip;
    regs.rsp = state.rsp;
    regs.rbp = state.rsp;
    regs.rsi = state.rsi;
    regs.rflags = state.rflags;
    vcpu.set_regs(&regs).map_err(VmmError::kvm("set regs"))?;
    Ok(())
}

fn rip(vcpu: &VcpuFd) -> Option<u64> {
    vcpu.get_regs().ok().map(|r| r.rip)
}

/// Reads `kvm_run.internal` after a KVM_EXIT_INTERNAL_ERROR.
fn internal_error(vcpu: &mut VcpuFd) -> VcpuEnd {
    let run = vcpu.get_kvm_run();
    let (suberror, data) = if run.exit_reason == KVM_EXIT_INTERNAL_ERROR {
        // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so KVM filled the `internal`
        // member of the exit union; it is plain old data (u32, u32, [u64; 16]).
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        (internal.suberror, internal.data[..n].to_vec())
    } else {
        (0, Vec::new())
    };
    VcpuEnd::InternalError {
        suberror,
        rip: rip(vcpu),
        data,
    }
}

/// Runs the vCPU until the guest ends or a stop is requested.
pub fn run(vcpu: &mut VcpuFd, ctx: &mut VcpuContext) -> VcpuEnd {
    loop {
        if ctx.shutdown.requested().is_some() {
            return VcpuEnd::Stopped;
        }
        let exit = match vcpu.run() {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return VcpuEnd::KvmError(format!("KVM_RUN failed: {e}")),
        };
        match exit {
            VcpuExit::IoOut(port, data) => match ctx.devices.io_out(port, data) {
                IoAction::None => {}
                IoAction::PowerOff => return VcpuEnd::PoweredOff,
                IoAction::Reset => return VcpuEnd::Reset,
                IoAction::Milestone(code) => milestone(ctx, code),
                IoAction::Doorbell => {
                    let before = ctx.mailbox.handed_over();
                    ctx.mailbox.ring(&ctx.mem, &mut ctx.host);
                    if !before && ctx.mailbox.handed_over() {
                        if let Some(net) = ctx.net.as_mut() {
                            net.handed_over();
                        }
                    }
                }
            },
            VcpuExit::IoIn(port, data) => ctx.devices.io_in(port, data),
            VcpuExit::MmioWrite(addr, data) if VirtioNet::contains(addr) && ctx.net.is_some() => {
                if let Some(net) = ctx.net.as_mut() {
                    net.mmio_write(&ctx.mem, addr, data);
                }
            }
            VcpuExit::MmioRead(addr, data) if VirtioNet::contains(addr) && ctx.net.is_some() => {
                if let Some(net) = ctx.net.as_mut() {
                    net.mmio_read(&ctx.mem, addr, data);
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                ctx.mmio_seen = ctx.mmio_seen.saturating_add(1);
                if ctx.mmio_seen <= MMIO_LOG_LIMIT {
                    let what =
                        if (CONFIG_PAGE_GPA..CONFIG_PAGE_GPA + PAGE_SIZE as u64).contains(&addr) {
                            "write to the read-only configuration page dropped"
                        } else {
                            "write to unmapped address dropped"
                        };
                    log::warn!(addr = format!("{addr:#x}"), bytes = data.len(); "{what}");
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                ctx.mmio_seen = ctx.mmio_seen.saturating_add(1);
                if ctx.mmio_seen <= MMIO_LOG_LIMIT {
                    log::warn!(addr = format!("{addr:#x}"); "read from unmapped address returns all-ones");
                }
                data.fill(0xff);
            }
            VcpuExit::Hlt => {
                return VcpuEnd::Halted {
                    rip: rip(vcpu).unwrap_or(0),
                }
            }
            VcpuExit::Shutdown => return VcpuEnd::TripleFault { rip: rip(vcpu) },
            VcpuExit::InternalError => return internal_error(vcpu),
            VcpuExit::FailEntry(reason, cpu) => {
                return VcpuEnd::KvmError(format!(
                    "VM entry failed on cpu {cpu}: hardware reason {reason:#x}"
                ))
            }
            VcpuExit::Intr => {}
            other => return VcpuEnd::KvmError(format!("unexpected vCPU exit: {other:?}")),
        }
    }
}

fn milestone(ctx: &mut VcpuContext, code: u8) {
    ctx.milestones = ctx.milestones.saturating_add(1);
    if ctx.milestones > MILESTONE_LIMIT {
        return;
    }
    let micros_since_start = ctx.started.elapsed().as_micros() as u64;
    let unix_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    log::info!(code = code, micros_since_start = micros_since_start, unix_micros = unix_micros; "milestone");
    if let Err(e) = ctx.tx.send(&VmmMessage::Milestone {
        code,
        micros_since_start,
        unix_micros,
    }) {
        log::warn!(code = code, error = e.to_string(); "cannot report milestone");
    }
}

/// Signal used to kick a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Sends the kick signal to `thread`.
pub fn kick(thread: libc::pthread_t) {
    // SAFETY: `thread` is the pthread id of a vCPU thread whose JoinHandle the caller
    // still holds (not joined), so the id is valid; the signal has a no-op handler
    // installed by `install_signal_handlers`, so delivery only interrupts KVM_RUN.
    unsafe {
        libc::pthread_kill(thread, kick_signal());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(cpuid: &CpuId, function: u32) -> Option<kvm_cpuid_entry2> {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function)
            .copied()
    }

    /// The firmware finds the TSC frequency where it looks (base leaf's maximum at
    /// least the timing leaf, EAX of the timing leaf in kHz).
    #[test]
    fn the_timing_leaf_carries_the_tsc_frequency() {
        let base = kvm_cpuid_entry2 {
            function: HYPERVISOR_BASE_LEAF,
            eax: 0x4000_0001,
            ..Default::default()
        };
        let mut cpuid = CpuId::from_entries(&[base]).unwrap();
        add_timing_leaf(&mut cpuid, 2_596_130).unwrap();
        assert_eq!(leaf(&cpuid, HYPERVISOR_BASE_LEAF).unwrap().eax, TIMING_LEAF);
        let t = leaf(&cpuid, TIMING_LEAF).unwrap();
        assert_eq!((t.eax, t.ebx), (2_596_130, APIC_BUS_KHZ));
        // Twice: updated in place, not duplicated.
        add_timing_leaf(&mut cpuid, 3_000_000).unwrap();
        assert_eq!(cpuid.as_slice().len(), 2);
        assert_eq!(leaf(&cpuid, TIMING_LEAF).unwrap().eax, 3_000_000);
        // No hypervisor leaves: nothing added.
        let plain = kvm_cpuid_entry2::default();
        let mut cpuid = CpuId::from_entries(&[plain]).unwrap();
        add_timing_leaf(&mut cpuid, 1).unwrap();
        assert!(leaf(&cpuid, TIMING_LEAF).is_none());
    }
}
