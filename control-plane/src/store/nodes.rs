//! Nodes in the store: registration, heartbeats, readiness, cordons, and the placement of
//! VMs, each placement committed with its reservation in one transaction.

use super::datastore::{append_event, get_record, visible_vm};
use super::keys::{decode, encode, pair};
use super::scheduler::{choose_node, LoadOrder};
use super::scheduler::{Placement, Strategy};
use super::{transact, Datastore, Table, Txn, VmFilter};
use crate::error::{Error, Result};
use crate::model::{
    now, Heartbeat, HeartbeatReply, ModuleRequest, Node, NodeState, Phase, RegisterNode,
    RequestState, Resources, Vm,
};
use std::collections::HashMap;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads and rewrites one VM (by id) inside a transaction.
fn update_vm<T>(txn: &dyn Txn, id: &str, f: impl FnOnce(&mut Vm) -> Result<T>) -> Result<(Vm, T)> {
    let mut vm = visible_vm(txn, VmFilter::All, id)?;
    let out = f(&mut vm)?;
    write_vm(txn, &mut vm)?;
    Ok((vm, out))
}

/// Writes a VM read in the same transaction, stamping `updated_at`.
fn write_vm(txn: &dyn Txn, vm: &mut Vm) -> Result<()> {
    vm.updated_at = now();
    txn.insert(
        Table::Vms,
        &pair(&vm.tenant, vm.id.as_bytes()),
        &encode(vm)?,
    )
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

    /// Records a heartbeat: the node is Ready, and what it observes of its VMs is recorded
    /// (their phases are the reconciler's to decide) with the guest's own module list.
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
                super::observations::record(txn, node, o)?;
                if vm.status.guest_modules != o.guest_modules {
                    update_vm(txn, &o.id, |vm| {
                        vm.status.guest_modules = o.guest_modules.clone();
                        Ok(())
                    })?;
                }
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
            super::observations::forget(txn, id)?;
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
        /// What placing a VM reads of it, before the transaction.
        #[derive(serde::Deserialize)]
        struct Candidate {
            tenant: String,
            spec: CandidateSpec,
            status: CandidateStatus,
            #[serde(default)]
            deleting: bool,
        }
        #[derive(serde::Deserialize)]
        struct CandidateSpec {
            vcpus: u32,
            memory_mib: u32,
        }
        #[derive(serde::Deserialize)]
        struct CandidateStatus {
            phase: Phase,
        }
        for id in ids {
            let Ok(vm) = self.get_vm_as::<Candidate>(VmFilter::All, id) else {
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
            // Nothing fits: `choose_node` says why (or, should it disagree, where).
            let pick = order
                .pick(&nodes, need, counts, strategy)
                .ok_or(())
                .or_else(|_| {
                    choose_node(&nodes, need, counts, strategy)
                        .map(|n| {
                            nodes
                                .iter()
                                .position(|x| std::ptr::eq(x, n))
                                .unwrap_or(usize::MAX)
                        })
                        .map_err(Some)
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
            // Each node read once and written once per batch.
            let mut touched: HashMap<&str, Node> = HashMap::new();
            for (id, placement) in &decided {
                let mut vm = visible_vm(txn, VmFilter::All, id)?;
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
                        let node = match touched.entry(name.as_str()) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                                get_record(txn, Table::Nodes, name.as_bytes())?
                                    .ok_or_else(|| Error::not_found("node", name))?,
                            ),
                        };
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
                        vm.status.phase = Phase::Scheduled;
                        vm.status.node = Some(name.clone());
                        vm.status.reason = None;
                        write_vm(txn, &mut vm)?;
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
            for node in touched.values() {
                put_node(txn, node)?;
            }
            Ok(out)
        })
    }

    fn tenant_vms_per_node(&self, tenant: &str) -> Result<HashMap<String, u64>> {
        /// The one field of a stored VM this needs: serde skips the rest unallocated.
        #[derive(serde::Deserialize)]
        struct Placed {
            status: PlacedStatus,
        }
        #[derive(serde::Deserialize)]
        struct PlacedStatus {
            node: Option<String>,
        }
        let mut out = HashMap::new();
        for (_, v) in self
            .kv
            .scan(Table::Vms, &super::keys::prefix(tenant), None, usize::MAX)?
        {
            let vm: Placed = decode(&v)?;
            if let Some(n) = vm.status.node {
                *out.entry(n).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// Sets a VM's phase: the reconciler's decision, from what its node observes.
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
