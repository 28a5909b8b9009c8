//! The reconciler's decisions against simulated nodes (the same `NodeApi` trait, held in
//! memory) and a real sled store: fast, and beside the real-process end-to-end tests in
//! `tests/e2e`, never instead of them.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim_world;
use sim_world::*;

use modvisor_control_plane::model::{
    Heartbeat, ModulePolicy, ModuleRef, NodeState, Outcome, Phase, PowerState, RequestState,
    UserDataState, VmSpec,
};
use modvisor_control_plane::reconciler::{Reconciler, ReconcilerConfig};
use modvisor_control_plane::store::{Datastore, VmFilter};
use modvisor_control_plane::Error;
use modvisor_node_api::sim::SimBehaviour;
use modvisor_node_api::Budgets;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn phases_move_only_by_the_reconciler_from_what_the_node_observes() {
    let w = world(SimBehaviour::default(), Budgets::default());
    local(async {
        let id = create_vm(&w.store, &[]);
        assert_eq!(phase(&w.store, &id).0, Phase::Pending);
        run_until(&w, false, |w| phase(&w.store, &id).0 == Phase::Running).await;
        assert_eq!(w.node.stats().ensures, 1, "{:?}", w.node.stats());

        // The guest dies: the node's heartbeat says so, but a heartbeat is an observation
        // only; the VM's phase moves on the reconciler's next pass.
        w.node.crash(&id, "guest kernel panic: boom");
        heartbeat(&w);
        assert_eq!(phase(&w.store, &id).0, Phase::Running);
        assert_eq!(
            w.store.observation(&id).unwrap().unwrap().phase,
            Phase::Failed
        );
        w.reconciler.pass().unwrap();
        assert_eq!(
            phase(&w.store, &id),
            (Phase::Failed, Some("guest kernel panic: boom".into()))
        );
    });
}

#[test]
fn a_module_request_goes_to_the_node_with_its_pinned_closure_and_loads() {
    let w = world(SimBehaviour::default(), Budgets::default());
    local(async {
        let id = vm_with_loaded(&w, &["top"], "top").await;
        let guest = w.node.vm(&id).unwrap().guest_modules;
        assert_eq!(guest, vec!["base".to_string(), "top".to_string()]);
        assert_eq!(w.node.stats().loads_started, 1);
        let closure = w.store.module_closure("top", RELEASE).unwrap();
        let names: Vec<&str> = closure.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["top", "base"]);
        assert!(closure.iter().all(|m| m.sha256.len() == 64));
    });
}

#[test]
fn a_load_longer_than_its_budget_ends_failed_and_is_never_sent_twice() {
    // Budgets scaled down: 20 ms a module, 200 ms of margin; the node takes 150 ms a
    // module, so the two-module closure cannot fit its 40 ms budget.
    let budgets = Budgets {
        load_per_module: Duration::from_millis(20),
        load_max: Duration::from_millis(500),
        margin: Duration::from_millis(200),
        ..Budgets::default()
    };
    let behaviour = SimBehaviour {
        load_per_module: Duration::from_millis(150),
        ..SimBehaviour::default()
    };
    let w = world(behaviour, budgets);
    local(async {
        let id = create_vm(&w.store, &["top"]);
        run_until(&w, true, |w| request(w, &id, "top").state.is_terminal()).await;
        // Passes every 5 ms while the node worked: still one load, never two at once.
        let stats = w.node.stats();
        assert_eq!(stats.loads_started, 1, "{stats:?}");
        assert_eq!(stats.max_concurrent_loads, 1, "{stats:?}");
        let r = request(&w, &id, "top");
        assert_eq!(r.state, RequestState::Failed, "{r:?}");
        assert!(
            r.reason.as_deref().unwrap_or("").contains("budget"),
            "{r:?}"
        );
        // And later passes leave it alone.
        for _ in 0..20 {
            w.reconciler.pass().unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(w.node.stats().loads_started, 1);
    });
}

#[test]
fn a_refusal_by_the_nodes_vetting_is_rejected_and_audited_once() {
    let w = world(SimBehaviour::default(), Budgets::default());
    local(async {
        let id = create_vm(&w.store, &["top"]);
        // `base` loses its approval after `top` was asked for: the node refuses it.
        let revoked = ModulePolicy {
            approved: false,
            tenants: Vec::new(),
            signers: vec!["kernel".into()],
            licenses: Vec::new(),
        };
        w.store.set_policy("test", "base", &revoked).unwrap();
        run_until(&w, true, |w| request(w, &id, "top").state.is_terminal()).await;
        let r = request(&w, &id, "top");
        assert_eq!(r.state, RequestState::Rejected, "{r:?}");
        for _ in 0..10 {
            w.reconciler.pass().unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (events, _) = w
            .store
            .list_events(VmFilter::Tenant("tenant-a"), None, 1000, None)
            .unwrap();
        let denials: Vec<_> = events
            .iter()
            .filter(|e| e.action == "module.load")
            .collect();
        assert_eq!(denials.len(), 1, "{denials:?}");
        assert_eq!(denials[0].outcome, Outcome::Denied);
        assert!(
            denials[0].detail.as_deref().unwrap_or("").contains("base"),
            "{denials:?}"
        );
        assert!(w.node.vm(&id).unwrap().guest_modules.is_empty());
    });
}

/// `allocated` of node n1 equals what its placed VMs hold.
#[track_caller]
fn assert_reservations_follow_specs(store: &Datastore) {
    let node = store.get_node("n1").unwrap().unwrap();
    assert_eq!(node.allocated, store.placed_on("n1").unwrap(), "{node:?}");
}

fn resized(store: &Datastore, id: &str, vcpus: u32, memory_mib: u32) -> VmSpec {
    let mut spec = store.get_vm(VmFilter::All, id).unwrap().spec;
    spec.vcpus = vcpus;
    spec.memory_mib = memory_mib;
    spec
}

#[test]
fn a_nodes_reservation_follows_its_vms_specs_through_resizes_power_and_deletes() {
    let w = world(SimBehaviour::default(), Budgets::default());
    local(async {
        let s = &w.store;
        let one = create_vm(s, &[]);
        let mut other_spec = s.get_vm(VmFilter::All, &one).unwrap().spec;
        other_spec.name = "db".into();
        let two = s.create_vm("test", "tenant-a", &other_spec).unwrap().id;
        run_until(&w, true, |w| {
            [&one, &two]
                .iter()
                .all(|id| phase(&w.store, id).0 == Phase::Running)
        })
        .await;
        assert_reservations_follow_specs(s);

        // Grow and shrink: the reservation moves with the spec.
        s.replace_vm(
            "test",
            VmFilter::All,
            &one,
            None,
            &resized(s, &one, 4, 1024),
        )
        .unwrap();
        assert_reservations_follow_specs(s);
        // Growth the node cannot hold (8 vCPUs, 5 in use) is refused and changes nothing.
        let refused = s.replace_vm("test", VmFilter::All, &two, None, &resized(s, &two, 8, 256));
        assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
        assert_eq!(s.get_vm(VmFilter::All, &two).unwrap().spec.vcpus, 1);
        assert_reservations_follow_specs(s);
        s.replace_vm("test", VmFilter::All, &one, None, &resized(s, &one, 1, 128))
            .unwrap();
        assert_reservations_follow_specs(s);

        // Resized while stopped, then started: the reservation is the new size.
        let mut stopped = s.get_vm(VmFilter::All, &two).unwrap().spec;
        stopped.power_state = PowerState::Stopped;
        s.replace_vm("test", VmFilter::All, &two, None, &stopped)
            .unwrap();
        run_until(&w, true, |w| phase(&w.store, &two).0 == Phase::Stopped).await;
        s.replace_vm("test", VmFilter::All, &two, None, &resized(s, &two, 2, 512))
            .unwrap();
        let mut started = s.get_vm(VmFilter::All, &two).unwrap().spec;
        started.power_state = PowerState::Running;
        s.replace_vm("test", VmFilter::All, &two, None, &started)
            .unwrap();
        run_until(&w, true, |w| phase(&w.store, &two).0 == Phase::Running).await;
        assert_reservations_follow_specs(s);

        // A VM being deleted takes no more changes; once gone, its reservation is too.
        s.delete_vm("test", VmFilter::All, &one, None).unwrap();
        let late = s.replace_vm("test", VmFilter::All, &one, None, &resized(s, &one, 2, 256));
        assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
        let request = ModuleRef {
            name: "top".into(),
            params: BTreeMap::new(),
        };
        let late = s.request_module("test", VmFilter::All, &one, &request);
        assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
        run_until(&w, true, |w| w.store.get_vm(VmFilter::All, &one).is_err()).await;
        assert_reservations_follow_specs(s);
        let node = s.get_node("n1").unwrap().unwrap();
        assert_eq!((node.allocated.vcpus, node.allocated.memory_mib), (2, 512));
    });
}

#[test]
fn a_node_that_reports_a_phase_only_the_control_plane_sets_changes_nothing() {
    let w = world(SimBehaviour::default(), Budgets::default());
    local(async {
        let id = create_vm(&w.store, &[]);
        run_until(&w, true, |w| phase(&w.store, &id).0 == Phase::Running).await;
        let before = w.store.get_node("n1").unwrap().unwrap().allocated;
        // A node claims the VM is Pending (or Scheduled, or Lost): an observation only.
        for claimed in [Phase::Pending, Phase::Scheduled, Phase::Lost] {
            let mut lie = w.node.vm(&id).unwrap();
            lie.phase = claimed;
            w.store
                .heartbeat("n1", &w.credential, &Heartbeat { vms: vec![lie] }, None)
                .unwrap();
            for _ in 0..5 {
                w.reconciler.pass().unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(phase(&w.store, &id).0, Phase::Running, "{claimed:?}");
        }
        assert_eq!(w.store.get_node("n1").unwrap().unwrap().allocated, before);
        assert_eq!(w.node.stats().ensures, 1, "never placed or started twice");
    });
}

#[test]
fn a_vm_its_node_stops_reporting_is_failed_with_the_reason() {
    let w = world(SimBehaviour::default(), Budgets::default());
    local(async {
        let id = create_vm(&w.store, &[]);
        run_until(&w, true, |w| phase(&w.store, &id).0 == Phase::Running).await;
        w.node.lose(&id);
        run_until(&w, true, |w| phase(&w.store, &id).0 == Phase::Failed).await;
        assert_reason(&w.store, &id, "no longer reports");
    });
}

#[test]
fn a_control_plane_outage_reboots_nothing_and_a_silent_node_is_waited_for_until_the_fence() {
    let config = ReconcilerConfig {
        interval: Duration::from_millis(5),
        node_timeout_secs: 1,
        fence_after_secs: 3,
        ..ReconcilerConfig::default()
    };
    let w = world_with(SimBehaviour::default(), config);
    local(async {
        let id = create_vm(&w.store, &[]);
        run_until(&w, true, |w| phase(&w.store, &id).0 == Phase::Running).await;

        // The control plane is down for longer than the node timeout; the node is fine
        // but cannot heartbeat. The restarted control plane's first pass loses nothing.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let restarted = Reconciler::new(w.store.clone(), w.nodes.clone(), w.config.clone());
        restarted.pass().unwrap();
        assert_eq!(phase(&w.store, &id).0, Phase::Running);
        assert_eq!(
            w.store.get_node("n1").unwrap().unwrap().state,
            NodeState::Ready
        );

        // Now the node really is silent: NotReady, the VM Lost, but it waits on its node
        // until the fencing bound...
        let deadline = Instant::now() + Duration::from_secs(10);
        while phase(&w.store, &id).0 != Phase::Lost {
            restarted.pass().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(Instant::now() < deadline, "never Lost");
        }
        for _ in 0..10 {
            restarted.pass().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let vm = w.store.get_vm(VmFilter::All, &id).unwrap();
        assert_eq!(vm.status.phase, Phase::Lost);
        assert_eq!(vm.status.node.as_deref(), Some("n1"));

        // ...and when the node comes back in time, the VM runs on as it was: no reboot.
        heartbeat(&w);
        restarted.pass().unwrap();
        assert_eq!(phase(&w.store, &id).0, Phase::Running);
        assert_eq!(w.node.stats().ensures, 1, "{:?}", w.node.stats());

        // Silent past the fencing bound: the VM is taken off the node to be recreated.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            restarted.pass().unwrap();
            let vm = w.store.get_vm(VmFilter::All, &id).unwrap();
            if vm.status.node.is_none() {
                assert_eq!(vm.status.phase, Phase::Pending, "{vm:?}");
                break;
            }
            assert!(Instant::now() < deadline, "never fenced: {vm:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn user_data_runs_once_after_the_modules_settle_and_never_again() {
    let w = world(
        SimBehaviour {
            load_per_module: Duration::from_millis(30),
            ..SimBehaviour::default()
        },
        Budgets::default(),
    );
    local(async {
        let mut spec = VmSpec {
            name: "web".into(),
            kernel_mode: Default::default(),
            vcpus: 1,
            memory_mib: 256,
            modules: vec![ModuleRef {
                name: "top".into(),
                params: BTreeMap::new(),
            }],
            power_state: PowerState::Running,
            user_data: Some("sysctl -w net.ipv4.tcp_congestion_control=bbr".into()),
            network: None,
        };
        let id = w.store.create_vm("test", "tenant-a", &spec).unwrap().id;
        let user_data = |w: &World| {
            w.store
                .get_vm(VmFilter::All, &id)
                .unwrap()
                .status
                .user_data
                .unwrap()
        };
        assert_eq!(user_data(&w).state, UserDataState::Pending);
        run_until(&w, true, |w| w.node.stats().user_data_runs == 1).await;
        // Started only once the module it may rely on was Loaded.
        assert_eq!(request(&w, &id, "top").state, RequestState::Loaded);
        run_until(&w, true, |w| user_data(w).state == UserDataState::Succeeded).await;
        assert_eq!(user_data(&w).exit_code, Some(0));

        // A power cycle: the guest boots again, its script does not run again.
        spec.power_state = PowerState::Stopped;
        w.store
            .replace_vm("test", VmFilter::All, &id, None, &spec)
            .unwrap();
        run_until(&w, true, |w| phase(&w.store, &id).0 == Phase::Stopped).await;
        spec.power_state = PowerState::Running;
        spec.user_data = None; // a replace may leave it out: it is kept
        w.store
            .replace_vm("test", VmFilter::All, &id, None, &spec)
            .unwrap();
        run_until(&w, true, |w| phase(&w.store, &id).0 == Phase::Running).await;
        for _ in 0..20 {
            w.reconciler.pass().unwrap();
            heartbeat(&w);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(w.node.stats().user_data_runs, 1);
        assert_eq!(user_data(&w).state, UserDataState::Succeeded);
        let vm = w.store.get_vm(VmFilter::All, &id).unwrap();
        assert!(
            vm.spec.user_data.is_some(),
            "kept through a replace without it"
        );
        // ... and cannot be changed.
        spec.user_data = Some("echo other".into());
        let refused = w.store.replace_vm("test", VmFilter::All, &id, None, &spec);
        assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    });
}

#[test]
fn a_woken_reconciler_acts_at_once_not_at_its_interval() {
    use modvisor_control_plane::reconciler::Wake;
    // An interval far longer than the test may take: only being woken moves the VM.
    let w = world_with(
        SimBehaviour::default(),
        ReconcilerConfig {
            interval: Duration::from_secs(3600),
            ..ReconcilerConfig::default()
        },
    );
    let wake = Wake::default();
    let reconciler =
        Reconciler::new(w.store.clone(), w.nodes.clone(), w.config.clone()).with_wake(wake.clone());
    local(async {
        tokio::task::spawn_local(reconciler.run());
        // Its first pass runs at start, with nothing to do.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let id = create_vm(&w.store, &["top"]);
        let started = Instant::now();
        wake.now();
        // Placement, ensure, then the module: each step wakes the next when it is done.
        while request(&w, &id, "top").state != RequestState::Loaded {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the reconciler waited for its interval: {:?}",
                phase(&w.store, &id)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(phase(&w.store, &id).0, Phase::Running);
    });
}
