//! The node API's errors and their RFC 9457 form (`modvisor_node_api::Problem`).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use modvisor_node_api::problem::{Problem, PROBLEM_JSON};

/// Everything a caller of the node API can be told went wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No valid token.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token of a role that may not call a node.
    #[error("{0}")]
    Forbidden(String),
    /// A path parameter or body field is invalid.
    #[error("{field}: {detail}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        detail: String,
    },
    /// This node does not hold the VM.
    #[error("vm {0} not found")]
    NotFound(String),
    /// The request conflicts with the VM's state (being removed, module in use).
    #[error("{0}")]
    Conflict(String),
    /// The guest runs as many commands as it may at once.
    #[error("{0}")]
    Busy(String),
    /// Something the request needs did not answer: the control plane's catalog or blobs,
    /// or the guest within its budget.
    #[error("{0}")]
    Unavailable(String),
    /// The node agent itself failed (a poisoned lock, a lost worker pool).
    #[error("node agent failure: {0}")]
    Internal(String),
}

impl ApiError {
    /// An invalid field.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Invalid { .. } => "invalid-field",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Busy(_) => "busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "Authentication required",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::Invalid { .. } => "A field is invalid",
            ApiError::NotFound(_) => "Not found",
            ApiError::Conflict(_) => "Conflict",
            ApiError::Busy(_) => "Busy",
            ApiError::Unavailable(_) => "Unavailable",
            ApiError::Internal(_) => "Node agent failure",
        }
    }

    /// The RFC 9457 body.
    pub fn problem(&self) -> Problem {
        Problem {
            r#type: format!("urn:modvisor:problem:{}", self.slug()),
            title: self.title().into(),
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            field: match self {
                ApiError::Invalid { field, .. } => Some(field.clone()),
                _ => None,
            },
            quota: None,
            request_id: None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(self, ApiError::Internal(_) | ApiError::Unavailable(_)) {
            tracing::warn!(error = %self, "node API request failed");
        }
        let body = match serde_json::to_vec(&self.problem()) {
            Ok(b) => b,
            Err(e) => format!("{{\"detail\":\"unencodable problem: {e}\"}}").into_bytes(),
        };
        HttpResponse::build(self.status_code())
            .insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(body)
    }
}
