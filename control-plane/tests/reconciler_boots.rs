//! Module requests across boots of a VM's guest, against a simulated node: a boot that
//! ends (power off, crash) takes its loaded modules along, so the VM's requests go back to
//! Pending, and load again once the VM runs.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim_world;
use sim_world::*;

use modvisor_control_plane::model::{Phase, PowerState, RequestState};
use modvisor_control_plane::store::VmFilter;
use modvisor_node_api::sim::SimBehaviour;
use modvisor_node_api::Budgets;

fn power(w: &World, id: &str, state: PowerState) {
    let mut spec = w.store.get_vm(VmFilter::All, id).unwrap().spec;
    spec.power_state = state;
    w.store
        .replace_vm("test", VmFilter::All, id, None, &spec)
        .unwrap();
}

#[test]
fn a_power_cycle_loads_the_vms_modules_again() {
    let w = world(SimBehaviour::default(), Budgets::default());
    local(async {
        let id = vm_with_loaded(&w, &["top"], "top").await;
        // Heartbeats of the same boot change nothing.
        for _ in 0..3 {
            heartbeat(&w);
            w.reconciler.pass().unwrap();
        }
        assert_eq!(request(&w, &id, "top").state, RequestState::Loaded);
        assert_eq!(w.node.stats().loads_started, 1);

        // Stopped: the boot that held the modules ended, and the request says so.
        power(&w, &id, PowerState::Stopped);
        run_until(&w, true, |w| phase(&w.store, &id).0 == Phase::Stopped).await;
        let r = request(&w, &id, "top");
        assert_eq!(r.state, RequestState::Pending, "{r:?}");
        assert!(r.reason.as_deref().unwrap().contains("restarted"), "{r:?}");
        let vm = w.store.get_vm(VmFilter::All, &id).unwrap();
        assert!(vm.status.guest_modules.is_empty(), "{vm:?}");
        assert_eq!(
            w.node.stats().loads_started,
            1,
            "nothing goes to a stopped VM"
        );

        // Running again: a new boot, and the modules are loaded into it.
        power(&w, &id, PowerState::Running);
        run_until(&w, true, |w| {
            request(w, &id, "top").state == RequestState::Loaded
        })
        .await;
        assert_eq!(w.node.stats().loads_started, 2);
        assert_eq!(w.node.vm(&id).unwrap().guest_modules, ["base", "top"]);
    });
}

#[test]
fn a_crashed_guest_loses_its_modules_and_its_requests_say_so() {
    let w = world(SimBehaviour::default(), Budgets::default());
    local(async {
        let id = vm_with_loaded(&w, &["base"], "base").await;
        w.node.crash(&id, "guest kernel panic");
        heartbeat(&w);
        assert_eq!(request(&w, &id, "base").state, RequestState::Pending);
    });
}
