//! A jail on the host: its directory, uid, cgroup, and how a command enters it.

use crate::cgroup::{Cgroups, Group};
use crate::child::{DevNode, MountOp, Plan};
use crate::{JailError, Limits};
use nix::sys::resource::Resource;
use seccompiler::BpfProgram;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

/// Where jails live and which ids they get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailConfig {
    /// The directory holding one directory per jail (`<dir>/<id>/root` is the new root).
    pub dir: PathBuf,
    /// The cgroup parent: absolute (`/modvisor`) from each hierarchy's root, or relative
    /// (`modvisor`, the default) to this process's own cgroup.
    pub cgroup_parent: String,
    /// The first per-VM uid (and gid).
    pub uid_base: u32,
    /// How many per-VM uids there are.
    pub uid_count: u32,
    /// The host-wide registry of per-VM uids in use, shared by every node agent on the
    /// host (`/run/modvisor/uids`).
    pub uid_registry: PathBuf,
}

impl JailConfig {
    /// Jails under `dir`, cgroup parent `modvisor`, uids from 1 000 000 for 65 536 jails.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JailConfig {
            dir: dir.into(),
            cgroup_parent: "modvisor".into(),
            uid_base: 1_000_000,
            uid_count: 65_536,
            uid_registry: PathBuf::from("/run/modvisor/uids"),
        }
    }
}

/// A host path exposed in the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host file or directory.
    pub host: PathBuf,
    /// Where it appears in the jail (absolute).
    pub inside: PathBuf,
    /// Writable (the host path is given to the jail's uid) or read-only.
    pub writable: bool,
}

/// What one jail holds and allows.
#[derive(Debug, Clone)]
pub struct JailSpec {
    /// The jail's id (the VM id): `[A-Za-z0-9._-]`, at most 64 bytes.
    pub id: String,
    /// Limits.
    pub limits: Limits,
    /// Host paths exposed in the jail.
    pub binds: Vec<Bind>,
    /// Host character devices directly in `/dev` (e.g. `/dev/kvm`) made as fresh nodes in
    /// the jail's own `/dev` (a read-only tmpfs), mode 0600 and owned by the jail's uid;
    /// `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random` and `/dev/urandom` always are
    /// there, mode 0666.
    pub devices: Vec<PathBuf>,
    /// Expose the host's `/usr` (and `/bin`, `/lib`, ... as the host lays them out) and
    /// `/etc/ld.so.cache` read-only, nosuid, nodev: dynamically linked programs need them.
    pub host_usr: bool,
    /// Mount a procfs of the jail's own pid namespace at `/proc`.
    pub proc: bool,
    /// A seccomp filter installed right before exec.
    pub seccomp: Option<BpfProgram>,
}

impl JailSpec {
    /// A spec with the host's `/usr`, no `/proc`, no seccomp.
    pub fn new(id: impl Into<String>, limits: Limits) -> Self {
        JailSpec {
            id: id.into(),
            limits,
            binds: Vec::new(),
            devices: Vec::new(),
            host_usr: true,
            proc: false,
            seccomp: None,
        }
    }

    /// Exposes `host` read-only at `inside`.
    pub fn bind_ro(&mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> &mut Self {
        self.binds.push(Bind {
            host: host.into(),
            inside: inside.into(),
            writable: false,
        });
        self
    }

    /// Exposes `host` writable at `inside`; the host path is chowned to the jail's uid.
    pub fn bind_rw(&mut self, host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> &mut Self {
        self.binds.push(Bind {
            host: host.into(),
            inside: inside.into(),
            writable: true,
        });
        self
    }
}

const BASE_DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// A jail ready for (or running) a process.
#[derive(Debug)]
pub struct Jail {
    id: String,
    dir: PathBuf,
    registry: PathBuf,
    uid: u32,
    group: Group,
    plan: Option<Arc<Plan>>,
    enforced: String,
}

pub(crate) fn ioe(path: &Path) -> impl FnOnce(std::io::Error) -> JailError + '_ {
    move |source| JailError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cstr(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| JailError::Invalid(format!("{}: NUL in path", p.display())))
}

fn valid_id(id: &str) -> Result<(), JailError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        JailError::Invalid(format!(
            "id {id:?}: use 1 to 64 of [A-Za-z0-9._-], not starting with a dot"
        ))
    })
}

/// `inside` as a relative path under the root, refusing `..` and relative paths.
fn under(root: &Path, inside: &Path) -> Result<PathBuf, JailError> {
    let mut out = root.to_path_buf();
    let mut any = false;
    for c in inside.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => {
                out.push(n);
                any = true;
            }
            _ => {
                return Err(JailError::Invalid(format!(
                    "{}: must be absolute, without `..`",
                    inside.display()
                )))
            }
        }
    }
    if !inside.is_absolute() || !any {
        return Err(JailError::Invalid(format!(
            "{}: must be absolute and not `/`",
            inside.display()
        )));
    }
    Ok(out)
}

/// Creates a mount point for `host` at `target`: a directory or an empty file.
fn mount_point(host: &Path, target: &Path) -> Result<(), JailError> {
    let meta = std::fs::metadata(host).map_err(ioe(host))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(ioe(parent))?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(target).map_err(ioe(target))
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .map(drop)
            .map_err(ioe(target))
    }
}

/// Whether the host can jail: root, and every controller. Says what it would enforce.
pub fn check_host() -> Result<Cgroups, JailError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(JailError::Unavailable(
            "the node agent is not root: namespaces, pivot_root, cgroups and the uid drop need it"
                .into(),
        ));
    }
    Cgroups::detect().map_err(|e| JailError::Unavailable(e.to_string()))
}

/// Whether anything is mounted at or under `dir` in this mount namespace.
fn mounted_under(dir: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|p| Path::new(&crate::cgroup::unescape(p)).starts_with(dir))
    })
}

impl Jail {
    /// Makes the jail: its directory and root, a per-VM uid, the cgroup with its limits,
    /// and the plan the child follows. Nothing runs yet.
    pub fn prepare(config: &JailConfig, spec: &JailSpec) -> Result<Jail, JailError> {
        valid_id(&spec.id)?;
        let cgroups = check_host()?;
        std::fs::create_dir_all(&config.dir).map_err(ioe(&config.dir))?;
        let dir = config.dir.join(&spec.id);
        let root = dir.join("root");
        let uid = crate::uid::allocate(config, &dir, &root)?;
        let jail = Jail {
            id: spec.id.clone(),
            dir: dir.clone(),
            registry: config.uid_registry.clone(),
            uid,
            group: cgroups.group(&config.cgroup_parent, &spec.id),
            plan: None,
            enforced: String::new(),
        };
        // The cgroup's directories, recorded before they exist: teardown and cleanup find
        // them even if the agent comes back with another parent or in another cgroup.
        let record = dir.join("cgroup");
        let dirs: Vec<String> = jail
            .group
            .dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        // From here on, a failure removes what was made.
        let group = jail.group.clone();
        let made = std::fs::write(&record, dirs.join("\n"))
            .map_err(ioe(&record))
            .and_then(|()| jail.build(&cgroups, config, spec, &root));
        match made {
            Ok(j) => Ok(j),
            Err(e) => {
                let _ = group.remove();
                crate::uid::release(&config.uid_registry, &dir);
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn build(
        mut self,
        cgroups: &Cgroups,
        config: &JailConfig,
        spec: &JailSpec,
        root: &Path,
    ) -> Result<Jail, JailError> {
        let uid = self.uid;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
            .map_err(ioe(root))?;
        let mut mounts = Vec::new();
        let groups = vec![uid];
        let mut exposed = Vec::new();
        if spec.host_usr {
            for top in ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
                let host = Path::new("/").join(top);
                let Ok(meta) = std::fs::symlink_metadata(&host) else {
                    continue;
                };
                let target = root.join(top);
                if meta.file_type().is_symlink() {
                    let link = std::fs::read_link(&host).map_err(ioe(&host))?;
                    if !target.exists() {
                        std::os::unix::fs::symlink(&link, &target).map_err(ioe(&target))?;
                    }
                } else if meta.is_dir() {
                    mount_point(&host, &target)?;
                    mounts.push(MountOp::Bind {
                        src: cstr(&host)?,
                        dst: cstr(&target)?,
                        read_only: true,
                    });
                    exposed.push(format!("/{top} ro"));
                }
            }
            let cache = Path::new("/etc/ld.so.cache");
            if cache.exists() {
                let target = root.join("etc/ld.so.cache");
                mount_point(cache, &target)?;
                mounts.push(MountOp::Bind {
                    src: cstr(cache)?,
                    dst: cstr(&target)?,
                    read_only: true,
                });
            }
        }
        // The jail's /dev is a tmpfs of its own with fresh nodes: the everyday ones for
        // everybody, the devices of the spec (e.g. /dev/kvm) for the jail's uid only.
        let dev_dir = root.join("dev");
        std::fs::create_dir_all(&dev_dir).map_err(ioe(&dev_dir))?;
        let mut nodes = Vec::new();
        let all = BASE_DEVICES.iter().map(|d| (PathBuf::from(d), false));
        for (dev, private) in all.chain(spec.devices.iter().map(|d| (d.clone(), true))) {
            let meta = std::fs::metadata(&dev).map_err(ioe(&dev))?;
            let is_char = std::os::unix::fs::FileTypeExt::is_char_device(&meta.file_type());
            let name = dev
                .strip_prefix("/dev")
                .ok()
                .filter(|n| n.components().count() == 1);
            let (Some(name), true) = (name, is_char) else {
                return Err(JailError::Invalid(format!(
                    "{}: not a character device directly in /dev",
                    dev.display()
                )));
            };
            nodes.push(DevNode {
                path: cstr(&dev_dir.join(name))?,
                rdev: meta.rdev(),
                mode: if private { 0o600 } else { 0o666 },
                owner: if private { uid } else { 0 },
            });
            if private {
                exposed.push(format!("{} (uid {uid} only)", dev.display()));
            }
        }
        mounts.push(MountOp::Dev {
            dst: cstr(&dev_dir)?,
            nodes,
        });
        for b in &spec.binds {
            let target = under(root, &b.inside)?;
            mount_point(&b.host, &target)?;
            if b.writable {
                nix::unistd::chown(&b.host, Some(uid.into()), Some(uid.into())).map_err(|e| {
                    JailError::Io {
                        path: b.host.clone(),
                        source: e.into(),
                    }
                })?;
            }
            mounts.push(MountOp::Bind {
                src: cstr(&b.host)?,
                dst: cstr(&target)?,
                read_only: !b.writable,
            });
            exposed.push(format!(
                "{} {}",
                b.inside.display(),
                if b.writable { "rw" } else { "ro" }
            ));
        }
        if spec.proc {
            let target = root.join("proc");
            std::fs::create_dir_all(&target).map_err(ioe(&target))?;
            mounts.push(MountOp::Proc {
                dst: cstr(&target)?,
            });
            exposed.push("/proc (own pid namespace)".into());
        }
        let l = &spec.limits;
        self.group = cgroups.create(&config.cgroup_parent, &spec.id, &l.cgroup)?;
        let plan = Plan {
            cgroup_procs: self
                .group
                .procs_files()
                .iter()
                .map(|p| cstr(p))
                .collect::<Result<_, _>>()?,
            root: cstr(root)?,
            mounts,
            hostname: spec.id.clone(),
            uid,
            gid: uid,
            groups,
            rlimits: vec![
                (Resource::RLIMIT_NOFILE, l.nofile),
                (Resource::RLIMIT_NPROC, l.nproc),
                (Resource::RLIMIT_CORE, 0),
                (Resource::RLIMIT_FSIZE, l.fsize),
            ],
            seccomp: spec.seccomp.clone(),
        };
        self.enforced = format!(
            "cgroup {:?} (pids.max {}, memory {} MiB, cpu {}), namespaces mnt+pid+ipc+uts+net, pivot_root {}, uid/gid {uid}, no_new_privs, rlimits nofile {} nproc {} core 0 fsize {}, seccomp {}; exposed: {}",
            cgroups.version,
            l.cgroup.pids_max,
            l.cgroup.memory_bytes >> 20,
            l.cgroup.cpu_millicores.map(|m| format!("{m}m")).unwrap_or_else(|| "unlimited".into()),
            root.display(),
            l.nofile,
            l.nproc,
            l.fsize,
            if spec.seccomp.is_some() { "on" } else { "off" },
            exposed.join(", ")
        );
        self.plan = Some(Arc::new(plan));
        Ok(self)
    }

    /// Reopens the jail `id` made by an earlier process (to observe or tear it down); it
    /// cannot spawn.
    pub fn open(config: &JailConfig, id: &str) -> Result<Jail, JailError> {
        valid_id(id)?;
        let cgroups = check_host()?;
        let dir = config.dir.join(id);
        let uid = crate::uid::recorded(&dir)
            .ok_or_else(|| JailError::Invalid(format!("{}: no jail there", dir.display())))?;
        Ok(Jail {
            id: id.into(),
            group: recorded_group(&cgroups, &dir)
                .unwrap_or_else(|| cgroups.group(&config.cgroup_parent, id)),
            dir,
            registry: config.uid_registry.clone(),
            uid,
            plan: None,
            enforced: String::new(),
        })
    }

    /// The jail's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The per-VM uid (the gid is the same number).
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The jail's root as a host path.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The jail's cgroup.
    pub fn cgroup(&self) -> &Group {
        &self.group
    }

    /// How often the OOM killer killed a process of the jail.
    pub fn oom_kills(&self) -> u64 {
        self.group.oom_kills()
    }

    /// A one-line account of what the jail enforces and exposes, for logs.
    pub fn enforced(&self) -> &str {
        &self.enforced
    }

    /// A command for `program` (a path inside the jail) with an empty environment but
    /// `PATH`, entering the jail between fork and exec. Start it with [`Jail::spawn`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        if let Some(plan) = self.plan.clone() {
            // SAFETY: Plan::enter only makes system calls on data prepared before the fork.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || plan.enter());
            }
        }
        cmd
    }

    /// Spawns `cmd` (from [`Jail::command`]) as PID 1 of a new pid namespace: a helper
    /// thread unshares its pid namespace for children and forks. The returned child's id
    /// is its host pid.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Child> {
        if self.plan.is_none() {
            return Err(std::io::Error::other(
                "this jail was reopened; it cannot spawn",
            ));
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
                    .map_err(std::io::Error::from)?;
                cmd.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
        })
    }

    /// Kills whatever still runs in the jail and removes its cgroup and directory. The
    /// caller reaps its own child first or after; zombies do not hold the cgroup.
    pub fn teardown(self) -> Result<(), JailError> {
        remove(&self.group, &self.dir, &self.registry)
    }
}

/// The cgroup a jail recorded when it was made (absent for jails made before the record).
fn recorded_group(cgroups: &Cgroups, jail_dir: &Path) -> Option<Group> {
    let text = std::fs::read_to_string(jail_dir.join("cgroup")).ok()?;
    let dirs: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
    let inside = |d: &PathBuf| cgroups.hierarchies.iter().any(|h| d.starts_with(&h.mount));
    (dirs.len() == cgroups.hierarchies.len() && dirs.iter().all(inside)).then_some(Group {
        version: cgroups.version,
        dirs,
    })
}

fn remove(group: &Group, dir: &Path, registry: &Path) -> Result<(), JailError> {
    group.kill_all(Duration::from_secs(5))?;
    group.remove()?;
    if mounted_under(dir) {
        return Err(JailError::Mounted(dir.to_path_buf()));
    }
    crate::uid::release(registry, dir);
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(JailError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// The ids of the jails under `config.dir`.
pub fn jail_ids(config: &JailConfig) -> Vec<String> {
    std::fs::read_dir(&config.dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes jails left by a crash: every jail under `config.dir` whose cgroup holds no
/// process (a VM that still runs is left for its node agent to adopt), and every empty
/// cgroup under the parent with no jail directory. Returns the ids removed; a jail that
/// cannot be removed is logged and left for the next run.
pub fn cleanup_stale(config: &JailConfig) -> Result<Vec<String>, JailError> {
    let cgroups = check_host()?;
    let mut removed = Vec::new();
    let mut ids = jail_ids(config);
    for parent in cgroups.parent_dirs(&config.cgroup_parent) {
        if let Ok(rd) = std::fs::read_dir(&parent) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                if let Some(n) = e.file_name().to_str() {
                    if !ids.iter().any(|i| i == n) {
                        ids.push(n.to_string());
                    }
                }
            }
        }
    }
    for id in ids {
        if valid_id(&id).is_err() {
            continue;
        }
        let dir = config.dir.join(&id);
        let group = recorded_group(&cgroups, &dir)
            .unwrap_or_else(|| cgroups.group(&config.cgroup_parent, &id));
        if !group.pids().is_empty() {
            continue;
        }
        match remove(&group, &dir, &config.uid_registry) {
            Ok(()) => {
                tracing::info!(jail = %id, "removed a stale jail");
                removed.push(id);
            }
            Err(e) => tracing::warn!(jail = %id, error = %e, "cannot remove a stale jail"),
        }
    }
    Ok(removed)
}
