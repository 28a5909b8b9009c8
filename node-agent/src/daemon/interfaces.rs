//! What a guest's agent says of its network interfaces, in the node API's terms: only
//! what a kernel could have reported goes on (a guest is the tenant's, so its words are
//! checked like any tenant input).

use modvisor_guest_protocol::interfaces::InterfacesReply;
use modvisor_node_api::interfaces::{GuestInterface, MAX_GUEST_INTERFACES};

/// The interfaces to report, each checked; one that fails is left out (and logged).
pub fn shown(reply: InterfacesReply) -> Vec<GuestInterface> {
    reply
        .interfaces
        .into_iter()
        .take(MAX_GUEST_INTERFACES)
        .filter_map(|i| {
            let mac = (!i.mac.is_empty() && i.mac != "00:00:00:00:00:00").then_some(i.mac);
            let g = GuestInterface {
                name: i.name,
                mac,
                mtu: i.mtu,
                up: i.up,
                addresses: i.addresses,
            };
            match g.check() {
                Ok(()) => Some(g),
                Err(e) => {
                    tracing::warn!(error = %e, "a guest reported an interface no kernel would");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use modvisor_guest_protocol::interfaces::Interface;

    #[test]
    fn keeps_what_a_kernel_reports_and_drops_the_rest() {
        let reply = InterfacesReply {
            interfaces: vec![
                Interface {
                    name: "lo".into(),
                    mac: "00:00:00:00:00:00".into(),
                    mtu: 65536,
                    up: true,
                    addresses: vec!["127.0.0.1/8".into()],
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:0a:00:00:02".into(),
                    mtu: 1450,
                    up: true,
                    addresses: vec!["10.0.0.2/24".into()],
                },
                Interface {
                    name: "evil".into(),
                    mac: "not a mac".into(),
                    mtu: 1500,
                    up: true,
                    addresses: vec![],
                },
                Interface {
                    name: "eth1".into(),
                    mac: String::new(),
                    mtu: 1500,
                    up: false,
                    addresses: vec!["300.0.0.1/24".into()],
                },
            ],
        };
        let shown = shown(reply);
        let names: Vec<&str> = shown.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lo", "eth0"]);
        assert_eq!(shown[0].mac, None);
        assert_eq!(shown[1].mac.as_deref(), Some("02:00:0a:00:00:02"));
    }
}
