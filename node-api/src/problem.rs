//! Problem details (RFC 9457), the error body of every modvisor API.

use serde::{Deserialize, Serialize};

/// Media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Problem details for HTTP APIs (RFC 9457).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI identifying the problem type (`urn:modvisor:problem:<slug>`); stable.
    pub r#type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// An explanation specific to this occurrence.
    pub detail: String,
    /// The offending field (a JSON path or parameter name), where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The quota that would be exceeded, for `quota-exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// The request's id (its `X-Request-Id`, taken or made), as the server's logs name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    /// The stable slug of its type (`not-found`, ...), or the whole type if it is not a
    /// modvisor problem.
    pub fn slug(&self) -> &str {
        self.r#type
            .strip_prefix("urn:modvisor:problem:")
            .unwrap_or(&self.r#type)
    }
}
