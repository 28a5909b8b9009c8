//! What this host can do for guests.

/// Whether the CPU advertises hardware virtualization (Intel VT-x `vmx` or AMD-V `svm`).
///
/// A `/dev/kvm` without either flag is a nested or emulated KVM: guest kernel code then
/// runs instruction by instruction, far too slowly for a real Linux guest.
pub fn hardware_virtualization() -> bool {
    modvisor_vmm_launch::HardwareVirt::detect().present()
}

/// Whether `/dev/kvm` exists and can be opened.
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A one-line description of the host's virtualization, for logs and registration.
pub fn describe() -> String {
    match (hardware_virtualization(), kvm_device_usable()) {
        (true, true) => "hardware virtualization (vmx/svm) with /dev/kvm".into(),
        (true, false) => "hardware virtualization (vmx/svm) but /dev/kvm is not usable".into(),
        (false, true) => {
            "no hardware virtualization (no vmx/svm in /proc/cpuinfo); /dev/kvm is nested or emulated".into()
        }
        (false, false) => "no hardware virtualization and no /dev/kvm".into(),
    }
}
