//! Tenant networks: a private IPv4 network of one tenant, which its VMs join.

use crate::types::Timestamp;
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/networks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// Name, unique within the tenant: 1-63 characters of `[a-z0-9-]`, starting with a
    /// letter (`none` is taken: it means no network).
    #[cfg_attr(feature = "schema", schema(pattern = "^[a-z][a-z0-9-]{0,62}$"))]
    pub name: String,
    /// An IPv4 network, `/16` to `/29`, given by its network address (`10.0.0.0/24`); it
    /// may not overlap another network of the tenant (other tenants' do not matter).
    pub cidr: String,
}

/// A tenant network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Network {
    /// Name, unique within the tenant.
    pub name: String,
    /// Owning tenant.
    pub tenant: String,
    /// The network (`10.0.0.0/24`).
    pub cidr: String,
    /// Its first address, the gateway; VMs get addresses from the one after it.
    pub gateway: String,
    /// Addresses held by VMs now.
    pub addresses_in_use: u32,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A VM's place on its network, decided when the VM is created and kept for its life.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct VmNetwork {
    /// The network's name.
    pub network: String,
    /// The VM's address in it.
    pub ip: String,
    /// The prefix length of the network.
    pub prefix: u8,
    /// The MAC of the VM's interface.
    pub mac: String,
}
