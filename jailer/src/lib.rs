//! The modvisor jailer: every VM process (our VMM or QEMU) runs in a jail of its own made of
//! a per-VM cgroup (v1 or v2), new mount, pid, ipc, uts and network namespaces, a
//! pivot_root into a directory holding only what it needs, a per-VM uid/gid,
//! `no_new_privs`, rlimits and (for our VMM) a seccomp allowlist.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use modvisor_jailer::{Jail, JailConfig, JailSpec, Limits};
//! let config = JailConfig::new("/var/lib/modvisor/jails");
//! let mut spec = JailSpec::new("vm-1", Limits::for_vm(1, 256, &Default::default()));
//! spec.bind_rw("/var/lib/modvisor/run/vm-1", "/run/vm");
//! let jail = Jail::prepare(&config, &spec)?;
//! let mut cmd = jail.command("/usr/bin/qemu-system-x86_64");
//! let mut child = jail.spawn(&mut cmd)?;
//! let _ = child.wait();
//! jail.teardown()?;
//! # Ok(()) }
//! ```

pub mod cgroup;
mod child;
pub mod handoff;
mod jail;
pub mod pidfd;
pub mod seccomp;
mod uid;

pub use cgroup::{CgroupError, CgroupLimits, Cgroups, Group, Version};
pub use jail::{check_host, cleanup_stale, jail_ids, Bind, Jail, JailConfig, JailSpec};
pub use seccompiler::BpfProgram;

use std::path::PathBuf;

/// What a VM's jail allows on top of the guest's own size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overhead {
    /// Memory for the hypervisor itself (code, page tables, device state, TCG's
    /// translation cache), in MiB.
    pub memory_mib: u64,
    /// CPU beyond one core per vCPU (I/O and main-loop threads), in thousandths of a core.
    pub cpu_millicores: u64,
    /// Tasks beyond one per vCPU.
    pub pids: u64,
}

impl Default for Overhead {
    fn default() -> Self {
        Overhead {
            memory_mib: 256,
            cpu_millicores: 500,
            pids: 128,
        }
    }
}

/// Every limit of a jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The cgroup's limits.
    pub cgroup: CgroupLimits,
    /// `RLIMIT_NOFILE`.
    pub nofile: u64,
    /// `RLIMIT_NPROC` (per uid, and the uid is the jail's own).
    pub nproc: u64,
    /// `RLIMIT_FSIZE` in bytes (console logs and sockets live in the jail).
    pub fsize: u64,
}

impl Limits {
    /// Limits for a VM of `vcpus` and `memory_mib` plus `overhead`.
    pub fn for_vm(vcpus: u32, memory_mib: u32, overhead: &Overhead) -> Limits {
        let pids = u64::from(vcpus).saturating_add(overhead.pids);
        let memory_mib = u64::from(memory_mib).saturating_add(overhead.memory_mib);
        Limits {
            cgroup: CgroupLimits {
                pids_max: pids,
                // At most 2^43 MiB (8 EiB): the shift cannot wrap to a tiny limit.
                memory_bytes: memory_mib.min(1 << 43) << 20,
                cpu_millicores: Some(
                    (u64::from(vcpus) * 1000).saturating_add(overhead.cpu_millicores),
                ),
            },
            nofile: 1024,
            nproc: pids,
            fsize: 1 << 30,
        }
    }
}

/// The jail could not be made, entered or removed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The host cannot jail (not root, a controller missing, ...).
    #[error("the jail is unavailable: {0} (use --jail off for development only)")]
    Unavailable(String),
    /// A bad spec (id, paths).
    #[error("invalid jail spec: {0}")]
    Invalid(String),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The seccomp filter could not be built.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Teardown found mounts of the jail in the host's mount namespace.
    #[error("{0}: still mounted on the host; not removing it")]
    Mounted(PathBuf),
}
