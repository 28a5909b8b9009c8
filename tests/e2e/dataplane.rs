//! Tenant networks on real nodes, asserted inside the cluster test (whose guests are
//! already booted: A's two VMs on two nodes, B's one): A's VMs reach each other across
//! nodes over VXLAN (ping, HTTP, a TCP transfer with tcp_bbr); B's VM, on a network with
//! the same CIDR, reaches none of A's; a guest that changes its address or MAC gets
//! nothing through; no guest reaches its node. Also: what VMs report of their interfaces
//! and platform modules, and a node that leaves taking its tunnel entries along.

use crate::support::Plane;
use serde_json::{json, Value};

/// Runs `script` with `sh -c` in VM `id` as `token`; the exec result.
pub fn sh(p: &Plane, token: &str, id: &str, script: &str) -> Value {
    p.post(
        token,
        &format!("/v1/vms/{id}/exec"),
        &json!({"argv": ["sh", "-c", script], "timeout_s": 60}),
    )
    .expect(200)
    .body
}

/// The address `status.network` gives VM `id`.
pub fn ip_of(p: &Plane, token: &str, id: &str) -> String {
    let vm = p.get(token, &format!("/v1/vms/{id}")).expect(200).body;
    vm["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("no address: {vm}"))
        .to_string()
}

/// The underlay addresses that node namespace `netns`'s tunnels send to (every
/// forwarding entry with a `dst`: floods and learned MACs).
pub fn tunnel_destinations(netns: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "bridge", "fdb", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" dev mvvx"))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "dst").nth(1))
        .map(str::to_string)
        .collect()
}

/// What `status` says of VM `id` once it lists eth0 with `ip`: the guest's own view of
/// its interfaces (with lo) and the platform modules its agent loaded at boot.
fn reported_interfaces(p: &Plane, token: &str, id: &str, ip: &str) -> Value {
    crate::support::wait_for("the guest's interfaces in its status", 60, || {
        let vm = p.get(token, &format!("/v1/vms/{id}")).expect(200).body;
        let eth0 = vm["status"]["interfaces"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == "eth0")?
            .clone();
        eth0["addresses"]
            .as_array()?
            .contains(&json!(format!("{ip}/24")))
            .then_some(vm)
    })
}

/// Whether `from` gets an answer to a ping of `to` (two tries).
pub fn pings(p: &Plane, token: &str, from: &str, to: &str) -> bool {
    sh(p, token, from, &format!("ping -c 2 -W 2 {to}"))["exit_code"] == 0
}

/// A's `a1` and `a2` (on different nodes, tcp_bbr Loaded in `a1`), B's `b1`.
pub fn across_nodes(p: &Plane, a: &str, b: &str, a1: &str, a2: &str, b1: &str) {
    let (ip1, ip2, ipb) = (ip_of(p, a, a1), ip_of(p, a, a2), ip_of(p, b, b1));
    // The guest configured what the control plane allocated.
    let shown = sh(p, a, a1, "ip -o -4 addr show");
    assert!(
        shown["stdout"]
            .as_str()
            .unwrap()
            .contains(&format!("{ip1}/24")),
        "{shown}"
    );
    // Its status shows what the guest's kernel has: eth0 with that address, the MAC
    // and MTU the node gave it, lo; the virtio drivers as platform modules, apart from
    // the tenant's.
    let vm = reported_interfaces(p, a, a1, &ip1);
    let status = &vm["status"];
    let eth0 = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .unwrap();
    assert_eq!(eth0["mac"], status["network"]["mac"], "{vm}");
    assert_eq!(eth0["up"], true, "{vm}");
    assert_eq!(eth0["mtu"], 1450, "{vm}");
    assert!(
        status["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "lo" && i["addresses"] == json!(["127.0.0.1/8"])),
        "{vm}"
    );
    let platform = status["platform_modules"].as_array().unwrap();
    for m in ["virtio_net", "virtio_pci", "virtio_console"] {
        assert!(platform.contains(&json!(m)), "{m}: {vm}");
        assert!(
            !status["guest_modules"]
                .as_array()
                .unwrap()
                .contains(&json!(m)),
            "{m}: {vm}"
        );
    }
    // An address the tenant adds inside shows there too, and goes when removed.
    let added = sh(p, a, a2, "ip addr add 10.0.0.200/24 dev eth0");
    assert_eq!(added["exit_code"], 0, "{added}");
    reported_interfaces(p, a, a2, "10.0.0.200");
    let removed = sh(p, a, a2, "ip addr del 10.0.0.200/24 dev eth0");
    assert_eq!(removed["exit_code"], 0, "{removed}");

    assert!(pings(p, a, a1, &ip2), "a1 -> a2 across nodes");
    assert!(pings(p, a, a2, &ip1), "a2 -> a1 across nodes");
    // A page served by a2, fetched by a1.
    let serve = sh(
        p,
        a,
        a2,
        "mkdir -p /tmp/www && echo served-by-a2 > /tmp/www/index.html && httpd -p 8080 -h /tmp/www",
    );
    assert_eq!(serve["exit_code"], 0, "{serve}");
    let page = sh(p, a, a1, &format!("wget -q -O - http://{ip2}:8080/"));
    assert_eq!(page["stdout"], "served-by-a2\n", "{page}");

    // tcp_bbr, loaded through the API, carries a1's transfer to a2: a socket using a
    // congestion control holds a reference on its module, and a2's listener reads nothing,
    // so the connection stays up while a1 looks.
    let listen = sh(
        p,
        a,
        a2,
        "setsid sh -c 'nc -l -p 9000 | sleep 60' </dev/null >/dev/null 2>&1 &",
    );
    assert_eq!(listen["exit_code"], 0, "{listen}");
    let bbr = sh(
        p,
        a,
        a1,
        &format!(
            "sysctl -w net.ipv4.tcp_congestion_control=bbr >/dev/null && \
             (setsid sh -c 'dd if=/dev/zero bs=64k count=64 2>/dev/null | nc {ip2} 9000' </dev/null >/dev/null 2>&1 &) && \
             for i in 1 2 3 4 5 6 7 8 9 10; do \
               users=$(awk '$1 == \"tcp_bbr\" {{print $3}}' /proc/modules); \
               [ \"${{users:-0}}\" -ge 1 ] && {{ echo \"tcp_bbr users $users\"; cat /proc/sys/net/ipv4/tcp_congestion_control; exit 0; }}; \
               sleep 1; \
             done; grep tcp_bbr /proc/modules; exit 1"
        ),
    );
    assert_eq!(bbr["exit_code"], 0, "a1's connection to a2 uses bbr: {bbr}");
    assert!(bbr["stdout"].as_str().unwrap().contains("bbr\n"), "{bbr}");

    // B: the same CIDR as A (both tenants' `default`), yet none of A's VMs answers it,
    // whichever node it is on.
    for target in [&ip1, &ip2] {
        if *target != ipb {
            assert!(!pings(p, b, b1, target), "B reached A's {target}");
        }
    }

    // a1 takes another address, then another MAC: nothing gets through; with its own
    // back, it is reachable again.
    let spoof = sh(
        p,
        a,
        a1,
        &format!(
            "ip addr add 10.0.0.250/24 dev eth0 && \
             if ping -c 2 -W 2 -I 10.0.0.250 {ip2}; then echo SPOOFED-IP; fi; \
             ip addr del 10.0.0.250/24 dev eth0; \
             mac=$(cat /sys/class/net/eth0/address); \
             ip link set eth0 down && ip link set eth0 address 02:00:00:00:be:ef && ip link set eth0 up && \
             ip addr add {ip1}/24 dev eth0 2>/dev/null; \
             if ping -c 2 -W 2 {ip2}; then echo SPOOFED-MAC; fi; \
             ip link set eth0 down && ip link set eth0 address $mac && ip link set eth0 up && \
             ip addr add {ip1}/24 dev eth0 2>/dev/null; sleep 1; ping -c 3 -W 2 {ip2} >/dev/null && echo BACK"
        ),
    );
    let out = spoof["stdout"].as_str().unwrap();
    assert!(!out.contains("SPOOFED"), "{spoof}");
    assert!(out.contains("BACK"), "{spoof}");

    // No guest reaches its node: not the gateway address (nothing answers there), not
    // the node's underlay address even with a route to it, so neither the node API nor
    // the control plane (both on the host's loopback) is anywhere it can get to.
    let out = sh(
        p,
        a,
        a1,
        "ip route add 198.18.0.0/24 dev eth0; \
         for t in 10.0.0.1 198.18.0.21 198.18.0.22; do ping -c 1 -W 1 $t >/dev/null && echo REACHED $t; done; \
         echo done",
    );
    assert_eq!(out["stdout"], "done\n", "{out}");
}

#[test]
fn bench_network_prints_the_peer_and_both_paths() {
    let text = crate::support::bench_output(&["network", "--megabytes", "2", "--pings", "3"]);
    for row in [
        "peer: two namespaces",
        "on one node",
        "on two nodes (VXLAN)",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(row))
            .unwrap_or_else(|| panic!("{row}: {text}"));
        let figures = line
            .split_whitespace()
            .filter(|w| w.parse::<f64>().is_ok_and(|v| v > 0.0))
            .count();
        assert!(figures >= 2, "throughput and RTT: {line}");
    }
    assert!(text.contains("ratios to the peer"), "{text}");
}
