//! `modvisor`: runs the control plane (`up`, `control-plane`), issues tokens, and talks to
//! the REST API as a tenant or an admin.

mod client;
mod commands;
mod console_cmd;
mod doctor;
mod exec_cmd;
mod guest_cmd;
mod module_tools_cmd;
mod network_cmd;
mod node_cmd;
mod profile;
mod serve;
mod store_cmd;
mod table;
mod token_cmd;
mod trust_cmd;
mod vm_cmd;
mod vmm_cmd;
mod wait;

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
    /// Where the API is, who calls it and how answers are printed (client commands).
    #[command(flatten)]
    api: client::ApiArgs,
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
    /// The control plane's store itself: copy one into another (sled into etcd).
    Store {
        #[command(subcommand)]
        command: store_cmd::StoreCommand,
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
        #[command(subcommand)]
        command: vm_cmd::VmCommand,
    },
    /// Browse the module catalog and request modules for VMs.
    Module {
        #[command(subcommand)]
        command: commands::ModuleCommand,
    },
    /// The operator certificates trusted to sign modules (admin).
    Trust {
        #[command(subcommand)]
        command: trust_cmd::TrustCommand,
    },
    /// A tenant's private networks.
    Network {
        #[command(subcommand)]
        command: network_cmd::NetworkCommand,
    },
    /// The nodes (admin): list, get, cordon, uncordon, drain.
    Node {
        #[command(subcommand)]
        command: node_cmd::NodeCommand,
    },
    /// Manage tenants and quotas (admin).
    Tenant {
        #[command(subcommand)]
        command: commands::TenantCommand,
    },
    /// Who the token file says you are, and whether the control plane takes it.
    Whoami,
    /// Show the audit trail.
    Events {
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Then print each new event as it comes (until interrupted).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Real guests on this machine: fetch the guest kernel, boot a guest, load modules.
    Guest {
        #[command(subcommand)]
        command: guest_cmd::GuestCommand,
    },
    /// Print a completion script for a shell: `source <(modvisor completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
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
        Command::Token { command } => token_cmd::token(&cli.api, command),
        Command::Store { command } => store_cmd::store(command),
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
        Command::Vm { command } => match vm_cmd::vm(&cli.api, command) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Module { command } => commands::module(&cli.api, command),
        Command::Tenant { command } => commands::tenant(&cli.api, command),
        Command::Trust { command } => trust_cmd::trust(&cli.api, command),
        Command::Network { command } => network_cmd::network(&cli.api, command),
        Command::Node { command } => node_cmd::node(&cli.api, command),
        Command::Whoami => token_cmd::whoami(&cli.api),
        Command::Events { limit, follow } => commands::events(&cli.api, limit, follow),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "modvisor",
                &mut std::io::stdout(),
            );
            Ok(())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn client_options_come_before_or_after_the_subcommand() {
        let before = Cli::try_parse_from(["modvisor", "-o", "yaml", "vm", "list"]).unwrap();
        let after = Cli::try_parse_from(["modvisor", "vm", "list", "-o", "yaml"]).unwrap();
        assert_eq!(before.api.output(), client::Output::Yaml);
        assert_eq!(after.api.output(), client::Output::Yaml);
        let json = Cli::try_parse_from(["modvisor", "vm", "list", "--json"]).unwrap();
        assert!(json.api.json());
    }
}
