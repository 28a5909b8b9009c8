//! The resources of API v1. The types are the API's contract and live in
//! `modvisor-control-plane-api` (shared with clients); the node contract's in
//! `modvisor-node-api`. The control plane adds only the clock.

pub mod node;
pub use modvisor_control_plane_api::types::*;
pub use node::*;

/// The current time as RFC 3339.
pub fn now() -> Timestamp {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
