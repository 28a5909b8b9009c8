//! The control plane's internal API, which only node agents call: registration,
//! heartbeats and module blobs by sha256.

use crate::types::ObservedVm;
use serde::{Deserialize, Serialize};

/// A timestamp in RFC 3339 form (UTC).
pub type Timestamp = String;

/// vCPUs and memory, as capacity or as an allocation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// vCPUs.
    pub vcpus: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// Whether a node is taking part.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum NodeState {
    /// Heartbeating.
    Ready,
    /// Its heartbeats stopped.
    NotReady,
}

/// Something a node can do for its guests beyond running them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeFeature {
    /// VMs on tenant networks: a virtio-net interface on the tenant network's bridge,
    /// VXLAN to the other nodes, isolation rules. A VM with a network is placed only on
    /// a node with this feature.
    Networking,
}

/// A node agent, as the control plane knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Node {
    /// Unique name.
    pub name: String,
    /// Base URL of its node API.
    pub address: String,
    /// What it offers to guests.
    pub capacity: Resources,
    /// What placed VMs hold of it.
    pub allocated: Resources,
    /// Hypervisor driver (`qemu` or `kvm`).
    pub driver: String,
    /// Whether the host has hardware virtualization (vmx/svm).
    pub hardware_virtualization: bool,
    /// Release of the guest kernel it boots.
    pub kernel_release: String,
    /// What its driver and host offer beyond running guests.
    #[serde(default)]
    pub features: Vec<NodeFeature>,
    /// Its address on the underlay network, where the VXLAN tunnels of other nodes end
    /// (absent: it reaches no other node's tenant networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_address: Option<String>,
    /// Ready or not.
    pub state: NodeState,
    /// Cordoned nodes take no new VMs.
    pub cordoned: bool,
    /// Last heartbeat.
    pub last_heartbeat: Timestamp,
    /// Last heartbeat, seconds since the epoch (for timeouts).
    pub last_heartbeat_unix: u64,
    /// When it first registered.
    pub registered_at: Timestamp,
    /// The id (`jti`) of its current credential: the name is bound to it, and node
    /// tokens with any other id are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_jti: Option<String>,
    /// The credential a renewal replaced, still taken until the node presents the new one
    /// (so a renewal whose answer was lost does not lock the node out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_credential_jti: Option<String>,
}

impl Node {
    /// Whether `jti` is a credential this node may present: its current one, or the one a
    /// renewal replaced and that the node has not yet stopped using.
    pub fn holds_credential(&self, jti: &str) -> bool {
        self.credential_jti.as_deref() == Some(jti)
            || self.previous_credential_jti.as_deref() == Some(jti)
    }

    /// Whether it offers `feature`.
    pub fn has(&self, feature: NodeFeature) -> bool {
        self.features.contains(&feature)
    }

    /// What is still free.
    pub fn free(&self) -> Resources {
        Resources {
            vcpus: self.capacity.vcpus.saturating_sub(self.allocated.vcpus),
            memory_mib: self
                .capacity
                .memory_mib
                .saturating_sub(self.allocated.memory_mib),
        }
    }
}

/// Body of `POST /v1/nodes/register`: a bootstrap token registers a new name; the node's
/// own credential or an admin re-registers a bound one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// Unique name: 1-63 characters of `[a-z0-9-]`, starting with a letter.
    pub name: String,
    /// Base URL of its node API (TLS), e.g. `https://127.0.0.1:7081`.
    pub address: String,
    /// What it offers to guests.
    pub capacity: Resources,
    /// Hypervisor driver.
    pub driver: String,
    /// Whether the host has hardware virtualization.
    pub hardware_virtualization: bool,
    /// Release of the guest kernel it boots.
    pub kernel_release: String,
    /// What its driver and host offer beyond running guests.
    #[serde(default)]
    pub features: Vec<NodeFeature>,
    /// Its IPv4 address on the underlay network (VXLAN endpoint), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_address: Option<String>,
    /// A PKCS#10 certificate request (PEM) for the key the node's API will serve TLS
    /// with; the certificate names the node (and nothing the request asks for).
    pub csr_pem: String,
}

/// Answer to a registration: the node's credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct NodeCredential {
    /// The node as registered.
    pub node: Node,
    /// Its node token (role `node`).
    pub token: String,
    /// The control plane's public key (PEM): the node accepts only requests signed with it.
    pub control_plane_public_key: String,
    /// The node's certificate (PEM), signed by the control plane's CA, naming the node.
    pub certificate_pem: String,
    /// The control plane's CA certificate (PEM).
    pub ca_pem: String,
}

/// Body of `POST /v1/nodes/{name}/heartbeat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Every VM the node runs or holds.
    pub vms: Vec<ObservedVm>,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct HeartbeatReply {
    /// VMs the node holds but should not: it removes them.
    pub remove: Vec<String>,
    /// A renewed node credential (when the one presented nears its expiry, or was
    /// replaced by a renewal the node did not receive): the node keeps it and presents
    /// it from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The underlay addresses of every other Ready node with one: the node sends its
    /// tenant networks' broadcast and unknown-destination frames to each (VXLAN head-end
    /// replication) and learns where each VM's MAC is from what comes back.
    #[serde(default)]
    pub underlay_peers: Vec<String>,
}
