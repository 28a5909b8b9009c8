//! Authentication: the Ed25519 signing key on disk and the EdDSA JWTs it signs.
//!
//! Only `EdDSA` is accepted; every token must carry `sub`, `role`, `aud = "modvisor"`,
//! `iat`, `exp` and `jti`, and tenant tokens a `tenant`.

use crate::error::{Error, Result};
use crate::model::{rfc3339, TokenRecord, TokenRole};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
pub use modvisor_auth::{
    node_audience, unix_now, AuthError, Claims, Role, TokenVerifier, AUDIENCE, LEEWAY_SECS,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Where, under the data directory, the signing key lives.
pub const KEY_FILE: &str = "keys/jwt-ed25519.pem";

/// Who is calling the control plane, as established from a verified token: the verifier's
/// [`modvisor_auth::Caller`] (its fields read through `Deref`), in a type of this crate so
/// that the API's extractors and scope checks can hang off it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(modvisor_auth::Caller);

impl From<modvisor_auth::Caller> for Caller {
    fn from(c: modvisor_auth::Caller) -> Self {
        Caller(c)
    }
}

impl std::ops::Deref for Caller {
    type Target = modvisor_auth::Caller;

    fn deref(&self) -> &modvisor_auth::Caller {
        &self.0
    }
}

/// The listed role of `role` (`None` for tokens that are never listed).
pub fn token_role(role: Role) -> Option<TokenRole> {
    match role {
        Role::Admin => Some(TokenRole::Admin),
        Role::Tenant => Some(TokenRole::Tenant),
        Role::Node => Some(TokenRole::Node),
        Role::Bootstrap => Some(TokenRole::Bootstrap),
        Role::Metrics => Some(TokenRole::Metrics),
        Role::ControlPlane => None,
    }
}

/// The role a listed role stands for.
pub fn role_of(listed: TokenRole) -> Role {
    match listed {
        TokenRole::Admin => Role::Admin,
        TokenRole::Tenant => Role::Tenant,
        TokenRole::Node => Role::Node,
        TokenRole::Bootstrap => Role::Bootstrap,
        TokenRole::Metrics => Role::Metrics,
    }
}

/// A token just signed, with its claims.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// What it says.
    pub claims: Claims,
}

impl Issued {
    /// What is listed of it (`None` for tokens to nodes, which are never listed).
    pub fn record(&self) -> Option<TokenRecord> {
        let c = &self.claims;
        Some(TokenRecord {
            jti: c.jti.clone(),
            sub: c.sub.clone(),
            role: token_role(c.role)?,
            tenant: c.tenant.clone(),
            issued_at: rfc3339(c.iat),
            expires_at: rfc3339(c.exp),
            revoked_at: None,
        })
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidToken(_) => Error::Unauthenticated(e.to_string()),
            AuthError::UnusableKey(_) => Error::KeyFile {
                path: KEY_FILE.into(),
                detail: e.to_string(),
            },
        }
    }
}

/// Signs and verifies tokens with one Ed25519 key.
pub struct TokenKeys {
    public_pem: String,
    encoding: EncodingKey,
    verifier: TokenVerifier,
}

impl TokenKeys {
    /// Loads the signing key from `data_dir`, creating it (mode 0600, in a 0700
    /// directory) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let key_file = |detail: String| Error::KeyFile {
            path: path.display().to_string(),
            detail,
        };
        let storage = |e: std::io::Error| key_file(e.to_string());
        if !path.exists() {
            let dir = path.parent().unwrap_or(data_dir);
            fs::create_dir_all(dir).map_err(storage)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(storage)?;
            let pem = Self::generate_pem()?;
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
            return Err(key_file(format!(
                "readable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            )));
        }
        let pem = fs::read_to_string(&path).map_err(storage)?;
        Self::from_pkcs8_pem(&pem)
    }

    /// A new signing key (PKCS#8 PEM).
    pub fn generate_pem() -> Result<String> {
        let failed = |detail: String| Error::Signing(format!("making a signing key: {detail}"));
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| failed(format!("no randomness: {e}")))?;
        let pem = SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(Default::default())
            .map_err(|e| failed(e.to_string()))?;
        Ok(pem.to_string())
    }

    /// A fresh key held only in memory (tests and benchmarks that never restart).
    pub fn ephemeral() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Signing(format!("no randomness: {e}")))?;
        let pem = SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(Default::default())
            .map_err(|e| Error::Signing(format!("encoding the key: {e}")))?;
        Self::from_pkcs8_pem(&pem)
    }

    /// A new node credential for `node` and what is listed of it.
    pub fn node_credential(&self, node: &str, ttl_secs: u64) -> Result<(String, TokenRecord)> {
        let issued = self.issue(node, Role::Node, None, ttl_secs)?;
        let record = issued
            .record()
            .ok_or_else(|| Error::Signing("a node credential without a listed role".into()))?;
        Ok((issued.token, record))
    }

    /// Keys from a PKCS#8 PEM Ed25519 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        let bad = |e: String| Error::KeyFile {
            path: KEY_FILE.into(),
            detail: format!("unusable: {e}"),
        };
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| bad(e.to_string()))?;
        let public = key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| bad(e.to_string()))?;
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let verifier = TokenVerifier::from_public_pem(&public).map_err(|e| bad(e.to_string()))?;
        Ok(TokenKeys {
            public_pem: public.to_string(),
            encoding,
            verifier,
        })
    }

    /// The public key, PEM (SPKI): what a node needs to verify the control plane's calls.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Issues a token of the control plane's audience for `sub`, valid for `ttl_secs`.
    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        tenant: Option<&str>,
        ttl_secs: u64,
    ) -> Result<Issued> {
        self.sign(sub, role, tenant, AUDIENCE.to_string(), ttl_secs, None)
    }

    /// A bootstrap token pinning the CA whose certificate hashes to `ca_sha256`.
    pub fn issue_bootstrap(&self, sub: &str, ttl_secs: u64, ca_sha256: String) -> Result<Issued> {
        self.sign(
            sub,
            Role::Bootstrap,
            None,
            AUDIENCE.to_string(),
            ttl_secs,
            Some(ca_sha256),
        )
    }

    /// A token of role `control_plane` that only node `node` accepts.
    pub fn issue_to_node(&self, node: &str, ttl_secs: u64) -> Result<String> {
        let issued = self.sign(
            "control-plane",
            Role::ControlPlane,
            None,
            node_audience(node),
            ttl_secs,
            None,
        )?;
        Ok(issued.token)
    }

    fn sign(
        &self,
        sub: &str,
        role: Role,
        tenant: Option<&str>,
        aud: String,
        ttl_secs: u64,
        ca_sha256: Option<String>,
    ) -> Result<Issued> {
        let iat = unix_now();
        let claims = Claims {
            sub: sub.to_string(),
            role,
            tenant: tenant.map(str::to_string),
            aud,
            iat,
            exp: iat.saturating_add(ttl_secs),
            jti: uuid::Uuid::new_v4().to_string(),
            ca_sha256,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|e| Error::Signing(e.to_string()))?;
        Ok(Issued { token, claims })
    }

    /// Verifies a token except for its expiry (see
    /// [`TokenVerifier::verify_ignoring_expiry`]).
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Caller> {
        Ok(self.verifier.verify_ignoring_expiry(token)?.into())
    }

    /// Verifies a token and says who holds it. Every failure is `Unauthenticated`.
    pub fn verify(&self, token: &str) -> Result<Caller> {
        Ok(self.verifier.verify(token)?.into())
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
            .unwrap()
            .token;
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
            .unwrap()
            .token;
        assert!(matches!(
            keys.verify(&foreign),
            Err(Error::Unauthenticated(_))
        ));
    }
}
