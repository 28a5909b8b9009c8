//! Placement in the store: VMs placed on nodes in batches, each placement committed with
//! its reservation in one transaction; VMs taken off a lost or drained node.

use super::keys::decode;
use super::module_requests::reset_requests;
use super::nodes::{put_node, release};
use super::scheduler::{choose_node, LoadOrder, Need, Placement, Strategy};
use super::txn::{append_event, get_record, update_vm, visible_vm, write_vm};
use super::{transact, Datastore, Table, VmFilter};
use crate::error::{Error, Result};
use crate::model::{Node, NodeState, Phase, Resources, Vm};
use std::collections::HashMap;

impl Datastore {
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
            #[serde(default)]
            network: Option<serde::de::IgnoredAny>,
        }
        for (id, vm) in ids.iter().zip(self.get_vms_as::<Candidate>(ids)?) {
            let Some(vm) = vm else {
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
            let need = Need {
                resources: Resources {
                    vcpus: u64::from(vm.spec.vcpus),
                    memory_mib: u64::from(vm.spec.memory_mib),
                },
                networking: vm.status.network.is_some(),
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
                    nodes[i].allocated.vcpus += need.resources.vcpus;
                    nodes[i].allocated.memory_mib += need.resources.memory_mib;
                    order.insert(&nodes[i], i);
                    let name = nodes[i].name.clone();
                    *counts.entry(name.clone()).or_default() += 1;
                    decided.push((id.clone(), Placement::Placed(name)));
                }
                Ok(_) | Err(None) => {}
                Err(Some(reason)) => decided.push((id.clone(), Placement::Unschedulable(reason))),
            }
        }
        // In transactions as large as the store takes (etcd bounds a Txn's operations).
        let mut all = Vec::with_capacity(decided.len());
        for chunk in decided.chunks(self.kv.batch_limit().max(1)) {
            all.extend(self.commit_placements(chunk)?);
        }
        Ok(all)
    }

    /// Commits `decided` placements in one transaction; what became of each.
    fn commit_placements(
        &self,
        decided: &[(String, Placement)],
    ) -> Result<Vec<(String, Placement)>> {
        transact(&*self.kv, |txn| {
            // What the loop below reads, read up front (on etcd: three round trips, not
            // two or three per VM).
            let owner_keys: Vec<(Table, &[u8])> = decided
                .iter()
                .map(|(id, _)| (Table::VmOwners, id.as_bytes()))
                .collect();
            txn.prefetch(&owner_keys)?;
            let mut vm_keys = Vec::with_capacity(decided.len());
            for (id, _) in decided {
                if let Some(owner) = txn.get(Table::VmOwners, id.as_bytes())? {
                    vm_keys.push(super::keys::pair(
                        &String::from_utf8_lossy(&owner),
                        id.as_bytes(),
                    ));
                }
            }
            let nodes: std::collections::BTreeSet<&str> = decided
                .iter()
                .filter_map(|(_, p)| match p {
                    Placement::Placed(n) => Some(n.as_str()),
                    Placement::Unschedulable(_) => None,
                })
                .collect();
            let mut more: Vec<(Table, &[u8])> =
                vm_keys.iter().map(|k| (Table::Vms, k.as_slice())).collect();
            more.extend(nodes.iter().map(|n| (Table::Nodes, n.as_bytes())));
            txn.prefetch(&more)?;
            // The audit trail's floor of each tenant placed.
            let mut tenants = std::collections::BTreeSet::new();
            for key in &vm_keys {
                if let Some(t) = key.split(|b| *b == 0).next() {
                    tenants.insert(super::txn::event_floor_key(&String::from_utf8_lossy(t)));
                }
            }
            let floors: Vec<(Table, &[u8])> = tenants
                .iter()
                .map(|k| (Table::Meta, k.as_slice()))
                .collect();
            txn.prefetch(&floors)?;
            let mut out = Vec::with_capacity(decided.len());
            // Each node read once and written once per batch.
            let mut touched: HashMap<&str, Node> = HashMap::new();
            for (id, placement) in decided {
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
                        let need = Need {
                            resources: Resources::default(),
                            networking: vm.status.network.is_some(),
                        };
                        let fits = node.state == NodeState::Ready
                            && !node.cordoned
                            && need.featured(node)
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
                super::observations::clear_guest_lists(&mut vm.status);
                super::vms::interrupt_user_data(vm, "the VM was recreated on another node");
                Ok(())
            })?;
            super::observations::forget(txn, id)?;
            reset_requests(txn, id, "the VM moved to another node; loading again")?;
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
}
