//! Names of what the node builds for tenant networks. Linux interface names hold at most
//! 15 bytes; every name starts with `mv` so a sweep can tell ours from anything else.

/// The bridge of the tenant network with VXLAN id `vni` (24 bits: 6 hex digits).
pub fn bridge(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni:06x}")
}

/// The VXLAN device of the tenant network `vni`.
pub fn vxlan(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni:06x}")
}

/// The prefix of every VM's tap.
pub const TAP_PREFIX: &str = "mvtp";
/// The prefix of every bridge.
pub const BRIDGE_PREFIX: &str = "mvbr";
/// The prefix of every VXLAN device.
pub const VXLAN_PREFIX: &str = "mvvx";

/// The tap of VM `id`: its first 11 hex digits (a UUID's, dashes left out).
pub fn tap(id: &str) -> String {
    let hex: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{TAP_PREFIX}{hex}")
}

/// The VNI a bridge or VXLAN name stands for.
pub fn vni_of(name: &str) -> Option<u32> {
    let hex = name
        .strip_prefix(BRIDGE_PREFIX)
        .or_else(|| name.strip_prefix(VXLAN_PREFIX))?;
    (hex.len() == 6)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The node's end of its underlay link (in the node's namespace).
pub const UNDERLAY_LINK: &str = "mvul0";
/// The bridge in the underlay namespace that nodes' underlay links join.
pub const UNDERLAY_BRIDGE: &str = "mvunderlay";

/// The underlay end of the underlay link of the node whose namespace is `netns` (in the
/// underlay namespace): a hash of the name, so that names of any length fit.
pub fn underlay_peer(netns: &str) -> String {
    format!("mvul{}", short_hash(netns.as_bytes()))
}

/// 8 hex digits of FNV-1a of `bytes`: stable across runs and builds (a name derived from
/// it must be found again after a restart).
pub fn short_hash(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:08x}", hash as u32)
}

/// The name of a tap's chain in the node's nftables table.
pub fn tap_chain(tap: &str) -> String {
    format!("guard_{tap}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_round_trip() {
        let id = "3f2a9c1e-77b0-4d2e-9a11-0c5e8f7d6b21";
        assert_eq!(tap(id), "mvtp3f2a9c1e77b");
        for name in [
            tap(id),
            bridge(0xff_ffff),
            vxlan(4096),
            underlay_peer("a-very-long-node-name-of-sixty-three-characters-xxxxxxxxxxxxxxx"),
        ] {
            assert!(name.len() <= 15, "{name}");
        }
        assert_eq!(vni_of(&bridge(4097)), Some(4097));
        assert_eq!(vni_of(&vxlan(0xabcdef)), Some(0xabcdef));
        assert_eq!(vni_of("mvbrzz"), None);
        assert_eq!(underlay_peer("node-1"), underlay_peer("node-1"));
        assert_ne!(underlay_peer("node-1"), underlay_peer("node-2"));
    }
}
