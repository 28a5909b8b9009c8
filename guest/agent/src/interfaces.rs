//! The guest's network interfaces as its own kernel has them (`getifaddrs`, MTUs from
//! sysfs): what the `Interfaces` request answers.

use modvisor_guest_protocol::interfaces::{Interface, InterfacesReply, MAX_NAME_LEN};
use nix::net::if_::InterfaceFlags;

/// Every interface, in the kernel's order, with its IPv4 addresses; an interface the
/// kernel names oddly (beyond `IFNAMSIZ`) is left out. Empty when the kernel cannot be
/// asked (the host then shows none, which is what it can know).
pub fn interfaces() -> InterfacesReply {
    let Ok(entries) = nix::ifaddrs::getifaddrs() else {
        return InterfacesReply::default();
    };
    let mut out: Vec<Interface> = Vec::new();
    for e in entries {
        let name = e.interface_name;
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            continue;
        }
        let at = match out.iter().position(|i| i.name == name) {
            Some(at) => at,
            None => {
                out.push(Interface {
                    mtu: mtu_of(&name),
                    name,
                    mac: String::new(),
                    up: e.flags.contains(InterfaceFlags::IFF_UP),
                    addresses: Vec::new(),
                });
                out.len() - 1
            }
        };
        let Some(address) = e.address else { continue };
        if let Some(mac) = address.as_link_addr().and_then(|l| l.addr()) {
            out[at].mac = format_mac(mac);
        } else if let Some(sin) = address.as_sockaddr_in() {
            let prefix = e
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| u32::from(m.ip()).count_ones())
                .unwrap_or(32);
            out[at].addresses.push(format!("{}/{prefix}", sin.ip()));
        }
    }
    InterfacesReply { interfaces: out }
}

/// `/sys/class/net/<name>/mtu`, 0 when unreadable.
fn mtu_of(name: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn format_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_loopback_with_its_address() {
        // The test host has `lo` up with 127.0.0.1/8 (as every guest has once the agent
        // brought it up).
        let r = interfaces();
        let lo = r.interfaces.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.up);
        assert!(lo.addresses.contains(&"127.0.0.1/8".to_string()), "{lo:?}");
        assert!(lo.mtu > 0);
    }

    #[test]
    fn formats_macs_in_lower_case() {
        assert_eq!(
            format_mac([0x02, 0, 0x0a, 0xff, 0, 0x05]),
            "02:00:0a:ff:00:05"
        );
    }
}
