//! The modvisor control plane: tenants call its REST API to create VMs and to ask for
//! vetted kernel modules to be loaded into their VMs' own guest kernels.
//!
//! It owns the API (types in [`model`], routes in [`api`]), authentication ([`auth`]),
//! quotas and the store ([`store`]). It does not run VMs or touch kernels: node agents do.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod ca;
pub mod error;
pub mod ipam;
pub mod metrics;
pub mod model;
pub mod ratelimit;
pub mod readiness;
pub mod reconciler;
pub mod server;
pub mod standing;
pub mod store;
pub mod validate;

pub use error::{Error, Problem, Result};
pub use server::{Config, ControlPlane};
