//! The node's isolation rules, as nftables scripts applied in the node's network
//! namespace (`nft -f -`).
//!
//! Why nftables: one tool covers the bridge family (frames between a tap and its bridge,
//! ARP included) and the node namespace's own IP stack, each VM's rules are one chain
//! that is added and removed atomically, and Debian ships it (`nftables`). ebtables is
//! legacy on Debian 12 (a shim over nftables), and tc filters would need one set per tap
//! and direction with no ARP matching of their own.
//!
//! - `bridge modvisor`: a frame from a VM's tap goes through that VM's guard chain (its
//!   own MAC and address only, ARP included; only IPv4 and ARP at all); a tap without a
//!   guard drops everything; nothing from a tap is delivered to the node namespace.
//! - `inet modvisor`: the node namespace accepts nothing from tenant bridges. It routes
//!   nothing at all (`net.ipv4.ip_forward=0`), so no tenant network reaches another. Its
//!   bridges' frames are not handed to IP hooks (`bridge-nf-call-*=0` where
//!   `br_netfilter` is loaded), or an IP forward rule would see (and could drop) every
//!   bridged frame.

use std::net::Ipv4Addr;

/// The table both families use.
pub const TABLE: &str = "modvisor";

/// The base rules of a namespace (applying them again removes every guard: follow it
/// with the guard of each VM that runs on).
pub fn base() -> String {
    let tap = format!("{}*", super::names::TAP_PREFIX);
    let bridge = format!("{}*", super::names::BRIDGE_PREFIX);
    format!(
        "table bridge {TABLE}
delete table bridge {TABLE}
table bridge {TABLE} {{
  map guards {{ type ifname : verdict; }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname vmap @guards
    iifname \"{tap}\" drop
  }}
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname \"{tap}\" drop
  }}
}}
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname \"{bridge}\" drop
    iifname \"{tap}\" drop
  }}
}}
"
    )
}

/// The guard of a VM's tap: its frames go on only with its MAC and IPv4 address.
pub fn add_guard(tap: &str, mac: &str, ip: Ipv4Addr) -> String {
    let chain = super::names::tap_chain(tap);
    format!(
        "add chain bridge {TABLE} {chain}
flush chain bridge {TABLE} {chain}
add rule bridge {TABLE} {chain} ether saddr != {mac} drop
add rule bridge {TABLE} {chain} ether type != {{ ip, arp }} drop
add rule bridge {TABLE} {chain} ether type arp arp htype != 1 drop
add rule bridge {TABLE} {chain} ether type arp arp ptype != 0x0800 drop
add rule bridge {TABLE} {chain} ether type arp arp saddr ether != {mac} drop
add rule bridge {TABLE} {chain} ether type arp arp saddr ip != {ip} drop
add rule bridge {TABLE} {chain} ether type ip ip saddr != {ip} drop
add element bridge {TABLE} guards {{ \"{tap}\" : goto {chain} }}
"
    )
}

/// Removes a VM's guard (its tap then drops everything, should it still exist).
pub fn remove_guard(tap: &str) -> String {
    let chain = super::names::tap_chain(tap);
    format!(
        "delete element bridge {TABLE} guards {{ \"{tap}\" }}
delete chain bridge {TABLE} {chain}
"
    )
}

/// The taps that have guards, from `nft list map bridge modvisor guards`.
pub fn guarded_taps(listing: &str) -> Vec<String> {
    let prefix = format!("\"{}", super::names::TAP_PREFIX);
    listing
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter(|w| w.starts_with(&prefix))
        .map(|w| w.trim_matches('"').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_names_its_mac_and_address_and_is_removed_whole() {
        let g = add_guard("mvtpabc", "02:00:0a:00:00:02", Ipv4Addr::new(10, 0, 0, 2));
        assert!(g.contains("ether saddr != 02:00:0a:00:00:02 drop"));
        assert!(g.contains("arp saddr ip != 10.0.0.2 drop"));
        assert!(g.contains("ip saddr != 10.0.0.2 drop"));
        assert!(g.contains("\"mvtpabc\" : goto guard_mvtpabc"));
        let r = remove_guard("mvtpabc");
        assert!(r.contains("delete chain bridge modvisor guard_mvtpabc"));
        let listing = "table bridge modvisor {\n map guards {\n type ifname : verdict\n elements = { \"mvtpabc\" : goto guard_mvtpabc,\n \"mvtp123\" : goto guard_mvtp123 }\n }\n}";
        assert_eq!(guarded_taps(listing), ["mvtpabc", "mvtp123"]);
        assert!(base().contains("iifname vmap @guards"));
    }
}
