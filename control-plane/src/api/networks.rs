//! Tenant networks: create, list, read, delete. A network belongs to its tenant; another
//! tenant's is 404 whatever the verb, and an admin lists them all but changes none.

use super::extract::{blocking, StrictJson};
use super::problems::{InvalidBody, Unauthenticated};
use super::AppState;
use crate::auth::Caller;
use crate::error::{Error, Problem};
use crate::model::{CreateNetwork, Network};
use crate::store::VmFilter;
use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpResponse};

/// Creates a network for the caller's tenant. Its name is unique within the tenant, its
/// CIDR (`/16` to `/29`) overlaps none of the tenant's other networks (other tenants may
/// use the same), and the tenant's `max_networks` quota holds.
#[utoipa::path(
    tag = "networks",
    request_body = CreateNetwork,
    responses(
        (status = 201, description = "Created", body = Network),
        InvalidBody,
        Unauthenticated,
        (status = 403, description = "Not a tenant token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken, CIDR overlapping another of the tenant's networks, or quota exceeded", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/networks")]
pub async fn create_network(
    caller: Caller,
    state: web::Data<AppState>,
    body: StrictJson<CreateNetwork>,
) -> Result<HttpResponse, Error> {
    let tenant = caller.require_tenant()?.to_string();
    let (store, actor, body) = (state.store.clone(), caller.sub.clone(), body.0);
    let t = tenant.clone();
    let result = blocking(move || store.create_network(&actor, &t, &body)).await;
    let network = super::audit_refusal(
        &state,
        &caller,
        Some(&tenant),
        "network.create",
        "networks".into(),
        result,
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/networks/{}", network.name)))
        .json(network))
}

/// The networks the caller may see: its own (all of them for admins).
#[utoipa::path(
    tag = "networks",
    responses(
        (status = 200, description = "The networks, by tenant then name", body = Vec<Network>),
        Unauthenticated,
    )
)]
#[get("/v1/networks")]
pub async fn list_networks(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<Network>>, Error> {
    Ok(web::Json(state.store.list_networks(caller.scope()?)?))
}

fn own(caller: &Caller) -> Result<&str, Error> {
    caller.require_tenant().map_err(|_| {
        Error::Forbidden(
            "a network belongs to its tenant: read and delete it with a tenant token (GET /v1/networks lists all for admins)".into(),
        )
    })
}

/// One of the caller's networks; another tenant's is 404.
#[utoipa::path(
    tag = "networks",
    params(("name" = String, Path, description = "Network name")),
    responses(
        (status = 200, description = "The network", body = Network),
        Unauthenticated,
        (status = 403, description = "Not a tenant token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such network of the caller's tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/networks/{name}")]
pub async fn get_network(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<web::Json<Network>, Error> {
    let tenant = own(&caller)?;
    let found = state
        .store
        .list_networks(VmFilter::Tenant(tenant))?
        .into_iter()
        .find(|n| n.name == *name)
        .ok_or_else(|| Error::not_found("network", name.as_str()))?;
    Ok(web::Json(found))
}

/// Deletes one of the caller's networks; refused (409) while a VM uses it.
#[utoipa::path(
    tag = "networks",
    params(("name" = String, Path, description = "Network name")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthenticated,
        (status = 403, description = "Not a tenant token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such network of the caller's tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "VMs use it", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/networks/{name}")]
pub async fn delete_network(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let tenant = own(&caller)?.to_string();
    let (store, actor, n, t) = (
        state.store.clone(),
        caller.sub.clone(),
        name.clone(),
        tenant.clone(),
    );
    let result = blocking(move || store.delete_network(&actor, &t, &n)).await;
    super::audit_refusal(
        &state,
        &caller,
        Some(&tenant),
        "network.delete",
        format!("networks/{}", name.as_str()),
        result,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
