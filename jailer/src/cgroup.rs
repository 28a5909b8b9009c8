//! Per-VM cgroups by direct cgroupfs writes: v1 (one directory in each of the `pids`,
//! `memory` and `cpu` hierarchies) or v2 (one directory in the unified hierarchy, used
//! only where it has the `pids`, `memory` and `cpu` controllers).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The controllers a jail needs.
pub const CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];

/// The CFS period written with a CPU limit, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup interface the host offers for the jail's controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A controller the jail needs is not available.
    #[error("cgroup controller `{0}` is not available: neither a cgroup v1 hierarchy with it is mounted nor does the cgroup2 hierarchy offer it in cgroup.controllers")]
    MissingController(&'static str),
    /// A cgroupfs file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Processes were still in the cgroup after they were killed.
    #[error("{path}: processes remain after SIGKILL")]
    Busy {
        /// The cgroup directory.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One hierarchy the jail uses: where it is mounted and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// `pids`, `memory` or `cpu` for v1; `unified` for v2.
    pub controller: &'static str,
    /// Where the hierarchy is mounted.
    pub mount: PathBuf,
    /// This process's own cgroup directory in it.
    pub own: PathBuf,
}

/// The cgroup hierarchies of this host, as this process sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    /// v1 or v2.
    pub version: Version,
    /// One entry per v1 controller, or the single unified hierarchy.
    pub hierarchies: Vec<Hierarchy>,
}

struct MountEntry {
    root: String,
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountEntry {
                root: unescape(l.get(3)?),
                point: PathBuf::from(unescape(l.get(4)?)),
                fstype: r.first()?.to_string(),
                options: r.get(2)?.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup path for a v1 controller, or for v2 (`None`).
fn own_path(controller: Option<&str>) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            Some(c) => ctrls.split(',').any(|x| x == c),
            None => ctrls.is_empty(),
        };
        hit.then(|| path.to_string())
    })
}

fn own_dir(m: &MountEntry, path: Option<String>) -> PathBuf {
    let path = path.unwrap_or_else(|| "/".into());
    let rel = match path.strip_prefix(m.root.trim_end_matches('/')) {
        Some(rest) if m.root != "/" => rest.to_string(),
        _ if m.root == "/" => path.clone(),
        _ => "/".into(),
    };
    m.point.join(rel.trim_start_matches('/'))
}

impl Cgroups {
    /// Finds the hierarchies: v2 where the unified hierarchy offers every controller the
    /// jail needs, v1 where each has a hierarchy of its own; an error names what is missing.
    pub fn detect() -> Result<Cgroups, CgroupError> {
        let all = mounts();
        if let Some(m) = all.iter().find(|m| m.fstype == "cgroup2") {
            let offered =
                std::fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default();
            let offered: Vec<&str> = offered.split_whitespace().collect();
            if CONTROLLERS.iter().all(|c| offered.contains(c)) {
                return Ok(Cgroups {
                    version: Version::V2,
                    hierarchies: vec![Hierarchy {
                        controller: "unified",
                        mount: m.point.clone(),
                        own: own_dir(m, own_path(None)),
                    }],
                });
            }
        }
        let mut hierarchies = Vec::new();
        for c in CONTROLLERS {
            let m = all
                .iter()
                .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == c))
                .ok_or(CgroupError::MissingController(c))?;
            hierarchies.push(Hierarchy {
                controller: c,
                mount: m.point.clone(),
                own: own_dir(m, own_path(Some(c))),
            });
        }
        Ok(Cgroups {
            version: Version::V1,
            hierarchies,
        })
    }

    /// The parent directory in each hierarchy: an absolute `parent` (`/modvisor`) is taken
    /// from the hierarchy's root, a relative one (`modvisor`) from this process's own cgroup.
    pub fn parent_dirs(&self, parent: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| match parent.strip_prefix('/') {
                Some(abs) => h.mount.join(abs),
                None => h.own.join(parent),
            })
            .collect()
    }

    /// Removes `parent`'s directories and then each of its own ancestors up to where it
    /// starts, as far as they are empty; a parent that still holds groups stays.
    pub fn remove_parent(&self, parent: &str) {
        let depth = parent.trim_matches('/').split('/').count();
        for dir in self.parent_dirs(parent) {
            for d in dir.ancestors().take(depth) {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
            }
        }
    }

    /// The handle of group `name` under `parent` (which may or may not exist).
    pub fn group(&self, parent: &str, name: &str) -> Group {
        Group {
            version: self.version,
            dirs: self
                .parent_dirs(parent)
                .into_iter()
                .map(|p| p.join(name))
                .collect(),
        }
    }

    /// Creates `parent` in every hierarchy and, with v2, enables the controllers down to it
    /// (which the kernel refuses for a cgroup that holds processes: a relative parent under
    /// an agent that is not in the root cgroup).
    pub fn ensure_parent(&self, parent: &str) -> Result<(), CgroupError> {
        for (h, dir) in self.hierarchies.iter().zip(self.parent_dirs(parent)) {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            if self.version == Version::V2 {
                enable_controllers(&h.mount, &dir)?;
            }
        }
        Ok(())
    }

    /// Creates group `name` under `parent` and writes its limits.
    pub fn create(
        &self,
        parent: &str,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<Group, CgroupError> {
        self.ensure_parent(parent)?;
        let group = self.group(parent, name);
        for dir in &group.dirs {
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(CgroupError::Io {
                        path: dir.clone(),
                        source: e,
                    })
                }
            }
        }
        if let Err(e) = group.write_limits(limits) {
            let _ = group.remove();
            return Err(e);
        }
        Ok(group)
    }
}

/// Writes `+pids +memory +cpu` into `cgroup.subtree_control` from the hierarchy's root down
/// to `parent`, so that `parent`'s children get the controllers.
fn enable_controllers(mount: &Path, parent: &Path) -> Result<(), CgroupError> {
    let rel = parent.strip_prefix(mount).unwrap_or(Path::new(""));
    let mut dir = mount.to_path_buf();
    let line = CONTROLLERS.map(|c| format!("+{c}")).join(" ");
    let mut chain = vec![dir.clone()];
    for c in rel.components() {
        dir.push(c);
        chain.push(dir.clone());
    }
    for d in chain {
        let f = d.join("cgroup.subtree_control");
        let current = std::fs::read_to_string(&f).unwrap_or_default();
        if CONTROLLERS
            .iter()
            .all(|c| current.split_whitespace().any(|x| x == *c))
        {
            continue;
        }
        std::fs::write(&f, &line).map_err(io(&f))?;
    }
    Ok(())
}

/// The limits written into a jail's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Tasks (processes and threads): `pids.max`.
    pub pids_max: u64,
    /// Memory in bytes: `memory.limit_in_bytes` / `memory.max`; swap is not allowed on top.
    pub memory_bytes: u64,
    /// CPU in thousandths of a core (`cpu.cfs_quota_us` / `cpu.max`), `None` for no limit.
    pub cpu_millicores: Option<u64>,
}

/// One jail's cgroup: a directory per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// v1 or v2.
    pub version: Version,
    /// For v1 the `pids`, `memory` and `cpu` directories, for v2 the one directory.
    pub dirs: Vec<PathBuf>,
}

fn write(path: PathBuf, value: &str) -> Result<(), CgroupError> {
    std::fs::write(&path, value).map_err(io(&path))
}

impl Group {
    fn dir(&self, controller: usize) -> &Path {
        match self.version {
            Version::V1 => &self.dirs[controller],
            Version::V2 => &self.dirs[0],
        }
    }

    fn write_limits(&self, l: &CgroupLimits) -> Result<(), CgroupError> {
        let (pids, mem, cpu) = (self.dir(0), self.dir(1), self.dir(2));
        write(pids.join("pids.max"), &l.pids_max.to_string())?;
        match self.version {
            Version::V1 => {
                write(
                    mem.join("memory.limit_in_bytes"),
                    &l.memory_bytes.to_string(),
                )?;
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(memsw, &l.memory_bytes.to_string())?;
                }
                if let Some(m) = l.cpu_millicores {
                    write(cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let quota = (m * CPU_PERIOD_US / 1000).max(1000);
                    write(cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            Version::V2 => {
                write(mem.join("memory.max"), &l.memory_bytes.to_string())?;
                let swap = mem.join("memory.swap.max");
                if swap.exists() {
                    write(swap, "0")?;
                }
                if let Some(m) = l.cpu_millicores {
                    let quota = (m * CPU_PERIOD_US / 1000).max(1000);
                    write(cpu.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes itself into to join the group.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether any of the group's directories exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.exists())
    }

    /// The processes in the group (host pids).
    pub fn pids(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// How many times the kernel's OOM killer killed a process of the group.
    pub fn oom_kills(&self) -> u64 {
        self.memory_event("oom_kill")
    }

    /// A `key value` counter of v1 `memory.oom_control` or v2 `memory.events`.
    fn memory_event(&self, key: &str) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        std::fs::read_to_string(self.dir(1).join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
            .unwrap_or(0)
    }

    fn memory_value(&self, v1: &str, v2: &str) -> Option<u64> {
        let file = match self.version {
            Version::V1 => v1,
            Version::V2 => v2,
        };
        std::fs::read_to_string(self.dir(1).join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the group's memory use ever reached its limit. v2: the `max` or `oom` count
    /// of `memory.events`. v1: a `failcnt`, or a peak (`max_usage_in_bytes`, also of
    /// memory+swap) within 1 MiB of the limit; the peak is needed because with a
    /// memory+swap limit the kernel may OOM-kill without counting a failure.
    pub fn limit_reached(&self) -> bool {
        match self.version {
            Version::V1 => {
                let failed = ["memory.failcnt", "memory.memsw.failcnt"]
                    .iter()
                    .any(|f| self.memory_value(f, "").unwrap_or(0) > 0);
                let limit = self.memory_limit().unwrap_or(u64::MAX);
                let peaked = [
                    "memory.max_usage_in_bytes",
                    "memory.memsw.max_usage_in_bytes",
                ]
                .iter()
                .filter_map(|f| self.memory_value(f, ""))
                .any(|peak| peak.saturating_add(1 << 20) >= limit);
                failed || peaked
            }
            Version::V2 => self.memory_event("max") > 0 || self.memory_event("oom") > 0,
        }
    }

    /// The peak memory use in bytes, where the kernel reports it.
    pub fn memory_peak(&self) -> Option<u64> {
        self.memory_value("memory.max_usage_in_bytes", "memory.peak")
    }

    /// The memory limit in bytes (`None` when unlimited or the group is gone).
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_value("memory.limit_in_bytes", "memory.max")
    }

    /// SIGKILLs every process in the group until none is left (or `within` passes).
    pub fn kill_all(&self, within: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + within;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if self.version == Version::V2 {
                let _ = std::fs::write(self.dirs[0].join("cgroup.kill"), "1");
            }
            for pid in pids {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy {
                    path: self.dirs[0].clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the group's directories (they must hold no process); a missing one is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for d in &self.dirs {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // An exiting process may hold the group for a moment.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => {
                        return Err(CgroupError::Io {
                            path: d.clone(),
                            source: e,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
    }

    #[test]
    fn own_dir_strips_the_mount_root() {
        let m = MountEntry {
            root: "/".into(),
            point: "/sys/fs/cgroup/memory".into(),
            fstype: "cgroup".into(),
            options: vec![],
        };
        assert_eq!(
            own_dir(&m, Some("/a/b".into())),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        let n = MountEntry {
            root: "/a".into(),
            ..m
        };
        assert_eq!(
            own_dir(&n, Some("/a/b".into())),
            PathBuf::from("/sys/fs/cgroup/memory/b")
        );
        assert_eq!(
            own_dir(&n, Some("/z".into())),
            PathBuf::from("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn parents_are_absolute_or_relative_to_our_own_cgroup() {
        let c = Cgroups {
            version: Version::V2,
            hierarchies: vec![Hierarchy {
                controller: "unified",
                mount: "/cg".into(),
                own: "/cg/svc".into(),
            }],
        };
        assert_eq!(
            c.parent_dirs("/modvisor"),
            vec![PathBuf::from("/cg/modvisor")]
        );
        assert_eq!(
            c.parent_dirs("modvisor"),
            vec![PathBuf::from("/cg/svc/modvisor")]
        );
        assert_eq!(
            c.group("m", "vm1").dirs,
            vec![PathBuf::from("/cg/svc/m/vm1")]
        );
    }
}
