//! The leader's reconciler between resyncs: it passes over what the store's watch says
//! changed (a real sled store and its watch; simulated nodes, the same `NodeApi` trait).
//! The resync here is an hour away, so everything below is done by passes over changes.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim_world;
use sim_world::*;

use modvisor_control_plane::model::{Phase, RequestState, VmSpec};
use modvisor_control_plane::reconciler::{watch_changes, Reconciler, ReconcilerConfig, Wake};
use modvisor_control_plane::store::VmFilter;
use modvisor_node_api::sim::SimBehaviour;
use std::time::{Duration, Instant};

/// Waits (heartbeating as the node) until `done`, for at most 10 s.
async fn until(w: &World, what: &str, mut done: impl FnMut(&World) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(w) {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        heartbeat(w);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spec(name: &str, vcpus: u32) -> VmSpec {
    VmSpec {
        name: name.into(),
        kernel_mode: Default::default(),
        vcpus,
        memory_mib: 256,
        modules: Vec::new(),
        power_state: Default::default(),
        user_data: None,
        network: None,
    }
}

#[test]
fn between_resyncs_the_reconciler_acts_on_the_changes_the_watch_reports() {
    let w = world_with(
        SimBehaviour::default(),
        ReconcilerConfig {
            interval: Duration::from_millis(20),
            resync: Duration::from_secs(3600),
            ..ReconcilerConfig::default()
        },
    );
    let wake = Wake::default();
    let changes = watch_changes(&w.store, &wake).unwrap();
    let reconciler = Reconciler::new(w.store.clone(), w.nodes.clone(), w.config.clone())
        .with_wake(wake)
        .with_changes(changes);
    local(async {
        tokio::task::spawn_local(reconciler.run());
        // The full pass of the term's start runs now, over an empty fleet.
        tokio::time::sleep(Duration::from_millis(100)).await;

        // A new VM with a module: placed, started and the module loaded.
        let id = create_vm(&w.store, &["top"]);
        until(&w, "the new VM Running with top Loaded", |w| {
            phase(&w.store, &id).0 == Phase::Running
                && request(w, &id, "top").state == RequestState::Loaded
        })
        .await;

        // The node stops listing it: two heartbeats without it fail it.
        w.node.lose(&id);
        until(&w, "the lost VM Failed", |w| {
            phase(&w.store, &id).0 == Phase::Failed
        })
        .await;
        assert_reason(&w.store, &id, "no longer reports");

        // A VM that does not fit waits Pending; room made by a deletion places it.
        let big = w
            .store
            .create_vm("test", "tenant-a", &spec("big", 6))
            .unwrap()
            .id;
        until(&w, "the big VM Running", |w| {
            phase(&w.store, &big).0 == Phase::Running
        })
        .await;
        let wide = w
            .store
            .create_vm("test", "tenant-a", &spec("wide", 3))
            .unwrap()
            .id;
        tokio::time::sleep(Duration::from_millis(300)).await;
        heartbeat(&w);
        assert_eq!(phase(&w.store, &wide).0, Phase::Pending, "6 + 3 of 8 vCPUs");
        w.store
            .delete_vm("test", VmFilter::All, &big, None)
            .unwrap();
        until(&w, "the big VM gone", |w| {
            w.store.get_vm(VmFilter::All, &big).is_err()
        })
        .await;
        until(&w, "the wide VM Running in the room left", |w| {
            phase(&w.store, &wide).0 == Phase::Running
        })
        .await;
    });
}
