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

/// Drops to `uid`/`gid` for good (real, effective and saved ids; no supplementary
/// groups) and checks that root cannot be regained. The process stays non-dumpable.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), VmmError> {
    let fail = |what: &str| {
        VmmError::Process(format!(
            "cannot drop privileges ({what}): {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: these calls take integer arguments (setgroups an empty list) and change
    // only the process credentials; glibc applies them to every thread.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(fail("setgroups"));
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(fail("setresgid"));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(fail("setresuid"));
        }
        if libc::setuid(0) == 0 || libc::geteuid() == 0 {
            return Err(VmmError::Process(
                "privileges could be regained after dropping them".into(),
            ));
        }
    }
    // A credential change may reset the dumpable flag (fs.suid_dumpable).
    make_undumpable()
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
/// _IOR(KVMIO, 0x98, struct kvm_mp_state): the halt check and the end-of-run log read
/// each vCPU's multiprocessing state.
fn kvm_get_mp_state() -> u64 {
    (2 << 30)
        | ((std::mem::size_of::<kvm_bindings::kvm_mp_state>() as u64) << 16)
        | (KVMIO << 8)
        | 0x98
}

/// The syscalls the running VMM needs (vCPU loop, channel, logging, memory allocator,
/// thread exit, kick signal). Anything else kills the process (SIGSYS), which tvpd
/// reports as the VM's end reason.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    // virtio-blk reads the encrypted disk's chunks at their offsets.
    libc::SYS_pread64,
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
    // virtio-net: a guest polling an idle device waits (bounded) for the TAP fd.
    libc::SYS_ppoll,
    // The adoption socket (bound before the lockdown): a restarted tvpd is accepted.
    libc::SYS_accept4,
];

fn build_filter() -> Result<BpfProgram, VmmError> {
    let err = |e: seccompiler::BackendError| VmmError::Process(format!("seccomp filter: {e}"));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|s| (*s, Vec::new())).collect();
    // A rule matching calls whose second argument is `req` (an ioctl request, a fcntl
    // command).
    let ioctl_rule = |req: u64| -> Result<SeccompRule, VmmError> {
        let cond = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)
            .map_err(err)?;
        SeccompRule::new(vec![cond]).map_err(err)
    };
    rules.insert(
        libc::SYS_ioctl,
        vec![
            ioctl_rule(KVM_RUN)?,
            ioctl_rule(kvm_get_regs())?,
            ioctl_rule(kvm_get_mp_state())?,
        ],
    );
    // fcntl(fd, F_GETFD) only: Rust's std checks a descriptor with it when dropping one
    // (debug builds); it reads a flag and changes nothing.
    rules.insert(libc::SYS_fcntl, vec![ioctl_rule(libc::F_GETFD as u64)?]);
    // setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO) only: the adoption handshake's read
    // timeout, so a silent connection cannot hold the wait.
    let rcvtimeo = || -> Result<SeccompRule, VmmError> {
        SeccompRule::new(vec![
            SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::SOL_SOCKET as u64,
            )
            .map_err(err)?,
            SeccompCondition::new(
                2,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::SO_RCVTIMEO as u64,
            )
            .map_err(err)?,
        ])
        .map_err(err)
    };
    rules.insert(libc::SYS_setsockopt, vec![rcvtimeo()?]);
    // openat is "allowed" by this filter and refused with EPERM by the second one
    // (`deny_open_filter`): glibc's malloc probes /proc/sys/vm/overcommit_memory when it
    // shrinks a thread's heap and copes with the refusal.
    rules.insert(libc::SYS_openat, Vec::new());
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch()?,
    )
    .map_err(err)?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e))
}

fn arch() -> Result<seccompiler::TargetArch, VmmError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| VmmError::Process(format!("seccomp arch: {e}")))
}

/// openat fails with EPERM, everything else passes (to the allowlist, which the kernel
/// also applies; the stricter action of the two wins).
fn deny_open_filter() -> Result<BpfProgram, VmmError> {
    let err = |e: seccompiler::BackendError| VmmError::Process(format!("seccomp filter: {e}"));
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        [(libc::SYS_openat, Vec::new()), (libc::SYS_open, Vec::new())].into();
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(err)?
    .try_into()
    .map_err(|e: seccompiler::BackendError| err(e))
}

/// Installs the allowlist on every thread of the process (sets no_new_privs): a
/// syscall outside it kills the process with SIGSYS; opening a file fails with EPERM.
pub fn install_syscall_filter() -> Result<(), VmmError> {
    for prog in [deny_open_filter()?, build_filter()?] {
        apply_filter_all_threads(&prog)
            .map_err(|e| VmmError::Process(format!("cannot install seccomp filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_compiles() {
        assert!(super::build_filter().is_ok());
        assert!(super::deny_open_filter().is_ok());
    }
}
