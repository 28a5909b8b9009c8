//! `POST /v1/vms/{id}/exec`: a command in the tenant's own VM, run by the guest agent in
//! the tenant context, relayed to the VM's node over its API. Audited (who, what program,
//! how it ended, how long it took).

use super::extract::StrictJson;
use super::problems::{InvalidBody, Unauthenticated, VmNotFound};
use super::AppState;
use crate::auth::Caller;
use crate::error::{Error, Problem};
use crate::reconciler::NodeConnector;
use actix_web::{post, web};
use modvisor_node_api::exec::{ExecRequest, ExecResult};
use modvisor_node_api::{ClientError, NodeApi};
use std::time::Instant;

/// Runs a command in one of the caller's VMs (in the guest's tenant context: root, but
/// without module loading) and answers how it ended, with its output. A command still
/// running at its timeout is killed with its process group and answered with
/// `timed_out: true`.
#[utoipa::path(
    tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "How the command ended, with its output", body = ExecResult),
        InvalidBody,
        Unauthenticated,
        (status = 403, description = "Not a tenant token", body = Problem, content_type = "application/problem+json"),
        VmNotFound,
        (status = 409, description = "The VM is not running", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate limit, or the guest runs as many commands as it may at once", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The VM's node or guest agent did not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/vms/{id}/exec")]
pub async fn exec_vm(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: StrictJson<ExecRequest>,
) -> Result<web::Json<ExecResult>, Error> {
    let tenant = caller.require_tenant()?.to_string();
    let req = body.0;
    req.check().map_err(|e| Error::invalid(e.field, e.detail))?;
    let (vm, node) = super::guest::running_vm(&state, &caller, &id)?;
    let unavailable = |detail: String| Error::NodeUnavailable {
        node: node.name.clone(),
        detail,
    };
    let client = state.nodes.connect(&node).map_err(unavailable)?;
    let started = Instant::now();
    let result = client.exec(&vm.id, &req).await.map_err(|e| match e {
        ClientError::Refused {
            status: 429,
            detail,
            ..
        } => Error::GuestBusy(detail),
        ClientError::Refused {
            status: 404 | 409,
            detail,
            ..
        } => Error::Conflict(format!("VM {} is not running on its node: {detail}", vm.id)),
        other => unavailable(other.to_string()),
    });
    let took_ms = started.elapsed().as_millis();
    let program = req.argv.first().map(String::as_str).unwrap_or("");
    let detail = match &result {
        Ok(r) => format!(
            "{program}: exit {:?}, signal {:?}, timed out {}, {took_ms} ms",
            r.exit_code, r.signal, r.timed_out
        ),
        Err(e) => format!("{program}: not run: {e}"),
    };
    let store = state.store.clone();
    let (actor, resource) = (caller.sub.clone(), format!("vms/{}", vm.id));
    let recorded = super::extract::blocking(move || {
        store.record_outcome(
            &actor,
            Some(&tenant),
            "vm.exec",
            &resource,
            crate::model::Outcome::Success,
            &detail,
        )
    })
    .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record an exec in the audit trail");
    }
    result.map(web::Json)
}
