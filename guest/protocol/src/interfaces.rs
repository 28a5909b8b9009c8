//! `Interfaces`: the guest's network interfaces and their IPv4 addresses, as its own
//! kernel has them (what the tenant sees with `ip addr`, which the host cannot see from
//! outside: a tenant may add addresses or interfaces of its own).

use crate::message::{DecodeError, Reader, Writer};

/// Most interfaces in one reply (an agent with more sends the first this many).
pub const MAX_INTERFACES: usize = 16;
/// Most addresses of one interface in a reply.
pub const MAX_ADDRESSES: usize = 8;
/// Longest interface name (Linux's `IFNAMSIZ` less its NUL).
pub const MAX_NAME_LEN: usize = 15;

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name in the guest (`eth0`, `lo`).
    pub name: String,
    /// Its MAC address, `aa:bb:cc:dd:ee:ff`; empty for one without (`lo` has zeros).
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is administratively up.
    pub up: bool,
    /// Its IPv4 addresses, `a.b.c.d/prefix`.
    pub addresses: Vec<String>,
}

/// Reply to `Interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfacesReply {
    /// The interfaces, at most [`MAX_INTERFACES`].
    pub interfaces: Vec<Interface>,
}

impl InterfacesReply {
    /// Encodes (cut to the limits: what a decoder accepts).
    pub fn encode(&self) -> Vec<u8> {
        let shown = &self.interfaces[..self.interfaces.len().min(MAX_INTERFACES)];
        let mut w = Writer::new().u32(shown.len() as u32);
        for i in shown {
            let addresses = &i.addresses[..i.addresses.len().min(MAX_ADDRESSES)];
            w = w
                .str(&i.name)
                .str(&i.mac)
                .u32(i.mtu)
                .u32(u32::from(i.up))
                .u32(addresses.len() as u32);
            for a in addresses {
                w = w.str(a);
            }
        }
        w.finish()
    }

    /// Decodes; refuses more than the limits allow.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p);
        // name, mac, mtu, up, address count: at least 4 bytes each.
        let n = r.count(20)?;
        if n > MAX_INTERFACES {
            return Err(DecodeError("too many interfaces"));
        }
        let mut interfaces = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?;
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(DecodeError("interface name length"));
            }
            let mac = r.str()?;
            let mtu = r.u32()?;
            let up = r.u32()? != 0;
            let count = r.count(4)?;
            if count > MAX_ADDRESSES {
                return Err(DecodeError("too many addresses"));
            }
            let mut addresses = Vec::with_capacity(count);
            for _ in 0..count {
                addresses.push(r.str()?);
            }
            interfaces.push(Interface {
                name,
                mac,
                mtu,
                up,
                addresses,
            });
        }
        r.end()?;
        Ok(InterfacesReply { interfaces })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(n: usize, addresses: usize) -> Interface {
        Interface {
            name: format!("eth{n}"),
            mac: "02:00:0a:00:00:05".into(),
            mtu: 1450,
            up: n.is_multiple_of(2),
            addresses: (0..addresses).map(|a| format!("10.0.{a}.5/24")).collect(),
        }
    }

    #[test]
    fn round_trips() {
        let r = InterfacesReply {
            interfaces: vec![eth(0, 1), eth(1, 0), eth(2, 3)],
        };
        assert_eq!(InterfacesReply::decode(&r.encode()).unwrap(), r);
        let empty = InterfacesReply::default();
        assert_eq!(InterfacesReply::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn encoding_cuts_to_the_limits() {
        let r = InterfacesReply {
            interfaces: (0..MAX_INTERFACES + 4).map(|n| eth(n, 20)).collect(),
        };
        let back = InterfacesReply::decode(&r.encode()).unwrap();
        assert_eq!(back.interfaces.len(), MAX_INTERFACES);
        assert!(back
            .interfaces
            .iter()
            .all(|i| i.addresses.len() == MAX_ADDRESSES));
    }

    #[test]
    fn refuses_what_exceeds_the_limits() {
        // A hand-made payload of 17 interfaces.
        let mut w = Writer::new().u32(MAX_INTERFACES as u32 + 1);
        for n in 0..=MAX_INTERFACES {
            w = w.str(&format!("e{n}")).str("").u32(1500).u32(1).u32(0);
        }
        assert!(InterfacesReply::decode(&w.finish()).is_err());
        // An interface with nine addresses.
        let mut w = Writer::new()
            .u32(1)
            .str("eth0")
            .str("")
            .u32(1500)
            .u32(1)
            .u32(9);
        for _ in 0..9 {
            w = w.str("10.0.0.1/24");
        }
        assert!(InterfacesReply::decode(&w.finish()).is_err());
        // A name longer than IFNAMSIZ, an empty one, a count beyond the payload.
        for name in ["sixteen-chars-xx", ""] {
            let p = Writer::new()
                .u32(1)
                .str(name)
                .str("")
                .u32(1500)
                .u32(1)
                .u32(0);
            assert!(InterfacesReply::decode(&p.finish()).is_err(), "{name:?}");
        }
        assert!(InterfacesReply::decode(&Writer::new().u32(1000).finish()).is_err());
        // Trailing bytes.
        let mut p = InterfacesReply::default().encode();
        p.push(0);
        assert!(InterfacesReply::decode(&p).is_err());
    }
}
