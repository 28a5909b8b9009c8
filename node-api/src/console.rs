//! The console of a VM (`GET /v1/vms/{id}/console`), on both hops: a WebSocket carrying
//! the guest's serial console both ways, or with `tail_bytes` the recent output as text.
//!
//! WebSocket messages: from the server, binary messages of console output (first the
//! recent history, then as it comes); from a writer session, binary or text messages of
//! keystrokes. A session ends with a close frame whose reason says why.

use serde::{Deserialize, Serialize};

/// Most bytes `tail_bytes` may ask for.
pub const MAX_TAIL_BYTES: usize = 1024 * 1024;
/// Close code: another session holds the writer role.
pub const WRITER_TAKEN: u16 = 4409;
/// Close code: the session was idle (no message from the client) for too long.
pub const IDLE_TIMEOUT: u16 = 4408;
/// Close code: the session reached its longest allowed duration.
pub const SESSION_EXPIRED: u16 = 4410;

/// Query of the console route.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// Answer the last N bytes of console output as text (1 to 1048576) instead of
    /// opening a WebSocket.
    pub tail_bytes: Option<usize>,
    /// Take the writer role (keystrokes reach the guest); one writer at a time, a second
    /// is closed with code 4409. Without it the session only watches.
    pub write: Option<bool>,
}
