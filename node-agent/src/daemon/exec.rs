//! `POST /v1/vms/{id}/exec`: a command in the VM's guest, through its agent, in the
//! tenant context. It goes straight to the VM's agent channel (which carries requests
//! concurrently), not through the VM's worker, so a long command holds up nothing else.

use super::error::ApiError as Error;
use super::Node;
use crate::channel::ChannelError;
use modvisor_guest_protocol::exec::{self as wire, ExecEnd};
use modvisor_guest_protocol::message::ErrorCode;
use modvisor_node_api::budget::EXEC_SLACK;
use modvisor_node_api::exec::{ExecRequest, ExecResult, MAX_OUTPUT_BYTES};
use std::time::Duration;

/// Runs `req` in VM `id`'s guest.
pub fn exec(node: &Node, id: &str, req: &ExecRequest) -> Result<ExecResult, Error> {
    let timeout_s = req.check().map_err(|e| Error::invalid(e.field, e.detail))?;
    let (agent, _) = node.attached_agent(id)?;
    let wire_req = wire::ExecRequest {
        argv: req.argv.clone(),
        env: req
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        stdin: req.stdin.clone().unwrap_or_default().into_bytes(),
        timeout_ms: timeout_s.saturating_mul(1000),
        output_limit: MAX_OUTPUT_BYTES as u32,
    };
    let reply = agent
        .exec(&wire_req, EXEC_SLACK - Duration::from_secs(5))
        .map_err(|e| match e {
            ChannelError::Agent { code, message, .. } if code == ErrorCode::Busy as u32 => {
                Error::Busy(message)
            }
            ChannelError::Agent { message, .. } => Error::Unavailable(format!(
                "the guest agent could not run the command: {message}"
            )),
            other => Error::Unavailable(other.to_string()),
        })?;
    let (exit_code, signal) = match reply.end {
        ExecEnd::Exited(c) => (Some(c), None),
        ExecEnd::Signaled(s) => (None, Some(s)),
    };
    Ok(ExecResult {
        exit_code,
        signal,
        timed_out: reply.timed_out,
        stdout: String::from_utf8_lossy(&reply.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&reply.stderr).into_owned(),
        truncated: reply.stdout_truncated || reply.stderr_truncated,
    })
}
