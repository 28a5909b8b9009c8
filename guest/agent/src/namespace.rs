//! Mounts and namespaces: the agent's at boot, and the tenant's (made by the tenant's
//! init).

use crate::tenant::{AGENT_DIR, CGROUP_ROOT, TENANT_CGROUP};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::path::{Path, PathBuf};

/// The serial port the host channel is on without virtio (COM2: `ttyS1`, char 4:65).
pub const CHANNEL_DEV: (u64, u64) = (4, 65);
/// Where the kernel lists virtio-serial ports (`vportNpM/name`, `vportNpM/dev`).
const VIRTIO_PORTS: &str = "/sys/class/virtio-ports";

/// The device number of the virtio-serial port named `name`, waiting up to `within` for
/// it to appear (its driver probes as it loads); `None` at once without virtio ports.
pub fn virtio_port(name: &str, within: std::time::Duration) -> Option<(u64, u64)> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let entries = std::fs::read_dir(VIRTIO_PORTS).ok()?;
        for e in entries.flatten() {
            let named = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
            if named.trim() != name {
                continue;
            }
            let dev = std::fs::read_to_string(e.path().join("dev")).unwrap_or_default();
            let (major, minor) = dev.trim().split_once(':')?;
            return Some((major.parse().ok()?, minor.parse().ok()?));
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
/// The console (COM1: `ttyS0`, char 4:64).
pub const CONSOLE_DEV: (u64, u64) = (4, 64);

fn mount_err(what: &str, e: nix::errno::Errno) -> String {
    format!("mounting {what}: {e}")
}

/// Makes every mount of this mount namespace private: nothing mounted in another
/// namespace later reaches this one, nor the other way.
fn make_mounts_private() -> Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| mount_err("/ private", e))
}

/// Mounts proc, sysfs, devtmpfs and cgroup v2 (what the agent needs at boot); a mount that
/// is already there is kept.
pub fn mount_pseudo_filesystems() {
    for (src, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("cgroup2", CGROUP_ROOT, "cgroup2"),
    ] {
        if let Err(e) = std::fs::create_dir_all(target) {
            println!("modvisor-guest-agent: creating {target}: {e}");
        }
        if let Err(e) = mount(
            Some(src),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID,
            None::<&str>,
        ) {
            if e != nix::errno::Errno::EBUSY {
                println!("modvisor-guest-agent: mounting {target}: {e}");
            }
        }
    }
}

/// Makes every mount private (so nothing the tenant mounts later reaches the agent's
/// view), then the agent's own tmpfs at [`AGENT_DIR`] with device nodes for the channel
/// (character device `channel_dev`) and the console. Returns (channel, console) node
/// paths.
pub fn make_agent_dir(channel_dev: (u64, u64)) -> Result<(PathBuf, PathBuf), String> {
    make_mounts_private()?;
    std::fs::create_dir_all(AGENT_DIR).map_err(|e| format!("{AGENT_DIR}: {e}"))?;
    mount(
        Some("tmpfs"),
        AGENT_DIR,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0700,size=64k"),
    )
    .map_err(|e| mount_err(AGENT_DIR, e))?;
    let dir = Path::new(AGENT_DIR);
    let channel = dir.join("channel");
    let console = dir.join("console");
    for (path, (major, minor)) in [(&channel, channel_dev), (&console, CONSOLE_DEV)] {
        mknod(
            path.as_path(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            makedev(major, minor),
        )
        .map_err(|e| format!("mknod {}: {e}", path.display()))?;
    }
    Ok((channel, console))
}

/// The tenant cgroup: at most `PIDS_MAX` tasks, memory short of the guest's by a reserve
/// for the agent, a small CPU weight against the agent (in the root cgroup). A guest
/// kernel without cgroup v2 leaves the tenant uncontained (said on the console).
pub fn make_tenant_cgroup() -> Result<(), String> {
    const PIDS_MAX: u32 = 2048;
    const AGENT_RESERVE_KIB: u64 = 32 * 1024;
    let write = |file: &str, value: &str| {
        std::fs::write(file, value).map_err(|e| format!("{file} <- {value}: {e}"))
    };
    write(
        &format!("{CGROUP_ROOT}/cgroup.subtree_control"),
        "+pids +memory +cpu",
    )?;
    match std::fs::create_dir(TENANT_CGROUP) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(format!("{TENANT_CGROUP}: {e}"))
        }
        _ => {}
    }
    write(&format!("{TENANT_CGROUP}/pids.max"), &PIDS_MAX.to_string())?;
    let total_kib = crate::procfs::mem_total_kib();
    let limit_kib = total_kib
        .saturating_sub(AGENT_RESERVE_KIB)
        .max(total_kib / 2);
    write(
        &format!("{TENANT_CGROUP}/memory.max"),
        &(limit_kib * 1024).to_string(),
    )?;
    write(&format!("{TENANT_CGROUP}/cpu.weight"), "10")
}

/// In the tenant's init: new mount and cgroup namespaces with every agent-only mount gone
/// and the tenant's own `/proc` (of its PID namespace), `/dev` (no channel device),
/// `/dev/pts`, `/dev/shm` and cgroup v2 view.
pub fn make_tenant_namespaces() -> Result<(), String> {
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("unshare: {e}"))?;
    make_mounts_private()?;
    for target in [AGENT_DIR, CGROUP_ROOT, "/proc", "/dev"] {
        umount2(target, MntFlags::MNT_DETACH).map_err(|e| format!("unmounting {target}: {e}"))?;
    }
    let nosuid = MsFlags::MS_NOSUID;
    let noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount(Some("proc"), "/proc", Some("proc"), noexec, None::<&str>)
        .map_err(|e| mount_err("/proc", e))?;
    mount(
        Some("cgroup2"),
        CGROUP_ROOT,
        Some("cgroup2"),
        noexec,
        None::<&str>,
    )
    .map_err(|e| mount_err(CGROUP_ROOT, e))?;
    mount(
        Some("tmpfs"),
        "/dev",
        Some("tmpfs"),
        nosuid | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1024k"),
    )
    .map_err(|e| mount_err("/dev", e))?;
    let chr = |name: &str, perm: u32, major: u64, minor: u64| {
        let path = format!("/dev/{name}");
        mknod(
            path.as_str(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(perm),
            makedev(major, minor),
        )
        .map_err(|e| format!("mknod {path}: {e}"))
    };
    chr("null", 0o666, 1, 3)?;
    chr("zero", 0o666, 1, 5)?;
    chr("full", 0o666, 1, 7)?;
    chr("random", 0o666, 1, 8)?;
    chr("urandom", 0o666, 1, 9)?;
    chr("tty", 0o666, 5, 0)?;
    chr("console", 0o600, 5, 1)?;
    chr("ttyS0", 0o600, CONSOLE_DEV.0, CONSOLE_DEV.1)?;
    chr("kmsg", 0o644, 1, 11)?;
    for dir in ["/dev/pts", "/dev/shm"] {
        std::fs::create_dir(dir).map_err(|e| format!("{dir}: {e}"))?;
    }
    mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        noexec,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| mount_err("/dev/pts", e))?;
    mount(
        Some("tmpfs"),
        "/dev/shm",
        Some("tmpfs"),
        noexec,
        Some("mode=1777"),
    )
    .map_err(|e| mount_err("/dev/shm", e))?;
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, link).map_err(|e| format!("{link}: {e}"))?;
    }
    Ok(())
}
