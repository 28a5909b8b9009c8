//! The node API: only the control plane may call it (tokens signed with its key, role
//! `control_plane`). Every request is idempotent.

use super::error::ApiError as Error;
use super::fetch::FetchError;
use super::vm::{self, Command};
use super::Node;
use crate::modprobe::ModuleOutcome;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use modvisor_auth::Role;
use modvisor_modules::{Rejection, VettingPolicy};
use modvisor_node_api::exec::{ExecRequest, ExecResult};
use modvisor_node_api::types::{
    EnsureVm, NodeLoadModule, NodeModuleResult, ObservedVm, Phase, RequestState,
};
use modvisor_node_api::user_data::{RunUserData, UserDataStatus};
use modvisor_node_api::{budget, routes};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Shared = web::Data<Arc<Node>>;

pub(super) fn authorize(req: &HttpRequest, node: &Node) -> Result<(), Error> {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Error::Unauthenticated("missing Authorization: Bearer token".into()))?;
    let caller = node
        .verifier
        .verify(token.trim())
        .map_err(|e| Error::Unauthenticated(e.to_string()))?;
    if caller.role != Role::ControlPlane {
        return Err(Error::Forbidden(
            "only the control plane may call a node".into(),
        ));
    }
    Ok(())
}

pub(super) fn valid_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Error::invalid(
            "id",
            "must be 1-64 characters of [A-Za-z0-9-]",
        ));
    }
    Ok(())
}

fn observed(node: &Node, id: &str) -> Option<ObservedVm> {
    node.vms
        .lock()
        .ok()?
        .get(id)
        .and_then(|h| h.observed.lock().ok().map(|o| o.clone()))
}

/// The command channel of VM `id`'s worker.
fn worker(node: &Node, id: &str) -> Result<std::sync::mpsc::Sender<Command>, Error> {
    node.vms
        .lock()
        .ok()
        .and_then(|v| v.get(id).map(|h| h.tx.clone()))
        .ok_or_else(|| Error::NotFound(id.to_string()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    web::block(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The node's metrics (Prometheus text), for the control plane.
async fn metrics(req: HttpRequest, node: Shared) -> Result<HttpResponse, Error> {
    authorize(&req, &node)?;
    let phases: Vec<Phase> = node
        .vms
        .lock()
        .map_err(|_| Error::Internal("the VM table is poisoned".into()))?
        .values()
        .filter_map(|h| h.observed.lock().ok().map(|o| o.phase))
        .collect();
    let text = node
        .host
        .metrics
        .render(&phases)
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

/// Ensures a VM is in the desired state; answers once it has settled (or failed).
async fn ensure_vm(
    req: HttpRequest,
    node: Shared,
    id: web::Path<String>,
    body: web::Json<EnsureVm>,
) -> Result<web::Json<ObservedVm>, Error> {
    authorize(&req, &node)?;
    valid_id(&id)?;
    let (node, id, spec) = (node.get_ref().clone(), id.into_inner(), body.into_inner());
    let out = blocking(move || {
        {
            let mut vms = node
                .vms
                .lock()
                .map_err(|_| Error::Internal("the VM table is poisoned".into()))?;
            match vms.get(&id) {
                Some(h) if h.deleting => {
                    return Err(Error::Conflict(format!(
                        "VM {id} is still being removed from this node; retry"
                    )));
                }
                Some(h) => {
                    if h.tx.send(Command::Ensure(spec)).is_err() {
                        return Err(Error::Internal(format!("the worker of VM {id} has ended")));
                    }
                }
                None => {
                    let h = vm::spawn(node.host.clone(), id.clone(), spec, None);
                    vms.insert(id.clone(), h);
                }
            }
        }
        // Wait for the worker to settle (booting takes seconds under TCG).
        let deadline = Instant::now() + budget::ENSURE;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let o = observed(&node, &id).ok_or_else(|| Error::NotFound(id.clone()))?;
            if o.phase != Phase::Starting || Instant::now() > deadline {
                return Ok::<ObservedVm, Error>(o);
            }
        }
    })
    .await??;
    Ok(web::Json(out))
}

async fn get_vm(
    req: HttpRequest,
    node: Shared,
    id: web::Path<String>,
) -> Result<web::Json<ObservedVm>, Error> {
    authorize(&req, &node)?;
    observed(&node, &id)
        .map(web::Json)
        .ok_or_else(|| Error::NotFound(id.into_inner()))
}

async fn delete_vm(
    req: HttpRequest,
    node: Shared,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    authorize(&req, &node)?;
    let (node, id) = (node.get_ref().clone(), id.into_inner());
    let found = blocking(move || node.delete(&id)).await?;
    Ok(if found {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().finish()
    })
}

fn result_of(o: &ModuleOutcome) -> NodeModuleResult {
    let (state, reason, rejection, errno) = match o {
        ModuleOutcome::Loaded { .. } | ModuleOutcome::AlreadyLoaded { .. } => {
            (RequestState::Loaded, None, None, None)
        }
        ModuleOutcome::Rejected { reason, .. } => (
            RequestState::Rejected,
            Some(reason.to_string()),
            Some(reason.clone()),
            None,
        ),
        ModuleOutcome::Failed { errno, reason, .. } => (
            RequestState::Failed,
            Some(reason.clone()),
            None,
            Some(*errno),
        ),
    };
    NodeModuleResult {
        name: o.name().to_string(),
        state,
        reason,
        rejection,
        errno,
    }
}

/// Vets and loads a module (with its dependencies) into a VM's guest kernel.
async fn load_module(
    req: HttpRequest,
    node: Shared,
    id: web::Path<String>,
    body: web::Json<NodeLoadModule>,
) -> Result<web::Json<Vec<NodeModuleResult>>, Error> {
    authorize(&req, &node)?;
    let (node, id, body) = (node.get_ref().clone(), id.into_inner(), body.into_inner());
    let results = blocking(move || {
        let tx = worker(&node, &id)?;
        // The control plane's budget, never more than the most any load may take.
        let budget = Duration::from_millis(body.budget_ms).min(budget::LOAD_MAX);
        let deadline = Instant::now() + budget;
        let source = match node
            .fetcher
            .source(&body.closure, &body.certificates, &node.host.trust)
        {
            Ok(s) => s,
            Err(FetchError::Malformed { module, reason }) => {
                let rejection = Rejection::Malformed {
                    module: module.clone(),
                    reason,
                };
                return Ok(vec![NodeModuleResult {
                    name: module,
                    state: RequestState::Rejected,
                    reason: Some(rejection.to_string()),
                    rejection: Some(rejection),
                    errno: None,
                }]);
            }
            Err(FetchError::Unavailable(e)) => return Err(Error::Unavailable(e)),
        };
        let policy = VettingPolicy::for_tenant(&node.kernel_release, body.approved.iter());
        let (reply, rx) = std::sync::mpsc::channel();
        tx.send(Command::Load {
            name: body.name.clone(),
            params: body.params.clone(),
            source,
            policy,
            deadline,
            reply,
        })
        .map_err(|_| Error::NotFound(id.clone()))?;
        // The worker ends every module by the deadline; a little more for its answer.
        let outcomes = rx
            .recv_timeout(budget + Duration::from_secs(1))
            .map_err(|_| {
                Error::Unavailable(format!(
                    "the VM did not answer within the budget of {} ms",
                    body.budget_ms
                ))
            })?;
        Ok(outcomes.iter().map(result_of).collect())
    })
    .await??;
    Ok(web::Json(results))
}

async fn unload_module(
    req: HttpRequest,
    node: Shared,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    authorize(&req, &node)?;
    let (node, (id, name)) = (node.get_ref().clone(), path.into_inner());
    blocking(move || {
        let tx = worker(&node, &id)?;
        let (reply, rx) = std::sync::mpsc::channel();
        tx.send(Command::Unload { name, reply })
            .map_err(|_| Error::NotFound(id.clone()))?;
        rx.recv_timeout(budget::UNLOAD)
            .map_err(|_| Error::Unavailable("the VM did not answer in time".into()))?
            .map_err(Error::Conflict)
    })
    .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Runs a command in a VM's guest, in the tenant context.
async fn exec(
    req: HttpRequest,
    node: Shared,
    id: web::Path<String>,
    body: web::Json<ExecRequest>,
) -> Result<web::Json<ExecResult>, Error> {
    authorize(&req, &node)?;
    valid_id(&id)?;
    let (node, id, body) = (node.get_ref().clone(), id.into_inner(), body.into_inner());
    let result = blocking(move || super::exec::exec(&node, &id, &body)).await??;
    Ok(web::Json(result))
}

/// Starts a VM's first-boot script (once per boot).
async fn run_user_data(
    req: HttpRequest,
    node: Shared,
    id: web::Path<String>,
    body: web::Json<RunUserData>,
) -> Result<web::Json<UserDataStatus>, Error> {
    authorize(&req, &node)?;
    valid_id(&id)?;
    let (node, id, body) = (node.get_ref().clone(), id.into_inner(), body.into_inner());
    let status = blocking(move || super::user_data::run(&node, &id, &body)).await??;
    Ok(web::Json(status))
}

/// Serves the node API on `listener` until the process ends.
pub async fn serve(
    node: Arc<Node>,
    listener: std::net::TcpListener,
    tls: rustls::ServerConfig,
) -> std::io::Result<()> {
    let data = web::Data::new(node);
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|e, _| Error::invalid("body", e.to_string()).into()),
            )
            .route(routes::HEALTHZ, web::get().to(healthz))
            .route(routes::METRICS, web::get().to(metrics))
            .route(routes::VM, web::put().to(ensure_vm))
            .route(routes::VM, web::get().to(get_vm))
            .route(routes::VM, web::delete().to(delete_vm))
            .route(routes::VM_MODULES, web::post().to(load_module))
            .route(routes::VM_MODULE, web::delete().to(unload_module))
            .route(routes::VM_EXEC, web::post().to(exec))
            .route(routes::VM_USER_DATA, web::post().to(run_user_data))
            .route(routes::VM_CONSOLE, web::get().to(super::console::console))
    })
    .workers(2)
    .listen_rustls_0_23(listener, tls)?
    .run()
    .await
}
