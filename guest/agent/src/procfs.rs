//! What the agent reads from `/proc`.

use modvisor_guest_protocol::message::LoadedModule;

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Milliseconds since boot (`/proc/uptime`).
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|secs| (secs * 1000.0) as u64)
        .unwrap_or(0)
}

/// A field of `/proc/meminfo` in KiB (0 when unreadable).
fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.split(':').next() == Some(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `MemAvailable` in KiB (`/proc/meminfo`).
pub fn mem_available_kib() -> u64 {
    meminfo_kib("MemAvailable")
}

/// `MemTotal` in KiB (`/proc/meminfo`).
pub fn mem_total_kib() -> u64 {
    meminfo_kib("MemTotal")
}

/// The loaded modules (`/proc/modules`).
pub fn modules() -> Vec<LoadedModule> {
    std::fs::read_to_string("/proc/modules")
        .map(|s| parse_modules(&s))
        .unwrap_or_default()
}

/// Parses `/proc/modules`: `name size refcount used_by state address [(taints)]`.
pub fn parse_modules(text: &str) -> Vec<LoadedModule> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let name = f.next()?.to_string();
            let size = f.next()?.parse().ok()?;
            let refcount = f.next()?.parse().unwrap_or(0);
            let used_by = f
                .next()?
                .split(',')
                .filter(|s| !s.is_empty() && *s != "-")
                .map(str::to_string)
                .collect();
            let state = f.next().unwrap_or("").to_string();
            // After the address.
            let taint = f
                .nth(1)
                .and_then(|t| t.strip_prefix('(')?.strip_suffix(')'))
                .unwrap_or("")
                .to_string();
            Some(LoadedModule {
                name,
                size,
                refcount,
                used_by,
                state,
                taint,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_modules_lines() {
        let m = super::parse_modules(
            "wireguard 118784 0 - Live 0x0000000000000000\nudp_tunnel 32768 1 wireguard, Live 0x0\nkhttpd 20480 0 - Live 0x0 (OE)\nbroken\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].taint, "OE");
        assert_eq!(m[0].taint, "");
        assert_eq!(m[0].name, "wireguard");
        assert!(m[0].used_by.is_empty());
        assert_eq!(m[1].used_by, vec!["wireguard".to_string()]);
        assert_eq!(m[1].state, "Live");
    }
}
