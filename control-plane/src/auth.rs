//! Authentication: the Ed25519 signing key on disk and the EdDSA JWTs it signs.
//!
//! Only `EdDSA` is accepted; every token must carry `sub`, `role`, `aud = "modvisor"`,
//! `iat`, `exp` and `jti`, and tenant tokens a `tenant`.

use crate::error::{Error, Result};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use utoipa::ToSchema;

/// The audience every modvisor token names.
pub const AUDIENCE: &str = "modvisor";
/// Where, under the data directory, the signing key lives.
pub const KEY_FILE: &str = "keys/jwt-ed25519.pem";
/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// What a token's holder is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
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
}

/// Most verified tokens remembered (the cache is emptied when full).
const VERIFIED_CACHE_MAX: usize = 4096;
/// Tokens longer than this are never remembered.
const VERIFIED_TOKEN_MAX: usize = 4096;

/// Signs and verifies tokens with one Ed25519 key.
pub struct TokenKeys {
    public_pem: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens whose signature and claims were verified, with their `exp`, so that a
    /// client's every request does not pay for an Ed25519 verification. Keyed by the
    /// exact token text; `exp` is checked again on every hit.
    verified: Mutex<HashMap<String, (Caller, u64)>>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKeys {
    /// Loads the signing key from `data_dir`, creating it (mode 0600, in a 0700
    /// directory) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let storage = |e: std::io::Error| Error::Storage(format!("{}: {e}", path.display()));
        if !path.exists() {
            let dir = path.parent().unwrap_or(data_dir);
            fs::create_dir_all(dir).map_err(storage)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(storage)?;
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| Error::Storage(format!("no randomness: {e}")))?;
            let key = SigningKey::from_bytes(&seed);
            let pem = key
                .to_pkcs8_pem(Default::default())
                .map_err(|e| Error::Storage(format!("encoding the key: {e}")))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(storage)?;
            f.write_all(pem.as_bytes()).map_err(storage)?;
            f.sync_all().map_err(storage)?;
        }
        let mode = fs::metadata(&path).map_err(storage)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Storage(format!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            )));
        }
        let pem = fs::read_to_string(&path).map_err(storage)?;
        Self::from_pkcs8_pem(&pem)
    }

    /// Keys from a PKCS#8 PEM Ed25519 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        let bad = |e: String| Error::Storage(format!("unusable signing key: {e}"));
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| bad(e.to_string()))?;
        let public = key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| bad(e.to_string()))?;
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let decoding =
            DecodingKey::from_ed_pem(public.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["sub", "aud", "exp", "iat"]);
        validation.leeway = LEEWAY_SECS;
        Ok(TokenKeys {
            public_pem: public.to_string(),
            encoding,
            decoding,
            validation,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The public key, PEM (SPKI): what a node needs to verify the control plane's calls.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// A verifier of tokens signed by the holder of `public_pem` (a node verifying the
    /// control plane). It cannot issue tokens.
    pub fn verifier(public_pem: &str) -> Result<TokenVerifier> {
        let decoding = DecodingKey::from_ed_pem(public_pem.as_bytes())
            .map_err(|e| Error::Storage(format!("unusable public key: {e}")))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["sub", "aud", "exp", "iat"]);
        validation.leeway = LEEWAY_SECS;
        Ok(TokenVerifier {
            decoding,
            validation,
        })
    }

    /// Issues a token for `sub` valid for `ttl_secs`.
    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        tenant: Option<&str>,
        ttl_secs: u64,
    ) -> Result<String> {
        let iat = unix_now();
        let claims = Claims {
            sub: sub.to_string(),
            role,
            tenant: tenant.map(str::to_string),
            aud: AUDIENCE.to_string(),
            iat,
            exp: iat.saturating_add(ttl_secs),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|e| Error::Storage(format!("signing a token: {e}")))
    }

    /// Verifies a token and says who holds it. Every failure is `Unauthenticated`.
    pub fn verify(&self, token: &str) -> Result<Caller> {
        let now = unix_now();
        if let Ok(cache) = self.verified.lock() {
            if let Some((caller, exp)) = cache.get(token) {
                if now <= exp.saturating_add(LEEWAY_SECS) {
                    return Ok(caller.clone());
                }
            }
        }
        let (caller, exp) = self.verify_uncached(token)?;
        if token.len() <= VERIFIED_TOKEN_MAX {
            if let Ok(mut cache) = self.verified.lock() {
                if cache.len() >= VERIFIED_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(token.to_string(), (caller.clone(), exp));
            }
        }
        Ok(caller)
    }

    fn verify_uncached(&self, token: &str) -> Result<(Caller, u64)> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Error::Unauthenticated(format!("invalid token: {e}")))?;
        let c = data.claims;
        if c.jti.is_empty() || c.sub.is_empty() {
            return Err(Error::Unauthenticated(
                "invalid token: empty sub or jti".into(),
            ));
        }
        match (c.role, &c.tenant) {
            (Role::Tenant, None) => {
                return Err(Error::Unauthenticated(
                    "invalid token: a tenant token must name its tenant".into(),
                ))
            }
            (Role::Admin | Role::Node | Role::Bootstrap | Role::ControlPlane, Some(_)) => {
                return Err(Error::Unauthenticated(
                    "invalid token: only tenant tokens name a tenant".into(),
                ))
            }
            _ => {}
        }
        Ok((
            Caller {
                sub: c.sub,
                role: c.role,
                tenant: c.tenant,
            },
            c.exp,
        ))
    }
}

/// Verifies tokens with a public key only.
pub struct TokenVerifier {
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// Verifies a token; every failure is `Unauthenticated`.
    pub fn verify(&self, token: &str) -> Result<Caller> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Error::Unauthenticated(format!("invalid token: {e}")))?;
        Ok(Caller {
            sub: data.claims.sub,
            role: data.claims.role,
            tenant: data.claims.tenant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_tokens_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let t = keys
            .issue("alice", Role::Tenant, Some("tenant-a"), 60)
            .unwrap();
        let again = TokenKeys::load_or_create(dir.path()).unwrap();
        let caller = again.verify(&t).unwrap();
        assert_eq!(caller.tenant.as_deref(), Some("tenant-a"));
        assert_eq!(caller.role, Role::Tenant);
    }

    #[test]
    fn group_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        TokenKeys::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(TokenKeys::load_or_create(dir.path()).is_err());
    }

    #[test]
    fn tokens_of_another_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        let foreign = TokenKeys::load_or_create(other.path())
            .unwrap()
            .issue("a", Role::Admin, None, 60)
            .unwrap();
        assert!(matches!(
            keys.verify(&foreign),
            Err(Error::Unauthenticated(_))
        ));
    }
}
