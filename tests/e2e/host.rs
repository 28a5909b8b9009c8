//! The host as a test sees it: processes (their command line, uid, cgroups and root) and
//! the cleanup of what a test's node agents leave when the test fails half-way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A process on the host.
#[derive(Debug, Clone)]
pub struct HostProcess {
    pub pid: i32,
    /// Its command line, arguments joined by spaces.
    pub cmdline: String,
    /// Its real uid.
    pub uid: u32,
    /// `/proc/<pid>/cgroup`.
    pub cgroups: String,
    /// The names in its root directory (as it sees `/`).
    pub root_entries: Vec<String>,
}

/// Every process on the host.
pub fn processes() -> Vec<HostProcess> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(HostProcess {
                pid,
                cmdline: String::from_utf8_lossy(&cmd).replace('\0', " "),
                uid,
                cgroups: std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default(),
                root_entries: std::fs::read_dir(e.path().join("root"))
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Processes whose command line holds `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<HostProcess> {
    processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(needle))
        .collect()
}

/// Kills (SIGKILL) every process whose command line names `dir` (node agents) or that is
/// in a cgroup under `cgroup_parent` (jailed hypervisors, whose command lines name only
/// paths inside their jails), waits until they are gone, then removes every cgroup under
/// `cgroup_parent` and the parent itself.
pub struct HostCleanup {
    pub dir: PathBuf,
    pub cgroup_parent: String,
}

/// The pids in every `cgroup.procs` at or under `dir`.
fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten().filter(|e| e.path().is_dir()) {
            pids.extend(cgroup_pids(&e.path()));
        }
    }
    pids
}

fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten().filter(|e| e.path().is_dir()) {
            remove_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl HostCleanup {
    fn pids(&self, parents: &[PathBuf]) -> Vec<i32> {
        let dir = self.dir.to_string_lossy();
        let mut pids: Vec<i32> = processes()
            .into_iter()
            .filter(|p| p.cmdline.contains(&*dir))
            .map(|p| p.pid)
            .collect();
        for parent in parents {
            pids.extend(cgroup_pids(parent));
        }
        pids
    }
}

impl Drop for HostCleanup {
    fn drop(&mut self) {
        let Ok(cgroups) = modvisor_jailer::check_host() else {
            return;
        };
        let parents = cgroups.parent_dirs(&self.cgroup_parent);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.pids(&parents);
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for dir in &parents {
            remove_tree(dir);
        }
        cgroups.remove_parent(&self.cgroup_parent);
        remove_namespaces(&self.dir);
        // The host-wide uid claims of the jails that were in `dir`.
        let registry = modvisor_jailer::JailConfig::new(&self.dir).uid_registry;
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        for e in std::fs::read_dir(registry).into_iter().flatten().flatten() {
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            if Path::new(owner.trim()).starts_with(&dir) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Removes the network namespaces of the node agents (and underlays) whose data lived in
/// `dir` or up to two levels below it: their names end with a hash of that directory.
pub fn remove_namespaces(dir: &Path) {
    use modvisor_node_agent::network::names::short_hash;
    let mut hashes = Vec::new();
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        hashes.push(short_hash(d.as_os_str().as_encoded_bytes()));
        if depth < 2 {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    dirs.push((e.path(), depth + 1));
                }
            }
        }
    }
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("modvisor-") || name.starts_with("mvul-");
        if ours && hashes.iter().any(|h| name.ends_with(&format!("-{h}"))) {
            let status = std::process::Command::new("ip")
                .args(["netns", "delete", &name])
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("cannot remove network namespace {name}");
            }
        }
    }
}

/// Whether the jail of VM `id` on node `node` (data directory `node_dir`, cgroups under
/// `cgroup_parent`) is gone: no jail directory, no cgroup.
pub fn jail_gone(node_dir: &Path, cgroup_parent: &str, node: &str, id: &str) -> bool {
    let group = modvisor_jailer::check_host()
        .unwrap()
        .group(&format!("{cgroup_parent}/{node}"), id);
    !node_dir.join("jails").join(id).exists() && !group.exists()
}
