//! The guest kernel command line.

/// What every guest kernel is booted with: the console on the first serial port, module
/// signatures enforced, no reboot loop after a panic.
pub fn default_cmdline() -> String {
    [
        "console=ttyS0",
        "earlyprintk=ttyS0",
        "module.sig_enforce=1",
        "panic=-1",
        "reboot=t",
        "quiet",
        "loglevel=4",
        "rdinit=/init",
    ]
    .join(" ")
}
