//! Readiness (what `/readyz` answers and `modvisor up` waits for), on a real sled store:
//! every expected node must be registered and Ready.

// A test fails by panicking: unwrap and expect say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim_world;

use modvisor_control_plane::readiness::check;
use modvisor_node_api::sim::SimBehaviour;
use modvisor_node_api::Budgets;
use sim_world::world;

#[test]
fn ready_only_when_every_expected_node_is_registered_and_ready() {
    let w = world(SimBehaviour::default(), Budgets::default());
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let r = check(&w.store, &[]);
    assert!(r.ready && r.waiting_for.is_empty(), "{r:?}");
    let r = check(&w.store, &names(&["n1"]));
    assert!(r.ready, "{r:?}");

    let r = check(&w.store, &names(&["n1", "n2"]));
    assert!(!r.ready);
    assert_eq!(r.waiting_for, vec!["node n2 has not registered yet"]);

    // n1 falls silent: no longer ready, and the reason says so.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(w.store.expire_nodes(0, 0).unwrap(), vec!["n1"]);
    let r = check(&w.store, &names(&["n1"]));
    assert!(!r.ready);
    assert!(r.waiting_for[0].starts_with("node n1 is NotReady"), "{r:?}");
}
