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
    /// A directory the driver owns for this guest: console log, agent socket, pid file.
    pub run_dir: PathBuf,
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
    /// The Unix socket bridged to the guest agent's channel (second serial port).
    fn agent_socket(&self) -> &Path;
}

/// A way of running guests.
pub trait HypervisorDriver: Send + Sync {
    /// The driver's name (`qemu`, `kvm`).
    fn name(&self) -> &'static str;
    /// How it accelerates guests on this host, for logs (e.g. `kvm`, `tcg`).
    fn acceleration(&self) -> String;
    /// Starts a guest.
    fn start(&self, spec: &GuestSpec) -> Result<Box<dyn Guest>, DriverError>;
}
