//! `modvisor vmm`: our KVM VMM, one VM per process (see vmm/README.md).

pub use modvisor_vmm::cli::VmmArgs;

/// Runs the VM and exits the process with its exit code (0 clean, 3 crashed, 2 setup).
pub fn run(args: VmmArgs) -> ! {
    std::process::exit(modvisor_vmm::cli::run(args))
}
