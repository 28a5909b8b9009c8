//! Where the control plane's API is and who calls it, for the CLI's client commands; the
//! calls themselves go through the typed `modvisor_control_plane_api::ApiClient`.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use modvisor_control_plane_api::ApiClient;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API is and who is calling.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the control plane.
    #[arg(
        long,
        env = "MODVISOR_API",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub api: String,
    /// File holding the bearer token (e.g. .modvisor/tokens/tenant-a.jwt).
    #[arg(long, env = "MODVISOR_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ApiArgs {
    /// The token in `--token-file`.
    pub fn token(&self) -> Result<String> {
        let path = self.token_file.as_ref().ok_or_else(|| {
            anyhow!("no token: pass --token-file FILE or set MODVISOR_TOKEN_FILE")
        })?;
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        Ok(token.trim().to_string())
    }

    /// A client of the API calling with the token in `--token-file`.
    pub fn client(&self) -> Result<ApiClient> {
        Ok(ApiClient::new(
            &self.api,
            &self.token()?,
            Duration::from_secs(60),
        )?)
    }
}
