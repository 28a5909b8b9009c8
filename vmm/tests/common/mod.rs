//! Helpers for the VMM's tests: they need the real /dev/kvm and say so clearly.
#![allow(dead_code)]

use modvisor_vmm::probe::{self, Probe};
use modvisor_vmm::{CpuProfile, Vm, VmConfig, VmState};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Fails loudly (never skips) when KVM is missing.
pub fn require_kvm() {
    if let Err(e) = modvisor_vmm::open_kvm() {
        panic!("these tests run real guests on /dev/kvm and cannot run here: {e}");
    }
}

/// A config booting `kernel` with a console in `dir`.
pub fn config(kernel: &Path, dir: &Path) -> VmConfig {
    VmConfig {
        kernel: kernel.to_path_buf(),
        initrd: None,
        cmdline: "console=ttyS0".into(),
        vcpus: 1,
        memory_mib: 64,
        console: dir.join("console.log"),
        console_limit: 16 << 20,
        agent_socket: None,
        cpu_profile: CpuProfile::Compat,
        allow_pvh: true,
    }
}

/// Builds `probe` in `dir`.
pub fn build(p: Probe, dir: &Path) -> PathBuf {
    probe::build(p, dir).expect("building the probe guest")
}

/// Runs a VM to its end (or `timeout`), returning the state and the console text.
pub fn run(config: &VmConfig, timeout: Duration) -> (VmState, String, Vm) {
    require_kvm();
    let mut vm = Vm::new(config).expect("building the VM");
    let state = vm.run(Some(timeout));
    let console = std::fs::read(&config.console).unwrap_or_default();
    (state, String::from_utf8_lossy(&console).into_owned(), vm)
}
