//! Tokens: issuing listed ones (admin), listing them, and revoking them (admins any,
//! tenants their tenant's). A revoked token is refused on the next request, everywhere:
//! every request checks the store after the signature (see `extract`).

use super::extract::{blocking, StrictJson};
use super::problems::{AdminOnly, InvalidBody, Unauthenticated};
use super::AppState;
use crate::auth::{role_of, Caller, Issued, Role, TokenKeys};
use crate::ca::ClusterCa;
use crate::error::{Error, Problem};
use crate::model::{IssueToken, IssuedToken, TokenRecord, TokenRole};
use crate::store::Datastore;
use crate::validate;
use actix_web::{delete, get, post, web, HttpResponse};

/// Shortest and longest lifetime of a token issued over the API, in seconds.
const TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=365 * 24 * 3600;

/// Signs a token and lists it (audited as `actor`). Bootstrap tokens pin `ca`.
#[allow(clippy::too_many_arguments)]
pub fn issue_listed(
    store: &Datastore,
    keys: &TokenKeys,
    ca: &ClusterCa,
    actor: &str,
    sub: &str,
    role: Role,
    tenant: Option<&str>,
    ttl_secs: u64,
) -> Result<Issued, Error> {
    let issued = match role {
        Role::Bootstrap => keys.issue_bootstrap(sub, ttl_secs, ca.cert_sha256()?)?,
        _ => keys.issue(sub, role, tenant, ttl_secs)?,
    };
    if let Some(record) = issued.record() {
        store.record_token(actor, &record)?;
    }
    Ok(issued)
}

/// Issues a listed, revocable token (admin). Node credentials come only from registration.
#[utoipa::path(
    tag = "tokens",
    request_body = IssueToken,
    responses(
        (status = 201, description = "Issued; the token is shown this once", body = IssuedToken),
        InvalidBody,
        Unauthenticated,
        AdminOnly,
    )
)]
#[post("/v1/tokens")]
pub async fn issue_token(
    caller: Caller,
    state: web::Data<AppState>,
    body: StrictJson<IssueToken>,
) -> Result<HttpResponse, Error> {
    caller.require_admin()?;
    let body = body.0;
    if !TTL_RANGE.contains(&body.ttl_secs) {
        return Err(Error::invalid(
            "ttl_secs",
            format!("must be {}..={}", TTL_RANGE.start(), TTL_RANGE.end()),
        ));
    }
    if body.role == TokenRole::Node {
        return Err(Error::invalid(
            "role",
            "node credentials are issued only by registration",
        ));
    }
    let role = role_of(body.role);
    match (role, &body.tenant) {
        (Role::Tenant, None) => return Err(Error::invalid("tenant", "a tenant token needs one")),
        (Role::Tenant, Some(t)) => validate::resource_name("tenant", t)?,
        (_, Some(_)) => return Err(Error::invalid("tenant", "only tenant tokens name one")),
        (_, None) => {}
    }
    let sub = match (&body.sub, &body.tenant) {
        (Some(s), _) => s.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => role.name().to_string(),
    };
    validate::subject("sub", &sub)?;
    let (store, keys, ca) = (state.store.clone(), state.keys.clone(), state.ca.clone());
    let issued = blocking(move || {
        if let Some(t) = &body.tenant {
            if store.get_tenant(t)?.is_none() {
                return Err(Error::not_found("tenant", t));
            }
        }
        issue_listed(
            &store,
            &keys,
            &ca,
            &caller.sub,
            &sub,
            role,
            body.tenant.as_deref(),
            body.ttl_secs,
        )
    })
    .await?;
    let record = issued
        .record()
        .ok_or_else(|| Error::Misconfigured("an API token without a listed role".into()))?;
    Ok(HttpResponse::Created().json(IssuedToken {
        token: issued.token,
        record,
    }))
}

/// Every listed token that has not expired (admin), revoked ones with `revoked_at`.
#[utoipa::path(
    tag = "tokens",
    responses(
        (status = 200, description = "Tokens, oldest first", body = Vec<TokenRecord>),
        Unauthenticated,
        AdminOnly,
    )
)]
#[get("/v1/tokens")]
pub async fn list_tokens(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<TokenRecord>>, Error> {
    caller.require_admin()?;
    let store = state.store.clone();
    Ok(web::Json(
        blocking(move || store.list_tokens(|_| true)).await?,
    ))
}

/// Whether `caller` holds (or, for a tenant, its tenant holds) the listed token `rec`.
fn owns(caller: &Caller, rec: &TokenRecord) -> bool {
    match caller.role {
        Role::Tenant => rec.tenant.is_some() && rec.tenant == caller.tenant,
        _ => crate::auth::token_role(caller.role) == Some(rec.role) && rec.sub == caller.sub,
    }
}

/// The caller's own listed tokens: a tenant's are every token of its tenant; anyone
/// else's are those of its role and subject.
#[utoipa::path(
    tag = "tokens",
    responses(
        (status = 200, description = "Tokens, oldest first", body = Vec<TokenRecord>),
        Unauthenticated,
    )
)]
#[get("/v1/me/tokens")]
pub async fn my_tokens(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<TokenRecord>>, Error> {
    let store = state.store.clone();
    Ok(web::Json(
        blocking(move || store.list_tokens(|r| owns(&caller, r))).await?,
    ))
}

/// Revokes a token: admins any (listed or not), tenants their tenant's; anyone else's is
/// 404. The token is refused from the next request on; revoking twice is no error.
#[utoipa::path(
    tag = "tokens",
    params(("jti" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        InvalidBody,
        Unauthenticated,
        (status = 403, description = "This role may not revoke tokens", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token of the caller's", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/tokens/{jti}")]
pub async fn revoke_token(
    caller: Caller,
    state: web::Data<AppState>,
    jti: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let jti = jti.into_inner();
    validate::token_id("jti", &jti)?;
    if !matches!(caller.role, Role::Admin | Role::Tenant) {
        return Err(Error::Forbidden(
            "only admins and tenants may revoke tokens".into(),
        ));
    }
    let (store, revoked) = (state.store.clone(), jti.clone());
    blocking(move || {
        let admin = caller.role == Role::Admin;
        store.revoke_token(&caller.sub, caller.tenant.as_deref(), &revoked, |rec| {
            admin || rec.is_some_and(|r| owns(&caller, r))
        })
    })
    .await?;
    // Refused here from now on; other replicas hear it through their watch.
    state.standing.note_revoked(&jti);
    Ok(HttpResponse::NoContent().finish())
}
