//! The control plane's error type and its RFC 9457 `application/problem+json` form.
//!
//! Every failure a caller can see is one [`Error`] variant with a stable problem `type`
//! (`urn:modvisor:problem:<slug>`), an HTTP status and, where there is one, the offending
//! field or quota.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

pub use modvisor_node_api::problem::PROBLEM_JSON;

/// Everything that can go wrong in the control plane.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A request field failed validation.
    #[error("{field}: {detail}")]
    Validation {
        /// JSON path or parameter name of the offending field.
        field: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The body was not valid JSON (syntax), before any field could be read.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body was larger than the limit for this route.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive in full in time.
    #[error("the request body did not arrive within {} s", within.as_secs())]
    RequestTimeout {
        /// How long it had.
        within: std::time::Duration,
    },
    /// The body had the wrong media type.
    #[error("expected Content-Type {expected}")]
    UnsupportedMediaType {
        /// The media type this route accepts.
        expected: &'static str,
    },
    /// No valid credential was presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is authenticated but its role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A module is not approved for the caller's tenant.
    #[error("module {module} is not approved for tenant {tenant}")]
    ModuleNotApproved {
        /// The module name.
        module: String,
        /// The requesting tenant.
        tenant: String,
    },
    /// The resource does not exist (or belongs to someone else).
    #[error("{kind} {id} not found")]
    NotFound {
        /// Resource kind, e.g. `vm`.
        kind: &'static str,
        /// The identifier that was asked for.
        id: String,
    },
    /// The path exists but does not take this method.
    #[error("{method} is not allowed here; allowed: {}", allowed.join(", "))]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The methods the path takes.
        allowed: Vec<&'static str>,
    },
    /// The resource already exists or the request conflicts with its state.
    #[error("{0}")]
    Conflict(String),
    /// Granting the request would exceed one of the tenant's quotas.
    #[error(
        "quota {quota} exceeded for tenant {tenant}: limit {limit}, requested total {requested}"
    )]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// The quota's name (`max_vms`, `max_vcpus` or `max_memory_mib`).
        quota: &'static str,
        /// The quota's value.
        limit: u64,
        /// The total that the request would have reached.
        requested: u64,
    },
    /// The tenant is over one of its rate limits; retry later.
    #[error("tenant {tenant} is over its limit {limit}; retry in {retry_after_secs} s")]
    RateLimited {
        /// The tenant.
        tenant: String,
        /// The quota field that limits it.
        limit: &'static str,
        /// Seconds until a retry can succeed.
        retry_after_secs: u64,
    },
    /// The guest runs as many of the tenant's commands as it may at once; retry later.
    #[error("{0}")]
    GuestBusy(String),
    /// The VM's node (or the guest behind it) did not do what was asked: unreachable, or
    /// it answered with a failure of its own.
    #[error("node {node}: {detail}")]
    NodeUnavailable {
        /// The node.
        node: String,
        /// What happened.
        detail: String,
    },
    /// `If-Match` named a version that is no longer current.
    #[error("If-Match {given} does not match the current ETag {current}")]
    PreconditionFailed {
        /// The ETag the caller sent.
        given: String,
        /// The ETag now current.
        current: String,
    },
    /// The store failed; the operation changed nothing.
    #[error("storage error: {0}")]
    Storage(String),
    /// This replica's term as leader ended (its lease expired or another replica leads):
    /// the write it attempted as leader was not made.
    #[error("no longer the leader: {0}")]
    Deposed(String),
    /// The data directory, or a file in it, cannot be used (also: another process holds
    /// the store).
    #[error("data directory {path}: {detail}")]
    DataDir {
        /// The directory or file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The signing key file is missing, unreadable, readable by others, or not a key.
    #[error("signing key {path}: {detail}")]
    KeyFile {
        /// The key file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A token could not be signed.
    #[error("signing a token: {0}")]
    Signing(String),
    /// The catalog could not be seeded from a kernel tree.
    #[error("seeding the catalog: {0}")]
    Seed(String),
    /// Metrics could not be registered or encoded.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The blocking worker pool could not run the operation (the server is stopping).
    #[error("worker pool: {0}")]
    WorkerPool(String),
    /// A response could not be encoded.
    #[error("encoding the response: {0}")]
    Encoding(String),
    /// The server was assembled without what a handler needs.
    #[error("server misconfigured: {0}")]
    Misconfigured(String),
    /// A table held in memory is poisoned: a thread panicked while holding it.
    #[error("{0} is poisoned (a thread panicked while holding it)")]
    Poisoned(&'static str),
}

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A validation error on `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Validation {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// A not-found error for a resource of `kind`.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// The stable slug of this problem type.
    pub fn slug(&self) -> &'static str {
        match self {
            Error::Validation { .. } => "invalid-field",
            Error::MalformedJson(_) => "malformed-json",
            Error::PayloadTooLarge { .. } => "payload-too-large",
            Error::RequestTimeout { .. } => "request-timeout",
            Error::UnsupportedMediaType { .. } => "unsupported-media-type",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::ModuleNotApproved { .. } => "module-not-approved",
            Error::NotFound { .. } => "not-found",
            Error::MethodNotAllowed { .. } => "method-not-allowed",
            Error::Conflict(_) => "conflict",
            Error::QuotaExceeded { .. } => "quota-exceeded",
            Error::RateLimited { .. } => "rate-limited",
            Error::GuestBusy(_) => "guest-busy",
            Error::NodeUnavailable { .. } => "node-unavailable",
            Error::PreconditionFailed { .. } => "precondition-failed",
            Error::Storage(_) => "storage",
            Error::Deposed(_) => "deposed",
            Error::DataDir { .. } => "data-directory",
            Error::KeyFile { .. } => "key-file",
            Error::Signing(_) => "signing",
            Error::Seed(_) => "seed",
            Error::Metrics(_) => "metrics",
            Error::WorkerPool(_) => "worker-pool",
            Error::Encoding(_) => "encoding",
            Error::Misconfigured(_) => "misconfigured",
            Error::Poisoned(_) => "poisoned",
        }
    }

    /// The problem's short, fixed title.
    fn title(&self) -> &'static str {
        match self {
            Error::Validation { .. } => "A field is invalid",
            Error::MalformedJson(_) => "The body is not valid JSON",
            Error::PayloadTooLarge { .. } => "The body is too large",
            Error::RequestTimeout { .. } => "The body came too slowly",
            Error::UnsupportedMediaType { .. } => "Unsupported media type",
            Error::Unauthenticated(_) => "Authentication required",
            Error::Forbidden(_) => "Forbidden",
            Error::ModuleNotApproved { .. } => "Module not approved",
            Error::NotFound { .. } => "Not found",
            Error::MethodNotAllowed { .. } => "Method not allowed",
            Error::Conflict(_) => "Conflict",
            Error::QuotaExceeded { .. } => "Quota exceeded",
            Error::RateLimited { .. } => "Too many requests",
            Error::GuestBusy(_) => "The guest is busy",
            Error::NodeUnavailable { .. } => "The VM's node is unavailable",
            Error::PreconditionFailed { .. } => "Precondition failed",
            Error::Storage(_) => "Storage failure",
            Error::WorkerPool(_) | Error::Deposed(_) => "Unavailable",
            Error::DataDir { .. }
            | Error::KeyFile { .. }
            | Error::Signing(_)
            | Error::Seed(_)
            | Error::Metrics(_)
            | Error::Encoding(_)
            | Error::Misconfigured(_)
            | Error::Poisoned(_) => "Internal error",
        }
    }

    /// The RFC 9457 body of this error.
    pub fn problem(&self) -> Problem {
        let (field, quota) = match self {
            Error::Validation { field, .. } => (Some(field.clone()), None),
            Error::QuotaExceeded { quota, .. } => (None, Some((*quota).to_string())),
            Error::RateLimited { limit, .. } => (None, Some((*limit).to_string())),
            _ => (None, None),
        };
        let detail = if self.status_code() == StatusCode::INTERNAL_SERVER_ERROR {
            // The operator's log has the details; a caller learns only that it failed.
            "the control plane failed internally; its log says why".to_string()
        } else {
            self.to_string()
        };
        Problem {
            r#type: format!("urn:modvisor:problem:{}", self.slug()),
            title: self.title().to_string(),
            status: self.status_code().as_u16(),
            detail,
            field,
            quota,
            request_id: None,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Storage(format!("corrupt record: {e}"))
    }
}

pub use modvisor_node_api::problem::Problem;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Validation { .. } | Error::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::ModuleNotApproved { .. } => StatusCode::FORBIDDEN,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) | Error::QuotaExceeded { .. } => StatusCode::CONFLICT,
            Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Error::RateLimited { .. } | Error::GuestBusy(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::NodeUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Storage(_) | Error::WorkerPool(_) | Error::Deposed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::DataDir { .. }
            | Error::KeyFile { .. }
            | Error::Signing(_)
            | Error::Seed(_)
            | Error::Metrics(_)
            | Error::Encoding(_)
            | Error::Misconfigured(_)
            | Error::Poisoned(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        if matches!(self, Error::Unauthenticated(_)) {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"modvisor\""));
        }
        if let Error::RateLimited {
            retry_after_secs, ..
        } = self
        {
            resp.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        if let Error::MethodNotAllowed { allowed, .. } = self {
            resp.insert_header((header::ALLOW, allowed.join(", ")));
        }
        if matches!(self, Error::GuestBusy(_)) {
            resp.insert_header((header::RETRY_AFTER, "1"));
        }
        match serde_json::to_vec(&self.problem()) {
            Ok(body) => resp.body(body),
            Err(e) => {
                tracing::error!(error = %e, "encoding a problem");
                resp.body(format!("{{\"status\":{}}}", self.status_code().as_u16()))
            }
        }
    }
}
