//! The OpenAPI document of the node agent's API (`openapi/node-agent.json`). The routes
//! are described here, beside the types; the node agent serves them at [`crate::routes`].

use crate::console::ConsoleQuery;
use crate::exec::{ExecRequest, ExecResult};
use crate::openapi_shared::SharedProblem;
use crate::problem::Problem;
use crate::types::{
    EnsureVm, NodeLoadModule, NodeModuleResult, ObservedVm, Phase, PowerState, RequestState,
};
use crate::user_data::{RunUserData, UserDataState, UserDataStatus};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "node", security(()),
    responses((status = 200, description = "The node agent is serving")))]
pub fn healthz() {}

/// The node agent's metrics in Prometheus's text format: its VMs by phase, guest channel
/// errors by kind, module loads by outcome and their latency, heartbeats by result.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses(
        (status = 200, description = "Metrics", content_type = "text/plain", body = String),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn metrics() {}

/// Makes the node hold the VM in the desired state; answers once it has settled (or
/// failed), within the ensure budget.
#[utoipa::path(put, path = "/v1/vms/{id}", tag = "node",
    params(("id" = String, Path, description = "VM id")),
    request_body = EnsureVm,
    responses(
        (status = 200, description = "What the node now observes", body = ObservedVm),
        (status = 400, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The VM is still being removed", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn ensure_vm() {}

/// What the node observes of a VM.
#[utoipa::path(get, path = "/v1/vms/{id}", tag = "node",
    params(("id" = String, Path, description = "VM id")),
    responses(
        (status = 200, description = "What the node observes", body = ObservedVm),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not on this node", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn get_vm() {}

/// Stops and removes a VM.
#[utoipa::path(delete, path = "/v1/vms/{id}", tag = "node",
    params(("id" = String, Path, description = "VM id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not on this node", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn delete_vm() {}

/// Vets and loads a module with its dependencies into the VM's guest kernel; one result
/// per module, in load order.
#[utoipa::path(post, path = "/v1/vms/{id}/modules", tag = "node",
    params(("id" = String, Path, description = "VM id")),
    request_body = NodeLoadModule,
    responses(
        (status = 200, description = "One result per module", body = Vec<NodeModuleResult>),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not on this node", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The catalog or a blob could not be fetched, or the guest did not answer in time", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn load_module() {}

/// Unloads a module from the VM's guest kernel.
#[utoipa::path(delete, path = "/v1/vms/{id}/modules/{name}", tag = "node",
    params(
        ("id" = String, Path, description = "VM id"),
        ("name" = String, Path, description = "Module name"),
    ),
    responses(
        (status = 204, description = "Unloaded"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not on this node", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The guest kernel refused (in use, not loaded)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The guest did not answer in time", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn unload_module() {}

/// Runs a command in the VM's guest, in the tenant context (see the control plane's
/// `exec`); answers when it ended or was killed at its timeout.
#[utoipa::path(post, path = "/v1/vms/{id}/exec", tag = "node",
    params(("id" = String, Path, description = "VM id")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "How the command ended, with its output", body = ExecResult),
        (status = 400, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not on this node", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The VM is not running", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The guest runs as many commands as it may at once", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The guest agent did not answer in time or could not start the command", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn exec() {}

/// The VM's serial console: a WebSocket (see [`crate::console`]), or with `tail_bytes`
/// the last bytes of the console log as text.
#[utoipa::path(get, path = "/v1/vms/{id}/console", tag = "node",
    params(("id" = String, Path, description = "VM id"), ConsoleQuery),
    responses(
        (status = 101, description = "The console as a WebSocket; a second writer is closed with code 4409"),
        (status = 200, description = "With `tail_bytes`: the last bytes of console output", body = String, content_type = "text/plain"),
        (status = 400, description = "Invalid id or query, or not a WebSocket upgrade", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not on this node", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The guest is not running, or its driver serves no console", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn console() {}

/// Starts the VM's first-boot script in its guest (once per boot: asked again, answers its
/// state without running it again).
#[utoipa::path(post, path = "/v1/vms/{id}/user-data", tag = "node",
    params(("id" = String, Path, description = "VM id")),
    request_body = RunUserData,
    responses(
        (status = 200, description = "Where the script is", body = UserDataStatus),
        (status = 400, description = "Invalid id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the control plane", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not on this node", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The VM is not running", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The guest agent did not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub fn run_user_data() {}

/// Adds the `bearer` security scheme (an EdDSA JWT) to a document; every modvisor API
/// uses it. The string says which tokens the API takes.
pub struct BearerAuth(pub &'static str);

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(self.0)
                    .build(),
            ),
        );
    }
}

/// The node agent's tokens.
const NODE_TOKENS: BearerAuth = BearerAuth("JWT (EdDSA, role control_plane)");

/// The node agent's API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "modvisor node agent",
        version = "1.0.0",
        description = "Served by every node agent, called only by the control plane (tokens of role control_plane signed with the control plane's key). Every request is idempotent."
    ),
    paths(healthz, metrics, ensure_vm, get_vm, delete_vm, load_module, unload_module, exec, console, run_user_data),
    components(schemas(Problem, EnsureVm, ObservedVm, NodeLoadModule, crate::types::SignerCertificate, NodeModuleResult, Phase, PowerState, RequestState, ExecRequest, ExecResult, RunUserData, UserDataStatus, UserDataState, crate::interfaces::GuestInterface)),
    modifiers(&NODE_TOKENS),
    security(("bearer" = []))
)]
struct NodeAgentDoc;

/// The problem responses the node agent's operations share.
const SHARED_PROBLEMS: &[SharedProblem] = &[
    SharedProblem::new("InvalidRequest", "400", "Invalid id or body"),
    SharedProblem::new("Unauthenticated", "401", "No valid token"),
    SharedProblem::new("NotTheControlPlane", "403", "Not the control plane"),
    SharedProblem::new("VmNotOnThisNode", "404", "Not on this node"),
    SharedProblem::new("VmNotRunning", "409", "The VM is not running"),
];

/// The document as pretty JSON, exactly as committed in `openapi/node-agent.json`.
pub fn document() -> String {
    crate::openapi_shared::finished(
        &NodeAgentDoc::openapi(),
        SHARED_PROBLEMS,
        crate::openapi_examples::examples(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_names_exactly_the_routes_the_node_serves() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        let mut paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        paths.sort();
        let mut routes = vec![
            crate::routes::HEALTHZ,
            crate::routes::METRICS,
            crate::routes::VM,
            crate::routes::VM_MODULES,
            crate::routes::VM_MODULE,
            crate::routes::VM_EXEC,
            crate::routes::VM_CONSOLE,
            crate::routes::VM_USER_DATA,
        ];
        routes.sort();
        assert_eq!(paths, routes);
    }

    #[test]
    fn every_schema_has_an_example_and_shared_problems_are_declared_once() {
        let mut doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        assert_eq!(
            crate::openapi_shared::schemas_without_examples(&doc),
            Vec::<String>::new()
        );
        assert_eq!(
            crate::openapi_shared::repeated_inline_problems(&mut doc),
            Vec::<(String, String)>::new()
        );
    }
}
