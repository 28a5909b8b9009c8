//! REST API v1: routes, handlers and the OpenAPI document generated from them.

mod console;
mod dashboard;
mod exec;
pub mod extract;
mod guest;
pub mod methods;
mod modules;
mod networks;
pub mod nodes;
pub mod problems;
mod stream;
mod system;
mod tenants;
pub mod tokens;
mod trust;
mod vms;

use crate::auth::TokenKeys;
use crate::metrics::Metrics;
use crate::store::Datastore;
use modvisor_node_api::openapi::BearerAuth;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::AppExt;

/// What every handler shares.
pub struct AppState {
    /// The typed store.
    pub store: Datastore,
    /// Token verification (and issuing, for bootstrap).
    pub keys: Arc<TokenKeys>,
    /// Revocations and tenants as authentication asks for them (cached on etcd).
    pub standing: Arc<crate::standing::StandingCache>,
    /// Metric families.
    pub metrics: Metrics,
    /// The CA of node and control-plane certificates.
    pub ca: Arc<crate::ca::ClusterCa>,
    /// Lifetime of node credentials, in seconds.
    pub node_credential_ttl_secs: u64,
    /// Per-tenant rate limits.
    pub limits: crate::ratelimit::RateLimits,
    /// Largest module upload accepted, in bytes.
    pub max_module_bytes: usize,
    /// How long a request body may take to arrive in full.
    pub body_timeout: std::time::Duration,
    /// Clients of the nodes' APIs (for calls a tenant waits on, such as exec).
    pub nodes: crate::reconciler::HttpNodes,
    /// Console sessions held per tenant.
    pub console_sessions: console::ConsoleSessions,
    /// Wakes the reconciler when a change it acts on is stored.
    pub wake: crate::reconciler::Wake,
    /// The node agents `/readyz` waits for (those `modvisor up` starts).
    pub expect_nodes: Vec<String>,
}

/// The routes of the tenant and admin API, each declared once: actix serves them and the
/// OpenAPI document (`openapi/control-plane.json`) is collected from the same calls.
pub fn public_routes(cfg: &mut ServiceConfig) {
    cfg.service(system::healthz)
        .service(system::readyz)
        .service(system::openapi_json)
        .service(system::metrics)
        .service(tenants::create_tenant)
        .service(tenants::list_tenants)
        .service(tenants::get_tenant)
        .service(tenants::set_quota)
        .service(vms::create_vm)
        .service(vms::list_vms)
        .service(vms::get_vm)
        .service(vms::replace_vm)
        .service(vms::delete_vm)
        .service(exec::exec_vm)
        .service(networks::create_network)
        .service(networks::list_networks)
        .service(networks::get_network)
        .service(networks::delete_network)
        .service(console::console)
        .service(modules::list_modules)
        .service(modules::publish_module)
        .service(modules::get_policy)
        .service(modules::set_policy)
        .service(modules::request_module)
        .service(modules::list_module_requests)
        .service(modules::unload_module)
        .service(trust::put_trusted)
        .service(trust::list_trusted)
        .service(trust::get_trusted)
        .service(trust::remove_trusted)
        .service(system::list_events)
        .service(stream::stream)
        .service(nodes::list_nodes)
        .service(nodes::get_node)
        .service(nodes::node_metrics)
        .service(nodes::delete_node)
        .service(nodes::node_action)
        .service(tokens::issue_token)
        .service(tokens::list_tokens)
        .service(tokens::my_tokens)
        .service(tokens::revoke_token);
}

/// `/metrics` alone, for a separate metrics listener.
pub fn metrics_endpoint() -> impl actix_web::dev::HttpServiceFactory {
    system::metrics
}

/// The routes only node agents call (`openapi/control-plane-internal.json`).
pub fn internal_routes(cfg: &mut ServiceConfig) {
    cfg.service(nodes::ca_certificate)
        .service(nodes::register_node)
        .service(nodes::heartbeat)
        .service(nodes::blob);
}

/// Registers the tenant and admin API and the dashboard's static files (undocumented):
/// the public listener's routes.
pub fn configure_public<T>(app: actix_web::App<T>) -> actix_web::App<T>
where
    T: actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Error = actix_web::Error,
        InitError = (),
    >,
{
    app.into_utoipa_app()
        .configure(public_routes)
        .into_app()
        .service(dashboard::index)
        .service(dashboard::script)
        .service(dashboard::style)
}

/// Registers the internal API: the routes of the TLS listener nodes call.
pub fn configure_internal<T>(app: actix_web::App<T>) -> actix_web::App<T>
where
    T: actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Error = actix_web::Error,
        InitError = (),
    >,
{
    app.into_utoipa_app().configure(internal_routes).into_app()
}

/// The control plane's tokens.
const TOKENS: BearerAuth = BearerAuth("JWT (EdDSA)");

/// The OpenAPI document of API v1.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "modvisor control plane",
        version = "1.0.0",
        description = "Tenants create VMs and ask for vetted kernel modules to be loaded into their VMs' own guest kernels."
    ),
    modifiers(&TOKENS),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The control plane's internal API: what only node agents call.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "modvisor control plane, internal",
        version = "1.0.0",
        description = "Called only by node agents, over TLS with a certificate of the control plane's CA: the CA certificate, registration (bootstrap token), heartbeats and module blobs by sha256 (node tokens)."
    ),
    modifiers(&TOKENS),
    security(("bearer" = []))
)]
pub struct InternalApiDoc;

/// `base` (title, security, schemas) with the paths of `routes`, collected from the same
/// registrations the server makes.
fn collect(
    base: utoipa::openapi::OpenApi,
    routes: fn(&mut ServiceConfig),
) -> utoipa::openapi::OpenApi {
    let mut doc = actix_web::App::new()
        .into_utoipa_app()
        .openapi(base)
        .configure(routes)
        .split_for_parts()
        .1;
    problems::document_common_responses(&mut doc);
    doc
}

/// The document finished (shared problems declared once, timestamps named, examples of
/// every schema) as pretty JSON.
fn pretty(doc: utoipa::openapi::OpenApi) -> String {
    modvisor_node_api::openapi_shared::finished(
        &doc,
        problems::SHARED_PROBLEMS,
        modvisor_control_plane_api::examples::examples(),
    )
}

/// The public listener's routes and their methods (the dashboard's files beside the
/// documented API).
pub fn public_methods() -> methods::MethodTable {
    methods::MethodTable::new(
        &collect(ApiDoc::openapi(), public_routes),
        &[
            ("/", "GET"),
            ("/dashboard/app.js", "GET"),
            ("/dashboard/style.css", "GET"),
        ],
    )
}

/// The internal listener's routes and their methods.
pub fn internal_methods() -> methods::MethodTable {
    methods::MethodTable::new(&collect(InternalApiDoc::openapi(), internal_routes), &[])
}

/// The tenants' and admins' OpenAPI document as pretty JSON, exactly as committed in
/// `openapi/control-plane.json`.
pub fn openapi_document() -> String {
    pretty(collect(ApiDoc::openapi(), public_routes))
}

/// The internal (node-facing) OpenAPI document as pretty JSON, exactly as committed in
/// `openapi/control-plane-internal.json`.
pub fn internal_openapi_document() -> String {
    pretty(collect(InternalApiDoc::openapi(), internal_routes))
}

/// The `.modinfo` of a module as catalog metadata (repeated keys joined with `,`).
pub fn modinfo_map(
    module: &modvisor_modules::KernelModule,
) -> std::collections::BTreeMap<String, String> {
    let mut out: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for f in &module.modinfo().fields {
        out.entry(f.key.clone())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&f.value);
            })
            .or_insert_with(|| f.value.clone());
    }
    out
}

/// Records a refused mutation in the audit trail (quota, policy, conflicts, stale
/// preconditions) and passes the error on. Validation and authentication failures are
/// not mutations of anything and are not recorded.
pub(crate) async fn audit_refusal<T>(
    state: &AppState,
    caller: &crate::auth::Caller,
    tenant: Option<&str>,
    action: &'static str,
    resource: String,
    result: Result<T, crate::error::Error>,
) -> Result<T, crate::error::Error> {
    use crate::error::Error;
    if let Err(
        e @ (Error::QuotaExceeded { .. }
        | Error::ModuleNotApproved { .. }
        | Error::Conflict(_)
        | Error::PreconditionFailed { .. }),
    ) = &result
    {
        let store = state.store.clone();
        let (actor, tenant, detail) = (
            caller.sub.clone(),
            tenant.map(str::to_string),
            e.to_string(),
        );
        let recorded = extract::blocking(move || {
            store.record_outcome(
                &actor,
                tenant.as_deref(),
                action,
                &resource,
                crate::model::Outcome::Denied,
                &detail,
            )
        })
        .await;
        if let Err(err) = recorded {
            tracing::warn!(error = %err, "could not record a refusal in the audit trail");
        }
    }
    result
}
