//! `modvisor guest ...`: the guest kernel and real guests on this machine.

use anyhow::{Context, Result};
use clap::Subcommand;

/// `modvisor guest ...`
#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Fetch Debian's current cloud kernel into the cache (apt-get download + dpkg -x) and
    /// print where it is. `MODVISOR_KERNEL_DIR` points at your own tree instead.
    FetchKernel,
}

/// Runs a `guest` subcommand.
pub fn run(cmd: GuestCommand) -> Result<()> {
    match cmd {
        GuestCommand::FetchKernel => {
            let k = modvisor_guest::kernel::resolve(|m| eprintln!("{m}"))
                .context("fetching the guest kernel")?;
            println!("release  {}", k.release);
            println!("vmlinuz  {}", k.vmlinuz.display());
            println!("modules  {}", k.modules_dir.display());
            Ok(())
        }
    }
}
