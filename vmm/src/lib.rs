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
pub use state::{VmReport, VmState, VmStatus};
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

/// What the host CPU offers for virtualization, read from `/proc/cpuinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum HardwareVirt {
    /// Intel VT-x (`vmx`).
    Vmx,
    /// AMD-V (`svm`).
    Svm,
    /// Neither: KVM here is nested or emulated, and guest kernel code runs slowly.
    None,
}

impl HardwareVirt {
    /// Reads `/proc/cpuinfo`.
    pub fn detect() -> Self {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_cpuinfo(&info)
    }

    /// Parses the `flags` lines of a cpuinfo text.
    pub fn from_cpuinfo(info: &str) -> Self {
        let flags = info
            .lines()
            .filter(|l| l.starts_with("flags"))
            .flat_map(|l| l.split_whitespace());
        let mut found = Self::None;
        for f in flags {
            match f {
                "vmx" => return Self::Vmx,
                "svm" => found = Self::Svm,
                _ => {}
            }
        }
        found
    }

    /// A one-line description for logs and reports.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Vmx => "hardware virtualization: Intel VT-x (vmx)",
            Self::Svm => "hardware virtualization: AMD-V (svm)",
            Self::None => "no hardware virtualization (no vmx/svm in /proc/cpuinfo): KVM here is nested/emulated; guest kernel code is instruction-emulated and slow",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_flags() {
        assert_eq!(
            HardwareVirt::from_cpuinfo("flags\t: fpu vmx sse\n"),
            HardwareVirt::Vmx
        );
        assert_eq!(
            HardwareVirt::from_cpuinfo("flags\t: fpu svm\n"),
            HardwareVirt::Svm
        );
        assert_eq!(
            HardwareVirt::from_cpuinfo("flags\t: fpu sse2\n"),
            HardwareVirt::None
        );
        assert_eq!(HardwareVirt::from_cpuinfo(""), HardwareVirt::None);
    }
}
