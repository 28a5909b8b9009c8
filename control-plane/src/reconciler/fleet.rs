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

    /// How many VMs it holds.
    pub fn len(&self) -> usize {
        self.vms.len()
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

/// What of a node can let a Pending VM fit where it did not (or stop fitting): Pending
/// VMs are tried again when any node's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    state: NodeState,
    cordoned: bool,
    free: (u64, u64),
    kernel_release: String,
    features: usize,
}

impl Room {
    /// What `node` offers now.
    pub fn of(node: &Node) -> Self {
        Room {
            state: node.state,
            cordoned: node.cordoned,
            free: free_of(node),
            kernel_release: node.kernel_release.clone(),
            features: node.features.len(),
        }
    }

    /// Whether `node` offers this (compared without copying anything).
    pub fn is_of(&self, node: &Node) -> bool {
        self.free == free_of(node)
            && self.state == node.state
            && self.cordoned == node.cordoned
            && self.kernel_release == node.kernel_release
            && self.features == node.features.len()
    }

    /// Whether the node is Ready.
    pub fn ready(&self) -> bool {
        self.state == NodeState::Ready
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
