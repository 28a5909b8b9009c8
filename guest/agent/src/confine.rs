//! The restrictions of the tenant context, and the agent's own protection.
//!
//! Tenant root keeps root (its own mounts, network, users, files) but not the guest
//! kernel's module loading, nor any way to reach the agent that holds it:
//!
//! - capabilities: [`DENIED`] leave the bounding, inheritable, ambient, effective and
//!   permitted sets, so no later `execve` brings them back;
//! - a seccomp filter refuses ([`EPERM`](nix::errno::Errno::EPERM)) the module and kexec
//!   calls, `ptrace`, `process_vm_*`, `bpf`, `perf_event_open`, raw port I/O and the
//!   `TIOCSTI`/`TIOCLINUX` ioctls whatever the capabilities (`CAP_SYS_ADMIN`, which the
//!   tenant keeps, would otherwise stand in for `CAP_BPF` and `CAP_PERFMON`);
//! - the kernel's usermode helpers (the `modprobe` of module auto-loading, core-dump pipes,
//!   the uevent helper), which the kernel starts outside any namespace or filter, get no
//!   capability the tenant lacks, nor `CAP_SYS_ADMIN`: a helper path tenant root writes
//!   into `/proc/sys/kernel/modprobe` runs powerless.
//!
//! The agent itself is non-dumpable (no `/proc/1/mem`, no `ptrace` without
//! `CAP_SYS_PTRACE`) and never chosen by the OOM killer.

use caps::{CapSet, Capability};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Capabilities tenant processes never hold.
pub const DENIED: [Capability; 6] = [
    Capability::CAP_SYS_MODULE,
    Capability::CAP_SYS_RAWIO,
    Capability::CAP_SYS_BOOT,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
];

/// A restriction could not be applied (the tenant process is then not started).
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// Changing a capability set failed.
    #[error("dropping {cap} from the {set} set: {detail}")]
    Capability {
        /// The capability.
        cap: Capability,
        /// The set.
        set: &'static str,
        /// Why.
        detail: String,
    },
    /// The seccomp filter could not be built.
    #[error("building the seccomp filter: {0}")]
    Filter(String),
    /// The kernel refused the seccomp filter.
    #[error("installing the seccomp filter: {0}")]
    Install(std::io::Error),
    /// A file under /proc could not be written.
    #[error("{path}: {source}")]
    Proc {
        /// The file.
        path: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Drops [`DENIED`] from every capability set of this process.
pub fn drop_capabilities() -> Result<(), ConfineError> {
    caps::clear(None, CapSet::Ambient).map_err(|e| ConfineError::Capability {
        cap: Capability::CAP_SYS_MODULE,
        set: "ambient",
        detail: e.to_string(),
    })?;
    // Bounding first: dropping from it needs CAP_SETPCAP in the effective set, kept.
    for (set, name) in [
        (CapSet::Bounding, "bounding"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
    ] {
        for cap in DENIED {
            caps::drop(None, set, cap).map_err(|e| ConfineError::Capability {
                cap,
                set: name,
                detail: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// The tenant's seccomp filter: refused calls get `EPERM`, all others pass.
pub fn tenant_filter() -> Result<BpfProgram, ConfineError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in [
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_iopl,
        libc::SYS_ioperm,
    ] {
        rules.insert(nr, Vec::new());
    }
    let ioctl = |request: u64| -> Result<SeccompRule, ConfineError> {
        let cond = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
            .map_err(|e| ConfineError::Filter(e.to_string()))?;
        SeccompRule::new(vec![cond]).map_err(|e| ConfineError::Filter(e.to_string()))
    };
    rules.insert(
        libc::SYS_ioctl,
        vec![ioctl(libc::TIOCSTI)?, ioctl(libc::TIOCLINUX)?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| ConfineError::Filter(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| ConfineError::Filter(e.to_string()))
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// Installs `prog` on this thread, without `no_new_privs` (tenant root may still run
/// set-uid programs): this needs `CAP_SYS_ADMIN`, which the tenant context keeps. A filter
/// cannot be removed, only added to.
#[allow(unsafe_code)]
pub fn install_filter(prog: &BpfProgram) -> Result<(), ConfineError> {
    let len = libc::c_ushort::try_from(prog.len())
        .map_err(|_| ConfineError::Filter("filter too long".into()))?;
    let fprog = SockFprog {
        len,
        filter: prog.as_ptr(),
    };
    // SAFETY: PR_SET_SECCOMP with SECCOMP_MODE_FILTER reads a sock_fprog (same layout as
    // SockFprog: a length and a pointer to `len` sock_filter instructions) that lives,
    // with the program it points to, for the whole call; the kernel copies it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(ConfineError::Install(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Puts this process in the tenant context's restrictions (capabilities, then the filter).
pub fn restrict_self() -> Result<(), ConfineError> {
    let prog = tenant_filter()?;
    drop_capabilities()?;
    install_filter(&prog)
}

/// The capability mask (two 32-bit words, low first) without `caps`.
fn mask_without(caps: &[Capability]) -> [u32; 2] {
    let mut mask = [u32::MAX; 2];
    for c in caps {
        let bit = c.index() as usize;
        mask[bit / 32] &= !(1u32 << (bit % 32));
    }
    mask
}

/// Clears the tenant's denied capabilities and `CAP_SYS_ADMIN` from the usermode helpers'
/// bounding and inheritable sets (`/proc/sys/kernel/usermodehelper/*`), and empties the
/// module auto-loading helper path. Only a process holding `CAP_SYS_MODULE` could undo the
/// first; tenant root may rewrite the path, and its helper then runs without them.
pub fn restrict_usermode_helpers() -> Result<(), ConfineError> {
    let mut denied = DENIED.to_vec();
    denied.push(Capability::CAP_SYS_ADMIN);
    let mask = mask_without(&denied);
    for path in [
        "/proc/sys/kernel/usermodehelper/bset",
        "/proc/sys/kernel/usermodehelper/inheritable",
    ] {
        let proc = |source| ConfineError::Proc { path, source };
        let now = std::fs::read_to_string(path).map_err(proc)?;
        let words: Vec<u32> = now
            .split_whitespace()
            .map(|w| w.parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|e| proc(std::io::Error::other(e.to_string())))?;
        let [low, high] = words[..] else {
            return Err(proc(std::io::Error::other(format!("unexpected {now:?}"))));
        };
        std::fs::write(path, format!("{} {}", low & mask[0], high & mask[1])).map_err(proc)?;
    }
    let path = "/proc/sys/kernel/modprobe";
    std::fs::write(path, "\n").map_err(|source| ConfineError::Proc { path, source })
}

/// Makes the calling process non-dumpable (no `/proc/<pid>/mem`, no ptrace without
/// `CAP_SYS_PTRACE`) and exempt from the OOM killer.
pub fn protect_self() -> Result<(), ConfineError> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| ConfineError::Proc {
        path: "prctl(PR_SET_DUMPABLE)",
        source: e.into(),
    })?;
    let path = "/proc/self/oom_score_adj";
    std::fs::write(path, "-1000").map_err(|source| ConfineError::Proc { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_clear_exactly_the_denied_bits() {
        let m = mask_without(&DENIED);
        // CAP_SYS_MODULE 16, CAP_SYS_RAWIO 17, CAP_SYS_PTRACE 19, CAP_SYS_BOOT 22.
        assert_eq!(m[0], !((1 << 16) | (1 << 17) | (1 << 19) | (1 << 22)));
        // CAP_PERFMON 38, CAP_BPF 39.
        assert_eq!(m[1], !((1 << 6) | (1 << 7)));
    }

    #[test]
    fn the_filter_builds() {
        assert!(!tenant_filter().unwrap().is_empty());
    }
}
