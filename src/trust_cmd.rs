//! `modvisor trust ...` (admin): the operator certificates trusted to sign modules.

use crate::client::{print, print_item, ApiArgs};
use crate::table::render;
use anyhow::{Context, Result};
use clap::Subcommand;
use modvisor_control_plane_api::types::TrustEntry;
use std::path::PathBuf;

/// `modvisor trust ...`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust an operator certificate (PEM, e.g. from `module keygen`) under a name that
    /// module policies then give as a signer (`module policy set --signer NAME`).
    /// Replaces a certificate of that name.
    Add {
        /// Its name (a-z 0-9 - _).
        name: String,
        /// The certificate file.
        #[arg(long)]
        cert: PathBuf,
    },
    /// List the trusted certificates.
    List,
    /// Stop trusting a certificate (refused while a module policy names it).
    Remove {
        /// Its name.
        name: String,
    },
}

fn rows(list: &[TrustEntry]) -> String {
    render(
        &["NAME", "SUBJECT", "KEY", "SHA256", "ADDED"],
        &list
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.subject.clone(),
                    t.key.clone(),
                    t.sha256[..16.min(t.sha256.len())].to_string(),
                    t.added_at.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// Runs a `trust` subcommand.
pub fn trust(args: &ApiArgs, cmd: TrustCommand) -> Result<()> {
    let api = args.client()?;
    match cmd {
        TrustCommand::Add { name, cert } => {
            let pem = std::fs::read_to_string(&cert).with_context(|| cert.display().to_string())?;
            let entry = api.put_trusted(&name, &pem)?;
            print_item(args, &entry, |t: &TrustEntry, _| {
                rows(std::slice::from_ref(t))
            })
        }
        TrustCommand::List => {
            let list = api.list_trusted()?;
            print(args, &list[..], |list: &[TrustEntry], _| rows(list))
        }
        TrustCommand::Remove { name } => {
            api.remove_trusted(&name)?;
            println!("{name} is no longer trusted");
            Ok(())
        }
    }
}
