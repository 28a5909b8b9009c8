//! `modvisor up`, `modvisor control-plane` and `modvisor token`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use modvisor_control_plane::auth::{Role, TokenKeys};
use modvisor_control_plane::server::DEFAULT_MAX_MODULE_BYTES;
use modvisor_control_plane::{Config, ControlPlane};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `modvisor up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory: sled store, signing key, tokens.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Lifetime of the tokens written to DATA_DIR/tokens, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    token_ttl: u64,
}

/// Arguments of `modvisor control-plane`.
#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Data directory: sled store and signing key.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// Address of the API (port 0 picks a free port; see DATA_DIR/control-plane.addr).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Largest module upload accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MODULE_BYTES)]
    max_module_bytes: usize,
    /// HTTP worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
}

/// `modvisor token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token signed with DATA_DIR's key.
    Issue {
        /// Data directory holding the signing key.
        #[arg(long, default_value_os_t = crate::default_data_dir())]
        data_dir: PathBuf,
        /// The token's role.
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
    },
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
}

fn runtime() -> Result<actix_web::rt::SystemRunner> {
    Ok(actix_web::rt::System::new())
}

/// `modvisor up`: the control plane with default tenants and their tokens.
pub fn up(args: UpArgs) -> Result<()> {
    let cp = ControlPlane::open(Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
        workers: None,
    })
    .with_context(|| format!("opening {}", args.data_dir.display()))?;
    let tokens = cp.bootstrap(args.token_ttl)?;
    let data_dir = args.data_dir.clone();
    runtime()?.block_on(cp.serve(move |addr| {
        let api = format!("http://{addr}");
        println!("modvisor is up (control plane with sled store in {})", data_dir.display());
        println!("  API:        {api}/v1");
        println!("  OpenAPI:    {api}/openapi.json");
        println!("  Metrics:    {api}/metrics");
        println!("  Dashboard:  {api}/  (paste a token)");
        for (who, path) in &tokens {
            println!("  token {who:<9} {}", path.display());
        }
        let a = tokens.iter().find(|(w, _)| w == "tenant-a").map(|(_, p)| p.display().to_string()).unwrap_or_default();
        println!("Try, as tenant A:");
        println!(
            "  curl -s -H \"Authorization: Bearer $(cat {a})\" -H 'Content-Type: application/json' \\\n       -d '{{\"name\":\"web-1\",\"vcpus\":1,\"memory_mib\":256}}' {api}/v1/vms"
        );
        println!("  MODVISOR_API={api} MODVISOR_TOKEN_FILE={a} modvisor vm list");
        println!("Stop with Ctrl-C.");
    }))?;
    Ok(())
}

/// `modvisor control-plane`.
pub fn control_plane(args: ControlPlaneArgs) -> Result<()> {
    if args.max_module_bytes == 0 {
        bail!("--max-module-bytes must be positive");
    }
    let cp = ControlPlane::open(Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        max_module_bytes: args.max_module_bytes,
        workers: args.workers,
    })
    .with_context(|| format!("opening {}", args.data_dir.display()))?;
    runtime()?.block_on(cp.serve(|addr| {
        tracing::info!(%addr, "control plane listening");
    }))?;
    Ok(())
}

/// `modvisor token issue`.
pub fn token(cmd: TokenCommand) -> Result<()> {
    let TokenCommand::Issue {
        data_dir,
        role,
        tenant,
        ttl,
        sub,
    } = cmd;
    let role = match role {
        RoleArg::Admin => Role::Admin,
        RoleArg::Tenant => Role::Tenant,
        RoleArg::Node => Role::Node,
    };
    match (role, &tenant) {
        (Role::Tenant, None) => bail!("--role tenant needs --tenant NAME"),
        (Role::Admin | Role::Node, Some(_)) => bail!("--tenant is only for --role tenant"),
        _ => {}
    }
    if let Some(t) = &tenant {
        modvisor_control_plane::validate::resource_name("--tenant", t)?;
    }
    let key = data_dir.join(modvisor_control_plane::auth::KEY_FILE);
    if !key.exists() {
        bail!(
            "no signing key at {}: run `modvisor up --data-dir {}` first",
            key.display(),
            data_dir.display()
        );
    }
    let keys = TokenKeys::load_or_create(&data_dir)?;
    let sub = sub
        .or_else(|| tenant.clone())
        .unwrap_or_else(|| format!("{role:?}").to_lowercase());
    println!("{}", keys.issue(&sub, role, tenant.as_deref(), ttl)?);
    Ok(())
}
