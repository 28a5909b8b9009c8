//! What the leader keeps in memory so that its work follows changes, not the fleet: an
//! index of every VM's tenant, phase and node (built by a full read at the start of its
//! term and at each resync, kept current by the store's watch and by what each pass
//! reads), and the set of VMs and nodes changed since the last pass.

use crate::model::{Node, NodeState, Phase, Vm};
use crate::store::{Change, Table};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One VM as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    tenant: String,
    phase: Phase,
    node: Option<String>,
    deleting: bool,
}

/// Every VM's tenant, phase and node; the VMs of each node; the Pending ones.
#[derive(Debug, Default)]
pub struct FleetIndex {
    vms: HashMap<String, Entry>,
    by_node: HashMap<String, HashSet<String>>,
    pending: HashSet<String>,
    /// How many VMs each tenant has in each phase (kept as VMs come and go: a pass
    /// publishes it without counting the fleet).
    counts: BTreeMap<(String, Phase), u64>,
}

impl FleetIndex {
    /// The index of exactly `vms`.
    pub fn of(vms: &[Vm]) -> Self {
        let mut index = FleetIndex::default();
        for vm in vms {
            index.put(vm);
        }
        index
    }

    /// Takes what `vm` is now.
    pub fn put(&mut self, vm: &Vm) {
        let entry = Entry {
            tenant: vm.tenant.clone(),
            phase: vm.status.phase,
            node: vm.status.node.clone(),
            deleting: vm.deleting,
        };
        self.remove(&vm.id);
        if let Some(n) = &entry.node {
            self.by_node
                .entry(n.clone())
                .or_default()
                .insert(vm.id.clone());
        }
        if entry.phase == Phase::Pending && !entry.deleting {
            self.pending.insert(vm.id.clone());
        }
        *self
            .counts
            .entry((entry.tenant.clone(), entry.phase))
            .or_insert(0) += 1;
        self.vms.insert(vm.id.clone(), entry);
    }

    /// Forgets VM `id` (it is gone).
    pub fn remove(&mut self, id: &str) {
        let Some(old) = self.vms.remove(id) else {
            return;
        };
        if let Some(n) = &old.node {
            if let Some(set) = self.by_node.get_mut(n) {
                set.remove(id);
                if set.is_empty() {
                    self.by_node.remove(n);
                }
            }
        }
        self.pending.remove(id);
        let key = (old.tenant, old.phase);
        if let Some(n) = self.counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.counts.remove(&key);
            }
        }
    }

    /// The VMs placed on `node`.
    pub fn on_node(&self, node: &str) -> impl Iterator<Item = &String> {
        self.by_node.get(node).into_iter().flatten()
    }

    /// The VMs placed on `node` that it should list in its heartbeats (Running, Stopped,
    /// or Lost while it was away), not being deleted.
    pub fn held_on(&self, node: &str) -> impl Iterator<Item = &String> {
        self.on_node(node).filter(|id| {
            self.vms.get(*id).is_some_and(|e| {
                !e.deleting && matches!(e.phase, Phase::Running | Phase::Stopped | Phase::Lost)
            })
        })
    }

    /// The nodes that hold at least one VM.
    pub fn nodes_in_use(&self) -> impl Iterator<Item = &String> {
        self.by_node.keys()
    }

    /// The Pending VMs (not being deleted), in id order.
    pub fn pending(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.pending.iter().cloned().collect();
        ids.sort();
        ids
    }

    /// How many VMs each tenant has in each phase.
    pub fn by_phase(&self) -> &BTreeMap<(String, Phase), u64> {
        &self.counts
    }

    /// Whether it holds no VM.
    pub fn is_empty(&self) -> bool {
        self.vms.is_empty()
    }
}

/// What changed since the last pass, as the store's watch reported it.
#[derive(Debug, Default)]
pub struct Changes {
    /// VMs whose record, observation or module requests changed.
    pub vms: HashSet<String>,
    /// Nodes whose heartbeat report changed.
    pub reports: HashSet<String>,
    /// Nodes whose record changed (a heartbeat, a cordon, a placement's allocation).
    pub nodes: HashSet<String>,
    /// Some changes may have been missed: the next pass reads everything.
    pub missed: bool,
}

impl Changes {
    /// Notes one change the store's watch saw.
    pub fn note(&mut self, change: Change) {
        match change {
            Change::Missed => self.missed = true,
            Change::Key(table, key) => match table {
                // Keyed `tenant \0 id`.
                Table::Vms => match key.iter().position(|b| *b == 0) {
                    Some(at) => {
                        self.vms
                            .insert(String::from_utf8_lossy(&key[at + 1..]).into_owned());
                    }
                    None => self.missed = true,
                },
                Table::Observations | Table::ModuleRequests => {
                    self.vms.insert(String::from_utf8_lossy(&key).into_owned());
                }
                Table::NodeReports => {
                    self.reports
                        .insert(String::from_utf8_lossy(&key).into_owned());
                }
                Table::Nodes => {
                    self.nodes
                        .insert(String::from_utf8_lossy(&key).into_owned());
                }
                // Not watched by the reconciler; were it, everything is read again.
                _ => self.missed = true,
            },
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.vms.is_empty() && self.reports.is_empty() && self.nodes.is_empty() && !self.missed
    }
}

/// The tables whose changes the reconciler follows.
pub const WATCHED: [Table; 5] = [
    Table::Vms,
    Table::Observations,
    Table::ModuleRequests,
    Table::NodeReports,
    Table::Nodes,
];

/// How the nodes moved between two passes: whether some node's room changed (what can
/// let a Pending VM fit where it did not, or stop fitting: its state, cordon, free
/// capacity, kernel or features; Pending VMs are tried again then), and the nodes that
/// became or stopped being Ready, appeared or went away (their VMs are looked at again).
#[derive(Debug, Default)]
pub struct NodesMoved {
    /// Some node's room changed.
    pub room: bool,
    /// Nodes whose readiness changed (gone and new ones included).
    pub readiness: Vec<String>,
    /// Nodes whose record this pass read (gone ones included).
    pub read: Vec<String>,
    /// Whether this pass read every node.
    pub all_read: bool,
}

impl NodesMoved {
    /// Notes how node `name` moved from `before` to `after` (`None`: absent).
    pub fn note(&mut self, name: &str, before: Option<&Node>, after: Option<&Node>) {
        self.read.push(name.to_string());
        let same_room = match (before, after) {
            (Some(b), Some(a)) => {
                free_of(b) == free_of(a)
                    && b.state == a.state
                    && b.cordoned == a.cordoned
                    && b.kernel_release == a.kernel_release
                    && b.features == a.features
            }
            _ => false,
        };
        self.room |= !same_room;
        let ready = |n: &Node| n.state == NodeState::Ready;
        if before.map(ready) != after.map(ready) {
            self.readiness.push(name.to_string());
        }
    }
}

/// The vCPUs and MiB of memory `node` has free.
fn free_of(node: &Node) -> (u64, u64) {
    (
        node.capacity.vcpus.saturating_sub(node.allocated.vcpus),
        node.capacity
            .memory_mib
            .saturating_sub(node.allocated.memory_mib),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::test_vm as vm;

    #[test]
    fn the_index_follows_a_vm_from_pending_to_a_node_and_away() {
        let mut index = FleetIndex::of(&[vm("a", Phase::Pending, None)]);
        assert_eq!(index.pending(), vec!["a".to_string()]);
        index.put(&vm("a", Phase::Scheduled, Some("n1")));
        assert!(index.pending().is_empty());
        assert_eq!(index.on_node("n1").collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(index.held_on("n1").count(), 0, "Scheduled: not yet listed");
        index.put(&vm("a", Phase::Lost, Some("n2")));
        assert_eq!(index.on_node("n1").count(), 0);
        assert_eq!(index.nodes_in_use().collect::<Vec<_>>(), vec!["n2"]);
        assert_eq!(index.by_phase()[&("t".to_string(), Phase::Lost)], 1);
        assert_eq!(index.held_on("n2").collect::<Vec<_>>(), vec!["a"]);
        index.remove("a");
        assert!(index.is_empty() && index.by_phase().is_empty());
        assert_eq!(index.nodes_in_use().count(), 0);
    }

    #[test]
    fn a_node_moves_when_its_room_or_readiness_changes() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "name": "n1", "address": "https://127.0.0.1:1",
            "capacity": {"vcpus": 4, "memory_mib": 4096},
            "allocated": {"vcpus": 0, "memory_mib": 0},
            "driver": "qemu", "hardware_virtualization": false,
            "kernel_release": "6.1.0-1-cloud-amd64", "state": "Ready", "cordoned": false,
            "last_heartbeat": "2026-01-01T00:00:00Z", "last_heartbeat_unix": 0,
            "registered_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        let mut heartbeat = node.clone();
        heartbeat.last_heartbeat_unix = 5;
        let mut moved = NodesMoved::default();
        moved.note("n1", Some(&node), Some(&heartbeat));
        assert!(
            !moved.room && moved.readiness.is_empty(),
            "a heartbeat alone"
        );
        let mut fuller = node.clone();
        fuller.allocated.vcpus = 1;
        moved.note("n1", Some(&node), Some(&fuller));
        assert!(moved.room && moved.readiness.is_empty());
        let mut down = node.clone();
        down.state = NodeState::NotReady;
        moved.note("n1", Some(&node), Some(&down));
        moved.note("n2", Some(&node), None);
        assert_eq!(moved.readiness, ["n1", "n2"]);
    }

    #[test]
    fn changes_name_the_vm_or_node_of_each_key() {
        let mut c = Changes::default();
        assert!(c.is_empty());
        c.note(Change::Key(Table::Vms, b"tenant\0vm-1".to_vec()));
        c.note(Change::Key(Table::Observations, b"vm-2".to_vec()));
        c.note(Change::Key(Table::ModuleRequests, b"vm-3".to_vec()));
        c.note(Change::Key(Table::NodeReports, b"n1".to_vec()));
        c.note(Change::Key(Table::Nodes, b"n2".to_vec()));
        let mut vms: Vec<_> = c.vms.iter().cloned().collect();
        vms.sort();
        assert_eq!(vms, ["vm-1", "vm-2", "vm-3"]);
        assert!(c.reports.contains("n1") && c.nodes.contains("n2") && !c.missed);
        c.note(Change::Missed);
        assert!(c.missed);
    }
}
