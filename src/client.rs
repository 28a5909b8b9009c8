//! A small blocking client of the control plane's REST API, for the CLI.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
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

/// An authenticated connection to the API.
pub struct Api {
    base: String,
    token: String,
    http: Client,
}

impl Api {
    /// Reads the token and prepares a client.
    pub fn new(args: &ApiArgs) -> Result<Self> {
        let path = args.token_file.as_ref().ok_or_else(|| {
            anyhow!("no token: pass --token-file FILE or set MODVISOR_TOKEN_FILE")
        })?;
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?
            .trim()
            .to_string();
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            base: args.api.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
    }

    /// GET returning JSON.
    pub fn get(&self, path: &str) -> Result<Value> {
        json(self.req(reqwest::Method::GET, path).send())
    }

    /// Every item of a paginated list, following `next_page_token`.
    pub fn get_all(&self, path: &str, limit: u32) -> Result<Vec<Value>> {
        if limit == 0 {
            bail!("--limit must be positive");
        }
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{path}?limit={limit}");
            if let Some(t) = &token {
                url.push_str(&format!("&page_token={t}"));
            }
            let page = self.get(&url)?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(items),
            }
        }
    }

    /// GET returning JSON and the ETag.
    pub fn get_with_etag(&self, path: &str) -> Result<(Value, Option<String>)> {
        let resp = check(self.req(reqwest::Method::GET, path).send())?;
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((resp.json().context("decoding the response")?, etag))
    }

    /// A JSON request with a body.
    pub fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<Value> {
        let mut r = self
            .req(method, path)
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?);
        if let Some(tag) = if_match {
            r = r.header(reqwest::header::IF_MATCH, tag);
        }
        json(r.send())
    }

    /// A raw upload.
    pub fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<Value> {
        json(
            self.req(reqwest::Method::PUT, path)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(bytes)
                .send(),
        )
    }

    /// DELETE; returns the JSON body if there is one.
    pub fn delete(&self, path: &str) -> Result<Option<Value>> {
        let resp = check(self.req(reqwest::Method::DELETE, path).send())?;
        let bytes = resp.bytes().context("reading the response")?;
        if bytes.is_empty() {
            Ok(None)
        } else {
            Ok(Some(
                serde_json::from_slice(&bytes).context("decoding the response")?,
            ))
        }
    }
}

fn check(resp: reqwest::Result<Response>) -> Result<Response> {
    let resp = resp.context("calling the control plane (is `modvisor up` running? see --api)")?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    match serde_json::from_str::<Value>(&body) {
        Ok(p) if p.get("type").is_some() => {
            let slug = p["type"]
                .as_str()
                .unwrap_or("")
                .rsplit(':')
                .next()
                .unwrap_or("");
            bail!(
                "{} {}: {}",
                status.as_u16(),
                slug,
                p["detail"].as_str().unwrap_or("")
            )
        }
        _ => bail!(
            "{} {}",
            status.as_u16(),
            body.chars().take(200).collect::<String>()
        ),
    }
}

fn json(resp: reqwest::Result<Response>) -> Result<Value> {
    check(resp)?.json().context("decoding the response")
}
