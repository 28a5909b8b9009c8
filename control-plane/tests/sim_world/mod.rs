//! The world the reconciler's simulated tests run in: a real sled store with one
//! registered node `n1` (simulated, the same `NodeApi` trait held in memory), tenant
//! `tenant-a`, modules `top` -> `base`, and helpers to drive passes and heartbeats.

// Each test crate uses some of these.
#![allow(dead_code)]

use modvisor_control_plane::auth::TokenKeys;
use modvisor_control_plane::model::{
    CreateTenant, Heartbeat, ModulePolicy, ModuleRef, ModuleRequest, Node, NodeFeature, Phase,
    Quota, RegisterNode, Resources, VmSpec,
};
use modvisor_control_plane::reconciler::{NodeConnector, Reconciler, ReconcilerConfig};
use modvisor_control_plane::store::{Datastore, Registrant, SledKv, VmFilter};
use modvisor_node_api::sim::{SimBehaviour, SimulatedNode};
use modvisor_node_api::Budgets;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const RELEASE: &str = "6.1.0-99-cloud-amd64";

/// Simulated nodes by name.
#[derive(Clone, Default)]
pub struct SimNodes(pub HashMap<String, SimulatedNode>);

impl NodeConnector for SimNodes {
    type Api = SimulatedNode;

    fn connect(&self, node: &Node) -> Result<SimulatedNode, String> {
        self.0
            .get(&node.name)
            .cloned()
            .ok_or_else(|| format!("no simulated node {}", node.name))
    }
}

pub struct World {
    pub _dir: tempfile::TempDir,
    pub store: Datastore,
    pub node: SimulatedNode,
    pub nodes: SimNodes,
    pub config: ReconcilerConfig,
    pub reconciler: Reconciler<SimNodes>,
    /// The id of n1's credential (what its heartbeats present).
    pub credential: String,
}

pub fn world(behaviour: SimBehaviour, budgets: Budgets) -> World {
    world_with(
        behaviour,
        ReconcilerConfig {
            interval: Duration::from_millis(5),
            budgets,
            ..ReconcilerConfig::default()
        },
    )
}

pub fn world_with(behaviour: SimBehaviour, config: ReconcilerConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Datastore::new(Arc::new(SledKv::open(&dir.path().join("db")).unwrap()));
    let reg = RegisterNode {
        name: "n1".into(),
        address: "http://127.0.0.1:9".into(),
        capacity: Resources {
            vcpus: 8,
            memory_mib: 8192,
        },
        driver: "qemu".into(),
        hardware_virtualization: false,
        kernel_release: RELEASE.into(),
        csr_pem: String::new(), // the store signs nothing
        features: vec![NodeFeature::Networking],
        underlay_address: None,
    };
    let (_, credential) = TokenKeys::ephemeral()
        .unwrap()
        .node_credential("n1", 3600)
        .unwrap();
    store
        .register_node(&reg, Registrant::Bootstrap, &credential)
        .unwrap();
    store
        .create_tenant(
            "test",
            &CreateTenant {
                name: "tenant-a".into(),
                quota: Some(Quota {
                    max_vms: 10,
                    max_vcpus: 10,
                    max_memory_mib: 10_000,
                    ..Quota::default()
                }),
            },
        )
        .unwrap();
    // Two modules: `top` depends on `base`.
    for (name, depends) in [("base", ""), ("top", "base")] {
        let modinfo = BTreeMap::from([("depends".to_string(), depends.to_string())]);
        store
            .publish_module("test", name, RELEASE, name.as_bytes(), modinfo, None)
            .unwrap();
        store
            .set_policy(
                "test",
                name,
                &ModulePolicy {
                    approved: true,
                    tenants: vec!["*".into()],
                    signers: vec!["kernel".into()],
                    licenses: Vec::new(),
                },
            )
            .unwrap();
    }
    let node = SimulatedNode::new(behaviour);
    let nodes = SimNodes(HashMap::from([("n1".to_string(), node.clone())]));
    World {
        _dir: dir,
        credential: credential.jti.clone(),
        reconciler: Reconciler::new(store.clone(), nodes.clone(), config.clone()),
        nodes,
        config,
        store,
        node,
    }
}

pub fn create_vm(store: &Datastore, modules: &[&str]) -> String {
    let spec = VmSpec {
        name: "web".into(),
        kernel_mode: Default::default(),
        vcpus: 1,
        memory_mib: 256,
        modules: modules
            .iter()
            .map(|m| ModuleRef {
                name: m.to_string(),
                params: BTreeMap::new(),
            })
            .collect(),
        power_state: Default::default(),
        user_data: None,
        network: None,
    };
    store.create_vm("test", "tenant-a", &spec).unwrap().id
}

/// VM `id`'s request for module `name`.
pub fn request(w: &World, id: &str, name: &str) -> ModuleRequest {
    w.store
        .module_requests(VmFilter::All, id)
        .unwrap()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap()
}

/// The simulated node's heartbeat: what it holds, as the real agent reports it.
pub fn heartbeat(w: &World) {
    let beat = Heartbeat {
        vms: w.node.observed(),
    };
    w.store.heartbeat("n1", &w.credential, &beat, None).unwrap();
}

/// Runs reconcile passes (and, with `heartbeats`, the node's heartbeats) until `done`
/// holds, for at most 10 s.
pub async fn run_until(w: &World, heartbeats: bool, mut done: impl FnMut(&World) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        w.reconciler.pass().unwrap();
        if heartbeats {
            heartbeat(w);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if done(w) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the reconciler did not get there"
        );
    }
}

pub fn local<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Asserts that VM `id`'s reason says `want`.
#[track_caller]
pub fn assert_reason(store: &Datastore, id: &str, want: &str) {
    let (_, reason) = phase(store, id);
    assert!(
        reason.as_deref().unwrap_or("").contains(want),
        "{want:?} in {reason:?}"
    );
}

pub fn phase(store: &Datastore, id: &str) -> (Phase, Option<String>) {
    let vm = store.get_vm(VmFilter::All, id).unwrap();
    (vm.status.phase, vm.status.reason)
}

/// A VM with `modules`, run until the request for `until` is Loaded; its id.
pub async fn vm_with_loaded(w: &World, modules: &[&str], until: &str) -> String {
    let id = create_vm(&w.store, modules);
    run_until(w, true, |w| {
        request(w, &id, until).state == modvisor_control_plane::model::RequestState::Loaded
    })
    .await;
    id
}
