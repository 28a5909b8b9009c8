//! What this host can do for guests.

/// Whether the CPU advertises hardware virtualization (Intel VT-x `vmx` or AMD-V `svm`).
///
/// A `/dev/kvm` without either flag is a nested or emulated KVM: guest kernel code then
/// runs instruction by instruction, far too slowly for a real Linux guest.
pub fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false)
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
