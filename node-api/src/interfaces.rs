//! A guest's network interfaces as its own kernel reports them (through its agent), on
//! both hops: node -> control plane (`ObservedVm.interfaces`), control plane -> tenant
//! (`status.interfaces`). What a guest says is data from a tenant: bounded and checked.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Most interfaces shown for one guest.
pub const MAX_GUEST_INTERFACES: usize = 16;
/// Most IPv4 addresses shown for one interface.
pub const MAX_INTERFACE_ADDRESSES: usize = 8;

/// One network interface inside a guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GuestInterface {
    /// Its name in the guest (`eth0`, `lo`): 1-15 printable ASCII characters.
    pub name: String,
    /// Its MAC address (`02:00:0a:00:00:02`), absent for one without.
    pub mac: Option<String>,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is up.
    pub up: bool,
    /// Its IPv4 addresses with prefix lengths (`10.0.0.2/24`).
    pub addresses: Vec<String>,
}

/// Why a reported interface is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadInterface {
    /// The name is empty, too long or not printable ASCII.
    #[error("name must be 1-15 printable ASCII characters")]
    Name,
    /// The MAC is not six colon-separated hex octets.
    #[error("mac must be six colon-separated hex octets")]
    Mac,
    /// Too many addresses.
    #[error("at most {MAX_INTERFACE_ADDRESSES} addresses")]
    TooManyAddresses,
    /// An address is not `a.b.c.d/N` with N at most 32.
    #[error("address {0:?} is not an IPv4 address with a prefix length")]
    Address(String),
}

impl GuestInterface {
    /// Checks the interface is one a kernel could have reported.
    pub fn check(&self) -> Result<(), BadInterface> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if self.name.is_empty() || self.name.len() > 15 || !printable(&self.name) {
            return Err(BadInterface::Name);
        }
        if let Some(mac) = &self.mac {
            let octets: Vec<&str> = mac.split(':').collect();
            let ok = octets.len() == 6
                && octets
                    .iter()
                    .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(BadInterface::Mac);
            }
        }
        if self.addresses.len() > MAX_INTERFACE_ADDRESSES {
            return Err(BadInterface::TooManyAddresses);
        }
        for a in &self.addresses {
            let ok = a.split_once('/').is_some_and(|(ip, prefix)| {
                ip.parse::<Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
            });
            if !ok {
                return Err(BadInterface::Address(a.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth0() -> GuestInterface {
        GuestInterface {
            name: "eth0".into(),
            mac: Some("02:00:0a:00:00:02".into()),
            mtu: 1450,
            up: true,
            addresses: vec!["10.0.0.2/24".into()],
        }
    }

    #[test]
    fn takes_what_a_kernel_reports() {
        assert_eq!(eth0().check(), Ok(()));
        let lo = GuestInterface {
            name: "lo".into(),
            mac: None,
            mtu: 65536,
            up: true,
            addresses: vec!["127.0.0.1/8".into()],
        };
        assert_eq!(lo.check(), Ok(()));
    }

    #[test]
    fn refuses_what_no_kernel_reports() {
        let with = |f: &dyn Fn(&mut GuestInterface)| {
            let mut i = eth0();
            f(&mut i);
            i.check()
        };
        assert_eq!(with(&|i| i.name = String::new()), Err(BadInterface::Name));
        assert_eq!(with(&|i| i.name = "x".repeat(16)), Err(BadInterface::Name));
        assert_eq!(with(&|i| i.name = "et h0".into()), Err(BadInterface::Name));
        assert_eq!(
            with(&|i| i.mac = Some("02:00:0a:00:00".into())),
            Err(BadInterface::Mac)
        );
        assert_eq!(
            with(&|i| i.mac = Some("<script>x</script>".into())),
            Err(BadInterface::Mac)
        );
        assert_eq!(
            with(&|i| i.addresses = vec!["10.0.0.1/24".into(); 9]),
            Err(BadInterface::TooManyAddresses)
        );
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0/24", "::1/128"] {
            assert!(matches!(
                with(&|i| i.addresses = vec![bad.into()]),
                Err(BadInterface::Address(_))
            ));
        }
    }
}
