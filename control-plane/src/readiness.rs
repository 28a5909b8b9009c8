//! Readiness: what `/readyz` answers and what `modvisor up` waits for before it says it
//! is up. Liveness (`/healthz`) is only that the process answers.

use crate::model::{NodeState, Readiness};
use crate::store::Datastore;

/// Whether `store` answers and every node named in `expected` is registered and Ready.
pub fn check(store: &Datastore, expected: &[String]) -> Readiness {
    let mut waiting_for = Vec::new();
    match store.list_nodes() {
        Err(e) => waiting_for.push(format!("the store does not answer: {e}")),
        Ok(nodes) => {
            for name in expected {
                match nodes.iter().find(|n| &n.name == name) {
                    None => waiting_for.push(format!("node {name} has not registered yet")),
                    Some(n) if n.state != NodeState::Ready => waiting_for.push(format!(
                        "node {name} is {:?} (last heartbeat {})",
                        n.state, n.last_heartbeat
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    Readiness {
        ready: waiting_for.is_empty(),
        waiting_for,
    }
}
