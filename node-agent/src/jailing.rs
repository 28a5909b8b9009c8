//! How the node agent jails its VM processes with `modvisor-jailer`: one jail per guest
//! (cgroup, namespaces, pivot_root, per-VM uid, rlimits, and seccomp for our vmm), the
//! paths a hypervisor sees inside it, stale jails at start-up, and OOM kills.

use crate::driver::{DriverError, GuestSpec};
use modvisor_jailer::{
    cleanup_stale, jail_ids, Jail, JailConfig, JailError, JailSpec, Limits, Overhead,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Where a guest's files appear inside its jail.
pub mod inside {
    /// The guest kernel (read-only).
    pub const KERNEL: &str = "/boot/vmlinuz";
    /// The initramfs (read-only).
    pub const INITRD: &str = "/boot/initrd.img";
    /// The guest's run directory (writable by the jail's uid only).
    pub const RUN_DIR: &str = "/run/vm";
    /// A hypervisor binary that is not under the host's `/usr` (read-only).
    pub const PROGRAM: &str = "/hypervisor";
}

/// The operator's jail settings for one node agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailOptions {
    /// The cgroup under which the node's jails go as `<parent>/<node name>/<vm id>`:
    /// relative to the agent's own cgroup, or absolute (`/modvisor`) from each hierarchy's
    /// root.
    pub cgroup_parent: String,
    /// The first per-VM uid of this node (two agents on one host need disjoint ranges).
    pub uid_base: u32,
    /// How many per-VM uids this node may use.
    pub uid_count: u32,
    /// Memory each VM process may use beyond its guest's memory, in MiB.
    pub memory_overhead_mib: u64,
}

impl Default for JailOptions {
    fn default() -> Self {
        JailOptions {
            cgroup_parent: "/modvisor".into(),
            uid_base: 1_000_000,
            uid_count: 65_536,
            memory_overhead_mib: Overhead::default().memory_mib,
        }
    }
}

/// The jails of one node agent: `<data dir>/jails/<vm id>`, cgroups under
/// `<cgroup parent>/<node name>`.
#[derive(Debug, Clone)]
pub struct NodeJails {
    config: JailConfig,
    overhead: Overhead,
}

impl NodeJails {
    /// The jails of node `node` keeping its state in `data_dir`.
    pub fn new(data_dir: &Path, node: &str, options: &JailOptions) -> Self {
        let mut config = JailConfig::new(data_dir.join("jails"));
        config.cgroup_parent = format!("{}/{node}", options.cgroup_parent.trim_end_matches('/'));
        config.uid_base = options.uid_base;
        config.uid_count = options.uid_count;
        NodeJails {
            config,
            overhead: Overhead {
                memory_mib: options.memory_overhead_mib,
                ..Overhead::default()
            },
        }
    }

    /// Checks that this host can jail (root, every cgroup controller, the node's cgroup
    /// parent can be made) and removes what crashes left behind: jails with no process,
    /// and jails of VMs not in `keep` (no record names them, so nobody would ever adopt
    /// them). A jail that cannot be removed is logged and left. Returns a line for the log.
    pub fn prepare_host(&self, keep: &[String]) -> Result<String, JailError> {
        let cgroups = modvisor_jailer::check_host()?;
        cgroups.ensure_parent(&self.config.cgroup_parent)?;
        let mut removed = cleanup_stale(&self.config)?;
        for id in jail_ids(&self.config) {
            if keep.contains(&id) {
                continue;
            }
            if let Ok(jail) = Jail::open(&self.config, &id) {
                match jail.teardown() {
                    Ok(()) => removed.push(id),
                    Err(e) => {
                        tracing::warn!(jail = %id, error = %e, "cannot remove an orphaned jail")
                    }
                }
            }
        }
        Ok(format!(
            "jail on: cgroup {:?} under {}, jails in {}, uids {}..{}, memory overhead {} MiB{}",
            cgroups.version,
            self.config.cgroup_parent,
            self.config.dir.display(),
            self.config.uid_base,
            u64::from(self.config.uid_base) + u64::from(self.config.uid_count),
            self.overhead.memory_mib,
            if removed.is_empty() {
                String::new()
            } else {
                format!("; removed stale jails {}", removed.join(", "))
            }
        ))
    }

    /// Removes the node's cgroup parent (and its own parents, as far as they are empty)
    /// once no jail is left in it.
    pub fn remove_cgroup_parent(&self) {
        if let Ok(cgroups) = modvisor_jailer::check_host() {
            cgroups.remove_parent(&self.config.cgroup_parent);
        }
    }

    /// Makes the jail of guest `spec`: kernel and initramfs read-only, the run directory
    /// writable, `program` read-only at [`inside::PROGRAM`] when it is not under `/usr`,
    /// the host `devices`, and `seccomp`. A jail of the same id left by an earlier run (its
    /// VM could not be adopted) is torn down first, killing what still runs in it.
    pub fn prepare(
        &self,
        spec: &GuestSpec,
        program: &Path,
        devices: &[&str],
        seccomp: Option<modvisor_jailer::BpfProgram>,
    ) -> Result<GuestJail, DriverError> {
        let fail = |e: JailError| DriverError::Start {
            what: format!("the jail of {}", spec.id),
            reason: e.to_string(),
        };
        if self.config.dir.join(&spec.id).exists() {
            if let Ok(old) = Jail::open(&self.config, &spec.id) {
                old.teardown().map_err(fail)?;
            }
        }
        let limits = Limits::for_vm(spec.vcpus, spec.memory_mib, &self.overhead);
        let mut js = JailSpec::new(spec.id.clone(), limits);
        js.bind_ro(&spec.kernel, inside::KERNEL)
            .bind_ro(&spec.initrd, inside::INITRD)
            .bind_rw(spec.guest_dir(), inside::RUN_DIR);
        // A program under the host's /usr is there in the jail (QEMU needs its firmware in
        // /usr/share too); any other is bound read-only on its own.
        let program = std::fs::canonicalize(program).map_err(|e| DriverError::Io {
            path: program.to_path_buf(),
            source: e,
        })?;
        let program = if program.starts_with("/usr") {
            program
        } else {
            js.bind_ro(&program, inside::PROGRAM);
            PathBuf::from(inside::PROGRAM)
        };
        js.devices = devices.iter().map(PathBuf::from).collect();
        js.seccomp = seccomp;
        let jail = Jail::prepare(&self.config, &js).map_err(fail)?;
        tracing::info!(vm = %spec.id, enforced = %jail.enforced(), "jailed");
        Ok(GuestJail {
            jail: Some(jail),
            program,
            memory_mib: limits.cgroup.memory_bytes >> 20,
        })
    }

    /// Reopens the jail of a guest started by an earlier run of the agent, to adopt it;
    /// `None` if it has none (it was started with `--jail off`).
    pub fn reopen(&self, id: &str) -> Option<GuestJail> {
        let jail = Jail::open(&self.config, id).ok()?;
        let memory_mib = jail.cgroup().memory_limit().map_or(0, |b| b >> 20);
        Some(GuestJail {
            jail: Some(jail),
            program: PathBuf::new(),
            memory_mib,
        })
    }
}

/// The jail in which to adopt hypervisor process `pid` of VM `id`: its jail under `jails`,
/// or none with `--jail off`. With the jail on and no jail for `id`, a process that
/// `is_ours` recognises running unjailed (started with `--jail off`) is killed, never
/// adopted outside its jail, and there is nothing to adopt.
pub fn jail_for_adoption(
    jails: Option<&NodeJails>,
    program: &Path,
    id: &str,
    pid: u32,
    is_ours: impl Fn(&GuestJail) -> bool,
) -> Option<GuestJail> {
    let Some(jails) = jails else {
        return Some(GuestJail::none(program));
    };
    if let Some(jail) = jails.reopen(id) {
        return Some(jail);
    }
    // Held before it is recognised: a pid freed since is never signalled.
    let process = modvisor_jailer::pidfd::PidFd::open(pid);
    if let Some(process) = process.filter(|_| is_ours(&GuestJail::none(program))) {
        tracing::warn!(vm = %id, pid, "an unjailed hypervisor runs for this VM; stopping it to start the VM jailed");
        if let Err(e) = process.signal(libc::SIGKILL) {
            tracing::warn!(vm = %id, pid, error = %e, "cannot stop the unjailed hypervisor");
        }
    }
    None
}

/// A guest's jail (or none, with `--jail off`): how its hypervisor is started and what
/// ended it.
#[derive(Debug)]
pub struct GuestJail {
    jail: Option<Jail>,
    program: PathBuf,
    memory_mib: u64,
}

impl GuestJail {
    /// No jail: `program` runs as the agent's own user, with the host's view.
    pub fn none(program: &Path) -> Self {
        GuestJail {
            jail: None,
            program: program.to_path_buf(),
            memory_mib: 0,
        }
    }

    /// Whether there is a jail.
    pub fn is_jailed(&self) -> bool {
        self.jail.is_some()
    }

    /// `path` (a host path of the guest's kernel, initramfs or guest directory) as the
    /// hypervisor sees it.
    pub fn path(&self, spec: &GuestSpec, path: &Path) -> PathBuf {
        if self.jail.is_none() {
            return path.to_path_buf();
        }
        if path == spec.kernel {
            return inside::KERNEL.into();
        }
        if path == spec.initrd {
            return inside::INITRD.into();
        }
        match path.strip_prefix(spec.guest_dir()) {
            Ok(rest) => Path::new(inside::RUN_DIR).join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// Whether process `pid` runs in this jail (false without a jail).
    pub fn holds(&self, pid: u32) -> bool {
        self.jail
            .as_ref()
            .is_some_and(|j| j.cgroup().pids().contains(&pid))
    }

    /// The command for the hypervisor, entering the jail when there is one.
    pub fn command(&self) -> Command {
        match &self.jail {
            Some(j) => j.command(&self.program),
            None => Command::new(&self.program),
        }
    }

    /// Spawns `cmd` (from [`GuestJail::command`]); if that fails, the jail is released.
    pub fn spawn(&mut self, cmd: &mut Command) -> std::io::Result<Child> {
        let spawned = match &self.jail {
            Some(j) => j.spawn(cmd),
            None => cmd.spawn(),
        };
        if spawned.is_err() {
            self.release();
        }
        spawned
    }

    /// Why the hypervisor ended, when the kernel's OOM killer ended it: at the jail's
    /// memory limit (the limit was hit), or for the host's lack of memory. Call before
    /// [`GuestJail::release`].
    pub fn oom_reason(&self) -> Option<String> {
        let jail = self.jail.as_ref()?;
        if jail.oom_kills() == 0 {
            return None;
        }
        Some(if jail.cgroup().limit_reached() {
            format!(
                "OOM: the kernel's OOM killer ended the VM process at its jail's memory limit of {} MiB",
                self.memory_mib
            )
        } else {
            "OOM: the kernel's OOM killer ended the VM process (the host ran out of memory)".into()
        })
    }

    /// Kills whatever is left in the jail and removes it. Failures are logged: a jail that
    /// cannot be removed now is removed as stale at the agent's next start.
    pub fn release(&mut self) {
        if let Some(jail) = self.jail.take() {
            let id = jail.id().to_string();
            if let Err(e) = jail.teardown() {
                tracing::warn!(vm = %id, error = %e, "removing the jail");
            }
        }
    }
}
