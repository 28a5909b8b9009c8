//! What the routes into a guest (exec, console) share: the caller's VM, running, and the
//! node it runs on.

use super::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::model::{Node, Phase, Vm};

/// VM `id` of the caller's tenant (404 for anyone else's) while it runs, and its node.
pub(super) fn running_vm(state: &AppState, caller: &Caller, id: &str) -> Result<(Vm, Node), Error> {
    let vm = state.store.get_vm(caller.scope()?, id)?;
    let node_name = match (&vm.status.node, vm.status.phase) {
        (Some(n), Phase::Running) if !vm.deleting => n.clone(),
        (_, phase) => {
            return Err(Error::Conflict(format!(
                "VM {} is {phase:?}, not Running",
                vm.id
            )))
        }
    };
    let node = state
        .store
        .get_node(&node_name)?
        .ok_or_else(|| Error::Conflict(format!("VM {} has no node", vm.id)))?;
    Ok((vm, node))
}
