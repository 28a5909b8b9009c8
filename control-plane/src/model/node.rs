//! Nodes and the node API. The types are the contract with node agents and live in
//! `modvisor-node-api`; the control plane uses them as they are.

pub use modvisor_node_api::internal::{
    Heartbeat, HeartbeatReply, Node, NodeCredential, NodeFeature, NodeState, RegisterNode,
    Resources,
};
pub use modvisor_node_api::types::{
    EnsureVm, NodeLoadModule, NodeModuleResult, ObservedVm, PinnedModule, SignerCertificate,
};
