//! One guest booted outside any node: Debian's kernel, our initramfs (agent and busybox)
//! under the qemu driver, unjailed, its agent attached with a fresh key. For
//! `modvisor guest run` and benchmarks; the node agent itself boots guests through its
//! VM workers.

use crate::channel::{AgentClient, ChannelError};
use crate::driver::{DriverError, Guest, GuestSpec, HypervisorDriver};
use crate::qemu::QemuDriver;
use modvisor_guest::kernel::KernelError;
use modvisor_guest::GuestKernel;
use modvisor_guest_protocol::message::HelloReply;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Booting a standalone guest failed.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// No guest kernel or userland.
    #[error("guest image: {0}")]
    Image(#[from] KernelError),
    /// QEMU could not start it.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A file of its run directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The guest kernel's keys could not be read (to check its platform modules).
    #[error("keys of the guest kernel: {0}")]
    KernelKeys(#[from] modvisor_modules::TrustError),
    /// Its platform modules (for a virtio channel) could not be had.
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    /// Its agent did not answer.
    #[error("the guest agent did not answer ({source}); console: {console}")]
    Agent {
        /// Why.
        source: ChannelError,
        /// Its console log.
        console: PathBuf,
    },
}

/// A booted guest with its agent attached.
pub struct StandaloneGuest {
    /// The guest (stop it when done).
    pub guest: Box<dyn Guest>,
    /// Its agent.
    pub client: AgentClient,
    /// What the agent said.
    pub hello: HelloReply,
    /// Its kernel.
    pub kernel: GuestKernel,
    /// Seconds from start to the agent's answer.
    pub boot_secs: f64,
}

/// Which port the agent's channel is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelPort {
    /// The emulated 16550 (COM2), as under the `kvm` driver.
    Serial,
    /// A virtio-serial port (the platform modules go into the initramfs), as on a node.
    Virtio,
}

/// Boots guest `id` with its files in `run_dir/id` and its channel on COM2; `progress`
/// hears each step.
pub fn boot(
    run_dir: &Path,
    id: &str,
    vcpus: u32,
    memory_mib: u32,
    progress: impl FnMut(&str),
) -> Result<StandaloneGuest, StandaloneError> {
    boot_on(
        run_dir,
        id,
        vcpus,
        memory_mib,
        ChannelPort::Serial,
        progress,
    )
}

/// [`boot`] with the channel on `port`.
pub fn boot_on(
    run_dir: &Path,
    id: &str,
    vcpus: u32,
    memory_mib: u32,
    port: ChannelPort,
    mut progress: impl FnMut(&str),
) -> Result<StandaloneGuest, StandaloneError> {
    let kernel = modvisor_guest::kernel::resolve(&mut progress)?;
    let userland = modvisor_guest::userland::resolve(&mut progress)?;
    let driver = QemuDriver::detect()?;
    progress(&format!(
        "host: {}; qemu acceleration: {}",
        crate::hostcaps::describe(),
        driver.acceleration()
    ));
    let dir = run_dir.join(id);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StandaloneError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let initrd = dir.join("initramfs.gz");
    let platform = match port {
        ChannelPort::Serial => Vec::new(),
        ChannelPort::Virtio => {
            let image = std::fs::read(&kernel.vmlinuz).map_err(io(&kernel.vmlinuz))?;
            let trust = modvisor_modules::TrustStore::from_kernel_image(&image)?;
            crate::platform::platform_modules(&kernel, &trust)?
        }
    };
    let extra: Vec<(&str, &[u8])> = platform
        .iter()
        .map(|m| (m.path.as_str(), m.bytes.as_slice()))
        .collect();
    let image = modvisor_guest::build_initramfs(&userland, &extra).map_err(io(&initrd))?;
    std::fs::write(&initrd, image).map_err(io(&initrd))?;
    let spec = GuestSpec {
        id: id.to_string(),
        vcpus,
        memory_mib,
        kernel: kernel.vmlinuz.clone(),
        initrd,
        cmdline: modvisor_guest::cmdline::default_cmdline(),
        run_dir: dir,
        nic: None,
        virtio_channel: port == ChannelPort::Virtio,
    };
    let started = Instant::now();
    let guest = driver.start(&spec)?;
    let console = guest.console_path().to_path_buf();
    let agent = |source| StandaloneError::Agent {
        source,
        console: console.clone(),
    };
    let client =
        AgentClient::connect(guest.agent_socket(), Duration::from_secs(10)).map_err(agent)?;
    let key = crate::channel::new_key().map_err(|e| agent(ChannelError::Io(e)))?;
    let hello = client
        .attach(&key, Duration::from_secs(180))
        .map_err(agent)?;
    Ok(StandaloneGuest {
        guest,
        client,
        hello,
        kernel,
        boot_secs: started.elapsed().as_secs_f64(),
    })
}
