//! The module catalog (admin publishing and policy) and tenants' module requests.

use super::extract::{blocking, content_type, read_body, StrictJson, StrictQuery};
use super::problems::{AdminOnly, InvalidBody, Unauthenticated, VmNotFound};
use super::{audit_refusal, AppState};
use crate::auth::Caller;
use crate::error::{Error, Problem};
use crate::model::{
    CatalogModule, ModulePolicy, ModuleRef, ModuleRequest, ModuleRequestBody, ModuleVersion,
};
use crate::validate;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

/// A route that takes no query parameters: any is a 400 naming it, as on other lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// Query of `PUT /v1/admin/modules/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PublishParams {
    /// The guest kernel release the module was built for: its vermagic must name it, and
    /// a registered node must run it.
    pub kernel_release: String,
    /// Publish even though no registered node runs `kernel_release` (for a node yet to
    /// come); audited as `module.publish_forced`. The vermagic check still holds.
    #[serde(default)]
    pub force: bool,
}

/// The modules the caller may request (admins: all, with their policies).
#[utoipa::path(
    tag = "modules",
    responses(
        (status = 200, description = "The catalog", body = Vec<CatalogModule>),
        Unauthenticated,
    )
)]
#[get("/v1/modules")]
pub async fn list_modules(
    caller: Caller,
    state: web::Data<AppState>,
    _query: StrictQuery<NoQuery>,
) -> Result<web::Json<Vec<CatalogModule>>, Error> {
    let tenant = match caller.scope()? {
        crate::store::VmFilter::All => None,
        crate::store::VmFilter::Tenant(t) => Some(t),
    };
    Ok(web::Json(state.store.module_catalog(tenant)?))
}

/// Publishes a module version (admin): the .ko bytes, stored content-addressed by sha256.
/// A newly published module is not approved for anyone until its policy says so.
#[utoipa::path(
    tag = "modules",
    params(("name" = String, Path, description = "Module name"), PublishParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The .ko file"),
    responses(
        (status = 201, description = "Published", body = ModuleVersion),
        (status = 400, description = "Invalid name, release or file (its vermagic names another release)", body = Problem, content_type = "application/problem+json"),
        Unauthenticated,
        AdminOnly,
        (status = 409, description = "No registered node runs that kernel release (and force is not set)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the upload limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/octet-stream", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/admin/modules/{name}")]
pub async fn publish_module(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: StrictQuery<PublishParams>,
    payload: web::Payload,
) -> Result<HttpResponse, Error> {
    caller.require_admin()?;
    let name = name.into_inner();
    validate::module_name("name", &name)?;
    validate::kernel_release("kernel_release", &query.0.kernel_release)?;
    if content_type(&req) != "application/octet-stream" {
        return Err(Error::UnsupportedMediaType {
            expected: "application/octet-stream",
        });
    }
    let bytes = read_body(&req, &mut payload.into_inner(), state.max_module_bytes).await?;
    let module = modvisor_modules::KernelModule::parse(&bytes)
        .map_err(|e| Error::invalid("body", format!("not a kernel module: {e}")))?;
    let inside = modvisor_modules::normalize_name(module.name());
    if inside != modvisor_modules::normalize_name(&name) {
        return Err(Error::invalid(
            "name",
            format!("the file is module {inside}, not {name}"),
        ));
    }
    let PublishParams {
        kernel_release: release,
        force,
    } = query.0;
    match module.modinfo().vermagic_release() {
        Some(built) if built == release => {}
        Some(built) => {
            return Err(Error::invalid(
                "kernel_release",
                format!("the module was built for kernel {built} (its vermagic), not {release}"),
            ))
        }
        None => return Err(Error::invalid("body", "the module has no vermagic")),
    }
    let info = super::modinfo_map(&module);
    let store = state.store.clone();
    let version = blocking(move || {
        let run = store.node_kernel_releases()?;
        let forced = match (run.contains(&release), force) {
            (true, _) => None,
            (false, true) => {
                let why = format!("no registered node runs guest kernel {release} ({})", running(&run));
                tracing::warn!(module = %inside, %release, "publish forced: {why}");
                Some(why)
            }
            (false, false) => {
                return Err(Error::Conflict(format!(
                    "no registered node runs guest kernel {release} ({}): publish for a release a node runs, or with force=true for a node yet to come",
                    running(&run)
                )))
            }
        };
        store.publish_module(&caller.sub, &inside, &release, &bytes, info, forced.as_deref())
    })
    .await?;
    Ok(HttpResponse::Created().json(version))
}

/// The releases nodes run, in words.
fn running(releases: &std::collections::BTreeSet<String>) -> String {
    if releases.is_empty() {
        return "no node is registered".to_string();
    }
    let list: Vec<&str> = releases.iter().map(String::as_str).collect();
    format!("nodes run {}", list.join(", "))
}

/// Who may request a published module (admin).
#[utoipa::path(
    tag = "modules",
    params(("name" = String, Path, description = "Module name")),
    responses(
        (status = 200, description = "The policy in force", body = ModulePolicy),
        Unauthenticated,
        AdminOnly,
        (status = 404, description = "Module never published", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/modules/{name}/policy")]
pub async fn get_policy(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<web::Json<ModulePolicy>, Error> {
    caller.require_admin()?;
    let name = name.into_inner();
    validate::module_name("name", &name)?;
    let store = state.store.clone();
    Ok(web::Json(blocking(move || store.policy(&name)).await?))
}

/// Sets who may request a published module (admin): every tenant it names must exist
/// (`*` is every tenant).
#[utoipa::path(
    tag = "modules",
    params(("name" = String, Path, description = "Module name")),
    request_body = ModulePolicy,
    responses(
        (status = 200, description = "The policy now in force", body = ModulePolicy),
        InvalidBody,
        Unauthenticated,
        AdminOnly,
        (status = 404, description = "Module never published", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/admin/modules/{name}/policy")]
pub async fn set_policy(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: StrictJson<ModulePolicy>,
) -> Result<web::Json<ModulePolicy>, Error> {
    caller.require_admin()?;
    let name = name.into_inner();
    validate::module_name("name", &name)?;
    let policy = body.0;
    if policy.tenants.len() > 1000 {
        return Err(Error::invalid("tenants", "at most 1000 entries"));
    }
    for (i, t) in policy.tenants.iter().enumerate() {
        if t != "*" {
            validate::resource_name(&format!("tenants[{i}]"), t)?;
        }
    }
    validate::policy_licenses(&policy.licenses)?;
    let store = state.store.clone();
    Ok(web::Json(
        blocking(move || store.set_policy(&caller.sub, &name, &policy)).await?,
    ))
}

/// Asks for a module to be loaded into one of the caller's VMs. A module not approved for
/// the tenant is refused with 403 and recorded as `Rejected` with the reason.
#[utoipa::path(
    tag = "modules",
    params(("id" = String, Path, description = "VM id")),
    request_body = ModuleRequestBody,
    responses(
        (status = 202, description = "Accepted; loading happens on the VM's node", body = ModuleRequest),
        InvalidBody,
        Unauthenticated,
        (status = 403, description = "Module not approved for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such VM or module", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already requested", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/vms/{id}/modules")]
pub async fn request_module(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: StrictJson<ModuleRequestBody>,
) -> Result<HttpResponse, Error> {
    caller.scope()?;
    let mut m = [ModuleRef {
        name: body.0.name,
        params: body.0.params,
    }];
    validate::canonical_module_names(&mut m);
    let [m] = m;
    validate::module_ref("body", &m)?;
    let (c, vm_id) = (caller.clone(), id.into_inner());
    let resource = format!("vms/{vm_id}/modules/{}", m.name);
    let st = state.clone();
    let result = blocking(move || {
        admit_module_request(&st, &c, &vm_id)?;
        if !m.params.is_empty() {
            // A module never published is the store's 404 below.
            if let Some(declared) = st.store.declared_params(&m.name)? {
                validate::declared_params("body", &m, &declared)?;
            }
        }
        st.store.request_module(&c.sub, c.scope()?, &vm_id, &m)
    })
    .await;
    // A not-approved refusal is audited by the store, together with the Rejected record.
    let result = match result {
        Err(e @ Error::ModuleNotApproved { .. }) => return Err(e),
        other => other,
    };
    let request = audit_refusal(
        &state,
        &caller,
        caller.tenant.as_deref(),
        "module.request",
        resource,
        result,
    )
    .await?;
    state.wake.now();
    Ok(HttpResponse::Accepted().json(request))
}

/// Counts a module request against its VM's bucket (tenants only; a VM the caller cannot
/// see is 404 and counts nothing).
fn admit_module_request(state: &AppState, caller: &Caller, vm_id: &str) -> Result<(), Error> {
    let Some(tenant) = caller.tenant.as_deref() else {
        return Ok(());
    };
    state.store.get_vm(caller.scope()?, vm_id)?;
    let quota = state
        .store
        .get_tenant(tenant)?
        .ok_or_else(|| Error::not_found("tenant", tenant))?
        .quota;
    state.limits.admit_module_request(tenant, vm_id, &quota)
}

/// The module requests of one of the caller's VMs.
#[utoipa::path(
    tag = "modules",
    params(("id" = String, Path, description = "VM id")),
    responses(
        (status = 200, description = "The VM's module requests", body = Vec<ModuleRequest>),
        Unauthenticated,
        VmNotFound,
    )
)]
#[get("/v1/vms/{id}/modules")]
pub async fn list_module_requests(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<Vec<ModuleRequest>>, Error> {
    Ok(web::Json(
        state.store.module_requests(caller.scope()?, &id)?,
    ))
}

/// Asks for a module to be unloaded from one of the caller's VMs.
#[utoipa::path(
    tag = "modules",
    params(
        ("id" = String, Path, description = "VM id"),
        ("name" = String, Path, description = "Module name"),
    ),
    responses(
        (status = 202, description = "Accepted", body = ModuleRequest),
        Unauthenticated,
        (status = 404, description = "No such VM or request", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/vms/{id}/modules/{name}")]
pub async fn unload_module(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    caller.scope()?;
    let (vm_id, name) = path.into_inner();
    validate::module_name("name", &name)?;
    let name = modvisor_modules::normalize_name(&name);
    let st = state.clone();
    let c = caller.clone();
    let request = blocking(move || {
        admit_module_request(&st, &c, &vm_id)?;
        st.store.unload_module(&c.sub, c.scope()?, &vm_id, &name)
    })
    .await?;
    state.wake.now();
    Ok(HttpResponse::Accepted().json(request))
}
