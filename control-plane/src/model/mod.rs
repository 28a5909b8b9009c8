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

/// Seconds since the epoch as RFC 3339 (times past year 9999 are shown as that year's end).
pub fn rfc3339(unix: u64) -> Timestamp {
    let at = i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::macros::datetime!(9999-12-31 23:59:59 UTC));
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
