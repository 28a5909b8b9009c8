//! What the guest needs from its own kernel before the tenant's requests: the platform
//! modules the host put in the initramfs (the virtio transport and devices, loaded in the
//! order their file names give, through the same `finit_module` as any module, their
//! signatures checked by the kernel), then the network interface the host described on
//! the kernel command line.

use modvisor_guest_protocol::net::NetConfig;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the host puts the platform modules.
pub const PLATFORM_DIR: &str = "/lib/modvisor/platform";
/// busybox, for `ip`.
const BUSYBOX: &str = "/bin/busybox";

/// Loads every `.ko` in `dir` in name order; one line per module that failed.
pub fn load_platform_modules(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ko"))
            .collect(),
        // No platform modules: a guest without devices to drive.
        Err(_) => return Vec::new(),
    };
    files.sort();
    let mut failures = Vec::new();
    for f in files {
        let result = std::fs::read(&f)
            .map_err(|e| e.to_string())
            .and_then(|image| match crate::kmod::load(&image, "") {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
                Err(e) => Err(crate::kmod::describe(e)),
            });
        if let Err(e) = result {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    failures
}

/// The interface whose MAC is `mac`, once it appears (drivers probe as they load; a
/// device may take a moment), within `within`.
fn interface_with_mac(mac: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
            for e in entries.flatten() {
                let address = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
                if address.trim().eq_ignore_ascii_case(mac) {
                    return Some(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(BUSYBOX)
        .arg("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Brings up `lo` and the interface `config` describes: its MTU, its address, up. No
/// default route: a tenant network reaches nothing beyond itself (yet).
pub fn configure_network(config: &NetConfig) -> Result<String, String> {
    ip(&["link", "set", "lo", "up"])?;
    let dev = interface_with_mac(&config.mac, Duration::from_secs(5))
        .ok_or_else(|| format!("no interface with MAC {} appeared", config.mac))?;
    let mtu = config.mtu.to_string();
    ip(&["link", "set", "dev", &dev, "mtu", &mtu])?;
    let cidr = format!("{}/{}", config.ip, config.prefix);
    ip(&["addr", "add", &cidr, "dev", &dev])?;
    ip(&["link", "set", "dev", &dev, "up"])?;
    Ok(format!("{dev} {cidr} mtu {mtu}"))
}
