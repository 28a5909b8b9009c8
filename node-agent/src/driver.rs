//! The hypervisor-driver trait: how the node agent starts, observes and stops a guest,
//! whatever runs it (QEMU, or our own `modvisor vmm`).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// Unique id (the VM id), used in process names and paths.
    pub id: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The guest kernel (bzImage or vmlinux).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// A directory the driver owns for this guest (root's): the hypervisor's log, and
    /// [`GuestSpec::guest_dir`].
    pub run_dir: PathBuf,
    /// Its network interface, if it has one (drivers without networking refuse it).
    pub nic: Option<GuestNic>,
    /// Whether the agent's channel should be a virtio-serial port (the guest has the
    /// virtio_console driver): drivers that can then serve the agent socket from it and
    /// the second serial port on [`Guest::agent_fallback_socket`]; others ignore it.
    pub virtio_channel: bool,
}

/// A guest's network interface: a tap already on its tenant network's bridge, handed to
/// the hypervisor as a descriptor.
#[derive(Debug, Clone)]
pub struct GuestNic {
    /// The interface's MAC in the guest.
    pub mac: String,
    /// The tap's descriptor.
    pub tap: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl PartialEq for GuestNic {
    fn eq(&self, other: &Self) -> bool {
        self.mac == other.mac && std::sync::Arc::ptr_eq(&self.tap, &other.tap)
    }
}

impl Eq for GuestNic {}

impl GuestSpec {
    /// The part of the run directory the hypervisor writes (its jail's `/run/vm`): console
    /// log, agent socket, state file. Read it with [`crate::guest_files`] only.
    pub fn guest_dir(&self) -> PathBuf {
        guest_dir(&self.run_dir)
    }
}

/// The guest directory of the run directory `run_dir`.
pub fn guest_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("guest")
}

/// What a guest is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestState {
    /// The hypervisor process is running.
    Running,
    /// The guest powered off or halted; the process exited cleanly.
    Exited,
    /// The hypervisor process died or reported a failure.
    Crashed {
        /// Why, as far as the driver can tell.
        reason: String,
    },
}

/// A driver failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver cannot run on this host.
    #[error("driver {driver} is unavailable: {reason}")]
    Unavailable {
        /// Driver name.
        driver: &'static str,
        /// Why.
        reason: String,
    },
    /// Starting the hypervisor failed.
    #[error("starting {what}: {reason}")]
    Start {
        /// What was being started.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The hypervisor ended (or was killed, e.g. by the OOM killer) while starting; the
    /// reason as [`GuestState::Crashed`] gives it.
    #[error("{0}")]
    Ended(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A running (or ended) guest.
pub trait Guest: Send {
    /// The guest's id.
    fn id(&self) -> &str;
    /// The hypervisor process id while it runs.
    fn pid(&self) -> Option<u32>;
    /// The current state (reaps the process if it ended).
    fn status(&mut self) -> GuestState;
    /// Stops the guest: asks nicely, then kills after `grace`. Returns the final state.
    fn stop(&mut self, grace: Duration) -> GuestState;
    /// The file the guest's console (first serial port) is written to.
    fn console_path(&self) -> &Path;
    /// The Unix socket bridged to the guest agent's channel: its virtio-serial port when
    /// the driver serves one, else the second serial port.
    fn agent_socket(&self) -> &Path;
    /// The second serial port's socket when [`Guest::agent_socket`] is a virtio-serial
    /// port: where an agent without the virtio driver answers.
    fn agent_fallback_socket(&self) -> Option<PathBuf> {
        None
    }
    /// The Unix socket of the guest's console, both ways (first serial port), when the
    /// driver serves one (the console log has the same output either way).
    fn console_socket(&self) -> Option<PathBuf> {
        None
    }
}

/// A way of running guests.
pub trait HypervisorDriver: Send + Sync {
    /// The driver's name (`qemu`, `kvm`).
    fn name(&self) -> &'static str;
    /// How it accelerates guests on this host, for logs (e.g. `kvm`, `tcg`).
    fn acceleration(&self) -> String;
    /// Whether its guests can have a network interface ([`GuestSpec::nic`]).
    fn networking(&self) -> bool {
        false
    }
    /// Starts a guest.
    fn start(&self, spec: &GuestSpec) -> Result<Box<dyn Guest>, DriverError>;
    /// Takes over guest `id`, whose hypervisor (process `pid`, run directory `run_dir`) an
    /// earlier run of the node agent started; `None` if it no longer runs or this driver
    /// cannot adopt.
    fn adopt(&self, id: &str, pid: u32, run_dir: &Path) -> Option<Box<dyn Guest>> {
        let _ = (id, pid, run_dir);
        None
    }
}

/// Waits until `guest` serves its agent socket. A guest that crashes first, or a socket
/// that does not appear `within`, is a start failure (the guest is stopped); one that
/// powered off cleanly has started, and its status says it ended.
pub fn await_agent_socket(
    guest: &mut dyn Guest,
    what: &str,
    within: Duration,
) -> Result<(), DriverError> {
    let deadline = std::time::Instant::now() + within;
    while !guest.agent_socket().exists() {
        match guest.status() {
            GuestState::Running => {}
            GuestState::Crashed { reason } => return Err(DriverError::Ended(reason)),
            // It ran and powered off (its socket goes with it): not a failure to
            // start; `status` reports it.
            GuestState::Exited => return Ok(()),
        }
        if std::time::Instant::now() > deadline {
            guest.stop(Duration::ZERO);
            return Err(DriverError::Start {
                what: what.into(),
                reason: format!(
                    "the agent socket did not appear within {} s",
                    within.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Whether `pid` is a live process (not a zombie), and its command line holds `marker` as
/// an argument.
pub fn is_live_with_arg(pid: u32, marker: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit(')')
        .next()
        .is_none_or(|rest| rest.trim_start().starts_with('Z'));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !zombie
        && cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes())
}

/// Sends SIGTERM to an adopted hypervisor process `pid` (not our child: it cannot be
/// reaped), waits up to `grace` while `alive` says it runs, then kills it. The process is
/// held by a pidfd taken before `alive` first says it is ours: a hypervisor that ended
/// earlier left its pid free for any other process (pids wrap at 32768 on small hosts),
/// and that one is never signalled.
pub fn terminate_pid(pid: u32, grace: Duration, alive: impl Fn() -> bool) {
    let Some(process) = modvisor_jailer::pidfd::PidFd::open(pid) else {
        return; // gone
    };
    if !alive() {
        return; // the pid is another process's now, or a zombie's
    }
    if let Err(e) = process.signal(libc::SIGTERM) {
        tracing::debug!(pid, error = %e, "SIGTERM to an adopted hypervisor");
    }
    let deadline = std::time::Instant::now() + grace;
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive() {
        if let Err(e) = process.signal(libc::SIGKILL) {
            tracing::debug!(pid, error = %e, "SIGKILL to an adopted hypervisor");
        }
    }
}

/// Sends SIGTERM to a hypervisor process, waits up to `grace`, then kills it; returns how
/// it ended.
pub fn terminate(
    child: &mut std::process::Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// The files of a guest's run directory, created fresh: the guest directory (emptied: an
/// earlier hypervisor may have left anything there) with the console log and agent socket
/// paths, and the hypervisor's own log, outside it, opened for stdout and stderr.
pub struct RunFiles {
    /// The console log.
    pub console: PathBuf,
    /// The agent socket.
    pub socket: PathBuf,
    /// The second serial port's socket, when the driver puts the agent socket on a
    /// virtio-serial port (the driver sets it).
    pub agent_fallback: Option<PathBuf>,
    /// The hypervisor's log.
    pub log: PathBuf,
    /// The log, for stdout.
    pub stdout: std::fs::File,
    /// The log, for stderr.
    pub stderr: std::fs::File,
}

impl RunFiles {
    /// Prepares `spec.run_dir` with a log named `log_name`.
    pub fn prepare(spec: &GuestSpec, log_name: &str) -> Result<Self, DriverError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DriverError::Io { path, source }
        };
        std::fs::create_dir_all(&spec.run_dir).map_err(io(&spec.run_dir))?;
        let guest = spec.guest_dir();
        match std::fs::remove_dir_all(&guest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&guest)(e)),
            _ => {}
        }
        std::fs::create_dir(&guest).map_err(io(&guest))?;
        let console = guest.join("console.log");
        let socket = guest.join("agent.sock");
        let log = spec.run_dir.join(log_name);
        let stdout = std::fs::File::create(&log).map_err(io(&log))?;
        let stderr = stdout.try_clone().map_err(io(&log))?;
        Ok(RunFiles {
            console,
            socket,
            agent_fallback: None,
            log,
            stdout,
            stderr,
        })
    }
}
