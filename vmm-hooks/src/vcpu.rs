//! The vCPU: register setup for direct 64-bit boot, the run loop, and kicking it out of
//! KVM_RUN from another thread.

use crate::channel::{ChannelHost, ChannelTx};
use crate::devices::{Devices, IoAction};
use crate::error::VmmError;
use crate::mailbox::Mailbox;
use crate::shutdown::Shutdown;
use crate::tpm_crb::TpmCrb;
use crate::vcpus::VcpuSet;
use crate::virtio_blk::{DiskEvent, VirtioBlk};
use crate::virtio_net::VirtioNet;
use kvm_bindings::{kvm_segment, KVM_EXIT_INTERNAL_ERROR};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// The virtio-blk device, if the VM has a disk.
    pub blk: Option<VirtioBlk>,
    /// The TPM CRB device, if the VM has a TPM of its own.
    pub tpm: Option<TpmCrb>,
}

/// Sets segments, control registers and general registers of the boot vCPU for the
/// measured `state` (CPUID, MSRs and LAPIC: [`crate::arch::setup_vcpu`]).
pub fn configure(vcpu: &VcpuFd, state: &EntryState) -> Result<(), VmmError> {
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

/// Runs vCPU `index` until the guest ends, another vCPU ends the VM, or a stop is
/// requested. The device context is shared by every vCPU: each exit is handled under
/// its lock, so devices see one access at a time whichever vCPU made it.
pub fn run(
    vcpu: &mut VcpuFd,
    index: usize,
    shared: &Mutex<VcpuContext>,
    set: &VcpuSet,
    shutdown: &Shutdown,
) -> VcpuEnd {
    // Whether the last KVM_RUN left no exit to complete: KVM finishes an `in` or MMIO
    // read only on the next KVM_RUN, so the vCPU's state is consistent (and may be
    // reported to a check round) only after a KVM_RUN that returned EINTR.
    let mut settled = true;
    loop {
        if shutdown.requested().is_some() || set.ended() {
            return VcpuEnd::Stopped;
        }
        if settled {
            set.pause_point(index, vcpu, shutdown);
        }
        // During a check round an unsettled vCPU re-enters only to complete its exit:
        // with immediate_exit KVM returns EINTR before running guest code.
        vcpu.set_kvm_immediate_exit(u8::from(!settled && set.round_active()));
        set.set_in_guest(index, true);
        let result = vcpu.run();
        set.set_in_guest(index, false);
        let exit = match result {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                settled = true;
                continue;
            }
            Err(e) => return VcpuEnd::KvmError(format!("KVM_RUN failed on vCPU {index}: {e}")),
        };
        settled = false;
        set.note_exit();
        let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let ctx = &mut *guard;
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
                            net.handed_over(&ctx.mem);
                        }
                        if let Some(blk) = ctx.blk.as_mut() {
                            blk.handed_over();
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
            VcpuExit::MmioWrite(addr, data) if VirtioBlk::contains(addr) && ctx.blk.is_some() => {
                if let Some(blk) = ctx.blk.as_mut() {
                    blk.mmio_write(&ctx.mem, addr, data);
                    for DiskEvent::Tamper { chunk } in blk.take_events() {
                        if let Err(e) = ctx.tx.send(&VmmMessage::DiskTamper { chunk }) {
                            log::warn!(chunk = chunk, error = e.to_string(); "disk-tamper not delivered to tvpd");
                        }
                    }
                }
            }
            VcpuExit::MmioRead(addr, data) if VirtioBlk::contains(addr) && ctx.blk.is_some() => {
                if let Some(blk) = ctx.blk.as_mut() {
                    blk.mmio_read(addr, data);
                }
            }
            VcpuExit::MmioWrite(addr, data) if TpmCrb::contains(addr) && ctx.tpm.is_some() => {
                if let Some(tpm) = ctx.tpm.as_mut() {
                    tpm.mmio_write(addr, data);
                }
            }
            VcpuExit::MmioRead(addr, data) if TpmCrb::contains(addr) && ctx.tpm.is_some() => {
                if let Some(tpm) = ctx.tpm.as_mut() {
                    tpm.mmio_read(addr, data);
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
