//! How long each node call may take, shared by both sides: the node stops waiting at its
//! budget and answers; the control plane waits the same budget plus [`MARGIN`], so it
//! never gives up (and retries) while the node is still working within its budget.

use std::time::Duration;

/// What the control plane adds to a node's budget for the network and the reply.
pub const MARGIN: Duration = Duration::from_secs(20);
/// How long a node waits for a VM to settle (boot or stop) before answering an ensure.
pub const ENSURE: Duration = Duration::from_secs(200);
/// How long a node may take to remove a VM (stop its guest, tear down its jail).
pub const DELETE: Duration = Duration::from_secs(60);
/// How long a node waits for its guest to unload a module.
pub const UNLOAD: Duration = Duration::from_secs(60);
/// How long a node may take to vet and load one module of a request.
pub const LOAD_PER_MODULE: Duration = Duration::from_secs(120);
/// How long a node may take for a load request, whatever the closure.
pub const LOAD_MAX: Duration = Duration::from_secs(590);

/// The node's budget for a load of `modules` modules (the request's closure).
pub fn load(modules: usize) -> Duration {
    let n = u32::try_from(modules.max(1)).unwrap_or(u32::MAX);
    LOAD_PER_MODULE.saturating_mul(n).min(LOAD_MAX)
}

/// How long the caller waits for a node call with budget `budget`.
pub fn caller_timeout(budget: Duration) -> Duration {
    budget.saturating_add(MARGIN)
}
