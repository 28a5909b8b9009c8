//! `modvisor network ...`: a tenant's private networks.

use crate::client::ApiArgs;
use crate::table::render;
use anyhow::Result;
use clap::Subcommand;
use modvisor_control_plane_api::types::{CreateNetwork, Network};

/// `modvisor network ...`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network (IPv4, /16 to /29, not overlapping your others).
    Create {
        /// Network name.
        name: String,
        /// Its CIDR, e.g. 10.1.0.0/24.
        #[arg(long)]
        cidr: String,
    },
    /// List your networks (all of them, as the admin).
    List,
    /// Show one network.
    Get {
        /// Network name.
        name: String,
    },
    /// Delete a network no VM uses.
    Delete {
        /// Network name.
        name: String,
    },
}

fn rows(items: &[Network]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.tenant.clone(),
                n.cidr.clone(),
                n.gateway.clone(),
                n.addresses_in_use.to_string(),
            ]
        })
        .collect();
    render(&["NAME", "TENANT", "CIDR", "GATEWAY", "IN_USE"], &rows)
}

/// Runs a `network` subcommand.
pub fn network(args: &ApiArgs, cmd: NetworkCommand) -> Result<()> {
    let api = args.client()?;
    let shown = match cmd {
        NetworkCommand::Create { name, cidr } => {
            api.create_network(&CreateNetwork { name, cidr })?
        }
        NetworkCommand::Get { name } => api.get_network(&name)?,
        NetworkCommand::List => {
            let all = api.list_networks()?;
            return crate::client::print(args, &all[..], |n, _| rows(n));
        }
        NetworkCommand::Delete { name } => {
            api.delete_network(&name)?;
            if !args.json() {
                println!("deleted {name}");
            }
            return Ok(());
        }
    };
    crate::client::print(args, &shown, |n, _| rows(std::slice::from_ref(n)))
}
