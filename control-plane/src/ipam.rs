//! Tenant networks' address arithmetic: IPv4 CIDRs (/16 to /29), their gateway, overlap,
//! the lowest free address for a VM, and the MAC that goes with an address.
//!
//! In a network `base/n`: `base` is the network, `base + 1` the gateway (the node's side,
//! later the place of NAT), VMs get `base + 2` up to the address before the broadcast.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Shortest prefix accepted (the largest network).
pub const MIN_PREFIX: u8 = 16;
/// Longest prefix accepted (the smallest network: 8 addresses, 5 for VMs).
pub const MAX_PREFIX: u8 = 29;

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

/// Why a CIDR is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `a.b.c.d/n`.
    #[error("{0:?} is not an IPv4 CIDR such as 10.0.0.0/24")]
    Syntax(String),
    /// A prefix outside /16 to /29.
    #[error("prefix /{0} is outside /16 to /29")]
    Prefix(u8),
    /// Host bits are set.
    #[error("{given} is not a network address (did you mean {network}?)")]
    HostBits {
        /// What was given.
        given: String,
        /// The network it lies in.
        network: String,
    },
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(s.chars().take(64).collect());
        let (addr, prefix) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(CidrError::Prefix(prefix));
        }
        let mask = u32::MAX << (32 - prefix);
        let ip = u32::from(addr);
        if ip & !mask != 0 {
            return Err(CidrError::HostBits {
                given: s.to_string(),
                network: Cidr {
                    base: ip & mask,
                    prefix,
                }
                .to_string(),
            });
        }
        Ok(Cidr { base: ip, prefix })
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    fn last(&self) -> u32 {
        self.base + (self.size() - 1)
    }

    /// The gateway: the network's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }

    /// How many addresses VMs may hold.
    pub fn vm_addresses(&self) -> u32 {
        self.size() - 3
    }

    /// The lowest address for a VM that is not in `used`, if any is left.
    pub fn free_address(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        (self.base + 2..self.last())
            .map(Ipv4Addr::from)
            .find(|a| !used.contains(a))
    }
}

/// The MAC of the VM at `ip`: locally administered, unicast, unique within a network.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let c: Cidr = "10.0.0.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(c.vm_addresses(), 253);
        assert!(
            matches!("10.0.0.1/24".parse::<Cidr>(), Err(CidrError::HostBits { network, .. }) if network == "10.0.0.0/24")
        );
        assert_eq!("10.0.0.0/15".parse::<Cidr>(), Err(CidrError::Prefix(15)));
        assert_eq!("10.0.0.0/30".parse::<Cidr>(), Err(CidrError::Prefix(30)));
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0/24",
            "fd00::/64",
            "10.0.0.0/+8",
            "10.0.0.0/024",
            "x/24",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_and_allocation() {
        let a: Cidr = "10.0.0.0/24".parse().unwrap();
        let b: Cidr = "10.0.0.128/25".parse().unwrap();
        let c: Cidr = "10.0.1.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
        let small: Cidr = "192.168.7.0/29".parse().unwrap();
        let mut used = BTreeSet::new();
        while let Some(ip) = small.free_address(&used) {
            used.insert(ip);
        }
        let got: Vec<String> = used.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            got,
            [
                "192.168.7.2",
                "192.168.7.3",
                "192.168.7.4",
                "192.168.7.5",
                "192.168.7.6"
            ]
        );
        used.remove(&Ipv4Addr::new(192, 168, 7, 3));
        assert_eq!(
            small.free_address(&used),
            Some(Ipv4Addr::new(192, 168, 7, 3))
        );
        assert_eq!(mac_for(Ipv4Addr::new(10, 0, 0, 2)), "02:00:0a:00:00:02");
    }
}
