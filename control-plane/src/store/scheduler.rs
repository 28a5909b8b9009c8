//! The scheduler's choice among a snapshot of nodes: which nodes fit a VM and which is
//! best for the strategy, and the load order that lets a batch of placements look at the
//! least (or most) loaded nodes first. Pure: the store commits what it decides.

use crate::model::{Node, NodeFeature, NodeState, Resources};
use std::collections::HashMap;

/// How the scheduler scores the nodes that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Prefer the least loaded node, and nodes holding fewer of the tenant's VMs.
    #[default]
    Spread,
    /// Prefer the most loaded node that still fits.
    Binpack,
}

/// Where a VM went, or why it could not go anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Placed on this node.
    Placed(String),
    /// No node fits; the VM stays Pending with this reason.
    Unschedulable(String),
}

/// What a VM needs of its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// vCPUs and memory.
    pub resources: Resources,
    /// Whether it is on a tenant network (only nodes with [`NodeFeature::Networking`]).
    pub networking: bool,
}

impl Need {
    /// Whether `n` offers what the VM needs beyond capacity.
    pub fn featured(&self, n: &Node) -> bool {
        !self.networking || n.has(NodeFeature::Networking)
    }
}

/// Picks a node for a VM needing `need` among `nodes`. `tenant_vms` counts the tenant's
/// VMs per node (for spreading them).
pub fn choose_node<'a>(
    nodes: &'a [Node],
    need: Need,
    tenant_vms: &HashMap<String, u64>,
    strategy: Strategy,
) -> std::result::Result<&'a Node, String> {
    let (mut not_ready, mut cordoned, mut unfeatured, mut too_small) = (0, 0, 0, 0);
    let mut best: Option<(&Node, (u64, u64, u64))> = None;
    let networking = need.networking;
    let featured = |n: &Node| need.featured(n);
    let need = need.resources;
    for n in nodes {
        if n.state != NodeState::Ready {
            not_ready += 1;
            continue;
        }
        if n.cordoned {
            cordoned += 1;
            continue;
        }
        if !featured(n) {
            unfeatured += 1;
            continue;
        }
        let free = n.free();
        if free.vcpus < need.vcpus || free.memory_mib < need.memory_mib {
            too_small += 1;
            continue;
        }
        // Per-mille of memory in use after placing, and of vCPUs.
        let used_mem =
            (n.allocated.memory_mib + need.memory_mib) * 1000 / n.capacity.memory_mib.max(1);
        let used_cpu = (n.allocated.vcpus + need.vcpus) * 1000 / n.capacity.vcpus.max(1);
        let load = used_mem.max(used_cpu);
        let mine = tenant_vms.get(&n.name).copied().unwrap_or(0);
        // Smaller keys win.
        let key = match strategy {
            Strategy::Spread => (mine, load, 0),
            Strategy::Binpack => (1000 - load.min(1000), mine, 0),
        };
        if best
            .as_ref()
            .is_none_or(|(b, k)| key < *k || (key == *k && n.name < b.name))
        {
            best = Some((n, key));
        }
    }
    best.map(|(n, _)| n).ok_or_else(|| {
        if nodes.is_empty() {
            super::vms::NO_NODES_REASON.to_string()
        } else {
            let network = match networking {
                true => format!(
                    ", {unfeatured} without networking (the VM is on a tenant network; only a node whose driver offers networking can host it, or create it with network \"none\")"
                ),
                false => String::new(),
            };
            format!(
                "no node fits {} vCPUs and {} MiB: {} nodes, {not_ready} not ready, {cordoned} cordoned{network}, {too_small} without enough free capacity",
                need.vcpus,
                need.memory_mib,
                nodes.len()
            )
        }
    })
}

/// Schedulable nodes ordered by load, so that a placement looks at the least (spread) or
/// most (binpack) loaded nodes first instead of all of them.
pub(super) struct LoadOrder(std::collections::BTreeSet<(u64, usize)>);

fn load_permille(n: &Node) -> u64 {
    let mem = n.allocated.memory_mib * 1000 / n.capacity.memory_mib.max(1);
    let cpu = n.allocated.vcpus * 1000 / n.capacity.vcpus.max(1);
    mem.max(cpu)
}

impl LoadOrder {
    pub(super) fn new(nodes: &[Node]) -> Self {
        let mut o = LoadOrder(Default::default());
        for (i, n) in nodes.iter().enumerate() {
            o.insert(n, i);
        }
        o
    }

    pub(super) fn insert(&mut self, n: &Node, i: usize) {
        if n.state == NodeState::Ready && !n.cordoned {
            self.0.insert((load_permille(n), i));
        }
    }

    pub(super) fn remove(&mut self, n: &Node, i: usize) {
        self.0.remove(&(load_permille(n), i));
    }

    /// The index in `nodes` of the node `choose_node` would pick, found by walking nodes
    /// in load order: for spread, the first fitting node without the tenant's VMs is
    /// optimal; otherwise the best seen. `None` when nothing fits.
    pub(super) fn pick(
        &self,
        nodes: &[Node],
        need: Need,
        mine: &HashMap<String, u64>,
        strategy: Strategy,
    ) -> Option<usize> {
        let fits = |n: &Node| {
            let f = n.free();
            need.featured(n)
                && f.vcpus >= need.resources.vcpus
                && f.memory_mib >= need.resources.memory_mib
        };
        match strategy {
            Strategy::Spread => {
                let mut best: Option<(u64, u64, usize)> = None;
                for &(load, i) in &self.0 {
                    let n = &nodes[i];
                    if !fits(n) {
                        continue;
                    }
                    let m = mine.get(&n.name).copied().unwrap_or(0);
                    if best.is_none_or(|(bm, bl, _)| (m, load) < (bm, bl)) {
                        best = Some((m, load, i));
                    }
                    if m == 0 {
                        break;
                    }
                }
                best.map(|(_, _, i)| i)
            }
            Strategy::Binpack => choose_node(nodes, need, mine, strategy)
                .ok()
                .and_then(|n| nodes.iter().position(|x| std::ptr::eq(x, n))),
        }
    }
}
