//! Request extractors: the authenticated [`Caller`], strictly parsed JSON bodies and raw
//! uploads, each failing with a problem+json error.

use crate::api::AppState;
use crate::auth::{Caller, Role};
use crate::error::Error;
use crate::metrics::AuthFailure;
use crate::store::VmFilter;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// How long a request body may take to arrive in full unless configured.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest JSON body any route accepts.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, Error> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| Error::Misconfigured("application state missing".into()))
}

impl FromRequest for Caller {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(authenticate(req))
    }
}

/// The bearer token of a request.
fn bearer(req: &HttpRequest) -> Result<&str, Error> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthenticated("missing Authorization: Bearer token".into()))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("Authorization header is not ASCII".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Error::Unauthenticated("expected Authorization: Bearer <token>".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::Unauthenticated(
            "expected Authorization: Bearer <token>".into(),
        ));
    }
    Ok(token.trim())
}

/// The caller of a registration: as [`Caller`], and also a node presenting its own
/// credential past its expiry (a node down for longer than its credential's life). That
/// credential must still be unrevoked and bound to the name; the store checks the binding.
pub struct RegisteringCaller(pub Caller);

impl FromRequest for RegisteringCaller {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // A refusal counts only once the expired-credential path has refused too.
        std::future::ready(match check_credentials(req, false) {
            Ok(caller) => Ok(RegisteringCaller(caller)),
            Err(Error::Unauthenticated(_)) => match expired_node_credential(req) {
                Some(c) => Ok(RegisteringCaller(c)),
                None => authenticate(req).map(RegisteringCaller),
            },
            Err(other) => Err(other),
        })
    }
}

/// A node token that fails only on its expiry and is not revoked, if that is what `req`
/// presents.
fn expired_node_credential(req: &HttpRequest) -> Option<Caller> {
    let state = state(req).ok()?;
    let caller = state.keys.verify_ignoring_expiry(bearer(req).ok()?).ok()?;
    let unrevoked = matches!(state.store.is_revoked(&caller.jti), Ok(false));
    (caller.role == Role::Node && unrevoked).then_some(caller)
}

fn authenticate(req: &HttpRequest) -> Result<Caller, Error> {
    check_credentials(req, true)
}

/// Authenticates `req`; with `count`, a refusal is counted in the metrics by its reason.
fn check_credentials(req: &HttpRequest, count: bool) -> Result<Caller, Error> {
    let state = state(req)?;
    let refused = |why: AuthFailure, e: Error| {
        if count {
            state.metrics.auth_failure(why);
        }
        e
    };
    let token = bearer(req).map_err(|e| refused(AuthFailure::Missing, e))?;
    let caller = state.keys.verify(token).map_err(|e| match &e {
        Error::Unauthenticated(m) if m.contains(modvisor_auth::EXPIRED) => {
            refused(AuthFailure::Expired, e)
        }
        Error::Unauthenticated(_) => refused(AuthFailure::Invalid, e),
        _ => e,
    })?;
    // After the signature (which a cache may have vouched for): revocations count at once.
    let (revoked, record) = state
        .standing
        .token_standing(&caller.jti, caller.tenant.as_deref())?;
    if revoked {
        return Err(refused(
            AuthFailure::Revoked,
            Error::Unauthenticated("invalid token: it was revoked".into()),
        ));
    }
    if let Some(t) = &caller.tenant {
        let tenant = record.ok_or_else(|| {
            refused(
                AuthFailure::UnknownTenant,
                Error::Unauthenticated(format!("invalid token: tenant {t} does not exist")),
            )
        })?;
        // Counted in flight until the request is done (its extensions are dropped then).
        let in_flight = state.limits.admit_api(t, &tenant.quota)?;
        req.extensions_mut().insert(in_flight);
    }
    Ok(caller)
}

impl Caller {
    /// Succeeds for admins only.
    pub fn require_admin(&self) -> Result<(), Error> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(Error::Forbidden("this endpoint is for admins".into())),
        }
    }

    /// Admins and metrics tokens (a Prometheus scraper) may read metrics; others are refused.
    pub fn require_metrics_reader(&self) -> Result<(), Error> {
        match self.role {
            Role::Admin | Role::Metrics => Ok(()),
            _ => Err(Error::Forbidden(
                "metrics are for admin and metrics tokens".into(),
            )),
        }
    }

    /// The tenant of a tenant token; admins and nodes are refused.
    pub fn require_tenant(&self) -> Result<&str, Error> {
        match (self.role, &self.tenant) {
            (Role::Tenant, Some(t)) => Ok(t),
            _ => Err(Error::Forbidden(
                "this endpoint is for tenants: use a tenant token".into(),
            )),
        }
    }

    /// What the caller may see: everything for admins, its own for tenants; nodes are
    /// refused (they may only call node endpoints).
    pub fn scope(&self) -> Result<VmFilter<'_>, Error> {
        match (self.role, &self.tenant) {
            (Role::Admin, _) => Ok(VmFilter::All),
            (Role::Tenant, Some(t)) => Ok(VmFilter::Tenant(t)),
            _ => Err(Error::Forbidden(
                "this token's role may only call its own endpoints (node, bootstrap, metrics)"
                    .into(),
            )),
        }
    }
}

/// A JSON body parsed strictly: `Content-Type: application/json`, at most
/// [`MAX_JSON_BYTES`], no unknown fields; errors name the offending field.
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for StrictJson<T> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let media = content_type(req);
        let body = read_body(req, payload, MAX_JSON_BYTES);
        Box::pin(async move {
            if media != "application/json" {
                return Err(Error::UnsupportedMediaType {
                    expected: "application/json",
                });
            }
            let bytes = body.await?;
            // Every body of this API is an object; serde would also take a struct as an array.
            match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => parse_json(&bytes).map(StrictJson),
                Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() => {
                    Err(Error::invalid("body", "must be a JSON object"))
                }
                _ => parse_json(&bytes).map(StrictJson),
            }
        })
    }
}

/// Query parameters parsed strictly: unknown parameters and bad values are 400 naming
/// the parameter.
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequest for StrictQuery<T> {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(req.query_string()));
        let parsed = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let detail = e.into_inner().to_string();
            Error::invalid(field_of(&path, &detail).replace("body", "query"), detail)
        });
        std::future::ready(parsed.map(StrictQuery))
    }
}

fn form_urlencoded_parse(q: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.as_bytes())
}

/// Parses JSON, mapping failures to `MalformedJson` or to `Validation` naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                Error::MalformedJson(inner.to_string())
            }
            Category::Data => {
                let msg = inner.to_string();
                let detail = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                Error::invalid(field_of(&path, &detail), detail)
            }
        }
    })?;
    // Trailing garbage after the value is malformed too.
    de.end().map_err(|e| Error::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// The field an error is about: the path, or for missing fields the name the message
/// quotes (serde reports those at the parent's path).
fn field_of(path: &str, detail: &str) -> String {
    let quoted = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| detail.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (path, quoted) {
        (p, Some(q)) if p == q || p.ends_with(&format!(".{q}")) => p.to_string(),
        (".", Some(q)) => q.to_string(),
        (p, Some(q)) => format!("{p}.{q}"),
        (".", None) => "body".to_string(),
        (p, None) => p.to_string(),
    }
}

/// The media type (without parameters) of a request, lowercased.
pub fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads the whole body, refusing more than `limit` bytes.
pub fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> LocalBoxFuture<'static, Result<Vec<u8>, Error>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut payload = payload.take();
    let within = req
        .app_data::<web::Data<AppState>>()
        .map_or(DEFAULT_BODY_TIMEOUT, |s| s.body_timeout);
    Box::pin(async move {
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(Error::PayloadTooLarge { limit });
        }
        let read = async {
            let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|e| Error::MalformedJson(format!("reading the body: {e}")))?;
                if body.len() + chunk.len() > limit {
                    return Err(Error::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        actix_web::rt::time::timeout(within, read)
            .await
            .map_err(|_| Error::RequestTimeout { within })?
    })
}

/// The `If-Match` header, if any.
pub fn if_match(req: &HttpRequest) -> Result<Option<String>, Error> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    if v.len() > MAX_IF_MATCH_BYTES {
        return Err(Error::invalid(
            "If-Match",
            format!("is over {MAX_IF_MATCH_BYTES} bytes (an ETag is a quoted generation)"),
        ));
    }
    v.to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| Error::invalid("If-Match", "is not ASCII"))
}

/// Longest `If-Match` header accepted (ETags here are a quoted number).
pub const MAX_IF_MATCH_BYTES: usize = 128;

/// Runs a blocking store operation (one that flushes to disk) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    // The request's span (its id) follows the work onto the pool's thread.
    let span = tracing::Span::current();
    web::block(move || span.in_scope(f))
        .await
        .map_err(|e| Error::WorkerPool(e.to_string()))?
}

/// Runs a store read: inline where reads are local (sled: microseconds), and on the
/// blocking pool where each is a round trip (etcd), so that the worker serves other
/// requests meanwhile.
pub async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if state.store.reads_are_remote() {
        blocking(f).await
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VmSpec;

    fn err(json: &str) -> Error {
        parse_json::<VmSpec>(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"name":"a","vcpus":"two","memory_mib":128}"#);
        assert!(
            matches!(&e, Error::Validation { field, .. } if field == "vcpus"),
            "{e:?}"
        );
        let e = err(r#"{"name":"a","vcpus":1,"memory_mib":128,"colour":1}"#);
        assert!(
            matches!(&e, Error::Validation { field, .. } if field == "colour"),
            "{e:?}"
        );
        let e = err(r#"{"name":"a","vcpus":1}"#);
        assert!(
            matches!(&e, Error::Validation { field, .. } if field == "memory_mib"),
            "{e:?}"
        );
        let e = err(r#"{"name":"a","vcpus":1,"memory_mib":128,"modules":[{"name":"x","bad":1}]}"#);
        assert!(
            matches!(&e, Error::Validation { field, .. } if field == "modules[0].bad"),
            "{e:?}"
        );
        assert!(matches!(err("{"), Error::MalformedJson(_)));
        let trailing = r#"{"name":"a","vcpus":1,"memory_mib":128} x"#;
        assert!(matches!(err(trailing), Error::MalformedJson(_)));
    }
}
