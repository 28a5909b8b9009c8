//! Seccomp profiles.
//!
//! - `vmm`: an allowlist for our own VMM (`modvisor-vmm`, one process per VM). Everything
//!   else kills the process (`SECCOMP_RET_KILL_PROCESS`, seen as SIGSYS). The filter is
//!   installed by the jail right before `exec`, so it also covers the dynamic loader and
//!   Rust's runtime start-up, and it has to allow `execve` itself; everything the VMM does
//!   afterwards is bounded by the same list. `ioctl` is allowed only for KVM's ioctls
//!   (type 0xAE) and `FIONBIO`/`FIOCLEX`/`TCGETS`; `socket` only for `AF_UNIX`; `clone`
//!   only for threads; `prctl` only for `PR_SET_NAME`/`PR_GET_NAME`; `prlimit64` only to
//!   read a limit.
//! - QEMU: no jailer filter. QEMU's syscall surface (TCG, its main loop, device backends,
//!   glib) is large and changes between releases; the QEMU driver instead turns on QEMU's
//!   own seccomp sandbox (`-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,
//!   resourcecontrol=deny`), a denylist, which is looser. The rest of the jail applies.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Building a filter failed.
#[derive(Debug, thiserror::Error)]
#[error("seccomp filter: {0}")]
pub struct SeccompError(String);

/// Syscalls the VMM may make with any arguments.
const VMM_PLAIN: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_close,
    libc::SYS_openat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_fcntl,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getcwd,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_futex,
    libc::SYS_clone3,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_tgkill,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_arch_prctl,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_pipe2,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_restart_syscall,
    libc::SYS_execve,
];

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<Cond, SeccompError> {
    Cond::new(arg, len, op, value).map_err(|e| SeccompError(e.to_string()))
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError(e.to_string()))
}

/// The rules of the VMM's allowlist: syscall number to its (possibly empty) rules.
fn vmm_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        VMM_PLAIN.iter().map(|&nr| (nr, Vec::new())).collect();
    // ioctl: KVM's (type 0xAE in bits 8..16) and three on ordinary descriptors.
    let mut ioctl = vec![rule(vec![cond(
        1,
        Len::Dword,
        Op::MaskedEq(0xff00),
        0xae00,
    )?])?];
    for req in [libc::FIONBIO, libc::FIOCLEX, libc::TCGETS] {
        ioctl.push(rule(vec![cond(1, Len::Dword, Op::Eq, req)?])?);
    }
    rules.insert(libc::SYS_ioctl, ioctl);
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(
            0,
            Len::Dword,
            Op::Eq,
            libc::AF_UNIX as u64,
        )?])?],
    );
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            Len::Qword,
            Op::MaskedEq(libc::CLONE_THREAD as u64),
            libc::CLONE_THREAD as u64,
        )?])?],
    );
    rules.insert(
        libc::SYS_prctl,
        vec![
            rule(vec![cond(0, Len::Dword, Op::Eq, libc::PR_SET_NAME as u64)?])?,
            rule(vec![cond(0, Len::Dword, Op::Eq, libc::PR_GET_NAME as u64)?])?,
        ],
    );
    rules.insert(
        libc::SYS_prlimit64,
        vec![rule(vec![cond(2, Len::Qword, Op::Eq, 0)?])?],
    );
    Ok(rules)
}

/// The VMM's profile as a BPF program: the allowlist above, anything else kills the process.
pub fn vmm_profile() -> Result<BpfProgram, SeccompError> {
    allowlist(vmm_rules()?)
}

/// The VMM's profile less the given syscalls (for tests that check enforcement).
pub fn vmm_profile_without(denied: &[i64]) -> Result<BpfProgram, SeccompError> {
    let mut rules = vmm_rules()?;
    for nr in denied {
        rules.remove(nr);
    }
    allowlist(rules)
}

fn allowlist(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError(e.to_string()))
}

/// The arguments the QEMU driver adds to turn on QEMU's own (looser) seccomp sandbox.
pub const QEMU_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmm_profile_compiles() {
        let bpf = vmm_profile().unwrap();
        assert!(
            bpf.len() > 50 && bpf.len() < 4096,
            "{} instructions",
            bpf.len()
        );
        assert!(vmm_profile_without(&[libc::SYS_ioctl]).unwrap().len() < bpf.len());
    }
}
