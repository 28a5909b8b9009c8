//! Tenant networks in the store: one record per tenant holding all of its networks and
//! the addresses its VMs hold in them, so that a name, an overlap, the quota and an
//! address are all decided in the transaction that changes them.

use super::keys::{decode, encode};
use super::txn::{append_event, get_record};
use super::{transact, Datastore, Table, Txn, VmFilter};
use crate::error::{Error, Result};
use crate::ipam::Cidr;
use crate::model::{now, CreateNetwork, Network, Tenant, VmNetwork};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The name that means no network at all (no network may take it).
pub const NO_NETWORK: &str = "none";
/// The network a VM joins when its spec names none; created on first use.
pub const DEFAULT_NETWORK: &str = "default";
/// The CIDR of each tenant's `default` network unless the operator configures another.
pub const DEFAULT_CIDR: &str = "10.0.0.0/24";

/// One network as stored: what the API shows, its VXLAN id, and who holds which address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRecord {
    /// The API's view (its `addresses_in_use` is kept equal to `addresses.len()`).
    pub network: Network,
    /// The VXLAN network identifier, unique among all networks.
    pub vni: u32,
    /// Address -> VM id.
    pub addresses: BTreeMap<Ipv4Addr, String>,
}

/// All networks of one tenant, by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantNetworks {
    /// By name.
    pub networks: BTreeMap<String, NetworkRecord>,
}

fn tenant_networks(txn: &dyn Txn, tenant: &str) -> Result<TenantNetworks> {
    Ok(get_record(txn, Table::Networks, tenant.as_bytes())?.unwrap_or_default())
}

/// Writes tenant `t`'s networks `all`, its usage counting them, and the audit event of
/// `action` on network `name`.
fn save(
    txn: &dyn Txn,
    actor: &str,
    t: &mut Tenant,
    all: &TenantNetworks,
    action: &str,
    name: &str,
) -> Result<()> {
    t.usage.networks = all.networks.len() as u64;
    txn.insert(Table::Networks, t.name.as_bytes(), &encode(all)?)?;
    txn.insert(Table::Tenants, t.name.as_bytes(), &encode(&*t)?)?;
    append_event(
        txn,
        actor,
        Some(&t.name),
        action,
        &format!("networks/{name}"),
    )
}

/// The lowest VNI handed out (those below are left for the operator's own use).
const FIRST_VNI: u32 = 4096;
/// VNIs are 24 bits.
const VNI_SPACE: u64 = (1 << 24) - FIRST_VNI as u64;

/// How many VNIs a network creation tries before it gives up.
const VNI_ATTEMPTS: u32 = 64;

/// The Meta key that marks `vni` as taken.
fn vni_key(vni: u32) -> Vec<u8> {
    let mut k = b"vni\0".to_vec();
    k.extend_from_slice(&vni.to_be_bytes());
    k
}

/// A VNI no other network holds, marked as taken for `tenant`'s network `name` in the
/// transaction: candidates follow the store's ids (which may have gaps and, on etcd, are
/// not small), and one already taken is skipped, so two networks never share a segment.
fn claim_vni(txn: &dyn Txn, tenant: &str, name: &str) -> Result<u32> {
    for _ in 0..VNI_ATTEMPTS {
        let candidate = u32::try_from(txn.next_id()? % VNI_SPACE)
            .map_err(|_| Error::Storage("a VNI out of range".into()))?;
        let vni = FIRST_VNI + candidate;
        if txn.get(Table::Meta, &vni_key(vni))?.is_none() {
            txn.insert(
                Table::Meta,
                &vni_key(vni),
                format!("{tenant}/{name}").as_bytes(),
            )?;
            return Ok(vni);
        }
    }
    Err(Error::Conflict(format!(
        "no free VNI after {VNI_ATTEMPTS} tries; delete unused networks"
    )))
}

/// Adds network `body` to `tenant`'s (name, CIDR and quota checked), inside a transaction.
pub(super) fn create_in(
    txn: &dyn Txn,
    actor: &str,
    tenant: &str,
    body: &CreateNetwork,
) -> Result<Network> {
    crate::validate::resource_name("name", &body.name)?;
    if body.name == NO_NETWORK {
        return Err(Error::invalid(
            "name",
            "`none` means no network; choose another name",
        ));
    }
    let cidr: Cidr = body
        .cidr
        .parse()
        .map_err(|e: crate::ipam::CidrError| Error::invalid("cidr", e.to_string()))?;
    let mut t: Tenant = get_record(txn, Table::Tenants, tenant.as_bytes())?
        .ok_or_else(|| Error::not_found("tenant", tenant))?;
    let mut all = tenant_networks(txn, tenant)?;
    if all.networks.contains_key(&body.name) {
        return Err(Error::Conflict(format!(
            "tenant {tenant} has a network named {} already",
            body.name
        )));
    }
    for other in all.networks.values() {
        let theirs = record_cidr(other)?;
        if theirs.overlaps(&cidr) {
            return Err(Error::Conflict(format!(
                "{cidr} overlaps network {} ({theirs}) of tenant {tenant}",
                other.network.name
            )));
        }
    }
    let count = all.networks.len() as u64 + 1;
    if count > t.quota.max_networks {
        return Err(Error::QuotaExceeded {
            tenant: tenant.to_string(),
            quota: "max_networks",
            limit: t.quota.max_networks,
            requested: count,
        });
    }
    let vni = claim_vni(txn, tenant, &body.name)?;
    let network = Network {
        name: body.name.clone(),
        tenant: tenant.to_string(),
        cidr: cidr.to_string(),
        gateway: cidr.gateway().to_string(),
        addresses_in_use: 0,
        created_at: now(),
    };
    all.networks.insert(
        body.name.clone(),
        NetworkRecord {
            network: network.clone(),
            vni,
            addresses: BTreeMap::new(),
        },
    );
    save(txn, actor, &mut t, &all, "network.create", &body.name)?;
    Ok(network)
}

/// Gives VM `vm_id` of `tenant` the lowest free address of network `name` (creating the
/// tenant's `default` network with `default_cidr` on first use), inside the transaction
/// that creates the VM. `None` for [`NO_NETWORK`].
pub(super) fn attach(
    txn: &dyn Txn,
    actor: &str,
    tenant: &str,
    name: &str,
    default_cidr: &str,
    vm_id: &str,
) -> Result<Option<VmNetwork>> {
    if name == NO_NETWORK {
        return Ok(None);
    }
    let mut all = tenant_networks(txn, tenant)?;
    if !all.networks.contains_key(name) {
        if name != DEFAULT_NETWORK {
            return Err(Error::not_found("network", name));
        }
        let body = CreateNetwork {
            name: DEFAULT_NETWORK.into(),
            cidr: default_cidr.into(),
        };
        create_in(txn, actor, tenant, &body)?;
        all = tenant_networks(txn, tenant)?;
    }
    let record = all
        .networks
        .get_mut(name)
        .ok_or_else(|| Error::not_found("network", name))?;
    let cidr = record_cidr(record)?;
    let used = record.addresses.keys().copied().collect();
    let ip = cidr.free_address(&used).ok_or_else(|| {
        Error::Conflict(format!(
            "network {name} ({cidr}) is full: all {} addresses for VMs are in use",
            cidr.vm_addresses()
        ))
    })?;
    record.addresses.insert(ip, vm_id.to_string());
    record.network.addresses_in_use = record.addresses.len() as u32;
    txn.insert(Table::Networks, tenant.as_bytes(), &encode(&all)?)?;
    Ok(Some(VmNetwork {
        network: name.to_string(),
        ip: ip.to_string(),
        prefix: cidr.prefix(),
        mac: crate::ipam::mac_for(ip),
    }))
}

/// Gives back the address VM `vm_id` held (if its network still lists it for that VM),
/// inside the transaction that removes the VM.
pub(super) fn release_address(
    txn: &dyn Txn,
    tenant: &str,
    held: &VmNetwork,
    vm_id: &str,
) -> Result<()> {
    let mut all = tenant_networks(txn, tenant)?;
    let Some(record) = all.networks.get_mut(&held.network) else {
        return Ok(());
    };
    let ip: Ipv4Addr = held
        .ip
        .parse()
        .map_err(|e| Error::Storage(format!("address {} of vm {vm_id}: {e}", held.ip)))?;
    if record.addresses.get(&ip).map(String::as_str) == Some(vm_id) {
        record.addresses.remove(&ip);
        record.network.addresses_in_use = record.addresses.len() as u32;
        txn.insert(Table::Networks, tenant.as_bytes(), &encode(&all)?)?;
    }
    Ok(())
}

fn record_cidr(record: &NetworkRecord) -> Result<Cidr> {
    record
        .network
        .cidr
        .parse()
        .map_err(|e| Error::Storage(format!("network {}: {e}", record.network.name)))
}

impl Datastore {
    /// Creates a network for `tenant`.
    pub fn create_network(
        &self,
        actor: &str,
        tenant: &str,
        body: &CreateNetwork,
    ) -> Result<Network> {
        transact(&*self.kv, |txn| create_in(txn, actor, tenant, body))
    }

    /// The networks `filter` sees (a tenant's own, or all), by tenant then name.
    pub fn list_networks(&self, filter: VmFilter) -> Result<Vec<Network>> {
        let records: Vec<TenantNetworks> = match filter {
            VmFilter::Tenant(t) => self
                .kv
                .get(Table::Networks, t.as_bytes())?
                .map(|b| decode(&b))
                .transpose()?
                .into_iter()
                .collect(),
            VmFilter::All => self
                .kv
                .scan(Table::Networks, b"", None, usize::MAX)?
                .into_iter()
                .map(|(_, v)| decode(&v))
                .collect::<Result<_>>()?,
        };
        Ok(records
            .into_iter()
            .flat_map(|r| r.networks.into_values().map(|n| n.network))
            .collect())
    }

    /// Network `name` of `tenant`, with its VXLAN id and addresses.
    pub fn network_record(&self, tenant: &str, name: &str) -> Result<NetworkRecord> {
        let all: TenantNetworks = self
            .kv
            .get(Table::Networks, tenant.as_bytes())?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default();
        all.networks
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found("network", name))
    }

    /// What a node needs to build the interface `held` of a VM of `tenant`.
    pub fn network_attachment(
        &self,
        tenant: &str,
        held: &VmNetwork,
    ) -> Result<modvisor_node_api::NetworkAttachment> {
        let record = self.network_record(tenant, &held.network)?;
        let ip = held
            .ip
            .parse()
            .map_err(|e| Error::Storage(format!("address {}: {e}", held.ip)))?;
        Ok(modvisor_node_api::NetworkAttachment {
            vni: record.vni,
            ip,
            prefix: held.prefix,
            mac: held.mac.clone(),
        })
    }

    /// Deletes network `name` of `tenant`; refused while a VM holds an address in it.
    pub fn delete_network(&self, actor: &str, tenant: &str, name: &str) -> Result<()> {
        transact(&*self.kv, |txn| {
            let mut all = tenant_networks(txn, tenant)?;
            let record = all
                .networks
                .get(name)
                .ok_or_else(|| Error::not_found("network", name))?;
            if !record.addresses.is_empty() {
                return Err(Error::Conflict(format!(
                    "network {name} is used by {} VM(s); delete them first",
                    record.addresses.len()
                )));
            }
            txn.remove(Table::Meta, &vni_key(record.vni))?;
            all.networks.remove(name);
            let mut t: Tenant = get_record(txn, Table::Tenants, tenant.as_bytes())?
                .ok_or_else(|| Error::not_found("tenant", tenant))?;
            save(txn, actor, &mut t, &all, "network.delete", name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CreateTenant;
    use crate::store::SledKv;
    use std::sync::Arc;

    #[test]
    fn equal_networks_of_two_tenants_get_distinct_vnis() {
        let dir = tempfile::tempdir().unwrap();
        let store = Datastore::new(Arc::new(SledKv::open(&dir.path().join("db")).unwrap()));
        let body = CreateNetwork {
            name: "net".into(),
            cidr: "10.0.0.0/24".into(),
        };
        let mut vnis = Vec::new();
        for t in ["a", "b"] {
            let tenant = CreateTenant {
                name: t.into(),
                quota: None,
            };
            store.create_tenant("test", &tenant).unwrap();
            store.create_network("test", t, &body).unwrap();
            vnis.push(store.network_record(t, "net").unwrap().vni);
        }
        assert_ne!(vnis[0], vnis[1]);
        assert!(
            vnis.iter().all(|v| (FIRST_VNI..1 << 24).contains(v)),
            "{vnis:?}"
        );
    }
}
