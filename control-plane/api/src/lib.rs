//! The control plane's API v1 for tenants and admins: [`types`], [`routes`] and a typed
//! [`client::ApiClient`]. The control plane serves exactly these types; clients read them.

#![forbid(unsafe_code)]

pub mod client;
#[cfg(feature = "schema")]
pub mod examples;
pub mod network;
pub mod routes;
pub mod trust;
pub mod types;

pub use client::{ApiClient, ApiError, Versioned};
pub use modvisor_node_api::Problem;
