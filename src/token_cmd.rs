//! `modvisor token ...`: tokens issued offline with the data directory's key (`issue`,
//! for bootstrapping and recovery; not listed), and listed tokens through the API
//! (`create`, `list`, `revoke`).

use crate::client::ApiArgs;
use crate::table::render;
use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use modvisor_control_plane::auth::{role_of, Role, TokenKeys};
use modvisor_control_plane::ca::ClusterCa;
use modvisor_control_plane::store::{Datastore, StoreLocation};
use modvisor_control_plane_api::types::{IssueToken, TokenRecord, TokenRole};
use std::path::{Path, PathBuf};

/// `modvisor token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token signed offline with DATA_DIR's key, or with the key a shared
    /// store keeps (`--store etcd://...`); not listed, and no control plane need run.
    /// Its id goes to stderr, for `token revoke`.
    Issue {
        /// Data directory holding the signing key.
        #[arg(long, default_value_os_t = crate::default_data_dir())]
        data_dir: PathBuf,
        /// The replicas' shared store (`etcd://HOST:PORT,...[/ROOT]`) holding the key,
        /// instead of DATA_DIR.
        #[arg(long, env = "MODVISOR_STORE")]
        store: Option<StoreLocation>,
        #[command(flatten)]
        spec: TokenSpec,
    },
    /// Issue a listed, revocable token through the API (admin) and print it.
    Create {
        #[command(flatten)]
        spec: TokenSpec,
    },
    /// List the caller's own tokens (`--all`: every token, admin).
    List {
        /// Every listed token (admin).
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by its id (admins any, tenants their own).
    Revoke {
        /// The token's id (jti).
        jti: String,
    },
}

/// What a new token is.
#[derive(Debug, clap::Args)]
pub struct TokenSpec {
    /// The token's role (through the API: admin, tenant, bootstrap or metrics).
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The tenant (required for --role tenant, refused otherwise).
    #[arg(long)]
    tenant: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Subject; defaults to the tenant name or the role.
    #[arg(long)]
    sub: Option<String>,
}

/// A role as given on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Operator.
    Admin,
    /// Tenant.
    Tenant,
    /// Node agent.
    Node,
    /// May only register a node agent.
    Bootstrap,
    /// May only read /metrics (a Prometheus scraper).
    Metrics,
}

impl RoleArg {
    fn listed(self) -> TokenRole {
        match self {
            RoleArg::Admin => TokenRole::Admin,
            RoleArg::Tenant => TokenRole::Tenant,
            RoleArg::Node => TokenRole::Node,
            RoleArg::Bootstrap => TokenRole::Bootstrap,
            RoleArg::Metrics => TokenRole::Metrics,
        }
    }
}

fn token_rows(items: &[TokenRecord]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| {
            vec![
                t.jti.clone(),
                crate::table::name_of(&t.role),
                t.sub.clone(),
                t.tenant.clone().unwrap_or_else(|| "-".into()),
                t.expires_at.clone(),
                t.revoked_at.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render(
        &["JTI", "ROLE", "SUB", "TENANT", "EXPIRES", "REVOKED"],
        &rows,
    )
}

/// Runs a `token` subcommand.
pub fn token(api: &ApiArgs, cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Issue {
            data_dir,
            store,
            spec,
        } => issue_offline(data_dir, store, spec),
        TokenCommand::Create { spec } => {
            let issued = api.client()?.issue_token(&IssueToken {
                role: spec.role.listed(),
                tenant: spec.tenant,
                sub: spec.sub,
                ttl_secs: spec.ttl,
            })?;
            eprintln!("token id (jti) {}", issued.record.jti);
            println!("{}", issued.token);
            Ok(())
        }
        TokenCommand::List { all } => {
            let client = api.client()?;
            let items = if all {
                client.list_tokens()?
            } else {
                client.my_tokens()?
            };
            if api.json() {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("{}", token_rows(&items));
            }
            Ok(())
        }
        TokenCommand::Revoke { jti } => {
            api.client()?.revoke_token(&jti)?;
            println!("revoked {jti}");
            Ok(())
        }
    }
}

/// The signing key and the CA: the shared store's, or DATA_DIR's files.
fn secrets_of(data_dir: &Path, store: Option<StoreLocation>) -> Result<(TokenKeys, ClusterCa)> {
    if let Some(location) = store {
        if let StoreLocation::Sled(_) = location {
            bail!("--store is for a shared store (etcd://...); for sled use --data-dir");
        }
        let kv = location
            .open()
            .with_context(|| format!("opening {location}"))?;
        return Ok(modvisor_control_plane::server::shared_secrets(
            &Datastore::new(kv),
        )?);
    }
    let key = data_dir.join(modvisor_control_plane::auth::KEY_FILE);
    if !key.exists() {
        bail!(
            "no signing key at {}: run `modvisor up --data-dir {}` first",
            key.display(),
            data_dir.display()
        );
    }
    Ok((
        TokenKeys::load_or_create(data_dir)?,
        ClusterCa::load_or_create(data_dir)?,
    ))
}

fn issue_offline(data_dir: PathBuf, store: Option<StoreLocation>, spec: TokenSpec) -> Result<()> {
    let TokenSpec {
        role,
        tenant,
        ttl,
        sub,
    } = spec;
    let role = role_of(role.listed());
    match (role, &tenant) {
        (Role::Tenant, None) => bail!("--role tenant needs --tenant NAME"),
        (_, Some(_)) if role != Role::Tenant => bail!("--tenant is only for --role tenant"),
        _ => {}
    }
    if let Some(t) = &tenant {
        modvisor_control_plane::validate::resource_name("--tenant", t)?;
    }
    let (keys, ca) = secrets_of(&data_dir, store)?;
    let sub = sub
        .or_else(|| tenant.clone())
        .unwrap_or_else(|| role.name().to_string());
    let issued = match role {
        // A bootstrap token pins the CA, so that a node can trust the control plane.
        Role::Bootstrap => keys.issue_bootstrap(&sub, ttl, ca.cert_sha256()?)?,
        _ => keys.issue(&sub, role, tenant.as_deref(), ttl)?,
    };
    eprintln!(
        "token id (jti) {}: signed offline, so not listed; an admin revokes it with `modvisor token revoke {}`",
        issued.claims.jti, issued.claims.jti
    );
    println!("{}", issued.token);
    Ok(())
}

/// What a token says of its holder (its claims, read without checking the signature:
/// the control plane's answer below is the check).
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Claims {
    sub: String,
    role: Option<String>,
    tenant: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<u64>,
    jti: Option<String>,
}

fn claims_of(token: &str) -> Result<Claims> {
    use base64::Engine;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("the token file does not hold a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| anyhow::anyhow!("the token's claims are not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("the token's claims: {e}"))
}

/// `modvisor whoami`: who the token file says the caller is, and whether the control
/// plane takes it (a token it refuses is the one-line error, and a non-zero exit).
pub fn whoami(args: &ApiArgs) -> Result<()> {
    let claims = claims_of(&args.token()?)?;
    // The control plane's word: any authenticated caller may list its own tokens.
    args.client()?.my_tokens()?;
    if args.json() {
        println!("{}", serde_json::to_string_pretty(&claims)?);
        return Ok(());
    }
    let left = claims
        .exp
        .map(|e| e.saturating_sub(modvisor_control_plane::auth::unix_now()));
    println!(
        "{} (role {}{}), token {}, expires in {}; {} takes it",
        claims.sub,
        claims.role.as_deref().unwrap_or("-"),
        claims
            .tenant
            .as_deref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default(),
        claims.jti.as_deref().unwrap_or("-"),
        left.map(|s| format!("{s} s"))
            .unwrap_or_else(|| "never".into()),
        args.api_url()?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_from_the_middle_part() {
        use base64::Engine;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"tenant-a","role":"tenant","tenant":"tenant-a","exp":5,"jti":"j"}"#);
        let c = claims_of(&format!("h.{body}.s")).unwrap();
        assert_eq!((c.sub.as_str(), c.exp), ("tenant-a", Some(5)));
        assert!(claims_of("garbage").is_err());
        assert!(claims_of("a.!!!.c").is_err());
    }
}
