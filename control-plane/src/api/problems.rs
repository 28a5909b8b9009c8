//! Problem responses that many routes share, declared once for the OpenAPI documents
//! (each route lists the sets it can answer with, beside its own).

use crate::error::Problem;
use modvisor_node_api::openapi_shared::SharedProblem;
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

/// The problem responses several operations share, each declared once in the documents
/// (`components.responses`).
pub const SHARED_PROBLEMS: &[SharedProblem] = &[
    SharedProblem::new("InvalidParameter", "400", "A parameter is invalid"),
    SharedProblem::new(
        "InvalidBodyOrParameter",
        "400",
        "The body or a parameter is invalid",
    ),
    SharedProblem::new(
        "InvalidBody",
        "400",
        "The body is not valid JSON, has unknown fields or a field fails validation.",
    ),
    SharedProblem::new("Unauthenticated", "401", "No valid token."),
    SharedProblem::new("TenantOnly", "403", "Not a tenant token"),
    SharedProblem::new(
        "AdminOnly",
        "403",
        "The token is valid, but not an admin's.",
    ),
    SharedProblem::new(
        "NodeOnly",
        "403",
        "The token is valid, but not a node agent's.",
    ),
    SharedProblem::new("MetricsOnly", "403", "Neither an admin nor a metrics token"),
    SharedProblem::new("ModuleNotFound", "404", "Module never published"),
    SharedProblem::new(
        "VmNotFound",
        "404",
        "No such VM (or it is another tenant's).",
    ),
    SharedProblem::new(
        "NetworkNotFound",
        "404",
        "No such network of the caller's tenant",
    ),
    SharedProblem::new("NodeNotFound", "404", "No such node"),
    SharedProblem::new("TrustNotFound", "404", "No such trusted certificate"),
    SharedProblem::new("TenantNotFound", "404", "No such tenant."),
    SharedProblem::new("RequestTimeout", "408", "The body did not arrive in time"),
    SharedProblem::new(
        "StaleIfMatch",
        "412",
        "`If-Match` named a version that is no longer current.",
    ),
    SharedProblem::new("PayloadTooLarge", "413", "The body is too large"),
    SharedProblem::new(
        "UnsupportedMediaType",
        "415",
        "The body is not of the media type this route takes",
    ),
    SharedProblem::new(
        "RateLimited",
        "429",
        "The caller's tenant is over one of its rate limits",
    ),
];

/// Adds to every operation the problems that the server's shared layers can answer with,
/// where the route did not name them: every route with a token may answer 401 and 429
/// (a tenant over its rate limits, with `Retry-After`); every route with parameters may
/// answer 400; every route with a body may answer 400, 408 (too slow), 413 (too large)
/// and 415 (not its media type).
pub fn document_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    fn problem(description: &str, retry_after: bool) -> utoipa::openapi::Response {
        let content = utoipa::openapi::ContentBuilder::new()
            .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
            .build();
        let mut r = utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", content);
        if retry_after {
            r = r.header(
                "Retry-After",
                utoipa::openapi::HeaderBuilder::new()
                    .schema(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::Type::Integer)
                            .minimum(Some(1)),
                    )
                    .description(Some("Seconds until a retry can succeed"))
                    .build(),
            );
        }
        r.build()
    }
    fn add(op: &mut Operation, status: &str, description: &str, retry_after: bool) {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| problem(description, retry_after).into());
    }
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            // `security(())` (one empty requirement) marks a route that needs no token.
            let public = op.security.as_ref().is_some_and(|reqs| {
                reqs.iter()
                    .all(|r| r == &utoipa::openapi::security::SecurityRequirement::default())
            });
            if !public {
                add(op, "401", "No valid token.", false);
                add(
                    op,
                    "429",
                    "The caller's tenant is over one of its rate limits",
                    true,
                );
            }
            if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                add(op, "400", "A parameter is invalid", false);
            }
            if op.request_body.is_some() {
                add(op, "400", "The body or a parameter is invalid", false);
                add(op, "408", "The body did not arrive in time", false);
                add(op, "413", "The body is too large", false);
                add(
                    op,
                    "415",
                    "The body is not of the media type this route takes",
                    false,
                );
            }
        }
    }
}
