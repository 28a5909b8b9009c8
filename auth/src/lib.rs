//! modvisor tokens as every service sees them: roles, claims and a verifier.
//!
//! Only `EdDSA` is accepted; every token must carry `sub`, `role`, `aud`, `iat`, `exp`
//! and `jti`, and tenant tokens (only they) a `tenant`. The control plane accepts only
//! `aud = "modvisor"`; a node accepts only tokens whose audience is its own name
//! ([`node_audience`]), so a token for one node is refused by every other. Signing lives
//! with the holder of the private key (the control plane), not here.

#![forbid(unsafe_code)]

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// The audience every modvisor token names.
pub const AUDIENCE: &str = "modvisor";
/// The audience of tokens the control plane presents to node `name`.
pub fn node_audience(name: &str) -> String {
    format!("node:{name}")
}

/// Clock skew tolerated on `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Most verified tokens remembered (the cache is emptied when full).
const VERIFIED_CACHE_MAX: usize = 4096;
/// Tokens longer than this are never remembered.
const VERIFIED_TOKEN_MAX: usize = 4096;

/// What a token's holder is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Operates the system: tenants, quotas, the module catalog.
    Admin,
    /// Uses the system: its own VMs and module requests.
    Tenant,
    /// A node agent: only node endpoints.
    Node,
    /// May only register a node (`POST /v1/nodes/register`), receiving a node token.
    Bootstrap,
    /// The control plane itself, calling a node agent's API.
    ControlPlane,
    /// May only read `/metrics` (a Prometheus scraper).
    Metrics,
}

impl Role {
    /// Its name as tokens spell it (`admin`, `control_plane`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Tenant => "tenant",
            Role::Node => "node",
            Role::Bootstrap => "bootstrap",
            Role::ControlPlane => "control_plane",
            Role::Metrics => "metrics",
        }
    }
}

/// The claims of a modvisor token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Subject: who holds the token.
    pub sub: String,
    /// The holder's role.
    pub role: Role,
    /// The tenant, for tenant tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Audience; always [`AUDIENCE`].
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// Bootstrap tokens only: the hex sha256 of the control plane's CA certificate (DER).
    /// A node checks the CA it is shown against it before it sends the token anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
}

/// The CA pin of a bootstrap token, read without verifying the token (a node cannot yet:
/// it learns the control plane's key by registering).
pub fn unverified_ca_pin(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    claims.ca_sha256
}

/// Who is calling, as established from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject.
    pub sub: String,
    /// The token's role.
    pub role: Role,
    /// The tenant, for tenant tokens.
    pub tenant: Option<String>,
    /// The token's unique id (what revocation names).
    pub jti: String,
    /// When the token expires (seconds since the epoch).
    pub exp: u64,
}

/// Why a key or a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The public key is not an Ed25519 SPKI PEM.
    #[error("unusable public key: {0}")]
    UnusableKey(String),
    /// The token is malformed, forged, expired, for another audience, or its claims do
    /// not fit its role.
    #[error("invalid token: {0}")]
    InvalidToken(String),
}

/// What a refusal of an expired token says (callers may tell expiry apart by it).
pub const EXPIRED: &str = "the token has expired";

/// Why the JWT library refused a token, in words for the caller (its own error names,
/// such as `ExpiredSignature`, are not an API).
fn why_refused(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => EXPIRED.into(),
        K::ImmatureSignature => "the token is not valid yet".into(),
        K::InvalidAudience => "the token is meant for another audience".into(),
        K::InvalidIssuer => "the token is from another issuer".into(),
        K::InvalidSubject => "the token's subject is not accepted".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
            "the token is not signed with EdDSA".into()
        }
        K::MissingRequiredClaim(claim) => format!("the token lacks the {claim:?} claim"),
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => {
            "the token is not a well-formed JWT".into()
        }
        _ => "the token is not valid".into(),
    }
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The validation every modvisor token for `audience` passes: EdDSA, that audience,
/// required claims.
pub fn validation(audience: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["sub", "aud", "exp", "iat"]);
    validation.leeway = LEEWAY_SECS;
    validation
}

/// Verifies tokens signed by the holder of one Ed25519 key.
pub struct TokenVerifier {
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens whose signature and claims were verified, with their `exp`, so that a
    /// client's every request does not pay for an Ed25519 verification. Keyed by the
    /// exact token text; `exp` is checked again on every hit.
    verified: Mutex<HashMap<String, Caller>>,
}

impl TokenVerifier {
    /// A verifier of tokens for the control plane (audience [`AUDIENCE`]) signed by the
    /// key whose public half is `public_pem` (SPKI).
    pub fn from_public_pem(public_pem: &str) -> Result<Self, AuthError> {
        Self::for_audience(public_pem, AUDIENCE)
    }

    /// A verifier of tokens for `audience` signed by the key whose public half is
    /// `public_pem` (SPKI).
    pub fn for_audience(public_pem: &str, audience: &str) -> Result<Self, AuthError> {
        let decoding = DecodingKey::from_ed_pem(public_pem.as_bytes())
            .map_err(|e| AuthError::UnusableKey(e.to_string()))?;
        Ok(TokenVerifier {
            decoding,
            validation: validation(audience),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies a token and says who holds it.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let now = unix_now();
        if let Ok(cache) = self.verified.lock() {
            if let Some(caller) = cache.get(token) {
                if now <= caller.exp.saturating_add(LEEWAY_SECS) {
                    return Ok(caller.clone());
                }
            }
        }
        let caller = self.verify_uncached(token, &self.validation)?;
        if token.len() <= VERIFIED_TOKEN_MAX {
            if let Ok(mut cache) = self.verified.lock() {
                if cache.len() >= VERIFIED_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(token.to_string(), caller.clone());
            }
        }
        Ok(caller)
    }

    /// Verifies a token as [`TokenVerifier::verify`] does except for its expiry, which is
    /// not checked: only for a node presenting its own bound (unrevoked) credential to
    /// re-register after being down for longer than the credential's life. Never cached.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Caller, AuthError> {
        let mut validation = self.validation.clone();
        validation.validate_exp = false;
        self.verify_uncached(token, &validation)
    }

    fn verify_uncached(&self, token: &str, validation: &Validation) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, validation)
            .map_err(|e| AuthError::InvalidToken(why_refused(&e)))?;
        if data.header.crit.is_some() {
            // No extension is understood here, so none may be critical.
            return Err(AuthError::InvalidToken(
                "the header names critical extensions".into(),
            ));
        }
        let c = data.claims;
        if c.iat > unix_now().saturating_add(LEEWAY_SECS) {
            return Err(AuthError::InvalidToken("issued in the future".into()));
        }
        if c.jti.is_empty() || c.sub.is_empty() {
            return Err(AuthError::InvalidToken("empty sub or jti".into()));
        }
        if c.ca_sha256.is_some() && c.role != Role::Bootstrap {
            return Err(AuthError::InvalidToken(
                "only bootstrap tokens pin a CA".into(),
            ));
        }
        match (c.role, &c.tenant) {
            (Role::Tenant, None) => {
                return Err(AuthError::InvalidToken(
                    "a tenant token must name its tenant".into(),
                ))
            }
            (
                Role::Admin | Role::Node | Role::Bootstrap | Role::ControlPlane | Role::Metrics,
                Some(_),
            ) => {
                return Err(AuthError::InvalidToken(
                    "only tenant tokens name a tenant".into(),
                ))
            }
            _ => {}
        }
        Ok(Caller {
            sub: c.sub,
            role: c.role,
            tenant: c.tenant,
            jti: c.jti,
            exp: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use jsonwebtoken::{EncodingKey, Header};

    fn keys() -> (EncodingKey, TokenVerifier) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let private = key.to_pkcs8_pem(Default::default()).unwrap();
        let public = key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        (
            EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
            TokenVerifier::from_public_pem(&public).unwrap(),
        )
    }

    fn claims(role: Role, tenant: Option<&str>, iat: u64) -> Claims {
        Claims {
            sub: "someone".into(),
            role,
            tenant: tenant.map(str::to_string),
            aud: AUDIENCE.into(),
            iat,
            exp: unix_now() + 60,
            jti: "j1".into(),
            ca_sha256: None,
        }
    }

    fn sign(key: &EncodingKey, header: &Header, c: &Claims) -> String {
        jsonwebtoken::encode(header, c, key).unwrap()
    }

    #[test]
    fn a_good_token_verifies() {
        let (key, verifier) = keys();
        let header = Header::new(Algorithm::EdDSA);
        let t = sign(&key, &header, &claims(Role::ControlPlane, None, unix_now()));
        assert_eq!(verifier.verify(&t).unwrap().role, Role::ControlPlane);
    }

    #[test]
    fn an_expired_token_verifies_only_when_expiry_is_ignored() {
        let (key, verifier) = keys();
        let mut expired = claims(Role::Node, None, unix_now() - 3600);
        expired.exp = unix_now() - 600;
        let t = sign(&key, &Header::new(Algorithm::EdDSA), &expired);
        // Said in words, not in the JWT library's error names.
        match verifier.verify(&t) {
            Err(AuthError::InvalidToken(why)) => assert_eq!(why, "the token has expired"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            verifier.verify_ignoring_expiry(&t).unwrap().role,
            Role::Node
        );
        // Everything else is still checked.
        let forged = format!("{}x", &t[..t.len() - 1]);
        assert!(verifier.verify_ignoring_expiry(&forged).is_err());
    }

    #[test]
    fn role_names_are_their_serde_names() {
        for role in [
            Role::Admin,
            Role::Tenant,
            Role::Node,
            Role::Bootstrap,
            Role::ControlPlane,
            Role::Metrics,
        ] {
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::Value::String(role.name().into())
            );
        }
    }

    #[test]
    fn a_token_for_one_audience_is_refused_by_another() {
        let (key, _) = keys();
        let public = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        let node_a = TokenVerifier::for_audience(&public, &node_audience("a")).unwrap();
        let node_b = TokenVerifier::for_audience(&public, &node_audience("b")).unwrap();
        let control_plane = TokenVerifier::from_public_pem(&public).unwrap();
        let mut for_a = claims(Role::ControlPlane, None, unix_now());
        for_a.aud = node_audience("a");
        let t = sign(&key, &Header::new(Algorithm::EdDSA), &for_a);
        assert_eq!(node_a.verify(&t).unwrap().jti, "j1");
        assert!(node_b.verify(&t).is_err(), "node b took a token for node a");
        assert!(control_plane.verify(&t).is_err());
    }

    #[test]
    fn shapes_either_side_refuses_are_refused_by_both() {
        let (key, verifier) = keys();
        let header = Header::new(Algorithm::EdDSA);
        let now = unix_now();
        let mut empty_sub = claims(Role::ControlPlane, None, now);
        empty_sub.sub.clear();
        let mut empty_jti = claims(Role::ControlPlane, None, now);
        empty_jti.jti.clear();
        let mut critical = Header::new(Algorithm::EdDSA);
        critical.crit = Some(vec!["exp".into()]);
        for (what, token) in [
            ("empty sub", sign(&key, &header, &empty_sub)),
            ("empty jti", sign(&key, &header, &empty_jti)),
            (
                "tenant token without a tenant",
                sign(&key, &header, &claims(Role::Tenant, None, now)),
            ),
            (
                "node token naming a tenant",
                sign(&key, &header, &claims(Role::Node, Some("a"), now)),
            ),
            (
                "issued in the future",
                sign(&key, &header, &claims(Role::Admin, None, now + 3600)),
            ),
            (
                "crit header",
                sign(&key, &critical, &claims(Role::Admin, None, now)),
            ),
        ] {
            assert!(
                matches!(verifier.verify(&token), Err(AuthError::InvalidToken(_))),
                "{what} was accepted"
            );
        }
    }
}
