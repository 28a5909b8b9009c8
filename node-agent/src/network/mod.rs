//! Tenant networks on a node. Everything lives in a network namespace of the node's own
//! (`modvisor-<node>-<hash of its data directory>`), created at start and kept across restarts, never in the host's:
//! one bridge per tenant network present on the node (named for its VXLAN id), one tap
//! per VM on it (its descriptor handed to the jailed hypervisor), a VXLAN device per
//! network towards the other nodes' underlay addresses, and the nftables guards of
//! [`rules`]. The node namespace reaches other nodes only through its underlay link (a
//! veth into a bridge in the underlay namespace); nothing connects it to the host's.

pub mod cmd;
pub mod names;
pub mod rules;

use cmd::Netns;
use modvisor_node_api::NetworkAttachment;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

/// VXLAN's UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// What VXLAN over IPv4 adds to each frame: the guests' MTU is the underlay's less this.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The underlay link's MTU.
pub const UNDERLAY_MTU: u32 = 1500;
/// The MTU of tenant networks (guests, taps, bridges, VXLAN devices).
pub const TENANT_MTU: u32 = UNDERLAY_MTU - VXLAN_OVERHEAD;

/// A tenant-network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A command (iproute2, nftables) failed.
    #[error("{command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and what it printed.
        reason: String,
    },
    /// Creating a VM's tap failed.
    #[error("tap {tap}: {source}")]
    Tap {
        /// The tap's name.
        tap: String,
        /// Why.
        source: std::io::Error,
    },
    /// A namespace's file is not (yet) a mounted namespace: an `ip netns add` that died
    /// halfway left it, or one still running took longer than `waited`.
    #[error("{} is not a network namespace after {waited:?} (remove it with `ip netns delete`)", path.display())]
    NotANamespace {
        /// The file under /run/netns.
        path: std::path::PathBuf,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// What the control plane sent is out of range.
    #[error("network attachment: {0}")]
    Attachment(String),
}

/// Where the node's underlay link goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// The namespace holding the underlay bridge (created with it if absent).
    pub netns: String,
    /// The node's address on the underlay, and its prefix length.
    pub address: Ipv4Addr,
    /// The prefix length of the underlay network.
    pub prefix: u8,
}

impl Underlay {
    /// The underlay in namespace `netns` with the node's address `cidr` (`A.B.C.D/N`).
    pub fn parse(netns: &str, cidr: &str) -> Result<Self, String> {
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not A.B.C.D/N"))?;
        let address: Ipv4Addr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
        if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
            return Err(format!("{address} is not a unicast address"));
        }
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix {prefix:?} is not 8 to 30"))?;
        if !is_namespace_name(netns) {
            return Err(format!("{netns:?} is not a namespace name"));
        }
        Ok(Underlay {
            netns: netns.to_string(),
            address,
            prefix,
        })
    }
}

fn is_namespace_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The namespace of node `node` whose data directory is `data_dir`: stable across
/// restarts, distinct for two node agents of the same name on one host (two `up`s).
pub fn namespace_of(node: &str, data_dir: &std::path::Path) -> String {
    format!(
        "modvisor-{node}-{}",
        names::short_hash(data_dir.as_os_str().as_encoded_bytes())
    )
}

/// The underlay namespace of a `modvisor up` whose data directory is `data_dir` (its
/// nodes' underlay links meet there).
pub fn up_underlay_namespace(data_dir: &std::path::Path) -> String {
    format!(
        "modvisor-underlay-{}",
        names::short_hash(data_dir.as_os_str().as_encoded_bytes())
    )
}

/// Removes node `node`'s namespace (and everything in it: bridges, VXLAN devices, taps
/// of stopped guests), for an operator retiring the node or a test cleaning up.
pub fn remove_namespace(node: &str, data_dir: &std::path::Path) -> Result<(), NetworkError> {
    Netns(namespace_of(node, data_dir)).remove()
}

/// The tenant networks of one node.
pub struct NodeNetwork {
    netns: Netns,
    underlay: Option<Underlay>,
    /// The other nodes' underlay addresses, as the control plane last sent them. Its lock
    /// also serialises every change to bridges, VXLAN devices, taps and guards.
    peers: Mutex<BTreeSet<Ipv4Addr>>,
}

impl NodeNetwork {
    /// Opens (creating what is missing) the namespace of node `node`: its base rules, its
    /// sysctls and, with `underlay`, its underlay link.
    pub fn open(
        node: &str,
        data_dir: &std::path::Path,
        underlay: Option<Underlay>,
    ) -> Result<Self, NetworkError> {
        let netns = Netns(namespace_of(node, data_dir));
        netns.ensure()?;
        // Nothing routed, no IPv6 (tenant networks are IPv4; ND would bypass the guards).
        for (key, value) in [
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ] {
            netns.sysctl(key, value)?;
        }
        // With br_netfilter loaded (by anything on the host), bridged frames would go
        // through IP hooks too; its switches exist only then.
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            if std::path::Path::new("/proc/sys")
                .join(key.replace('.', "/"))
                .exists()
            {
                netns.sysctl(key, "0")?;
            }
        }
        netns.ip(&["link", "set", "lo", "up"])?;
        // Always anew (rules of an older version go): the guards of VMs that run on are
        // put back as they are re-adopted, and until then their taps drop everything.
        netns.nft(&rules::base())?;
        if let Some(u) = &underlay {
            connect_underlay(&netns, &netns.0, u)?;
        }
        Ok(NodeNetwork {
            netns,
            underlay,
            peers: Mutex::new(BTreeSet::new()),
        })
    }

    /// The peers, and with them the right to change the namespace. A panic in another
    /// change leaves the set as it was (it is written only after the change succeeded).
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<Ipv4Addr>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The node's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The node's underlay address, if it has an underlay.
    pub fn underlay_address(&self) -> Option<Ipv4Addr> {
        self.underlay.as_ref().map(|u| u.address)
    }

    /// Builds VM `id`'s interface on its tenant network: the network's bridge (and VXLAN
    /// device) if this is its first VM here, a fresh tap on it, the tap's guard. Returns
    /// the tap's descriptor for the hypervisor.
    pub fn attach(&self, id: &str, a: &NetworkAttachment) -> Result<OwnedFd, NetworkError> {
        a.check().map_err(NetworkError::Attachment)?;
        let peers = self.lock();
        self.ensure_bridge(a.vni, &peers)?;
        let tap = names::tap(id);
        if self.netns.links()?.contains(&tap) {
            // A tap left by an earlier boot whose hypervisor still holds it would take
            // this VM's traffic; a tap with no holder goes with its descriptor.
            self.netns.ip(&["link", "delete", &tap])?;
        }
        let fd =
            modvisor_jailer::handoff::open_tap_in(&self.netns.path(), &tap).map_err(|source| {
                NetworkError::Tap {
                    tap: tap.clone(),
                    source,
                }
            })?;
        let mtu = TENANT_MTU.to_string();
        self.netns.ip(&[
            "link",
            "set",
            &tap,
            "master",
            &names::bridge(a.vni),
            "mtu",
            &mtu,
            "up",
        ])?;
        self.netns.nft(&rules::add_guard(&tap, &a.mac, a.ip))?;
        Ok(fd)
    }

    /// Re-applies the guard of VM `id` (after the node agent restarted: its hypervisor
    /// and tap run on).
    pub fn readopt(&self, id: &str, a: &NetworkAttachment) -> Result<(), NetworkError> {
        a.check().map_err(NetworkError::Attachment)?;
        let peers = self.lock();
        self.ensure_bridge(a.vni, &peers)?;
        self.netns
            .nft(&rules::add_guard(&names::tap(id), &a.mac, a.ip))
            .map(drop)
    }

    /// Removes VM `id`'s guard and tap, and the network's bridge and VXLAN device when no
    /// other VM here is on it.
    pub fn detach(&self, id: &str, vni: u32) -> Result<(), NetworkError> {
        let _changing = self.lock();
        let tap = names::tap(id);
        let guarded = rules::guarded_taps(&self.list_guards()?);
        if guarded.contains(&tap) {
            self.netns.nft(&rules::remove_guard(&tap))?;
        }
        let links = self.netns.links()?;
        if links.contains(&tap) {
            self.netns.ip(&["link", "delete", &tap])?;
        }
        self.remove_bridge_if_unused(vni)
    }

    fn list_guards(&self) -> Result<String, NetworkError> {
        self.netns
            .nft_args(&["list", "map", "bridge", rules::TABLE, "guards"])
    }

    fn ensure_bridge(&self, vni: u32, peers: &BTreeSet<Ipv4Addr>) -> Result<(), NetworkError> {
        let links = self.netns.links()?;
        let bridge = names::bridge(vni);
        let mtu = TENANT_MTU.to_string();
        if !links.contains(&bridge) {
            self.netns.ip(&[
                "link",
                "add",
                &bridge,
                "mtu",
                &mtu,
                "type",
                "bridge",
                "stp_state",
                "0",
            ])?;
            self.netns
                .sysctl(&format!("net.ipv6.conf.{bridge}.disable_ipv6"), "1")?;
            self.netns.ip(&["link", "set", &bridge, "up"])?;
        }
        let vxlan = names::vxlan(vni);
        if let (Some(u), false) = (&self.underlay, links.contains(&vxlan)) {
            let id = vni.to_string();
            let local = u.address.to_string();
            let port = VXLAN_PORT.to_string();
            self.netns.ip(&[
                "link",
                "add",
                &vxlan,
                "mtu",
                &mtu,
                "type",
                "vxlan",
                "id",
                &id,
                "local",
                &local,
                "dstport",
                &port,
                "dev",
                names::UNDERLAY_LINK,
            ])?;
            self.netns
                .ip(&["link", "set", &vxlan, "master", &bridge, "up"])?;
            for peer in peers {
                self.flood_to(&vxlan, *peer)?;
            }
        }
        Ok(())
    }

    fn flood_to(&self, vxlan: &str, peer: Ipv4Addr) -> Result<(), NetworkError> {
        let dst = peer.to_string();
        self.netns
            .bridge(&[
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                vxlan,
                "dst",
                &dst,
            ])
            .map(drop)
    }

    fn remove_bridge_if_unused(&self, vni: u32) -> Result<(), NetworkError> {
        let bridge = names::bridge(vni);
        let ports = self.netns.ip(&["-o", "link", "show", "master", &bridge]);
        let in_use = match ports {
            Ok(text) => text.lines().any(|l| l.contains(names::TAP_PREFIX)),
            // The bridge is gone already.
            Err(_) => return Ok(()),
        };
        if !in_use {
            let vxlan = names::vxlan(vni);
            if self.netns.links()?.contains(&vxlan) {
                self.netns.ip(&["link", "delete", &vxlan])?;
            }
            self.netns.ip(&["link", "delete", &bridge])?;
        }
        Ok(())
    }

    /// Sets the other nodes' underlay addresses: every tenant network's VXLAN device
    /// floods to exactly these.
    pub fn set_peers(&self, peers: &[String]) -> Result<(), NetworkError> {
        let wanted: BTreeSet<Ipv4Addr> = peers
            .iter()
            .filter_map(|p| p.parse().ok())
            .filter(|p| Some(*p) != self.underlay_address())
            .collect();
        let mut peers = self.lock();
        if *peers == wanted || self.underlay.is_none() {
            return Ok(());
        }
        for vxlan in self
            .netns
            .links()?
            .into_iter()
            .filter(|l| l.starts_with(names::VXLAN_PREFIX))
        {
            let fdb = self.netns.bridge(&["fdb", "show", "dev", &vxlan])?;
            // Every entry towards a node: the flood entry we put there and the MACs the
            // tunnel learned behind it.
            let entries: Vec<(&str, Ipv4Addr)> = fdb
                .lines()
                .filter_map(|l| {
                    let mac = l.split_whitespace().next()?;
                    let dst = l.split_whitespace().skip_while(|w| *w != "dst").nth(1)?;
                    Some((mac, dst.parse().ok()?))
                })
                .collect();
            let present: BTreeSet<Ipv4Addr> = entries
                .iter()
                .filter(|(mac, _)| *mac == "00:00:00:00:00:00")
                .map(|(_, dst)| *dst)
                .collect();
            // A node that left takes its flood entry and what was learned behind it.
            for (mac, gone) in entries.iter().filter(|(_, d)| !wanted.contains(d)) {
                let dst = gone.to_string();
                let deleted = self
                    .netns
                    .bridge(&["fdb", "del", mac, "dev", &vxlan, "dst", &dst]);
                match deleted {
                    Ok(_) => {}
                    // A learned entry may age out between the listing and here.
                    Err(e) if *mac != "00:00:00:00:00:00" => {
                        tracing::debug!(%vxlan, %mac, error = %e, "a learned entry was gone already")
                    }
                    Err(e) => return Err(e),
                }
            }
            for new in wanted.difference(&present) {
                self.flood_to(&vxlan, *new)?;
            }
        }
        *peers = wanted;
        Ok(())
    }

    /// Removes guards and taps of VMs not in `keep` (by tap name), and bridges without
    /// taps: what an earlier run left behind.
    pub fn sweep(&self, keep: &[String]) -> Result<Vec<String>, NetworkError> {
        let keep: Vec<String> = keep.iter().map(|id| names::tap(id)).collect();
        let mut removed = Vec::new();
        let _changing = self.lock();
        for tap in rules::guarded_taps(&self.list_guards()?) {
            if !keep.contains(&tap) {
                self.netns.nft(&rules::remove_guard(&tap))?;
                removed.push(format!("guard {tap}"));
            }
        }
        let links = self.netns.links()?;
        for tap in links.iter().filter(|l| l.starts_with(names::TAP_PREFIX)) {
            if !keep.contains(tap) {
                self.netns.ip(&["link", "delete", tap])?;
                removed.push(tap.clone());
            }
        }
        for vni in links.iter().filter_map(|l| {
            l.starts_with(names::BRIDGE_PREFIX)
                .then(|| names::vni_of(l))
                .flatten()
        }) {
            self.remove_bridge_if_unused(vni)?;
        }
        Ok(removed)
    }
}

/// Joins the node's namespace to the underlay: a veth whose node end has the node's
/// underlay address and whose other end is a port of the underlay bridge (namespace and
/// bridge created if absent).
fn connect_underlay(netns: &Netns, node: &str, u: &Underlay) -> Result<(), NetworkError> {
    let underlay = Netns(u.netns.clone());
    underlay.ensure()?;
    underlay.create_link(
        names::UNDERLAY_BRIDGE,
        &[
            "link",
            "add",
            names::UNDERLAY_BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
        ],
    )?;
    underlay.ip(&["link", "set", names::UNDERLAY_BRIDGE, "up"])?;
    let peer = names::underlay_peer(node);
    if !netns.links()?.iter().any(|l| l == names::UNDERLAY_LINK) {
        // Created in the node's namespace, its other end then moved to the underlay's.
        let mtu = UNDERLAY_MTU.to_string();
        netns.ip(&[
            "link",
            "add",
            names::UNDERLAY_LINK,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &u.netns,
        ])?;
    }
    underlay.ip(&["link", "set", &peer, "master", names::UNDERLAY_BRIDGE, "up"])?;
    let cidr = format!("{}/{}", u.address, u.prefix);
    netns.ip(&["addr", "replace", &cidr, "dev", names::UNDERLAY_LINK])?;
    netns.ip(&["link", "set", names::UNDERLAY_LINK, "up"])?;
    Ok(())
}
