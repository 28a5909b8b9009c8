//! A guest's network configuration, given by the host on the kernel command line
//! (`modvisor.net=MAC,ADDRESS/PREFIX,MTU`) and applied by the agent at boot. It is not a
//! secret, and the tenant may change its interface later (the node's guards then drop
//! its frames).

use std::net::Ipv4Addr;

/// The kernel parameter's name.
pub const PARAM: &str = "modvisor.net";

/// The guest's one interface on its tenant network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The MAC of the interface to configure (`02:...`).
    pub mac: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The network's prefix length.
    pub prefix: u8,
    /// Its MTU.
    pub mtu: u32,
}

impl NetConfig {
    /// `modvisor.net=MAC,ADDRESS/PREFIX,MTU`.
    pub fn to_kernel_arg(&self) -> String {
        format!(
            "{PARAM}={},{}/{},{}",
            self.mac.to_ascii_lowercase(),
            self.ip,
            self.prefix,
            self.mtu
        )
    }

    /// The configuration in a kernel command line, if it has one that parses.
    pub fn from_cmdline(cmdline: &str) -> Option<NetConfig> {
        let value = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(PARAM)?.strip_prefix('='))?;
        let mut parts = value.split(',');
        let mac = parts.next()?.to_ascii_lowercase();
        let (ip, prefix) = parts.next()?.split_once('/')?;
        let mtu = parts
            .next()?
            .parse()
            .ok()
            .filter(|m| (576..=9000).contains(m))?;
        let prefix = prefix.parse().ok().filter(|p| (1..=32).contains(p))?;
        let valid_mac = mac.len() == 17
            && mac
                .split(':')
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        (valid_mac && parts.next().is_none()).then_some(())?;
        Some(NetConfig {
            mac,
            ip: ip.parse().ok()?,
            prefix,
            mtu,
        })
    }

    /// The netmask of the prefix.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let c = NetConfig {
            mac: "02:00:0a:00:00:02".into(),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            prefix: 24,
            mtu: 1450,
        };
        let line = format!("console=ttyS0 {} quiet", c.to_kernel_arg());
        assert_eq!(NetConfig::from_cmdline(&line), Some(c.clone()));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        for bad in [
            "modvisor.net=02:00:0a:00:00:02,10.0.0.2/24",
            "modvisor.net=02:00:0a:00:00,10.0.0.2/24,1450",
            "modvisor.net=02:00:0a:00:00:02,10.0.0.2/33,1450",
            "modvisor.net=02:00:0a:00:00:02,10.0.0.2/24,1450,x",
            "modvisor.netx=02:00:0a:00:00:02,10.0.0.2/24,1450",
            "",
        ] {
            assert_eq!(NetConfig::from_cmdline(bad), None, "{bad}");
        }
    }
}
