//! modvisor's KVM virtual machine monitor: one process runs exactly one VM, as in
//! Firecracker. Built on kvm-ioctls, vm-memory, linux-loader and vm-superio.
//!
//! [`Vm::new`] builds a VM from a [`VmConfig`]; [`Vm::run`] runs it to its end and
//! returns the final [`VmState`]. [`api`] serves the control API on a Unix socket, and
//! [`cli`] is the `modvisor vmm` command. [`probe`] builds the tiny test guests.

pub mod api;
pub mod boot;
pub mod cli;
pub mod cpu;
pub mod cpuid;
pub mod devices;
pub mod layout;
pub mod memory;
pub mod mptable;
pub mod probe;
pub mod state;
pub mod vcpu;
pub mod vm;

pub use cpuid::CpuProfile;
pub use modvisor_vmm_launch::HardwareVirt;
pub use state::{ExitCode, StateReport, VmState, VmStatus};
pub use vm::{Vm, VmConfig};

/// The VMM failed to build or run a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// KVM cannot be used on this host.
    #[error("KVM is unavailable: {0}")]
    Unavailable(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A KVM ioctl failed.
    #[error("{ioctl}: {source}")]
    Kvm {
        /// The ioctl.
        ioctl: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// The memory size is unusable.
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// The kernel, command line or initrd could not be loaded.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A vCPU could not be set up.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// The MP table could not be written.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    /// The agent socket could not be set up.
    #[error(transparent)]
    Agent(#[from] devices::agent::AgentError),
    /// Two port devices claimed overlapping ranges.
    #[error(transparent)]
    Bus(#[from] devices::bus::Overlap),
    /// A device could not be set up.
    #[error("{what}: {detail}")]
    Device {
        /// Which device part.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// The path of the KVM device.
pub const KVM_PATH: &str = "/dev/kvm";

/// Opens `/dev/kvm`, with a clear error when it is missing or unusable.
pub fn open_kvm() -> Result<kvm_ioctls::Kvm, VmmError> {
    if !std::path::Path::new(KVM_PATH).exists() {
        return Err(VmmError::Unavailable(format!(
            "{KVM_PATH} does not exist (no KVM module loaded, or not exposed to this machine)"
        )));
    }
    kvm_ioctls::Kvm::new().map_err(|e| VmmError::Unavailable(format!("opening {KVM_PATH}: {e}")))
}
