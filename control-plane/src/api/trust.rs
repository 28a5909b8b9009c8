//! The trust store (admin): operator certificates trusted to sign modules, besides the
//! guest kernel's own keys. Module policies name them in `signers`.

use super::extract::{blocking, StrictJson};
use super::problems::{AdminOnly, InvalidBody, Unauthenticated};
use super::AppState;
use crate::auth::Caller;
use crate::error::{Error, Problem};
use crate::model::{TrustBody, TrustEntry};
use crate::store::check_trust_name;
use actix_web::{delete, get, put, web, HttpResponse};

/// Adds (201) or replaces (200) the operator certificate `name` (admin; audited as
/// `trust.add` or `trust.replace`). Modules whose policy names it may be signed with
/// its key.
#[utoipa::path(
    tag = "trust",
    params(("name" = String, Path, description = "Certificate name: 1 to 63 of a-z 0-9 - _ (not `kernel`)")),
    request_body = TrustBody,
    responses(
        (status = 200, description = "Replaced", body = TrustEntry),
        (status = 201, description = "Added", body = TrustEntry),
        InvalidBody,
        Unauthenticated,
        AdminOnly,
        (status = 409, description = "The trust store is full", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/admin/trust/{name}")]
pub async fn put_trusted(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: StrictJson<TrustBody>,
) -> Result<HttpResponse, Error> {
    caller.require_admin()?;
    let name = name.into_inner();
    check_trust_name(&name)?;
    let store = state.store.clone();
    let (entry, replaced) =
        blocking(move || store.put_trusted(&caller.sub, &name, &body.0.certificate_pem)).await?;
    Ok(if replaced {
        HttpResponse::Ok().json(entry)
    } else {
        HttpResponse::Created().json(entry)
    })
}

/// Lists the trusted operator certificates (admin).
#[utoipa::path(
    tag = "trust",
    responses(
        (status = 200, description = "Every trusted certificate, by name", body = Vec<TrustEntry>),
        Unauthenticated,
        AdminOnly,
    )
)]
#[get("/v1/admin/trust")]
pub async fn list_trusted(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<TrustEntry>>, Error> {
    caller.require_admin()?;
    let store = state.store.clone();
    Ok(web::Json(blocking(move || store.list_trusted()).await?))
}

/// Shows one trusted certificate (admin).
#[utoipa::path(
    tag = "trust",
    params(("name" = String, Path, description = "Certificate name")),
    responses(
        (status = 200, description = "The certificate", body = TrustEntry),
        Unauthenticated,
        AdminOnly,
        (status = 404, description = "No such trusted certificate", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/trust/{name}")]
pub async fn get_trusted(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<web::Json<TrustEntry>, Error> {
    caller.require_admin()?;
    let name = name.into_inner();
    check_trust_name(&name)?;
    let store = state.store.clone();
    Ok(web::Json(blocking(move || store.get_trusted(&name)).await?))
}

/// Removes a trusted certificate (admin; audited as `trust.remove`); refused while a
/// module policy names it.
#[utoipa::path(
    tag = "trust",
    params(("name" = String, Path, description = "Certificate name")),
    responses(
        (status = 204, description = "Removed"),
        Unauthenticated,
        AdminOnly,
        (status = 404, description = "No such trusted certificate", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A module policy names it", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/admin/trust/{name}")]
pub async fn remove_trusted(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    caller.require_admin()?;
    let name = name.into_inner();
    check_trust_name(&name)?;
    let store = state.store.clone();
    blocking(move || store.remove_trusted(&caller.sub, &name)).await?;
    Ok(HttpResponse::NoContent().finish())
}
