//! `modvisor store ...`: operations on a control plane's store itself, with no control
//! plane running on it.

use anyhow::{Context, Result};
use clap::Subcommand;
use modvisor_control_plane::server::share_secrets_of;
use modvisor_control_plane::store::copy::copy;
use modvisor_control_plane::store::{Datastore, StoreLocation};

/// `modvisor store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every table of one store into another that holds nothing yet (e.g. an `up`'s
    /// sled store into etcd: `--from sled:.modvisor/db --to etcd://127.0.0.1:2379`).
    /// Stop the control plane on the source first (sled is locked while it runs).
    Copy {
        /// The store to read: `sled:PATH` or `etcd://HOST:PORT,...[/ROOT]`.
        #[arg(long)]
        from: StoreLocation,
        /// The store to fill.
        #[arg(long)]
        to: StoreLocation,
    },
}

/// Runs a `store` subcommand.
pub fn store(command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Copy { from, to } => {
            let source = from.open().with_context(|| format!("opening {from}"))?;
            let destination = to.open().with_context(|| format!("opening {to}"))?;
            let report = copy(source.as_ref(), destination.as_ref())?;
            // An installation of one replica keeps its secrets in files beside the
            // database; replicas on a shared store read them from the store.
            if let (StoreLocation::Sled(db), false) = (&from, matches!(to, StoreLocation::Sled(_)))
            {
                let data_dir = db.parent().unwrap_or(db);
                share_secrets_of(data_dir, &Datastore::new(destination.clone()))
                    .context("copying the signing key and the cluster CA")?;
                println!(
                    "copied the token signing key and the cluster CA from {}",
                    data_dir.display()
                );
            }
            for (table, n) in &report {
                if *n > 0 {
                    println!("{table:<16}{n}");
                }
            }
            println!(
                "copied {} entries from {from} to {to}",
                report.values().sum::<u64>()
            );
            Ok(())
        }
    }
}
