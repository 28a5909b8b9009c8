//! Tenants in the store: creation, quotas, and what each tenant uses.

use super::keys::{decode, encode};
use super::txn::{append_event, get_record};
use super::{transact, Datastore, Table};
use crate::error::{Error, Result};
use crate::model::{now, CreateTenant, Quota, Tenant, Usage};

/// The tenant's usage after adding the deltas, or `QuotaExceeded` naming the first quota
/// that a growth would pass. Shrinking is always allowed.
pub(super) fn charge(t: &Tenant, vms: i64, vcpus: i64, memory_mib: i64) -> Result<Usage> {
    let apply = |cur: u64, d: i64| cur.saturating_add_signed(d);
    let next = Usage {
        vms: apply(t.usage.vms, vms),
        vcpus: apply(t.usage.vcpus, vcpus),
        memory_mib: apply(t.usage.memory_mib, memory_mib),
        networks: t.usage.networks,
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

impl Datastore {
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
}
