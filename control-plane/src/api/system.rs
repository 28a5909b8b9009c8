//! Health, the OpenAPI document, metrics and the audit trail.

use super::extract::StrictQuery;
use super::problems::Unauthenticated;
use super::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::model::{Event, EventListParams, Page, Readiness};
use actix_web::{get, web, HttpResponse};

/// Liveness: answers when the server and its store are up.
#[utoipa::path(
    tag = "system", security(()),
    responses((status = 200, description = "Alive", body = serde_json::Value))
)]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: 200 when the store answers and every node agent this control plane was
/// started to expect is registered and Ready; 503 with what it waits for otherwise.
#[utoipa::path(
    tag = "system", security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: what it waits for", body = Readiness),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let store = state.store.clone();
    let expected = state.expect_nodes.clone();
    let readiness =
        super::extract::blocking(move || Ok(crate::readiness::check(&store, &expected))).await?;
    Ok(if readiness.ready {
        HttpResponse::Ok().json(readiness)
    } else {
        HttpResponse::ServiceUnavailable().json(readiness)
    })
}

/// This document.
#[utoipa::path(
    tag = "system", security(()),
    responses((status = 200, description = "The OpenAPI document", body = serde_json::Value))
)]
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    // Collected once per process from the route registrations.
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.get_or_init(super::openapi_document).clone())
}

/// Prometheus metrics in the text exposition format (admin or `metrics` tokens: they
/// show every tenant's activity). Served from counters, never a scan of the store.
#[utoipa::path(
    tag = "system",
    responses(
        (status = 200, description = "Metrics", content_type = "text/plain", body = String),
        Unauthenticated,
        (status = 403, description = "Neither an admin nor a metrics token", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/metrics")]
pub async fn metrics(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    caller.require_metrics_reader()?;
    let body = state.metrics.render()?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}

/// A page size given as `limit`: 1..=1000, default 100.
pub(crate) fn limit_of(limit: Option<u32>) -> Result<usize, Error> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n as usize),
        Some(_) => Err(Error::invalid("limit", "must be between 1 and 1000")),
    }
}

/// The audit trail of every mutation: a tenant sees its own, an admin all; oldest first.
#[utoipa::path(
    tag = "events",
    params(EventListParams),
    responses(
        (status = 200, description = "A page of events", body = Page<Event>),
        (status = 400, description = "Invalid parameters", body = crate::error::Problem, content_type = "application/problem+json"),
        Unauthenticated,
    )
)]
#[get("/v1/events")]
pub async fn list_events(
    caller: Caller,
    state: web::Data<AppState>,
    query: StrictQuery<EventListParams>,
) -> Result<web::Json<Page<Event>>, Error> {
    let q = query.0;
    let limit = limit_of(q.limit)?;
    let filter = caller.scope()?;
    let after = match (q.page_token.as_deref(), q.after_seq) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "after_seq",
                "goes without page_token (a page token already says where to go on)",
            ))
        }
        (Some(t), None) => Some(crate::store::parse_page_token(t)?),
        (None, Some(seq)) => Some(crate::store::event_key(seq)),
        (None, None) => None,
    };
    if let Some(r) = &q.resource {
        crate::validate::event_resource("resource", r)?;
    }
    let (items, next_page_token) =
        state
            .store
            .list_events(filter, after, limit, q.resource.as_deref())?;
    Ok(web::Json(Page {
        items,
        next_page_token,
    }))
}
