//! Where the control plane's API is, who calls it and how answers are printed, for the
//! CLI's client commands: flags, then environment variables, then the profile of the
//! config file ([`crate::profile`]). The calls go through the typed
//! `modvisor_control_plane_api::ApiClient`.

use crate::profile::Profile;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use modvisor_control_plane_api::ApiClient;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API is when neither a flag, the environment nor a profile says.
pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// Aligned columns, with more of them.
    Wide,
    /// The API's JSON.
    Json,
    /// The API's objects as YAML.
    Yaml,
}

/// Where the API is, who is calling and how to print: options of every client command.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the control plane [default: the profile's, else http://127.0.0.1:7070].
    #[arg(long, env = "MODVISOR_API", global = true)]
    api: Option<String>,
    /// File holding the bearer token (e.g. .modvisor/tokens/tenant-a.jwt) [default: the
    /// profile's].
    #[arg(long, env = "MODVISOR_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// A profile of the config file (~/.config/modvisor/config.toml, or $MODVISOR_CONFIG)
    /// [default: its `current_profile`].
    #[arg(long, env = "MODVISOR_PROFILE", global = true)]
    profile: Option<String>,
    /// How to print answers.
    #[arg(short = 'o', long, value_enum, global = true, default_value_t = Output::Table)]
    output: Output,
    /// The same as `-o json`.
    #[arg(long, global = true, hide = true)]
    json: bool,
}

impl ApiArgs {
    /// How answers are printed.
    pub fn output(&self) -> Output {
        if self.json {
            Output::Json
        } else {
            self.output
        }
    }

    /// Whether answers are printed as JSON.
    pub fn json(&self) -> bool {
        self.output() == Output::Json
    }

    /// The profile in force, if any.
    fn profile(&self) -> Result<Option<Profile>> {
        crate::profile::resolve(self.profile.as_deref())
    }

    /// The API's base URL: `--api`, `MODVISOR_API`, the profile's, or the default.
    pub fn api_url(&self) -> Result<String> {
        if let Some(api) = &self.api {
            return Ok(api.clone());
        }
        Ok(self
            .profile()?
            .and_then(|p| p.api)
            .unwrap_or_else(|| DEFAULT_API.to_string()))
    }

    /// The token: from `--token-file`, `MODVISOR_TOKEN_FILE` or the profile's file.
    pub fn token(&self) -> Result<String> {
        let path = match &self.token_file {
            Some(p) => p.clone(),
            None => self.profile()?.and_then(|p| p.token_file).ok_or_else(|| {
                anyhow!("no token: pass --token-file FILE, set MODVISOR_TOKEN_FILE, or name a token_file in a profile")
            })?,
        };
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        Ok(token.trim().to_string())
    }

    /// A client of the API calling with that token.
    pub fn client(&self) -> Result<ApiClient> {
        Ok(ApiClient::new(
            &self.api_url()?,
            &self.token()?,
            Duration::from_secs(60),
        )?)
    }
}

/// Prints `v` as `-o` says: JSON or YAML of the value, or the table `table` renders
/// (told whether wide columns are wanted).
pub fn print<T: Serialize + ?Sized>(
    args: &ApiArgs,
    v: &T,
    table: impl FnOnce(&T, bool) -> String,
) -> Result<()> {
    match args.output() {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Yaml => print!("{}", serde_norway::to_string(v)?),
        Output::Table => println!("{}", table(v, false)),
        Output::Wide => println!("{}", table(v, true)),
    }
    Ok(())
}

/// Prints one item of a stream (`--watch`, `--follow`): a JSON line, a YAML document, or
/// its table row without the header.
pub fn print_item<T: Serialize>(
    args: &ApiArgs,
    v: &T,
    table: impl FnOnce(&T, bool) -> String,
) -> Result<()> {
    match args.output() {
        Output::Json => println!("{}", serde_json::to_string(v)?),
        Output::Yaml => print!("---\n{}", serde_norway::to_string(v)?),
        o => println!(
            "{}",
            table(v, o == Output::Wide)
                .lines()
                .nth(1)
                .unwrap_or_default()
        ),
    }
    Ok(())
}
