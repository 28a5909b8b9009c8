//! VMs: create, list, read, replace (with `If-Match`) and delete.

use super::extract::{blocking, if_match, read, StrictJson, StrictQuery};
use super::problems::{InvalidBody, StaleIfMatch, Unauthenticated, VmNotFound};
use super::{audit_refusal, AppState};
use crate::auth::Caller;
use crate::error::{Error, Problem};
use crate::model::{KernelMode, Page, Vm, VmListParams, VmSpec};
use crate::validate;
use actix_web::http::header;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};

fn with_etag(mut resp: actix_web::HttpResponseBuilder, vm: &Vm) -> HttpResponse {
    resp.insert_header((header::ETAG, vm.etag())).json(vm)
}

/// Creates a VM for the caller's tenant. Quota, name uniqueness and the policy of every
/// listed module are checked in the same transaction as the write.
#[utoipa::path(
    tag = "vms",
    request_body = VmSpec,
    responses(
        (status = 201, description = "Created; `ETag` holds its version", body = Vm),
        InvalidBody,
        Unauthenticated,
        (status = 403, description = "Not a tenant token, a module is not approved, or kernel_mode operator-modules without an operator-signed module approved for the tenant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A listed module is not in the catalog, or the tenant has no network of that name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Quota exceeded, name taken, or the network has no address left", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/vms")]
pub async fn create_vm(
    caller: Caller,
    state: web::Data<AppState>,
    body: StrictJson<VmSpec>,
) -> Result<HttpResponse, Error> {
    let tenant = caller.require_tenant()?.to_string();
    let mut spec = body.0;
    validate::canonical_module_names(&mut spec.modules);
    validate::vm_spec(&spec)?;
    let store = state.store.clone();
    let (actor, t) = (caller.sub.clone(), tenant.clone());
    let result = blocking(move || {
        if spec.kernel_mode != KernelMode::Standard && !store.operator_modules_allowed(&t)? {
            return Err(Error::Forbidden(format!(
                "kernel_mode {}: no operator-signed module is approved for tenant {t}",
                "operator-modules"
            )));
        }
        store.create_vm(&actor, &t, &spec)
    })
    .await;
    let vm = audit_refusal(
        &state,
        &caller,
        Some(&tenant),
        "vm.create",
        "vms".into(),
        result,
    )
    .await?;
    state.wake.now();
    Ok(with_etag(
        HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/v1/vms/{}", vm.id)))
            .take(),
        &vm,
    ))
}

/// Lists the VMs the caller may see (its own; all for admins), ordered by id; with
/// `name`, only the VM(s) of that name.
#[utoipa::path(
    tag = "vms",
    params(VmListParams),
    responses(
        (status = 200, description = "A page of VMs", body = Page<Vm>),
        (status = 400, description = "Invalid limit or page token", body = Problem, content_type = "application/problem+json"),
        Unauthenticated,
    )
)]
#[get("/v1/vms")]
pub async fn list_vms(
    caller: Caller,
    state: web::Data<AppState>,
    query: StrictQuery<VmListParams>,
) -> Result<HttpResponse, Error> {
    let limit = super::system::limit_of(query.0.limit)?;
    let query = query.0;
    if let Some(name) = &query.name {
        validate::resource_name("name", name)?;
        if query.page_token.is_some() {
            return Err(Error::invalid(
                "page_token",
                "a list by name is one page; leave page_token out",
            ));
        }
    }
    let store = state.store.clone();
    let (items, next) = read(&state, move || match &query.name {
        Some(name) => Ok((store.vms_named_json(caller.scope()?, name)?, None)),
        None => store.list_vms_json(caller.scope()?, query.page_token.as_deref(), limit),
    })
    .await?;
    // The stored records are the API form: splice them into the page without re-encoding.
    let mut body = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 64);
    body.extend_from_slice(b"{\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"],\"next_page_token\":");
    serde_json::to_writer(&mut body, &next).map_err(|e| Error::Encoding(e.to_string()))?;
    body.push(b'}');
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// One VM. Another tenant's VM is 404.
#[utoipa::path(
    tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses(
        (status = 200, description = "The VM; `ETag` holds its version", body = Vm),
        Unauthenticated,
        VmNotFound,
    )
)]
#[get("/v1/vms/{id}")]
pub async fn get_vm(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (store, id) = (state.store.clone(), id.into_inner());
    let vm = read(&state, move || store.get_vm(caller.scope()?, &id)).await?;
    Ok(with_etag(HttpResponse::Ok(), &vm))
}

/// Replaces a VM's spec (e.g. `power_state`). With `If-Match`, a stale ETag is 412.
#[utoipa::path(
    tag = "vms",
    params(
        ("id" = String, Path, description = "VM id"),
        ("If-Match" = Option<String>, Header, description = "The ETag this change is based on"),
    ),
    request_body = VmSpec,
    responses(
        (status = 200, description = "The VM as replaced; `ETag` holds its version", body = Vm),
        InvalidBody,
        Unauthenticated,
        (status = 403, description = "An added module is not approved", body = Problem, content_type = "application/problem+json"),
        VmNotFound,
        (status = 409, description = "Quota exceeded, name taken, or a field fixed at creation (user_data, network) changed", body = Problem, content_type = "application/problem+json"),
        StaleIfMatch,
    )
)]
#[put("/v1/vms/{id}")]
pub async fn replace_vm(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: StrictJson<VmSpec>,
) -> Result<HttpResponse, Error> {
    caller.scope()?;
    let mut spec = body.0;
    validate::canonical_module_names(&mut spec.modules);
    validate::vm_spec(&spec)?;
    let precondition = if_match(&req)?;
    let store = state.store.clone();
    let (c, vm_id) = (caller.clone(), id.into_inner());
    let resource = format!("vms/{vm_id}");
    let result = blocking(move || {
        store.replace_vm(&c.sub, c.scope()?, &vm_id, precondition.as_deref(), &spec)
    })
    .await;
    let vm = audit_refusal(
        &state,
        &caller,
        caller.tenant.as_deref(),
        "vm.replace",
        resource,
        result,
    )
    .await?;
    state.wake.now();
    Ok(with_etag(HttpResponse::Ok(), &vm))
}

/// Deletes a VM and releases its quota. With `If-Match`, a stale ETag is 412.
#[utoipa::path(
    tag = "vms",
    params(
        ("id" = String, Path, description = "VM id"),
        ("If-Match" = Option<String>, Header, description = "The ETag this change is based on"),
    ),
    responses(
        (status = 204, description = "Deleted (it was on no node)"),
        (status = 202, description = "Deletion under way on its node", body = Vm),
        Unauthenticated,
        VmNotFound,
        StaleIfMatch,
    )
)]
#[delete("/v1/vms/{id}")]
pub async fn delete_vm(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    caller.scope()?;
    let precondition = if_match(&req)?;
    let store = state.store.clone();
    let (c, vm_id) = (caller.clone(), id.into_inner());
    let resource = format!("vms/{vm_id}");
    let result =
        blocking(move || store.delete_vm(&c.sub, c.scope()?, &vm_id, precondition.as_deref()))
            .await;
    let vm = audit_refusal(
        &state,
        &caller,
        caller.tenant.as_deref(),
        "vm.delete",
        resource,
        result,
    )
    .await?;
    if vm.deleting {
        // On a node: it goes once the node has removed it.
        state.wake.now();
        return Ok(HttpResponse::Accepted().json(vm));
    }
    Ok(HttpResponse::NoContent().finish())
}
