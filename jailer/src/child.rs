//! What the forked child does before `exec`: join the cgroup, unshare, build its mounts,
//! pivot_root, drop to the per-VM uid, set rlimits, `no_new_privs` and seccomp.
//!
//! It runs between `fork` and `exec` of a multi-threaded parent, so it only makes system
//! calls on data prepared before the fork: no allocation, no locks, no logging.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{chdir, pivot_root, setgroups, sethostname, setresgid, setresuid, Gid, Uid};
use seccompiler::BpfProgram;
use std::ffi::CString;
use std::io;

/// A mount made inside the jail's mount namespace.
#[derive(Debug, Clone)]
pub(crate) enum MountOp {
    /// Bind `src` (a host path) onto `dst` (a host path under the new root).
    Bind {
        src: CString,
        dst: CString,
        read_only: bool,
    },
    /// A fresh procfs of the jail's pid namespace at `dst`.
    Proc { dst: CString },
    /// The jail's own `/dev`: a small tmpfs at `dst`, then `nodes`, then read-only.
    Dev { dst: CString, nodes: Vec<DevNode> },
}

/// A character device node made in the jail's `/dev`.
#[derive(Debug, Clone)]
pub(crate) struct DevNode {
    /// Host path of the node in the jail's `/dev` tmpfs (before pivot_root).
    pub path: CString,
    /// The device number.
    pub rdev: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner (the jail's uid for private devices such as `/dev/kvm`, else root).
    pub owner: u32,
}

/// Everything the child needs, prepared before the fork.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `cgroup.procs` files to write `0` (this process) into.
    pub cgroup_procs: Vec<CString>,
    /// The new root (host path).
    pub root: CString,
    /// Mounts, in order.
    pub mounts: Vec<MountOp>,
    /// The UTS hostname.
    pub hostname: String,
    /// The per-VM uid and gid.
    pub uid: u32,
    /// The per-VM gid.
    pub gid: u32,
    /// Supplementary groups (the gid, and the group of `/dev/kvm` when exposed).
    pub groups: Vec<u32>,
    /// Resource limits (soft = hard).
    pub rlimits: Vec<(Resource, u64)>,
    /// The seccomp filter installed last, right before `exec`.
    pub seccomp: Option<BpfProgram>,
}

fn err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn join_cgroup(file: &CString) -> io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let e = io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(e);
        }
    }
    Ok(())
}

const NONE: Option<&'static std::ffi::CStr> = None;

fn make_dev(dst: &CString, nodes: &[DevNode]) -> io::Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(
        Some(c"tmpfs"),
        dst.as_c_str(),
        Some(c"tmpfs"),
        flags,
        Some(c"mode=755,size=64k"),
    )
    .map_err(err)?;
    for n in nodes {
        // SAFETY: mknod/chown/chmod on NUL-terminated paths.
        unsafe {
            if libc::mknod(n.path.as_ptr(), libc::S_IFCHR | n.mode, n.rdev) != 0
                || libc::chown(n.path.as_ptr(), n.owner, n.owner) != 0
                || libc::chmod(n.path.as_ptr(), n.mode) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    mount(
        NONE,
        dst.as_c_str(),
        NONE,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        NONE,
    )
    .map_err(err)
}

/// Makes the bind mount at `dst` read-only, nosuid and nodev.
fn remount_read_only(dst: &std::ffi::CStr) -> io::Result<()> {
    mount(
        NONE,
        dst,
        NONE,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        NONE,
    )
    .map_err(err)
}

impl Plan {
    /// Runs in the child between fork and exec. The child must be PID 1 of a new pid
    /// namespace (see `Jail::spawn`).
    pub fn enter(&self) -> io::Result<()> {
        if nix::unistd::getpid().as_raw() != 1 {
            // Spawned without Jail::spawn: there is no pid namespace; refuse.
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
        for f in &self.cgroup_procs {
            join_cgroup(f)?;
        }
        // Every descriptor the child inherited beyond stdio closes at exec.
        // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets flags.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
        }
        unshare(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWNET,
        )
        .map_err(err)?;
        // Nothing done below propagates back to the host's mount namespace.
        mount(
            NONE,
            c"/",
            NONE,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            NONE,
        )
        .map_err(err)?;
        mount(
            Some(self.root.as_c_str()),
            self.root.as_c_str(),
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
        .map_err(err)?;
        for m in &self.mounts {
            match m {
                MountOp::Bind {
                    src,
                    dst,
                    read_only,
                } => {
                    mount(
                        Some(src.as_c_str()),
                        dst.as_c_str(),
                        NONE,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        NONE,
                    )
                    .map_err(err)?;
                    if *read_only {
                        remount_read_only(dst.as_c_str())?;
                    }
                }
                MountOp::Proc { dst } => mount(
                    Some(c"proc"),
                    dst.as_c_str(),
                    Some(c"proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    NONE,
                )
                .map_err(err)?,
                MountOp::Dev { dst, nodes } => make_dev(dst, nodes)?,
            }
        }
        chdir(self.root.as_c_str()).map_err(err)?;
        pivot_root(c".", c".").map_err(err)?;
        umount2(c".", MntFlags::MNT_DETACH).map_err(err)?;
        chdir(c"/").map_err(err)?;
        remount_read_only(c"/")?;
        sethostname(self.hostname.as_str()).map_err(err)?;
        for (res, v) in &self.rlimits {
            setrlimit(*res, *v, *v).map_err(err)?;
        }
        let mut groups = [Gid::from_raw(0); 8];
        let n = self.groups.len().min(groups.len());
        for (slot, g) in groups.iter_mut().zip(&self.groups) {
            *slot = Gid::from_raw(*g);
        }
        setgroups(&groups[..n]).map_err(err)?;
        let (g, u) = (Gid::from_raw(self.gid), Uid::from_raw(self.uid));
        setresgid(g, g, g).map_err(err)?;
        setresuid(u, u, u).map_err(err)?;
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) has no memory effects.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(bpf) = &self.seccomp {
            seccompiler::apply_filter(bpf)
                .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
        }
        Ok(())
    }
}
