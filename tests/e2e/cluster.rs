//! The product end to end: a control plane and two node agents as separate processes,
//! real HTTP, sled, and QEMU guests running Debian's kernel. Tenants A and B drive VMs and
//! module loads over REST; node failure, control-plane failure, quotas and capacity.

use crate::agents::NodeAgent;
use crate::host::{jail_gone, processes_mentioning, HostCleanup, HostProcess};
use crate::support::{wait_for, Plane, Resp};
use serde_json::{json, Value};

/// This test's cgroup parent for its node agents' jails.
fn cgroup_parent() -> String {
    format!("modvisor-e2e-cluster-{}", std::process::id())
}

/// The hypervisor processes of VM `id` (QEMU is named `modvisor-<id>`).
fn vm_processes(id: &str) -> Vec<HostProcess> {
    processes_mentioning(&format!("modvisor-{id}"))
}

#[track_caller]
fn vm(p: &Plane, token: &str, id: &str) -> Value {
    p.get(token, &format!("/v1/vms/{id}")).expect(200).body
}

fn running(p: &Plane, token: &str, id: &str) -> Value {
    wait_for(&format!("VM {id} Running"), 240, || {
        let v = vm(p, token, id);
        assert_ne!(v["status"]["phase"], "Failed", "{v}");
        (v["status"]["phase"] == "Running").then_some(v)
    })
}

fn guest_modules(v: &Value) -> Vec<String> {
    v["status"]["guest_modules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn create(p: &Plane, token: &str, body: Value) -> Resp {
    p.post(token, "/v1/vms", &body)
}

/// A node serves TLS with a certificate of the control plane's CA naming it (and nothing
/// else), and takes only tokens addressed to it by name: the control plane's key signs
/// them all, but one for node-2 (or for the control plane's own audience) is refused by
/// node-1.
fn tokens_to_one_node_are_refused_by_another(p: &Plane, admin: &str) {
    let nodes = p.get(admin, "/v1/nodes").expect(200).body;
    let node1 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node-1")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |aud: &str| {
        crate::support::sign(
            &p.key_pem(),
            &json!({"sub": "control-plane", "role": "control_plane", "aud": aud,
                    "iat": now, "exp": now + 60, "jti": format!("aud-{aud}")}),
        )
    };
    let trusting = |name: &str| {
        let tls = modvisor_node_api::tls::client_config(&p.ca_pem(), name).unwrap();
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap()
    };
    assert!(node1.starts_with("https://"), "{node1}");
    let url = format!("{node1}/v1/vms/no-such-vm");
    // Plain HTTP is not served, and node-1's certificate does not pass for node-2.
    assert!(
        p.http
            .get(url.replace("https://", "http://"))
            .send()
            .is_err(),
        "node-1 answered plain HTTP"
    );
    assert!(
        trusting("node-2").get(&url).send().is_err(),
        "node-1's certificate passed for node-2"
    );
    let node1_client = trusting("node-1");
    let status = |aud: &str| {
        node1_client
            .get(&url)
            .bearer_auth(token(aud))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status("node:node-2"), 401, "node-1 took node-2's token");
    assert_eq!(status("modvisor"), 401, "node-1 took a control-plane token");
    assert_eq!(status("node:node-1"), 404, "node-1's own token");
}

#[test]
fn tenants_drive_vms_and_vetted_modules_across_two_nodes() {
    // Fixed ports, so the node agents find the control plane again after its restart.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, internal) = (free().to_string(), free().to_string());
    let mut p = Plane::start_with(&[
        "--nodes",
        "0",
        "--catalog",
        "kernel",
        "--node-timeout-secs",
        "4",
        "--fence-after-secs",
        "8",
        // Short-lived node credentials: heartbeats renew them while the test runs.
        "--node-credential-ttl-secs",
        "40",
        "--listen",
        &listen,
        "--internal-listen",
        &internal,
    ]);
    let root = p.dir.path().join("nodes");
    let _cleanup = HostCleanup {
        dir: p.dir.path().to_path_buf(),
        cgroup_parent: cgroup_parent(),
    };
    let (a, b, admin) = (p.token("tenant-a"), p.token("tenant-b"), p.token("admin"));
    // Two agents on one host: disjoint per-VM uid ranges.
    let mut n1 = NodeAgent::start("node-1", 2_000_000, &cgroup_parent(), &p, &root);
    let mut n2 = NodeAgent::start("node-2", 2_100_000, &cgroup_parent(), &p, &root);
    wait_for("two Ready nodes", 120, || {
        let nodes = p.get(&admin, "/v1/nodes").expect(200).body;
        let ready = nodes
            .as_array()?
            .iter()
            .filter(|n| n["state"] == "Ready")
            .count();
        (ready == 2).then_some(nodes)
    });
    tokens_to_one_node_are_refused_by_another(&p, &admin);

    // A: two VMs, B: one. A's two land on different nodes.
    let small = |name: &str| json!({"name": name, "vcpus": 1, "memory_mib": 256});
    let created = create(&p, &a, small("a1")).expect(201).body;
    // With Ready nodes, a new VM's reason is the truth: not placed yet (it used to say
    // that no node agent had registered).
    assert_eq!(
        created["status"]["reason"], "waiting for the scheduler to place it",
        "{created}"
    );
    let a1 = created["id"].as_str().unwrap().to_string();
    let a2 = create(&p, &a, small("a2")).expect(201).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b1 = create(&p, &b, small("b1")).expect(201).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let va1 = running(&p, &a, &a1);
    let va2 = running(&p, &a, &a2);
    running(&p, &b, &b1);
    assert_ne!(
        va1["status"]["node"], va2["status"]["node"],
        "a tenant's VMs are spread"
    );
    // Every VM process runs jailed: its node's per-VM uid, its own cgroup, its own root.
    for (id, v) in [(&a1, &va1), (&a2, &va2)] {
        let node = v["status"]["node"].as_str().unwrap();
        let base = if node == "node-1" {
            2_000_000
        } else {
            2_100_000
        };
        let procs = vm_processes(id);
        assert_eq!(procs.len(), 1, "{procs:?}");
        let q = &procs[0];
        assert!((base..base + 65_536).contains(&q.uid), "{q:?}");
        assert!(
            q.cgroups
                .contains(&format!("{}/{node}/{id}", cgroup_parent())),
            "{q:?}"
        );
        assert!(root.join(node).join("jails").join(id).join("root").is_dir());
        for (name, visible) in [
            ("run", true),
            ("usr", true),
            ("home", false),
            ("tmp", false),
        ] {
            assert_eq!(
                q.root_entries.contains(&name.into()),
                visible,
                "/{name}: {q:?}"
            );
        }
    }

    // A asks for tcp_bbr, B for wireguard (eight dependencies): both end Loaded, and the
    // guests' own module lists, through the API, show them.
    p.post(
        &a,
        &format!("/v1/vms/{a1}/modules"),
        &json!({"name": "tcp_bbr"}),
    )
    .expect(202);
    p.post(
        &b,
        &format!("/v1/vms/{b1}/modules"),
        &json!({"name": "wireguard"}),
    )
    .expect(202);
    assert_eq!(
        crate::fixtures::request_settled(&p, &a, &a1, "tcp_bbr", 240)["state"],
        "Loaded"
    );
    let wg = crate::fixtures::request_settled(&p, &b, &b1, "wireguard", 400);
    assert_eq!(wg["state"], "Loaded", "{wg}");
    let listed = wait_for("guest module lists", 60, || {
        let (x, y) = (vm(&p, &a, &a1), vm(&p, &b, &b1));
        (guest_modules(&x).contains(&"tcp_bbr".into())
            && guest_modules(&y).contains(&"wireguard".into()))
        .then(|| json!([x, y]))
    });
    let b_mods = guest_modules(&listed[1]);
    for dep in [
        "udp_tunnel",
        "ip6_udp_tunnel",
        "libchacha20poly1305",
        "curve25519_x86_64",
    ] {
        assert!(b_mods.contains(&dep.to_string()), "{dep} not in {b_mods:?}");
    }
    assert!(
        !guest_modules(&listed[0]).contains(&"wireguard".to_string()),
        "each VM has its own kernel"
    );

    // Their networks: A's VMs talk across nodes (with tcp_bbr), B's reach none of A's.
    crate::dataplane::across_nodes(&p, &a, &b, &a1, &a2, &b1);

    // B can neither see nor touch A's VMs or module requests, and the reverse.
    for (me, other) in [(&b, &a1), (&a, &b1)] {
        p.get(me, &format!("/v1/vms/{other}")).expect(404);
        p.get(me, &format!("/v1/vms/{other}/modules")).expect(404);
        p.post(
            me,
            &format!("/v1/vms/{other}/modules"),
            &json!({"name": "dummy"}),
        )
        .expect(404);
        p.delete(me, &format!("/v1/vms/{other}/modules/tcp_bbr"))
            .expect(404);
        p.delete(me, &format!("/v1/vms/{other}")).expect(404);
    }

    // An unapproved module is Rejected at once and never reaches a guest.
    let r = p
        .post(
            &a,
            &format!("/v1/vms/{a1}/modules"),
            &json!({"name": "nfs"}),
        )
        .expect(403);
    assert_eq!(r.problem_slug(), "module-not-approved");
    // A blob tampered in a node's cache is not used: the node drops it, fetches the blob
    // again by its sha256, and the module loads.
    let catalog = p.get(&admin, "/v1/modules").expect(200).body;
    let dummy_sha = catalog
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "dummy")
        .unwrap()["versions"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let a2_node = vm(&p, &a, &a2)["status"]["node"]
        .as_str()
        .unwrap()
        .to_string();
    let blob_dir = root.join(&a2_node).join("blobs");
    std::fs::create_dir_all(&blob_dir).unwrap();
    let mut tampered = crate::support::real_module("dummy");
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    std::fs::write(blob_dir.join(&dummy_sha), &tampered).unwrap();
    p.post(
        &a,
        &format!("/v1/vms/{a2}/modules"),
        &json!({"name": "dummy"}),
    )
    .expect(202);
    let r = crate::fixtures::request_settled(&p, &a, &a2, "dummy", 120);
    assert_eq!(r["state"], "Loaded", "{r}");
    assert_ne!(std::fs::read(blob_dir.join(&dummy_sha)).unwrap(), tampered);
    wait_for("dummy in the guest", 60, || {
        guest_modules(&vm(&p, &a, &a2))
            .contains(&"dummy".to_string())
            .then_some(Value::Null)
    });

    // kill -9 of the node agent under a1: its node becomes NotReady, a1 is Lost and is
    // recreated on the other node with tcp_bbr loaded again.
    let a1_node = vm(&p, &a, &a1)["status"]["node"]
        .as_str()
        .unwrap()
        .to_string();
    let (dead, alive, alive_netns) = if a1_node == "node-1" {
        (&mut n1, "node-2", n2.netns())
    } else {
        (&mut n2, "node-1", n1.netns())
    };
    let dead_underlay = dead.underlay_address().replace("/24", "");
    assert!(
        crate::dataplane::tunnel_destinations(&alive_netns).contains(&dead_underlay),
        "{alive} floods to {dead_underlay}"
    );
    dead.kill9();
    wait_for("the dead node NotReady", 60, || {
        let nodes = p.get(&admin, "/v1/nodes").expect(200).body;
        nodes
            .as_array()?
            .iter()
            .find(|n| n["name"] == a1_node && n["state"] == "NotReady")
            .cloned()
    });
    // A node that left is no peer any more: the other's tunnels send nothing its way.
    wait_for("the dead node's tunnel entries gone", 30, || {
        let left = crate::dataplane::tunnel_destinations(&alive_netns);
        (!left.contains(&dead_underlay)).then_some(Value::Null)
    });
    let moved = wait_for("a1 recreated on the other node", 300, || {
        let v = vm(&p, &a, &a1);
        (v["status"]["node"] == alive && v["status"]["phase"] == "Running").then_some(v)
    });
    assert_eq!(moved["status"]["node"], alive);
    // Recreated elsewhere, a1 keeps its address, and a2 reaches it there.
    assert_eq!(moved["status"]["network"], va1["status"]["network"]);
    let ip1 = crate::dataplane::ip_of(&p, &a, &a1);
    assert!(crate::dataplane::pings(&p, &a, &a2, &ip1));
    assert_eq!(
        crate::fixtures::request_settled(&p, &a, &a1, "tcp_bbr", 240)["state"],
        "Loaded"
    );
    wait_for("tcp_bbr in the recreated guest", 60, || {
        guest_modules(&vm(&p, &a, &a1))
            .contains(&"tcp_bbr".into())
            .then_some(Value::Null)
    });
    // Restart the dead agent: it re-adopts its old guests, learns they are not its any
    // more, and removes them: a1 runs exactly once.
    dead.spawn(&p);
    let dead_dir = dead.dir.clone();
    wait_for("the old copy of a1 removed, with its jail", 120, || {
        (vm_processes(&a1).len() == 1 && jail_gone(&dead_dir, &cgroup_parent(), &a1_node, &a1))
            .then_some(Value::Null)
    });

    // kill -9 of the control plane right after it acknowledged a VM with a module;
    // after the restart nothing acknowledged is lost and the flow completes.
    let a3 = create(&p, &a, json!({"name": "a3", "vcpus": 1, "memory_mib": 256, "modules": [{"name": "dummy", "params": {"numdummies": "3"}}]}))
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.kill9();
    p.respawn();
    running(&p, &a, &a3);
    let r = crate::fixtures::request_settled(&p, &a, &a3, "dummy", 240);
    assert_eq!(r["state"], "Loaded", "{r}");

    // Quota exhaustion is a clear 409; no capacity is a Pending VM with a reason.
    p.put(
        &admin,
        "/v1/tenants/tenant-b/quota",
        &json!({"max_vms": 1, "max_vcpus": 8, "max_memory_mib": 8192}),
    )
    .expect(200);
    assert_eq!(
        create(&p, &b, small("b2")).expect(409).body["quota"],
        "max_vms"
    );
    p.put(
        &admin,
        "/v1/tenants/tenant-a/quota",
        &json!({"max_vms": 10, "max_vcpus": 32, "max_memory_mib": 200000}),
    )
    .expect(200);
    let huge = create(
        &p,
        &a,
        json!({"name": "huge", "vcpus": 1, "memory_mib": 60000}),
    )
    .expect(201)
    .body;
    let id = huge["id"].as_str().unwrap().to_string();
    let pending = wait_for("a reason for the unschedulable VM", 30, || {
        let v = vm(&p, &a, &id);
        (v["status"]["phase"] == "Pending"
            && v["status"]["reason"].as_str()?.contains("no node fits"))
        .then_some(v)
    });
    assert!(
        pending["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("60000"),
        "{pending}"
    );

    // Deleting a placed VM: 202, then it is gone from the API and from its node.
    let b1_node = vm(&p, &b, &b1)["status"]["node"]
        .as_str()
        .unwrap()
        .to_string();
    p.delete(&b, &format!("/v1/vms/{b1}")).expect(202);
    wait_for("b1 deleted, with its jail", 120, || {
        (p.get(&b, &format!("/v1/vms/{b1}")).status == 404
            && vm_processes(&b1).is_empty()
            && jail_gone(&root.join(&b1_node), &cgroup_parent(), &b1_node, &b1))
        .then_some(Value::Null)
    });
    let t = p.get(&admin, "/v1/tenants/tenant-b").expect(200).body;
    assert_eq!(t["usage"]["vms"], 0);

    // All along, heartbeats renewed the nodes' 40 s credentials, and the nodes took them.
    wait_for("both nodes' credentials renewed by heartbeats", 45, || {
        let events = p.api(&admin).events(1000).unwrap();
        ["node-1", "node-2"]
            .iter()
            .all(|n| {
                events.iter().any(|e| {
                    e.action == "node.credential.renew" && e.resource == format!("nodes/{n}")
                })
            })
            .then_some(Value::Null)
    });
    let nodes = p.get(&admin, "/v1/nodes").expect(200).body;
    for n in nodes.as_array().unwrap() {
        assert_eq!(n["state"], "Ready", "{n}");
    }
}
