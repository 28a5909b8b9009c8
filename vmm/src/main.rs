//! `modvisor-vmm`: the VMM alone, the same as `modvisor vmm` in a small binary.

use clap::Parser;

/// modvisor's KVM virtual machine monitor: runs one VM until it halts, shuts down or
/// crashes.
#[derive(Debug, Parser)]
#[command(name = "modvisor-vmm", version, about)]
struct Cli {
    #[command(flatten)]
    vmm: modvisor_vmm::cli::VmmArgs,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MODVISOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(modvisor_vmm::cli::run(cli.vmm));
}
