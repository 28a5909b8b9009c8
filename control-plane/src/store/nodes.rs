//! Nodes in the store: registration, heartbeats, readiness, cordons, and the placement of
//! VMs, each placement committed with its reservation in one transaction.

use super::datastore::{append_event, get_record, visible_vm};
use super::keys::{decode, encode, pair};
use super::{transact, Datastore, Table, Txn, VmFilter};
use crate::error::{Error, Result};
use crate::model::{
    now, Heartbeat, HeartbeatReply, ModuleRequest, Node, NodeState, Phase, RegisterNode,
    RequestState, Resources, Vm,
};
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Picks a node for a VM needing `need` among `nodes`. `tenant_vms` counts the tenant's
/// VMs per node (for spreading them).
pub fn choose_node<'a>(
    nodes: &'a [Node],
    need: Resources,
    tenant_vms: &HashMap<String, u64>,
    strategy: Strategy,
) -> std::result::Result<&'a Node, String> {
    let (mut not_ready, mut cordoned, mut too_small) = (0, 0, 0);
    let mut best: Option<(&Node, (u64, u64, u64))> = None;
    for n in nodes {
        if n.state != NodeState::Ready {
            not_ready += 1;
            continue;
        }
        if n.cordoned {
            cordoned += 1;
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
            super::datastore::NO_NODES_REASON.to_string()
        } else {
            format!(
                "no node fits {} vCPUs and {} MiB: {} nodes, {not_ready} not ready, {cordoned} cordoned, {too_small} without enough free capacity",
                need.vcpus,
                need.memory_mib,
                nodes.len()
            )
        }
    })
}

/// Schedulable nodes ordered by load, so that a placement looks at the least (spread) or
/// most (binpack) loaded nodes first instead of all of them.
struct LoadOrder(std::collections::BTreeSet<(u64, usize)>);

fn load_permille(n: &Node) -> u64 {
    let mem = n.allocated.memory_mib * 1000 / n.capacity.memory_mib.max(1);
    let cpu = n.allocated.vcpus * 1000 / n.capacity.vcpus.max(1);
    mem.max(cpu)
}

impl LoadOrder {
    fn new(nodes: &[Node]) -> Self {
        let mut o = LoadOrder(Default::default());
        for (i, n) in nodes.iter().enumerate() {
            o.insert(n, i);
        }
        o
    }

    fn insert(&mut self, n: &Node, i: usize) {
        if n.state == NodeState::Ready && !n.cordoned {
            self.0.insert((load_permille(n), i));
        }
    }

    fn remove(&mut self, n: &Node, i: usize) {
        self.0.remove(&(load_permille(n), i));
    }

    /// The node `choose_node` would pick, found by walking nodes in load order: for
    /// spread, the first fitting node without the tenant's VMs is optimal; otherwise the
    /// best seen. `None` when nothing fits.
    fn pick(
        &self,
        nodes: &[Node],
        need: Resources,
        mine: &HashMap<String, u64>,
        strategy: Strategy,
    ) -> Option<String> {
        let fits = |n: &Node| {
            let f = n.free();
            f.vcpus >= need.vcpus && f.memory_mib >= need.memory_mib
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
                best.map(|(_, _, i)| nodes[i].name.clone())
            }
            Strategy::Binpack => choose_node(nodes, need, mine, strategy)
                .ok()
                .map(|n| n.name.clone()),
        }
    }
}

/// Reads and rewrites one VM (by id) inside a transaction.
fn update_vm<T>(txn: &dyn Txn, id: &str, f: impl FnOnce(&mut Vm) -> Result<T>) -> Result<(Vm, T)> {
    let mut vm = visible_vm(txn, VmFilter::All, id)?;
    let out = f(&mut vm)?;
    vm.updated_at = now();
    txn.insert(
        Table::Vms,
        &pair(&vm.tenant, vm.id.as_bytes()),
        &encode(&vm)?,
    )?;
    Ok((vm, out))
}

fn put_node(txn: &dyn Txn, n: &Node) -> Result<()> {
    txn.insert(Table::Nodes, n.name.as_bytes(), &encode(n)?)
}

fn release(txn: &dyn Txn, node: &str, vm: &Vm) -> Result<()> {
    if let Some(mut n) = get_record::<Node>(txn, Table::Nodes, node.as_bytes())? {
        n.allocated.vcpus = n.allocated.vcpus.saturating_sub(u64::from(vm.spec.vcpus));
        n.allocated.memory_mib = n
            .allocated
            .memory_mib
            .saturating_sub(u64::from(vm.spec.memory_mib));
        put_node(txn, &n)?;
    }
    Ok(())
}

/// Module requests of a VM that must be delivered again (after a move to a new node).
fn reset_requests(txn: &dyn Txn, vm_id: &str) -> Result<()> {
    let mut reqs: Vec<ModuleRequest> =
        get_record(txn, Table::ModuleRequests, vm_id.as_bytes())?.unwrap_or_default();
    for r in reqs.iter_mut().filter(|r| r.want_loaded) {
        if matches!(
            r.state,
            RequestState::Loaded | RequestState::Loading | RequestState::Vetting
        ) {
            r.state = RequestState::Pending;
            r.reason = Some("the VM moved to another node; loading again".into());
            r.updated_at = now();
        }
    }
    txn.insert(Table::ModuleRequests, vm_id.as_bytes(), &encode(&reqs)?)
}

impl Datastore {
    /// Registers (or re-registers) a node. A re-registration keeps its allocations.
    pub fn register_node(&self, reg: &RegisterNode) -> Result<Node> {
        transact(&*self.kv, |txn| {
            let time = now();
            let prev: Option<Node> = get_record(txn, Table::Nodes, reg.name.as_bytes())?;
            let node = Node {
                name: reg.name.clone(),
                address: reg.address.clone(),
                capacity: reg.capacity,
                allocated: prev.as_ref().map(|p| p.allocated).unwrap_or_default(),
                driver: reg.driver.clone(),
                hardware_virtualization: reg.hardware_virtualization,
                kernel_release: reg.kernel_release.clone(),
                state: NodeState::Ready,
                cordoned: prev.as_ref().is_some_and(|p| p.cordoned),
                last_heartbeat: time.clone(),
                last_heartbeat_unix: unix_now(),
                registered_at: prev.map(|p| p.registered_at).unwrap_or(time),
            };
            put_node(txn, &node)?;
            append_event(
                txn,
                &format!("node:{}", reg.name),
                None,
                "node.register",
                &format!("nodes/{}", reg.name),
            )?;
            Ok(node)
        })
    }

    /// A node by name.
    pub fn get_node(&self, name: &str) -> Result<Option<Node>> {
        self.kv
            .get(Table::Nodes, name.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every node, by name.
    pub fn list_nodes(&self) -> Result<Vec<Node>> {
        self.kv
            .scan(Table::Nodes, b"", None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Every VM (for the reconciler and the scheduler).
    pub fn all_vms(&self) -> Result<Vec<Vm>> {
        self.kv
            .scan(Table::Vms, b"", None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Records a heartbeat: the node is Ready, and its VMs' observed state is taken in.
    /// VMs it reports but no longer holds come back in `remove`.
    pub fn heartbeat(&self, node: &str, hb: &Heartbeat) -> Result<HeartbeatReply> {
        transact(&*self.kv, |txn| {
            let mut n: Node = get_record(txn, Table::Nodes, node.as_bytes())?
                .ok_or_else(|| Error::not_found("node", node))?;
            n.state = NodeState::Ready;
            n.last_heartbeat = now();
            n.last_heartbeat_unix = unix_now();
            put_node(txn, &n)?;
            let mut reply = HeartbeatReply::default();
            for o in &hb.vms {
                let vm = match visible_vm(txn, VmFilter::All, &o.id) {
                    Ok(vm) => vm,
                    Err(Error::NotFound { .. }) => {
                        reply.remove.push(o.id.clone());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if vm.status.node.as_deref() != Some(node) {
                    reply.remove.push(o.id.clone());
                    continue;
                }
                if vm.deleting {
                    continue;
                }
                update_vm(txn, &o.id, |vm| {
                    vm.status.phase = o.phase;
                    vm.status.reason = o.reason.clone();
                    vm.status.guest_modules = o.guest_modules.clone();
                    Ok(())
                })?;
            }
            Ok(reply)
        })
    }

    /// Marks nodes whose last heartbeat is older than `timeout_secs` NotReady and their
    /// VMs Lost. Returns the names of nodes that just became NotReady.
    pub fn expire_nodes(&self, timeout_secs: u64) -> Result<Vec<String>> {
        let now_unix = unix_now();
        let stale: Vec<Node> = self
            .list_nodes()?
            .into_iter()
            .filter(|n| {
                n.state == NodeState::Ready
                    && now_unix.saturating_sub(n.last_heartbeat_unix) > timeout_secs
            })
            .collect();
        let vms = self.all_vms()?;
        let mut out = Vec::new();
        for n in stale {
            let on_node: Vec<String> = vms
                .iter()
                .filter(|v| v.status.node.as_deref() == Some(&n.name) && !v.deleting)
                .map(|v| v.id.clone())
                .collect();
            transact(&*self.kv, |txn| {
                let mut node: Node = get_record(txn, Table::Nodes, n.name.as_bytes())?
                    .ok_or_else(|| Error::not_found("node", &n.name))?;
                node.state = NodeState::NotReady;
                put_node(txn, &node)?;
                for id in &on_node {
                    update_vm(txn, id, |vm| {
                        vm.status.phase = Phase::Lost;
                        vm.status.reason = Some(format!("node {} stopped heartbeating", n.name));
                        Ok(())
                    })?;
                }
                append_event(
                    txn,
                    "system:reconciler",
                    None,
                    "node.not_ready",
                    &format!("nodes/{}", n.name),
                )
            })?;
            out.push(n.name);
        }
        Ok(out)
    }

    /// Takes a VM off its node (releasing the reservation) so it is placed again: for Lost
    /// VMs and drained nodes. Its module requests will be delivered again.
    pub fn unplace_vm(&self, id: &str, reason: &str) -> Result<Vm> {
        transact(&*self.kv, |txn| {
            let (vm, _) = update_vm(txn, id, |vm| {
                if let Some(node) = vm.status.node.take() {
                    release(txn, &node, vm)?;
                }
                vm.status.phase = Phase::Pending;
                vm.status.reason = Some(reason.to_string());
                vm.status.guest_modules.clear();
                Ok(())
            })?;
            reset_requests(txn, id)?;
            append_event(
                txn,
                "system:reconciler",
                Some(&vm.tenant),
                "vm.reschedule",
                &format!("vms/{id}"),
            )?;
            Ok(vm)
        })
    }

    /// Cordons or uncordons a node.
    pub fn set_cordoned(&self, actor: &str, name: &str, cordoned: bool) -> Result<Node> {
        transact(&*self.kv, |txn| {
            let mut n: Node = get_record(txn, Table::Nodes, name.as_bytes())?
                .ok_or_else(|| Error::not_found("node", name))?;
            n.cordoned = cordoned;
            put_node(txn, &n)?;
            let action = if cordoned {
                "node.cordon"
            } else {
                "node.uncordon"
            };
            append_event(txn, actor, None, action, &format!("nodes/{name}"))?;
            Ok(n)
        })
    }

    /// Places one Pending VM: picks a node and reserves its resources in the same
    /// transaction as the VM's new state.
    pub fn place_vm(&self, id: &str, strategy: Strategy) -> Result<Placement> {
        Ok(self
            .place_batch(&[id.to_string()], strategy)?
            .into_iter()
            .next()
            .map(|(_, p)| p)
            .unwrap_or_else(|| Placement::Unschedulable("not pending".into())))
    }

    /// Places a batch of Pending VMs in one transaction (one flush): nodes are chosen on a
    /// snapshot, then each chosen node is read again inside the transaction and the VM
    /// placed only if it still fits, so no node is ever overcommitted.
    pub fn place_batch(
        &self,
        ids: &[String],
        strategy: Strategy,
    ) -> Result<Vec<(String, Placement)>> {
        let mut nodes = self.list_nodes()?;
        let mut order = LoadOrder::new(&nodes);
        let mut per_tenant: HashMap<String, HashMap<String, u64>> = HashMap::new();
        let mut decided: Vec<(String, Placement)> = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(vm) = self.get_vm(VmFilter::All, id) else {
                continue;
            };
            if vm.status.phase != Phase::Pending || vm.deleting {
                continue;
            }
            if !per_tenant.contains_key(&vm.tenant) {
                per_tenant.insert(vm.tenant.clone(), self.tenant_vms_per_node(&vm.tenant)?);
            }
            let counts = per_tenant
                .get_mut(&vm.tenant)
                .ok_or_else(|| Error::Storage("tenant counts".into()))?;
            let need = Resources {
                vcpus: u64::from(vm.spec.vcpus),
                memory_mib: u64::from(vm.spec.memory_mib),
            };
            let pick = order
                .pick(&nodes, need, counts, strategy)
                .ok_or(())
                .or_else(|_| {
                    choose_node(&nodes, need, counts, strategy)
                        .map(|n| n.name.clone())
                        .map_err(Some)
                })
                .map(|name| {
                    nodes
                        .iter()
                        .position(|n| n.name == name)
                        .unwrap_or(usize::MAX)
                });
            match pick {
                Ok(i) if i < nodes.len() => {
                    order.remove(&nodes[i], i);
                    nodes[i].allocated.vcpus += need.vcpus;
                    nodes[i].allocated.memory_mib += need.memory_mib;
                    order.insert(&nodes[i], i);
                    let name = nodes[i].name.clone();
                    *counts.entry(name.clone()).or_default() += 1;
                    decided.push((id.clone(), Placement::Placed(name)));
                }
                Ok(_) | Err(None) => {}
                Err(Some(reason)) => decided.push((id.clone(), Placement::Unschedulable(reason))),
            }
        }
        transact(&*self.kv, |txn| {
            let mut out = Vec::with_capacity(decided.len());
            for (id, placement) in &decided {
                let vm = visible_vm(txn, VmFilter::All, id)?;
                if vm.status.phase != Phase::Pending || vm.deleting {
                    continue;
                }
                let result = match placement {
                    Placement::Unschedulable(reason) => {
                        if vm.status.reason.as_deref() != Some(reason.as_str()) {
                            update_vm(txn, id, |vm| {
                                vm.status.reason = Some(reason.clone());
                                Ok(())
                            })?;
                        }
                        placement.clone()
                    }
                    Placement::Placed(name) => {
                        let mut node: Node = get_record(txn, Table::Nodes, name.as_bytes())?
                            .ok_or_else(|| Error::not_found("node", name))?;
                        let free = node.free();
                        let fits = node.state == NodeState::Ready
                            && !node.cordoned
                            && free.vcpus >= u64::from(vm.spec.vcpus)
                            && free.memory_mib >= u64::from(vm.spec.memory_mib);
                        if !fits {
                            // Changed since the snapshot: left Pending for the next pass.
                            out.push((
                                id.clone(),
                                Placement::Unschedulable(format!("node {name} changed; retrying")),
                            ));
                            continue;
                        }
                        node.allocated.vcpus += u64::from(vm.spec.vcpus);
                        node.allocated.memory_mib += u64::from(vm.spec.memory_mib);
                        put_node(txn, &node)?;
                        let (vm, _) = update_vm(txn, id, |vm| {
                            vm.status.phase = Phase::Scheduled;
                            vm.status.node = Some(name.clone());
                            vm.status.reason = None;
                            Ok(())
                        })?;
                        append_event(
                            txn,
                            "system:scheduler",
                            Some(&vm.tenant),
                            "vm.place",
                            &format!("vms/{id}"),
                        )?;
                        placement.clone()
                    }
                };
                out.push((id.clone(), result));
            }
            Ok(out)
        })
    }

    fn tenant_vms_per_node(&self, tenant: &str) -> Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        for (_, v) in self
            .kv
            .scan(Table::Vms, &super::keys::prefix(tenant), None, usize::MAX)?
        {
            let vm: Vm = decode(&v)?;
            if let Some(n) = vm.status.node {
                *out.entry(n).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// Sets the observed phase of a VM (from a node's answer).
    pub fn set_vm_phase(&self, id: &str, phase: Phase, reason: Option<String>) -> Result<()> {
        transact(&*self.kv, |txn| {
            update_vm(txn, id, |vm| {
                vm.status.phase = phase;
                vm.status.reason = reason.clone();
                Ok(())
            })
            .map(drop)
        })
    }

    /// Records a module request's new state (from the reconciler).
    pub fn set_request_state(
        &self,
        vm_id: &str,
        name: &str,
        state: RequestState,
        reason: Option<String>,
    ) -> Result<()> {
        transact(&*self.kv, |txn| {
            let mut reqs: Vec<ModuleRequest> =
                get_record(txn, Table::ModuleRequests, vm_id.as_bytes())?.unwrap_or_default();
            if let Some(r) = reqs.iter_mut().find(|r| r.name == name) {
                r.state = state;
                r.reason = reason.clone();
                r.updated_at = now();
            }
            txn.insert(Table::ModuleRequests, vm_id.as_bytes(), &encode(&reqs)?)
        })
    }

    /// Ends a deletion once the VM's node has removed it: drops the records and releases
    /// the tenant's quota and the node's reservation.
    pub fn finish_delete(&self, id: &str) -> Result<()> {
        transact(&*self.kv, |txn| {
            let vm = visible_vm(txn, VmFilter::All, id)?;
            if let Some(node) = &vm.status.node {
                release(txn, node, &vm)?;
            }
            super::datastore::remove_vm(txn, "system:reconciler", &vm)
        })
    }
}
