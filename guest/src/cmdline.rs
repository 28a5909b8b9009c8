//! The guest kernel command line.

/// What every guest kernel is booted with: the console on the first serial port, module
/// signatures enforced, the lockdown LSM at `integrity` (no /dev/mem, /dev/port or
/// /proc/kcore writes, no unsigned kexec, no raw I/O ports, even for root), no reboot loop
/// after a panic, and no IO-APIC timer check (an emulated timer on a busy host can miss
/// that early check, and the guest then panics with "IO-APIC + timer doesn't work!").
pub fn default_cmdline() -> String {
    [
        "console=ttyS0",
        "earlyprintk=ttyS0",
        "module.sig_enforce=1",
        "lockdown=integrity",
        "panic=-1",
        "no_timer_check",
        "reboot=t",
        "quiet",
        "loglevel=4",
        "rdinit=/init",
    ]
    .join(" ")
}
