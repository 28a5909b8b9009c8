//! Typed operations of API v1 on top of [`KvStore`]: tenants, VMs with quotas, the audit
//! trail. Every mutation is one transaction that also appends its audit event.

use super::keys::{self, decode, encode, pair, prefix};
use super::{transact, KvStore, Table, Txn};
use crate::error::{Error, Result};
use crate::model::{
    now, CreateTenant, Event, Outcome, Phase, Quota, Tenant, Usage, Vm, VmSpec, VmStatus,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Whose resources an operation may see.
#[derive(Debug, Clone, Copy)]
pub enum VmFilter<'a> {
    /// Everything (admins).
    All,
    /// Only this tenant's; anything else is "not found".
    Tenant(&'a str),
}

impl VmFilter<'_> {
    fn admits(&self, tenant: &str) -> bool {
        match self {
            VmFilter::All => true,
            VmFilter::Tenant(t) => *t == tenant,
        }
    }
}

/// The control plane's typed view of its store.
#[derive(Clone)]
pub struct Datastore {
    pub(super) kv: Arc<dyn KvStore>,
}

/// Reason given for a VM that no node can take yet.
pub const NO_NODES_REASON: &str =
    "no node agent has registered yet; the VM will be placed when one does";

impl Datastore {
    /// Wraps a store.
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Datastore { kv }
    }

    // ---- tenants ----

    /// Creates a tenant; `Conflict` when it exists.
    pub fn create_tenant(&self, actor: &str, body: &CreateTenant) -> Result<Tenant> {
        let tenant = Tenant {
            name: body.name.clone(),
            quota: body.quota.unwrap_or_default(),
            usage: Usage::default(),
            created_at: now(),
        };
        transact(&*self.kv, |txn| {
            if txn.get(Table::Tenants, tenant.name.as_bytes())?.is_some() {
                return Err(Error::Conflict(format!(
                    "tenant {} already exists",
                    tenant.name
                )));
            }
            txn.insert(Table::Tenants, tenant.name.as_bytes(), &encode(&tenant)?)?;
            let resource = format!("tenants/{}", tenant.name);
            append_event(txn, actor, Some(&tenant.name), "tenant.create", &resource)?;
            Ok(tenant.clone())
        })
    }

    /// Creates the tenant unless it exists; returns it either way.
    pub fn ensure_tenant(&self, actor: &str, name: &str) -> Result<Tenant> {
        match self.create_tenant(
            actor,
            &CreateTenant {
                name: name.to_string(),
                quota: None,
            },
        ) {
            Err(Error::Conflict(_)) => self
                .get_tenant(name)?
                .ok_or_else(|| Error::not_found("tenant", name)),
            other => other,
        }
    }

    /// A tenant by name.
    pub fn get_tenant(&self, name: &str) -> Result<Option<Tenant>> {
        self.kv
            .get(Table::Tenants, name.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// All tenants, by name.
    pub fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.kv
            .scan(Table::Tenants, b"", None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Replaces a tenant's quota. A quota below current usage is allowed: it blocks growth.
    pub fn set_quota(&self, actor: &str, name: &str, quota: Quota) -> Result<Tenant> {
        transact(&*self.kv, |txn| {
            let mut tenant: Tenant = get_record(txn, Table::Tenants, name.as_bytes())?
                .ok_or_else(|| Error::not_found("tenant", name))?;
            tenant.quota = quota;
            txn.insert(Table::Tenants, name.as_bytes(), &encode(&tenant)?)?;
            append_event(
                txn,
                actor,
                Some(name),
                "tenant.set_quota",
                &format!("tenants/{name}"),
            )?;
            Ok(tenant)
        })
    }

    // ---- VMs ----

    /// Creates a VM for `tenant`, checking the quota, the name and every listed module's
    /// policy in the same transaction as the write.
    pub fn create_vm(&self, actor: &str, tenant: &str, spec: &VmSpec) -> Result<Vm> {
        let id = uuid::Uuid::new_v4().to_string();
        let time = now();
        let vm = Vm {
            id: id.clone(),
            tenant: tenant.to_string(),
            spec: spec.clone(),
            status: VmStatus {
                phase: Phase::Pending,
                node: None,
                reason: Some(NO_NODES_REASON.to_string()),
                guest_modules: Vec::new(),
            },
            generation: 1,
            created_at: time.clone(),
            updated_at: time,
            deleting: false,
        };
        transact(&*self.kv, |txn| {
            let mut t: Tenant = get_record(txn, Table::Tenants, tenant.as_bytes())?
                .ok_or_else(|| Error::not_found("tenant", tenant))?;
            t.usage = charge(&t, 1, i64::from(spec.vcpus), i64::from(spec.memory_mib))?;
            claim_name(txn, tenant, &spec.name, &id)?;
            let requests = super::catalog::open_requests(txn, &vm, &spec.modules, &[])?;
            txn.insert(Table::Tenants, tenant.as_bytes(), &encode(&t)?)?;
            txn.insert(Table::Vms, &pair(tenant, id.as_bytes()), &encode(&vm)?)?;
            txn.insert(Table::VmOwners, id.as_bytes(), tenant.as_bytes())?;
            txn.insert(Table::ModuleRequests, id.as_bytes(), &encode(&requests)?)?;
            append_event(txn, actor, Some(tenant), "vm.create", &format!("vms/{id}"))?;
            Ok(vm.clone())
        })
    }

    /// A VM, if `filter` admits its tenant.
    pub fn get_vm(&self, filter: VmFilter, id: &str) -> Result<Vm> {
        self.get_vm_as(filter, id)
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
            let mut t: Tenant = get_record(txn, Table::Tenants, vm.tenant.as_bytes())?
                .ok_or_else(|| Error::not_found("tenant", &vm.tenant))?;
            let dv = i64::from(spec.vcpus) - i64::from(vm.spec.vcpus);
            let dm = i64::from(spec.memory_mib) - i64::from(vm.spec.memory_mib);
            t.usage = charge(&t, 0, dv, dm)?;
            if spec.name != vm.spec.name {
                claim_name(txn, &vm.tenant, &spec.name, id)?;
                txn.remove(Table::VmNames, &pair(&vm.tenant, vm.spec.name.as_bytes()))?;
            }
            let existing = super::catalog::requests_of(txn, id)?;
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
            let mut requests = super::catalog::open_requests(txn, &vm, &added, &existing)?;
            for r in requests
                .iter_mut()
                .filter(|r| removed.contains(&r.name.as_str()))
            {
                super::catalog::withdraw(r);
            }
            vm.spec = spec.clone();
            vm.generation += 1;
            vm.updated_at = now();
            txn.insert(Table::Tenants, vm.tenant.as_bytes(), &encode(&t)?)?;
            txn.insert(Table::Vms, &pair(&vm.tenant, id.as_bytes()), &encode(&vm)?)?;
            txn.insert(Table::ModuleRequests, id.as_bytes(), &encode(&requests)?)?;
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

    /// Number of VMs in each phase (every phase present, zero included).
    pub fn count_vms_by_phase(&self) -> Result<BTreeMap<Phase, u64>> {
        let mut counts: BTreeMap<Phase, u64> = Phase::ALL.iter().map(|p| (*p, 0)).collect();
        for (_, v) in self.kv.scan(Table::Vms, b"", None, usize::MAX)? {
            let vm: Vm = decode(&v)?;
            *counts.entry(vm.status.phase).or_default() += 1;
        }
        Ok(counts)
    }

    // ---- audit trail ----

    /// Records a refused mutation (policy, quota, precondition) in the audit trail.
    pub fn record_denial(
        &self,
        actor: &str,
        tenant: Option<&str>,
        action: &str,
        resource: &str,
        detail: &str,
    ) -> Result<()> {
        transact(&*self.kv, |txn| {
            append_denial(txn, actor, tenant, action, resource, detail)
        })
    }

    /// A page of the audit trail visible through `filter`, oldest first.
    pub fn list_events(
        &self,
        filter: VmFilter,
        page_token: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<String>)> {
        let after = page_token.map(keys::parse_page_token).transpose()?;
        let seqs: Vec<Vec<u8>> = match filter {
            VmFilter::All => self
                .kv
                .scan(Table::Events, b"", after.as_deref(), limit)?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            VmFilter::Tenant(t) => {
                let p = prefix(t);
                self.kv
                    .scan(Table::TenantEvents, &p, after.as_deref(), limit)?
                    .into_iter()
                    .map(|(k, _)| k[p.len()..].to_vec())
                    .collect()
            }
        };
        let mut events = Vec::with_capacity(seqs.len());
        for s in &seqs {
            if let Some(b) = self.kv.get(Table::Events, s)? {
                events.push(decode::<Event>(&b)?);
            }
        }
        let next = (seqs.len() == limit)
            .then(|| seqs.last().map(|k| keys::page_token(k)))
            .flatten();
        Ok((events, next))
    }
}

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

/// Reads and decodes one record inside a transaction.
pub(super) fn get_record<T: serde::de::DeserializeOwned>(
    txn: &dyn Txn,
    table: Table,
    key: &[u8],
) -> Result<Option<T>> {
    txn.get(table, key)?.map(|b| decode(&b)).transpose()
}

/// The VM `id` if `filter` admits it, else not found.
pub(super) fn visible_vm(txn: &dyn Txn, filter: VmFilter, id: &str) -> Result<Vm> {
    let owner = txn
        .get(Table::VmOwners, id.as_bytes())?
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .filter(|t| filter.admits(t))
        .ok_or_else(|| Error::not_found("vm", id))?;
    get_record::<Vm>(txn, Table::Vms, &pair(&owner, id.as_bytes()))?
        .ok_or_else(|| Error::not_found("vm", id))
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

/// The tenant's usage after adding the deltas, or `QuotaExceeded` naming the first quota
/// that a growth would pass. Shrinking is always allowed.
fn charge(t: &Tenant, vms: i64, vcpus: i64, memory_mib: i64) -> Result<Usage> {
    let apply = |cur: u64, d: i64| cur.saturating_add_signed(d);
    let next = Usage {
        vms: apply(t.usage.vms, vms),
        vcpus: apply(t.usage.vcpus, vcpus),
        memory_mib: apply(t.usage.memory_mib, memory_mib),
    };
    for (quota, delta, limit, requested) in [
        ("max_vms", vms, t.quota.max_vms, next.vms),
        ("max_vcpus", vcpus, t.quota.max_vcpus, next.vcpus),
        (
            "max_memory_mib",
            memory_mib,
            t.quota.max_memory_mib,
            next.memory_mib,
        ),
    ] {
        if delta > 0 && requested > limit {
            return Err(Error::QuotaExceeded {
                tenant: t.name.clone(),
                quota,
                limit,
                requested,
            });
        }
    }
    Ok(next)
}

/// Appends a successful mutation to the audit trail inside its transaction.
pub(super) fn append_event(
    txn: &dyn Txn,
    actor: &str,
    tenant: Option<&str>,
    action: &str,
    resource: &str,
) -> Result<()> {
    write_event(txn, actor, tenant, action, resource, Outcome::Success, None)
}

/// Appends a refused mutation to the audit trail inside a transaction.
pub(super) fn append_denial(
    txn: &dyn Txn,
    actor: &str,
    tenant: Option<&str>,
    action: &str,
    resource: &str,
    detail: &str,
) -> Result<()> {
    write_event(
        txn,
        actor,
        tenant,
        action,
        resource,
        Outcome::Denied,
        Some(detail),
    )
}

fn write_event(
    txn: &dyn Txn,
    actor: &str,
    tenant: Option<&str>,
    action: &str,
    resource: &str,
    outcome: Outcome,
    detail: Option<&str>,
) -> Result<()> {
    let event = Event {
        seq: txn.next_id()?,
        time: now(),
        actor: actor.to_string(),
        tenant: tenant.map(str::to_string),
        action: action.to_string(),
        resource: resource.to_string(),
        outcome,
        detail: detail.map(str::to_string),
    };
    let key = keys::seq(event.seq);
    txn.insert(Table::Events, &key, &encode(&event)?)?;
    if let Some(t) = &event.tenant {
        txn.insert(Table::TenantEvents, &pair(t, &key), b"")?;
    }
    Ok(())
}
