//! Lockdown of the VMM process itself: no core dumps or ptrace by other users
//! (guest memory must never reach the disk in the clear), guest memory excluded from
//! dumps, and a seccomp syscall allowlist installed on every thread before the first
//! vCPU instruction, so a compromised VMM cannot open files, sockets or processes, map
//! new KVM memory or change vCPU state beyond running it.

use crate::error::VmmError;
use crate::memory::GuestRam;
use seccompiler::{
    apply_filter_all_threads, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

/// Marks the process non-dumpable (no core dump, no ptrace attach, /proc/PID/mem
/// closed to other users). Called first thing in `tvp-vmm run`.
pub fn make_undumpable() -> Result<(), VmmError> {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes integer arguments only and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        return Err(VmmError::Process(format!(
            "PR_SET_DUMPABLE failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Excludes guest memory from core dumps (belt and braces with [`make_undumpable`]).
pub fn exclude_from_dumps(ram: &GuestRam) -> Result<(), VmmError> {
    for (host, len) in ram.host_ranges() {
        // SAFETY: (host, len) is exactly one live mmap region owned by `ram`;
        // MADV_DONTDUMP only changes the dump flag of those pages, not their contents.
        let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTDUMP) };
        if rc != 0 {
            return Err(VmmError::Process(format!(
                "madvise(MADV_DONTDUMP) failed: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

// _IO(KVMIO, 0x80) and _IOR(KVMIO, 0x81, struct kvm_regs).
const KVMIO: u64 = 0xae;
const KVM_RUN: u64 = (KVMIO << 8) | 0x80;
fn kvm_get_regs() -> u64 {
    (2 << 30) | ((std::mem::size_of::<kvm_bindings::kvm_regs>() as u64) << 16) | (KVMIO << 8) | 0x81
}

/// The syscalls the running VMM needs (vCPU loop, channel, logging, memory allocator,
/// thread exit, kick signal). Everything else fails with EPERM.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_close,
    libc::SYS_getrandom,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn build_filter() -> Result<BpfProgram, VmmError> {
    let err = |e: seccompiler::BackendError| VmmError::Process(format!("seccomp filter: {e}"));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|s| (*s, Vec::new())).collect();
    let ioctl_rule = |req: u64| -> Result<SeccompRule, VmmError> {
        let cond = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)
            .map_err(err)?;
        SeccompRule::new(vec![cond]).map_err(err)
    };
    rules.insert(
        libc::SYS_ioctl,
        vec![ioctl_rule(KVM_RUN)?, ioctl_rule(kvm_get_regs())?],
    );
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| VmmError::Process(format!("seccomp arch: {e}")))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(err)?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e))
}

/// Installs the allowlist on every thread of the process (sets no_new_privs).
pub fn install_syscall_filter() -> Result<(), VmmError> {
    let prog = build_filter()?;
    apply_filter_all_threads(&prog)
        .map_err(|e| VmmError::Process(format!("cannot install seccomp filter: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_compiles() {
        assert!(super::build_filter().is_ok());
    }
}
