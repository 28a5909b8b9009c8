//! Placement through the real store (sled in a temporary directory): batches spread a
//! tenant's VMs, never overcommit a node, reserve exactly what they place (also when one
//! batch puts several VMs on the same node), and say why a VM cannot go anywhere.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modvisor_control_plane::auth::TokenKeys;
use modvisor_control_plane::model::{
    CreateTenant, NodeFeature, Phase, Quota, RegisterNode, Resources, VmSpec,
};
use modvisor_control_plane::store::{Datastore, Placement, Registrant, SledKv, Strategy};
use std::sync::Arc;

fn store(dir: &std::path::Path) -> Datastore {
    Datastore::new(Arc::new(SledKv::open(&dir.join("db")).unwrap()))
}

fn node(store: &Datastore, name: &str, vcpus: u64, memory_mib: u64) {
    node_with(
        store,
        name,
        vcpus,
        memory_mib,
        vec![NodeFeature::Networking],
    );
}

fn node_with(
    store: &Datastore,
    name: &str,
    vcpus: u64,
    memory_mib: u64,
    features: Vec<NodeFeature>,
) {
    let reg = RegisterNode {
        name: name.into(),
        address: "http://127.0.0.1:9".into(),
        capacity: Resources { vcpus, memory_mib },
        driver: "qemu".into(),
        hardware_virtualization: false,
        kernel_release: "6.1.0-56-cloud-amd64".into(),
        csr_pem: String::new(), // the store signs nothing
        features,
        underlay_address: None,
    };
    let (_, credential) = TokenKeys::ephemeral()
        .unwrap()
        .node_credential(name, 3600)
        .unwrap();
    store
        .register_node(&reg, Registrant::Bootstrap, &credential)
        .unwrap();
}

fn tenant(store: &Datastore, name: &str) {
    let quota = Quota {
        max_vms: 1000,
        max_vcpus: 1000,
        max_memory_mib: 1 << 30,
        ..Quota::default()
    };
    store
        .create_tenant(
            "test",
            &CreateTenant {
                name: name.into(),
                quota: Some(quota),
            },
        )
        .unwrap();
}

fn vm(store: &Datastore, tenant: &str, name: &str, vcpus: u32, memory_mib: u32) -> String {
    let spec = VmSpec {
        name: name.into(),
        kernel_mode: Default::default(),
        vcpus,
        memory_mib,
        modules: vec![],
        power_state: Default::default(),
        user_data: None,
        // Placement by capacity: no tenant network (its /24 would cap a tenant at 253).
        network: Some("none".into()),
    };
    store.create_vm("test", tenant, &spec).unwrap().id
}

#[test]
fn a_batch_spreads_reserves_exactly_and_never_overcommits() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    for n in ["n1", "n2", "n3"] {
        node(&s, n, 4, 4096);
    }
    tenant(&s, "a");
    tenant(&s, "b");
    // A's three VMs land on three different nodes.
    let a: Vec<String> = (0..3)
        .map(|i| vm(&s, "a", &format!("a{i}"), 1, 1024))
        .collect();
    let placed = s.place_batch(&a, Strategy::Spread).unwrap();
    let mut nodes: Vec<String> = placed
        .iter()
        .map(|(_, p)| match p {
            Placement::Placed(n) => n.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    // B asks for far more than fits: 3 nodes x 4 vCPUs, 3 already used, so 9 more fit.
    let b: Vec<String> = (0..12)
        .map(|i| vm(&s, "b", &format!("b{i}"), 1, 256))
        .collect();
    let placed = s.place_batch(&b, Strategy::Spread).unwrap();
    let ok = placed
        .iter()
        .filter(|(_, p)| matches!(p, Placement::Placed(_)))
        .count();
    assert_eq!(ok, 9, "{placed:?}");
    let refused = placed
        .iter()
        .find_map(|(_, p)| match p {
            Placement::Unschedulable(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert!(refused.contains("no node fits 1 vCPUs"), "{refused}");
    // Every node's reservation is the sum of what it holds (several VMs of one batch on
    // one node are reserved once each), and no node is over its capacity.
    for n in s.list_nodes().unwrap() {
        assert_eq!(n.allocated.vcpus, 4, "{n:?}");
        assert!(n.allocated.memory_mib <= n.capacity.memory_mib, "{n:?}");
    }
    let total: u64 = s
        .list_nodes()
        .unwrap()
        .iter()
        .map(|n| n.allocated.memory_mib)
        .sum();
    assert_eq!(total, 3 * 1024 + 9 * 256);
    // The placed VMs are Scheduled on their node; the rest stay Pending with the reason.
    let mut pending = 0;
    for id in &b {
        let v = s
            .get_vm(modvisor_control_plane::store::VmFilter::All, id)
            .unwrap();
        match v.status.phase {
            Phase::Scheduled => assert!(v.status.node.is_some()),
            Phase::Pending => {
                pending += 1;
                assert!(v.status.reason.unwrap().contains("no node fits"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pending, 3);
    // Placing the same VMs again changes nothing.
    assert!(s
        .place_batch(&a, Strategy::Spread)
        .unwrap()
        .iter()
        .all(|(_, p)| !matches!(p, Placement::Placed(_))));
    assert_eq!(
        s.list_nodes()
            .unwrap()
            .iter()
            .map(|n| n.allocated.vcpus)
            .sum::<u64>(),
        12
    );
}

#[test]
fn binpack_fills_one_node_before_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    node(&s, "n1", 8, 8192);
    node(&s, "n2", 8, 8192);
    tenant(&s, "a");
    let ids: Vec<String> = (0..4)
        .map(|i| vm(&s, "a", &format!("v{i}"), 2, 1024))
        .collect();
    let placed = s.place_batch(&ids, Strategy::Binpack).unwrap();
    let first = match &placed[0].1 {
        Placement::Placed(n) => n.clone(),
        other => panic!("{other:?}"),
    };
    assert!(placed
        .iter()
        .all(|(_, p)| *p == Placement::Placed(first.clone())));
}

#[test]
fn a_vm_on_a_tenant_network_goes_only_to_a_node_with_networking() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    node_with(&s, "plain", 8, 8192, Vec::new());
    tenant(&s, "t");
    let spec = |name: &str, network: Option<&str>| VmSpec {
        name: name.into(),
        kernel_mode: Default::default(),
        vcpus: 1,
        memory_mib: 256,
        modules: vec![],
        power_state: Default::default(),
        user_data: None,
        network: network.map(str::to_string),
    };
    let networked = s.create_vm("test", "t", &spec("net", None)).unwrap().id;
    let bare = s
        .create_vm("test", "t", &spec("bare", Some("none")))
        .unwrap()
        .id;
    match s.place_vm(&networked, Strategy::Spread).unwrap() {
        Placement::Unschedulable(reason) => {
            assert!(reason.contains("1 without networking"), "{reason}");
            assert!(reason.contains("network \"none\""), "{reason}");
        }
        other => panic!("placed on a node without networking: {other:?}"),
    }
    assert_eq!(
        s.place_vm(&bare, Strategy::Spread).unwrap(),
        Placement::Placed("plain".into())
    );
    // A node with networking joins: the networked VM goes there.
    node(&s, "netted", 8, 8192);
    assert_eq!(
        s.place_vm(&networked, Strategy::Spread).unwrap(),
        Placement::Placed("netted".into())
    );
}
