//! VMs in the store: creation under quota, reads and pages, spec changes, phases, and
//! deletion (asked by a tenant, finished by the reconciler).

use super::keys::{self, decode, encode, pair, prefix};
use super::nodes::{release, resize_reservation};
use super::tenants::charge;
use super::txn::{append_event, get_record, refuse_if_deleting, update_vm, visible_vm};
use super::{transact, Datastore, Table, Txn, VmFilter};
use crate::error::{Error, Result};
use crate::model::{
    now, KernelMode, Phase, Tenant, UserDataState, UserDataStatus, Vm, VmSpec, VmStatus,
};
use std::sync::atomic::Ordering;

/// Reason given for a VM that no node can take yet.
pub const NO_NODES_REASON: &str =
    "no node agent has registered yet; the VM will be placed when one does";
/// Reason given for a VM just created while nodes are registered: the scheduler's next
/// pass places it or says why it cannot.
pub const NOT_YET_PLACED_REASON: &str = "waiting for the scheduler to place it";

/// Removes a VM's records and releases its tenant's quota, inside a transaction.
pub(super) fn remove_vm(txn: &dyn Txn, actor: &str, vm: &Vm) -> Result<()> {
    let mut t: Tenant = get_record(txn, Table::Tenants, vm.tenant.as_bytes())?
        .ok_or_else(|| Error::not_found("tenant", &vm.tenant))?;
    t.usage = charge(
        &t,
        -1,
        -i64::from(vm.spec.vcpus),
        -i64::from(vm.spec.memory_mib),
    )?;
    txn.insert(Table::Tenants, vm.tenant.as_bytes(), &encode(&t)?)?;
    if let Some(held) = &vm.status.network {
        super::networks::release_address(txn, &vm.tenant, held, &vm.id)?;
    }
    txn.remove(Table::Vms, &pair(&vm.tenant, vm.id.as_bytes()))?;
    txn.remove(Table::VmOwners, vm.id.as_bytes())?;
    txn.remove(Table::VmNames, &pair(&vm.tenant, vm.spec.name.as_bytes()))?;
    txn.remove(Table::ModuleRequests, vm.id.as_bytes())?;
    super::observations::forget(txn, &vm.id)?;
    let action = if vm.deleting {
        "vm.deleted"
    } else {
        "vm.delete"
    };
    append_event(
        txn,
        actor,
        Some(&vm.tenant),
        action,
        &format!("vms/{}", vm.id),
    )
}

fn check_if_match(vm: &Vm, if_match: Option<&str>) -> Result<()> {
    match if_match {
        None => Ok(()),
        Some(given) if given.trim() == "*" => Ok(()),
        Some(given) => {
            let current = vm.etag();
            if given.split(',').any(|t| t.trim() == current) {
                Ok(())
            } else {
                Err(Error::PreconditionFailed {
                    given: given.to_string(),
                    current,
                })
            }
        }
    }
}

/// A field fixed at creation, in a replacement spec: left out, it keeps `stored`;
/// given, it must equal it.
fn keep_fixed(given: &mut Option<String>, stored: &Option<String>, field: &str) -> Result<()> {
    match (&*given, stored) {
        (None, kept) => *given = kept.clone(),
        (Some(new), Some(old)) if new == old => {}
        (Some(_), _) => {
            return Err(Error::Conflict(format!(
                "{field} is fixed at creation: repeat it or leave it out"
            )))
        }
    }
    Ok(())
}

/// Reserves `name` for VM `id` within `tenant`.
fn claim_name(txn: &dyn Txn, tenant: &str, name: &str, id: &str) -> Result<()> {
    let key = pair(tenant, name.as_bytes());
    if txn.get(Table::VmNames, &key)?.is_some() {
        return Err(Error::Conflict(format!(
            "tenant {tenant} already has a VM named {name}"
        )));
    }
    txn.insert(Table::VmNames, &key, id.as_bytes())
}

impl Datastore {
    /// Creates a VM for `tenant`, checking the quota, the name and every listed module's
    /// policy in the same transaction as the write.
    pub fn create_vm(&self, actor: &str, tenant: &str, spec: &VmSpec) -> Result<Vm> {
        let id = uuid::Uuid::new_v4().to_string();
        let time = now();
        let mut spec = spec.clone();
        let network = spec
            .network
            .get_or_insert_with(|| super::networks::DEFAULT_NETWORK.to_string())
            .clone();
        let spec = &spec;
        // What is true now: no node at all, or a scheduler that has not looked yet. Once
        // a node was seen, the scheduler's own word is awaited (it says "no node" itself
        // if they all went): a round trip less per create on etcd.
        let reason = if self.nodes_seen.load(Ordering::Relaxed) {
            NOT_YET_PLACED_REASON
        } else if self.kv.scan(Table::Nodes, b"", None, 1)?.is_empty() {
            NO_NODES_REASON
        } else {
            self.nodes_seen.store(true, Ordering::Relaxed);
            NOT_YET_PLACED_REASON
        };
        let vm = Vm {
            id: id.clone(),
            tenant: tenant.to_string(),
            spec: spec.clone(),
            status: VmStatus {
                user_data: spec.user_data.as_ref().map(|_| UserDataStatus::pending()),
                ..VmStatus::new(Phase::Pending, None, Some(reason.to_string()))
            },
            generation: 1,
            created_at: time.clone(),
            updated_at: time,
            deleting: false,
        };
        // Committed with the creates other callers make meanwhile (one etcd Txn): they
        // all rewrite their tenant's usage.
        let (actor, tenant) = (actor.to_string(), tenant.to_string());
        let default_cidr = self.default_network_cidr.clone();
        let mut reads = vec![
            (Table::Networks, tenant.as_bytes().to_vec()),
            (Table::Tenants, tenant.as_bytes().to_vec()),
            (Table::VmNames, pair(&tenant, spec.name.as_bytes())),
            (Table::Meta, super::txn::event_floor_key(&tenant)),
        ];
        reads.extend(
            spec.modules
                .iter()
                .map(|m| (Table::Policies, m.name.as_bytes().to_vec())),
        );
        self.group.transact(reads, move |txn| {
            // The network first: creating the default network rewrites the tenant.
            let mut vm = vm.clone();
            vm.status.network =
                super::networks::attach(txn, &actor, &tenant, &network, &default_cidr, &id)?;
            let mut t: Tenant = get_record(txn, Table::Tenants, tenant.as_bytes())?
                .ok_or_else(|| Error::not_found("tenant", &tenant))?;
            let spec = &vm.spec;
            t.usage = charge(&t, 1, i64::from(spec.vcpus), i64::from(spec.memory_mib))?;
            claim_name(txn, &tenant, &spec.name, &id)?;
            let requests = super::module_requests::open_requests(txn, &vm, &spec.modules, &[])?;
            txn.insert(Table::Tenants, tenant.as_bytes(), &encode(&t)?)?;
            txn.insert(Table::Vms, &pair(&tenant, id.as_bytes()), &encode(&vm)?)?;
            txn.insert(Table::VmOwners, id.as_bytes(), tenant.as_bytes())?;
            // No requests is no record (every reader takes absence as none): a key less.
            if !requests.is_empty() {
                txn.insert(Table::ModuleRequests, id.as_bytes(), &encode(&requests)?)?;
            }
            append_event(
                txn,
                &actor,
                Some(&tenant),
                "vm.create",
                &format!("vms/{id}"),
            )?;
            Ok(vm)
        })
    }

    /// A VM, if `filter` admits its tenant.
    pub fn get_vm(&self, filter: VmFilter, id: &str) -> Result<Vm> {
        self.get_vm_as(filter, id)
    }

    /// The VMs `ids` (all tenants'), in order; `None` for one that is gone.
    pub fn get_vms(&self, ids: &[String]) -> Result<Vec<Option<Vm>>> {
        self.get_vms_as(ids)
    }

    /// The VMs `ids` (all tenants'), each decoded as `T`, in order; `None` for one that
    /// is gone or unreadable (logged). Read a hundred at a time with
    /// [`super::KvStore::get_many`].
    pub(super) fn get_vms_as<T: serde::de::DeserializeOwned>(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<T>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::GET_MANY_CHUNK) {
            let owner_keys: Vec<(Table, &[u8])> = chunk
                .iter()
                .map(|id| (Table::VmOwners, id.as_bytes()))
                .collect();
            let owners = self.kv.get_many(&owner_keys)?;
            let vm_keys: Vec<Option<Vec<u8>>> = chunk
                .iter()
                .zip(&owners)
                .map(|(id, o)| {
                    o.as_ref()
                        .map(|o| pair(&String::from_utf8_lossy(o), id.as_bytes()))
                })
                .collect();
            let present: Vec<(Table, &[u8])> = vm_keys
                .iter()
                .flatten()
                .map(|k| (Table::Vms, k.as_slice()))
                .collect();
            let mut found = self.kv.get_many(&present)?.into_iter();
            for key in &vm_keys {
                let value = match key {
                    Some(_) => found.next().flatten(),
                    None => None,
                };
                out.push(match value.map(|b| decode::<T>(&b)) {
                    Some(Ok(vm)) => Some(vm),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "an unreadable VM record is passed over");
                        None
                    }
                    None => None,
                });
            }
        }
        Ok(out)
    }

    /// The VM `id` decoded as `T`, a view of the fields a caller needs (serde skips the
    /// rest without allocating).
    pub(super) fn get_vm_as<T: serde::de::DeserializeOwned>(
        &self,
        filter: VmFilter,
        id: &str,
    ) -> Result<T> {
        let owner = self
            .kv
            .get(Table::VmOwners, id.as_bytes())?
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .filter(|t| filter.admits(t))
            .ok_or_else(|| Error::not_found("vm", id))?;
        let bytes = self
            .kv
            .get(Table::Vms, &pair(&owner, id.as_bytes()))?
            .ok_or_else(|| Error::not_found("vm", id))?;
        decode(&bytes)
    }

    /// A page of VMs visible through `filter` (a tenant's by id; all by tenant, then id),
    /// as their stored JSON, which is exactly their API form.
    pub fn list_vms_json(
        &self,
        filter: VmFilter,
        page_token: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<String>)> {
        let after = page_token.map(keys::parse_page_token).transpose()?;
        let p = match filter {
            VmFilter::All => Vec::new(),
            VmFilter::Tenant(t) => prefix(t),
        };
        let entries = self.kv.scan(Table::Vms, &p, after.as_deref(), limit)?;
        let next = (entries.len() == limit)
            .then(|| entries.last().map(|(k, _)| keys::page_token(&k[p.len()..])))
            .flatten();
        Ok((entries.into_iter().map(|(_, v)| v).collect(), next))
    }

    /// The stored JSON of the VMs named `name` that `filter` shows: a tenant's one (names
    /// are unique within a tenant), or every tenant's for an admin, ordered by tenant.
    pub fn vms_named_json(&self, filter: VmFilter, name: &str) -> Result<Vec<Vec<u8>>> {
        let owners: Vec<(String, Vec<u8>)> = match filter {
            VmFilter::Tenant(t) => self
                .kv
                .get(Table::VmNames, &pair(t, name.as_bytes()))?
                .map(|id| (t.to_string(), id))
                .into_iter()
                .collect(),
            VmFilter::All => self
                .kv
                .scan(Table::VmNames, b"", None, usize::MAX)?
                .into_iter()
                .filter_map(|(k, id)| {
                    let split = k.iter().position(|b| *b == 0)?;
                    (&k[split + 1..] == name.as_bytes())
                        .then(|| (String::from_utf8_lossy(&k[..split]).into_owned(), id))
                })
                .collect(),
        };
        let mut out = Vec::new();
        for (tenant, id) in owners {
            if let Some(vm) = self.kv.get(Table::Vms, &pair(&tenant, &id))? {
                out.push(vm);
            }
        }
        Ok(out)
    }

    /// Replaces a VM's spec. `if_match`, when given, must equal the current ETag (or `*`).
    pub fn replace_vm(
        &self,
        actor: &str,
        filter: VmFilter,
        id: &str,
        if_match: Option<&str>,
        spec: &VmSpec,
    ) -> Result<Vm> {
        transact(&*self.kv, |txn| {
            let mut vm = visible_vm(txn, filter, id)?;
            check_if_match(&vm, if_match)?;
            refuse_if_deleting(&vm)?;
            let mut spec = spec.clone();
            keep_fixed(&mut spec.user_data, &vm.spec.user_data, "user_data")?;
            keep_fixed(&mut spec.network, &vm.spec.network, "network")?;
            // Left out, `kernel_mode` reads as `standard`: that keeps what the VM has.
            if spec.kernel_mode != vm.spec.kernel_mode {
                if spec.kernel_mode == KernelMode::Standard {
                    spec.kernel_mode = vm.spec.kernel_mode;
                } else {
                    return Err(Error::Conflict(
                        "kernel_mode is fixed at creation: repeat it or leave it out".into(),
                    ));
                }
            }
            let spec = &spec;
            if let Some(node) = &vm.status.node {
                resize_reservation(txn, node, &vm.spec, spec)?;
            }
            let mut t: Tenant = get_record(txn, Table::Tenants, vm.tenant.as_bytes())?
                .ok_or_else(|| Error::not_found("tenant", &vm.tenant))?;
            let dv = i64::from(spec.vcpus) - i64::from(vm.spec.vcpus);
            let dm = i64::from(spec.memory_mib) - i64::from(vm.spec.memory_mib);
            t.usage = charge(&t, 0, dv, dm)?;
            if spec.name != vm.spec.name {
                claim_name(txn, &vm.tenant, &spec.name, id)?;
                txn.remove(Table::VmNames, &pair(&vm.tenant, vm.spec.name.as_bytes()))?;
            }
            let existing = super::module_requests::requests_of(txn, id)?;
            let removed: Vec<&str> = vm
                .spec
                .modules
                .iter()
                .filter(|m| !spec.modules.iter().any(|n| n.name == m.name))
                .map(|m| m.name.as_str())
                .collect();
            let added: Vec<_> = spec
                .modules
                .iter()
                .filter(|m| !vm.spec.modules.iter().any(|o| o.name == m.name))
                .cloned()
                .collect();
            let mut requests = super::module_requests::open_requests(txn, &vm, &added, &existing)?;
            for r in requests
                .iter_mut()
                .filter(|r| removed.contains(&r.name.as_str()))
            {
                super::module_requests::withdraw(r);
            }
            vm.spec = spec.clone();
            vm.generation += 1;
            vm.updated_at = now();
            txn.insert(Table::Tenants, vm.tenant.as_bytes(), &encode(&t)?)?;
            txn.insert(Table::Vms, &pair(&vm.tenant, id.as_bytes()), &encode(&vm)?)?;
            // No requests is no record (every reader takes absence as none): a key less.
            if !requests.is_empty() {
                txn.insert(Table::ModuleRequests, id.as_bytes(), &encode(&requests)?)?;
            }
            append_event(
                txn,
                actor,
                Some(&vm.tenant),
                "vm.replace",
                &format!("vms/{id}"),
            )?;
            Ok(vm)
        })
    }

    /// Deletes a VM. One never placed goes at once (records removed, quota released);
    /// one on a node is marked `deleting` and goes when its node has removed it.
    pub fn delete_vm(
        &self,
        actor: &str,
        filter: VmFilter,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<Vm> {
        transact(&*self.kv, |txn| {
            let mut vm = visible_vm(txn, filter, id)?;
            check_if_match(&vm, if_match)?;
            if vm.status.node.is_none() {
                remove_vm(txn, actor, &vm)?;
                return Ok(vm);
            }
            vm.deleting = true;
            vm.status.phase = Phase::Stopping;
            vm.status.reason = Some("deletion requested".into());
            vm.updated_at = now();
            txn.insert(Table::Vms, &pair(&vm.tenant, id.as_bytes()), &encode(&vm)?)?;
            append_event(
                txn,
                actor,
                Some(&vm.tenant),
                "vm.delete",
                &format!("vms/{id}"),
            )?;
            Ok(vm)
        })
    }

    /// Every VM `filter` shows (a tenant's own, or all).
    pub fn visible_vms(&self, filter: VmFilter) -> Result<Vec<Vm>> {
        let p = match filter {
            VmFilter::All => Vec::new(),
            VmFilter::Tenant(t) => prefix(t),
        };
        self.kv
            .scan(Table::Vms, &p, None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Every VM of every tenant.
    pub fn all_vms(&self) -> Result<Vec<Vm>> {
        self.visible_vms(VmFilter::All)
    }

    /// Sets a VM's phase: the reconciler's decision, from what its node observes.
    pub fn set_vm_phase(&self, id: &str, phase: Phase, reason: Option<String>) -> Result<()> {
        transact(&*self.kv, |txn| {
            update_vm(txn, id, |vm| {
                vm.status.phase = phase;
                vm.status.reason = reason.clone();
                if matches!(phase, Phase::Stopped | Phase::Failed) {
                    interrupt_user_data(vm, &format!("the VM became {phase:?} while it ran"));
                }
                Ok(())
            })
            .map(drop)
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
            remove_vm(txn, "system:reconciler", &vm)
        })
    }
}

/// A first-boot script that was running when its guest went away has failed (it is not
/// run again).
pub(super) fn interrupt_user_data(vm: &mut Vm, why: &str) {
    if let Some(u) = vm.status.user_data.as_mut() {
        if u.state == UserDataState::Running {
            u.state = UserDataState::Failed;
            u.reason = Some(why.to_string());
        }
    }
}

impl Datastore {
    /// Moves VM `id`'s first-boot script forward to `observed` (see
    /// `UserDataStatus::advanced_by`).
    pub fn advance_user_data(&self, id: &str, observed: &UserDataStatus) -> Result<()> {
        transact(&*self.kv, |txn| {
            update_vm(txn, id, |vm| {
                if let Some(next) = vm
                    .status
                    .user_data
                    .as_ref()
                    .and_then(|u| u.advanced_by(observed))
                {
                    vm.status.user_data = Some(next);
                }
                Ok(())
            })
            .map(drop)
        })
    }
}
