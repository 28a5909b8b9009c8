//! The guest kernel command line.

/// What every guest kernel is booted with: the console on the first serial port, module
/// signatures enforced, the lockdown LSM at `integrity` (no /dev/mem, /dev/port or
/// /proc/kcore writes, no unsigned kexec, no raw I/O ports, even for root), no reboot loop
/// after a panic, and no IO-APIC timer check (an emulated timer on a busy host can miss
/// that early check, and the guest then panics with "IO-APIC + timer doesn't work!").
pub fn default_cmdline() -> String {
    cmdline(true)
}

/// The command line of a guest whose kernel must load modules signed by an operator key
/// it has no certificate for: `module.sig_enforce=0` and no lockdown (lockdown in
/// integrity mode refuses every module the kernel cannot verify). What still holds is the
/// host's vetting of every module and the tenant context's missing `CAP_SYS_MODULE`
/// and `CAP_SYS_RAWIO`; what is given up is the kernel's own refusal of /dev/mem writes
/// and unsigned kexec by a root that had those capabilities (the tenant has neither).
pub fn operator_modules_cmdline() -> String {
    cmdline(false)
}

fn cmdline(kernel_checks_signatures: bool) -> String {
    let (sig_enforce, lockdown) = if kernel_checks_signatures {
        ("module.sig_enforce=1", Some("lockdown=integrity"))
    } else {
        ("module.sig_enforce=0", None)
    };
    ["console=ttyS0", "earlyprintk=ttyS0", sig_enforce]
        .into_iter()
        .chain(lockdown)
        .chain([
            "panic=-1",
            "no_timer_check",
            "reboot=t",
            "quiet",
            "loglevel=4",
            "rdinit=/init",
        ])
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_operator_module_guests_drop_signature_enforcement_and_lockdown() {
        let standard = default_cmdline();
        assert!(standard.contains("module.sig_enforce=1 lockdown=integrity"));
        let operator = operator_modules_cmdline();
        assert!(operator.contains("module.sig_enforce=0"));
        assert!(!operator.contains("lockdown") && !operator.contains("sig_enforce=1"));
        assert_eq!(
            standard
                .replace(" lockdown=integrity", "")
                .replace("=1", "=0"),
            operator
        );
    }
}
