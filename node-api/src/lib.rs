//! The contract between modvisor's control plane and its node agents, in both directions:
//!
//! - the node agent's API ([`NodeApi`], served by each node, called by the control plane
//!   through [`client::NodeClient`]): ensure a VM's desired state, observe it, delete it,
//!   load and unload modules;
//! - the control plane's internal API ([`internal`], called only by node agents through
//!   [`client::ControlPlaneClient`]): registration, heartbeats, the catalog, blobs.
//!
//! Types, routes and problems live here once; neither service links the other. With the
//! `schema` feature the types derive OpenAPI schemas and [`openapi::document`] describes
//! the node agent's API (`openapi/node-agent.json`).

#![forbid(unsafe_code)]

pub mod budget;
pub mod client;
pub mod console;
pub mod exec;
pub mod interfaces;
pub mod internal;
#[cfg(feature = "schema")]
pub mod openapi;
#[cfg(feature = "schema")]
pub mod openapi_examples;
#[cfg(feature = "schema")]
pub mod openapi_shared;
pub mod problem;
pub mod routes;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tls;
pub mod types;
pub mod user_data;

pub use budget::Budgets;
pub use client::{ClientError, ControlPlaneClient, NodeClient};
pub use exec::{ExecRequest, ExecResult};
pub use interfaces::GuestInterface;
pub use problem::Problem;
pub use types::{
    EnsureVm, NetworkAttachment, NodeLoadModule, NodeModuleResult, ObservedVm, Phase, PinnedModule,
    PowerState, RequestState, SignerCertificate, KERNEL_SIGNER,
};
pub use user_data::{RunUserData, UserDataState, UserDataStatus};

/// What deleting a VM on a node found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The VM was there and is gone now.
    Removed,
    /// The node did not hold it.
    NotThere,
}

/// The node agent's API, as the control plane uses it. Every call is idempotent. The
/// real implementation is [`NodeClient`] (HTTP to a node agent); [`sim::SimulatedNode`]
/// is an in-memory one for fast tests of the control plane's decisions.
#[allow(async_fn_in_trait)] // used on one thread (a LocalSet); no Send bound wanted
pub trait NodeApi {
    /// Makes the node hold VM `id` in the desired state; answers once it has settled.
    async fn ensure_vm(&self, id: &str, spec: &EnsureVm) -> Result<ObservedVm, ClientError>;
    /// What the node observes of VM `id`.
    async fn get_vm(&self, id: &str) -> Result<ObservedVm, ClientError>;
    /// Stops and removes VM `id`.
    async fn delete_vm(&self, id: &str) -> Result<Deleted, ClientError>;
    /// Vets and loads a module (with its dependencies) into VM `id`'s guest kernel.
    async fn load_module(
        &self,
        id: &str,
        request: &NodeLoadModule,
    ) -> Result<Vec<NodeModuleResult>, ClientError>;
    /// Unloads a module from VM `id`'s guest kernel.
    async fn unload_module(&self, id: &str, name: &str) -> Result<(), ClientError>;
    /// Runs a command in VM `id`'s guest, in the tenant context.
    async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecResult, ClientError>;
    /// Starts VM `id`'s first-boot script (once per boot; again, it answers its state).
    async fn run_user_data(
        &self,
        id: &str,
        request: &RunUserData,
    ) -> Result<UserDataStatus, ClientError>;
    /// The last `bytes` of VM `id`'s console output, as text.
    async fn console_tail(&self, id: &str, bytes: usize) -> Result<String, ClientError>;

    /// The node agent's metrics (Prometheus text).
    async fn metrics(&self) -> Result<String, ClientError>;
}
