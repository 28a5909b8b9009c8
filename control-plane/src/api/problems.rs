//! Problem responses that many routes share, declared once for the OpenAPI documents
//! (each route lists the sets it can answer with, beside its own).

use crate::error::Problem;
use utoipa::IntoResponses;

/// No valid token.
#[derive(IntoResponses)]
#[response(status = 401, content_type = "application/problem+json")]
pub struct Unauthenticated(pub Problem);

/// The token is valid, but not an admin's.
#[derive(IntoResponses)]
#[response(status = 403, content_type = "application/problem+json")]
pub struct AdminOnly(pub Problem);

/// The token is valid, but not a node agent's.
#[derive(IntoResponses)]
#[response(status = 403, content_type = "application/problem+json")]
pub struct NodeOnly(pub Problem);

/// The body is not valid JSON, has unknown fields or a field fails validation.
#[derive(IntoResponses)]
#[response(status = 400, content_type = "application/problem+json")]
pub struct InvalidBody(pub Problem);

/// No such VM (or it is another tenant's).
#[derive(IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct VmNotFound(pub Problem);

/// No such tenant.
#[derive(IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct TenantNotFound(pub Problem);

/// `If-Match` named a version that is no longer current.
#[derive(IntoResponses)]
#[response(status = 412, content_type = "application/problem+json")]
pub struct StaleIfMatch(pub Problem);
