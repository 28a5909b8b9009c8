//! `POST /v1/vms/{id}/user-data`: starts the VM's first-boot script through its agent
//! (once per boot), and what the agent says of it in the node's terms.

use super::error::ApiError as Error;
use super::Node;
use modvisor_guest_protocol::user_data::{ScriptState, UserDataReply};
use modvisor_node_api::user_data::{
    RunUserData, UserDataState, UserDataStatus, MAX_USER_DATA_BYTES,
};
use std::time::Duration;

/// The agent's report as the node API says it.
pub fn status_of(reply: &UserDataReply) -> UserDataStatus {
    let (state, exit_code, reason) = match reply.state {
        ScriptState::NotStarted => (UserDataState::Pending, None, None),
        ScriptState::Running => (UserDataState::Running, None, None),
        ScriptState::Exited(0) => (UserDataState::Succeeded, Some(0), None),
        ScriptState::Exited(c) => (UserDataState::Failed, Some(c), None),
        ScriptState::Signaled(s) => (
            UserDataState::Failed,
            None,
            Some(format!("killed by signal {s}")),
        ),
        ScriptState::NotRun(errno) => (
            UserDataState::Failed,
            None,
            Some(format!("could not start (errno {errno})")),
        ),
    };
    UserDataStatus {
        state,
        exit_code,
        duration_ms: (state != UserDataState::Pending).then_some(reply.duration_ms),
        reason,
    }
}

/// Starts VM `id`'s first-boot script.
pub fn run(node: &Node, id: &str, req: &RunUserData) -> Result<UserDataStatus, Error> {
    if req.script.len() > MAX_USER_DATA_BYTES {
        return Err(Error::invalid(
            "script",
            format!("at most {MAX_USER_DATA_BYTES} bytes"),
        ));
    }
    let (agent, observed) = node.attached_agent(id)?;
    let reply = agent
        .run_user_data(&req.script, Duration::from_secs(30))
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    let status = status_of(&reply);
    if let Ok(mut o) = observed.lock() {
        o.user_data = Some(status.clone());
    }
    Ok(status)
}
