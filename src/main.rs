//! `modvisor`: runs the control plane (`up`, `control-plane`), issues tokens, and talks to
//! the REST API as a tenant or an admin.

mod client;
mod commands;
mod console_cmd;
mod doctor;
mod exec_cmd;
mod guest_cmd;
mod network_cmd;
mod node_cmd;
mod serve;
mod table;
mod token_cmd;
mod vmm_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// modvisor: a multi-tenant IaaS control plane that loads vetted kernel modules into
/// tenants' own guest kernels.
#[derive(Debug, Parser)]
#[command(name = "modvisor", version, about)]
struct Cli {
    /// How log lines on stderr look: `text` (colours only on a terminal) or `json` (one
    /// object a line, for a log collector).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The form of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on this machine: the control plane with its sled store; creates
    /// tenants tenant-a and tenant-b and writes their tokens.
    Up(serve::UpArgs),
    /// Check what this host needs (hypervisor, acceleration, jail, guest kernel): a
    /// table of found and missing pieces with how to get each; non-zero when one is missing.
    Doctor(doctor::DoctorArgs),
    /// Run the control plane alone.
    ControlPlane(serve::ControlPlaneArgs),
    /// Run a node agent: registers with the control plane and runs its VMs.
    NodeAgent(serve::NodeAgentArgs),
    /// Tokens: issue offline with the data directory's key, or create, list and revoke
    /// listed ones through the API.
    Token {
        #[command(subcommand)]
        command: token_cmd::TokenCommand,
    },
    /// Print an OpenAPI document: the control plane's API for tenants and admins (the
    /// default), its internal API for node agents, or the node agent's API.
    Openapi {
        /// Which document.
        #[arg(value_enum, default_value_t = OpenapiDocument::ControlPlane)]
        document: OpenapiDocument,
    },
    /// Manage VMs.
    Vm {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        command: commands::VmCommand,
    },
    /// Browse the module catalog and request modules for VMs.
    Module {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        command: commands::ModuleCommand,
    },
    /// A tenant's private networks.
    Network {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        command: network_cmd::NetworkCommand,
    },
    /// The nodes (admin): list, get, cordon, uncordon, drain.
    Node {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        command: node_cmd::NodeCommand,
    },
    /// Manage tenants and quotas (admin).
    Tenant {
        #[command(flatten)]
        api: client::ApiArgs,
        #[command(subcommand)]
        command: commands::TenantCommand,
    },
    /// Who the token file says you are, and whether the control plane takes it.
    Whoami {
        #[command(flatten)]
        api: client::ApiArgs,
    },
    /// Show the audit trail.
    Events {
        #[command(flatten)]
        api: client::ApiArgs,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Real guests on this machine: fetch the guest kernel, boot a guest, load modules.
    Guest {
        #[command(subcommand)]
        command: guest_cmd::GuestCommand,
    },
    /// Run one VM in this process with our KVM VMM until it halts, shuts down or crashes.
    Vmm(vmm_cmd::VmmArgs),
    /// Benchmarks that print figures against a peer measured in the same run.
    Bench {
        #[command(subcommand)]
        command: modvisor_bench::BenchCommand,
    },
}

/// The OpenAPI documents, each committed as `openapi/<name>.json`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OpenapiDocument {
    /// Tenants and admins (`openapi/control-plane.json`).
    ControlPlane,
    /// Node agents calling the control plane (`openapi/control-plane-internal.json`).
    ControlPlaneInternal,
    /// The control plane calling node agents (`openapi/node-agent.json`).
    NodeAgent,
}

/// Where a data directory lives unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = ".modvisor";

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any HTTP client or TLS server is built.
    modvisor_node_api::tls::install_provider();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MODVISOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes are for a person at a terminal, never for a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        Command::Up(args) => serve::up(args),
        Command::Doctor(args) => match doctor::doctor(args) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::ControlPlane(args) => serve::control_plane(args),
        Command::NodeAgent(args) => serve::node_agent(args),
        Command::Token { command } => token_cmd::token(command),
        Command::Openapi { document } => {
            print!(
                "{}",
                match document {
                    OpenapiDocument::ControlPlane =>
                        modvisor_control_plane::api::openapi_document(),
                    OpenapiDocument::ControlPlaneInternal =>
                        modvisor_control_plane::api::internal_openapi_document(),
                    OpenapiDocument::NodeAgent => modvisor_node_api::openapi::document(),
                }
            );
            Ok(())
        }
        Command::Vm { api, command } => match commands::vm(&api, command) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Module { api, command } => commands::module(&api, command),
        Command::Tenant { api, command } => commands::tenant(&api, command),
        Command::Network { api, command } => network_cmd::network(&api, command),
        Command::Node { api, command } => node_cmd::node(&api, command),
        Command::Whoami { api } => token_cmd::whoami(&api),
        Command::Events { api, limit } => commands::events(&api, limit),
        Command::Guest { command } => guest_cmd::run(command),
        Command::Vmm(args) => vmm_cmd::run(args),
        Command::Bench { command } => modvisor_bench::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Folds an error chain onto one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
