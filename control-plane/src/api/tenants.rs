//! Tenants and their quotas (admin), and a tenant's view of itself.

use super::extract::{blocking, StrictJson};
use super::problems::{AdminOnly, InvalidBody, TenantNotFound, Unauthenticated};
use super::AppState;
use crate::auth::{Caller, Role};
use crate::error::{Error, Problem};
use crate::model::{CreateTenant, Quota, Tenant};
use crate::validate;
use actix_web::{get, post, put, web, HttpResponse};

/// Creates a tenant (admin).
#[utoipa::path(
    tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = Tenant),
        InvalidBody,
        Unauthenticated,
        AdminOnly,
        (status = 409, description = "Exists", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/tenants")]
pub async fn create_tenant(
    caller: Caller,
    state: web::Data<AppState>,
    body: StrictJson<CreateTenant>,
) -> Result<HttpResponse, Error> {
    caller.require_admin()?;
    let body = body.0;
    validate::resource_name("name", &body.name)?;
    if let Some(q) = &body.quota {
        validate::quota(q)?;
    }
    let store = state.store.clone();
    let tenant = blocking(move || store.create_tenant(&caller.sub, &body)).await?;
    state.standing.note_tenant(&tenant);
    Ok(HttpResponse::Created().json(tenant))
}

/// Lists tenants (admin).
#[utoipa::path(
    tag = "tenants",
    responses(
        (status = 200, description = "All tenants", body = Vec<Tenant>),
        Unauthenticated,
        AdminOnly,
    )
)]
#[get("/v1/tenants")]
pub async fn list_tenants(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<Tenant>>, Error> {
    caller.require_admin()?;
    Ok(web::Json(state.store.list_tenants()?))
}

/// One tenant with its quota and usage: any tenant for admins, its own for a tenant.
#[utoipa::path(
    tag = "tenants",
    params(("name" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        Unauthenticated,
        TenantNotFound,
    )
)]
#[get("/v1/tenants/{name}")]
pub async fn get_tenant(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<web::Json<Tenant>, Error> {
    let name = name.into_inner();
    let visible = match caller.role {
        Role::Admin => true,
        Role::Tenant => caller.tenant.as_deref() == Some(name.as_str()),
        Role::Node | Role::Bootstrap | Role::ControlPlane | Role::Metrics => {
            return Err(Error::Forbidden(
                "this token's role may not read tenants".into(),
            ))
        }
    };
    state
        .store
        .get_tenant(&name)?
        .filter(|_| visible)
        .map(web::Json)
        .ok_or_else(|| Error::not_found("tenant", name))
}

/// Replaces a tenant's quota (admin). A quota below current usage blocks growth only.
#[utoipa::path(
    tag = "tenants",
    params(("name" = String, Path, description = "Tenant name")),
    request_body = Quota,
    responses(
        (status = 200, description = "The tenant with its new quota", body = Tenant),
        InvalidBody,
        Unauthenticated,
        AdminOnly,
        TenantNotFound,
    )
)]
#[put("/v1/tenants/{name}/quota")]
pub async fn set_quota(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: StrictJson<Quota>,
) -> Result<web::Json<Tenant>, Error> {
    caller.require_admin()?;
    let quota = body.0;
    validate::quota(&quota)?;
    let store = state.store.clone();
    let name = name.into_inner();
    let tenant = blocking(move || store.set_quota(&caller.sub, &name, quota)).await?;
    // Its limits count here at once; other replicas hear them through their watch.
    state.standing.note_tenant(&tenant);
    Ok(web::Json(tenant))
}
