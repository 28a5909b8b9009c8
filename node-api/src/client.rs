//! Typed clients of both APIs: [`NodeClient`] (the control plane calling a node agent,
//! async) and [`ControlPlaneClient`] (a node agent calling the control plane, blocking).
//! No caller builds a URL or decodes a reply by hand.

use crate::budget::Budgets;
use crate::exec::{ExecRequest, ExecResult};
use crate::internal::{Heartbeat, HeartbeatReply, NodeCredential, RegisterNode};
use crate::problem::Problem;
use crate::routes::{self, fill};
use crate::types::{EnsureVm, NodeLoadModule, NodeModuleResult, ObservedVm};
use crate::user_data::{RunUserData, UserDataStatus};
use crate::{Deleted, NodeApi};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A call to the other side failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, reset, or the call's time ran out.
    #[error("{url}: no answer: {detail}")]
    Unreachable {
        /// What was called.
        url: String,
        /// Why.
        detail: String,
    },
    /// The other side answered with an error status.
    #[error("{url}: {status}: {detail}")]
    Refused {
        /// What was called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The problem body, when the answer had one.
        problem: Option<Box<Problem>>,
        /// The problem's detail, or the body's start.
        detail: String,
    },
    /// The other side's certificate is not the one trusted (or trust could not be set up).
    #[error("{url}: not trusted: {detail}")]
    Untrusted {
        /// What was called.
        url: String,
        /// Why.
        detail: String,
    },
    /// The answer could not be read as the type the contract promises.
    #[error("{url}: unreadable answer: {detail}")]
    Unreadable {
        /// What was called.
        url: String,
        /// Why.
        detail: String,
    },
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn unreachable(url: &str, e: reqwest::Error) -> ClientError {
    ClientError::Unreachable {
        url: url.to_string(),
        detail: why_unanswered(e),
    }
}

/// Why a request got no answer, down to its first cause ("connection refused", "operation
/// timed out"), without the URL (the error that carries this names it).
pub fn why_unanswered(e: reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        causes.push(c.to_string());
        cause = c.source();
    }
    let mut why = e.without_url().to_string();
    for said in causes {
        if !why.contains(&said) {
            why = format!("{why}: {said}");
        }
    }
    why
}

fn unreadable(url: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Unreadable {
        url: url.to_string(),
        detail: e.to_string(),
    }
}

/// A refusal from an error status and its body.
fn refused(url: &str, status: u16, body: &[u8]) -> ClientError {
    let problem: Option<Box<Problem>> = serde_json::from_slice(body).ok();
    let detail = match &problem {
        Some(p) => p.detail.clone(),
        None => String::from_utf8_lossy(body).chars().take(300).collect(),
    };
    ClientError::Refused {
        url: url.to_string(),
        status,
        problem,
        detail,
    }
}

/// The control plane's client of one node agent.
#[derive(Debug, Clone)]
pub struct NodeClient {
    base: String,
    token: String,
    http: reqwest::Client,
    budgets: Budgets,
}

impl NodeClient {
    /// A client of the node agent at `base` (e.g. `https://127.0.0.1:7081`), calling with
    /// `token` (role `control_plane`). `http` should have a connect timeout; each call
    /// waits its node-side budget (from `budgets`) plus the margin.
    pub fn new(base: &str, token: String, http: reqwest::Client, budgets: Budgets) -> Self {
        NodeClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            budgets,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: String,
        body: Option<&impl serde::Serialize>,
        budget: Duration,
    ) -> Result<Option<T>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .timeout(self.budgets.caller_timeout(budget));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| unreachable(&url, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| unreachable(&url, e))?;
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(refused(&url, status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| unreadable(&url, e))
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: String,
        body: Option<&impl serde::Serialize>,
        budget: Duration,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        self.call(method, path, body, budget)
            .await?
            .ok_or_else(|| unreadable(&url, "empty answer"))
    }
}

impl NodeClient {
    /// `GET path` answered with text (within 10 s).
    async fn get_text(&self, path: String) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(self.budgets.caller_timeout(Duration::from_secs(10)))
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| unreachable(&url, e))?;
        if !status.is_success() {
            return Err(refused(&url, status.as_u16(), &bytes));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// No body.
const NONE: Option<&()> = None;

impl NodeApi for NodeClient {
    async fn ensure_vm(&self, id: &str, spec: &EnsureVm) -> Result<ObservedVm, ClientError> {
        let path = fill(routes::VM, &[("id", id)]);
        self.call_json(reqwest::Method::PUT, path, Some(spec), self.budgets.ensure)
            .await
    }

    async fn get_vm(&self, id: &str) -> Result<ObservedVm, ClientError> {
        let path = fill(routes::VM, &[("id", id)]);
        self.call_json(reqwest::Method::GET, path, NONE, self.budgets.delete)
            .await
    }

    async fn delete_vm(&self, id: &str) -> Result<Deleted, ClientError> {
        let path = fill(routes::VM, &[("id", id)]);
        match self
            .call::<serde_json::Value>(reqwest::Method::DELETE, path, NONE, self.budgets.delete)
            .await
        {
            Ok(_) => Ok(Deleted::Removed),
            Err(e) if e.status() == Some(404) => Ok(Deleted::NotThere),
            Err(e) => Err(e),
        }
    }

    async fn load_module(
        &self,
        id: &str,
        request: &NodeLoadModule,
    ) -> Result<Vec<NodeModuleResult>, ClientError> {
        let path = fill(routes::VM_MODULES, &[("id", id)]);
        self.call_json(
            reqwest::Method::POST,
            path,
            Some(request),
            Duration::from_millis(request.budget_ms),
        )
        .await
    }

    async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecResult, ClientError> {
        let path = fill(routes::VM_EXEC, &[("id", id)]);
        let timeout = request
            .timeout_s
            .unwrap_or(crate::exec::DEFAULT_TIMEOUT_S)
            .min(crate::exec::MAX_TIMEOUT_S);
        let budget = Duration::from_secs(u64::from(timeout)) + crate::budget::EXEC_SLACK;
        self.call_json(reqwest::Method::POST, path, Some(request), budget)
            .await
    }

    async fn run_user_data(
        &self,
        id: &str,
        request: &RunUserData,
    ) -> Result<UserDataStatus, ClientError> {
        let path = fill(routes::VM_USER_DATA, &[("id", id)]);
        self.call_json(
            reqwest::Method::POST,
            path,
            Some(request),
            self.budgets.unload,
        )
        .await
    }

    async fn console_tail(&self, id: &str, bytes: usize) -> Result<String, ClientError> {
        let path = format!(
            "{}?tail_bytes={bytes}",
            fill(routes::VM_CONSOLE, &[("id", id)])
        );
        self.get_text(path).await
    }

    async fn metrics(&self) -> Result<String, ClientError> {
        self.get_text(routes::METRICS.to_string()).await
    }

    async fn unload_module(&self, id: &str, name: &str) -> Result<(), ClientError> {
        let path = fill(routes::VM_MODULE, &[("id", id), ("name", name)]);
        self.call::<serde_json::Value>(reqwest::Method::DELETE, path, NONE, self.budgets.unload)
            .await
            .map(drop)
    }
}

/// A node agent's client of the control plane's internal API, on one or several
/// replicas: a call goes to the replica that answered last, and when that one gives no
/// answer or is unavailable (503), to the next, in turn.
#[derive(Debug, Clone)]
pub struct ControlPlaneClient {
    bases: Arc<[String]>,
    /// The index in `bases` of the replica that answered last.
    current: Arc<AtomicUsize>,
    http: reqwest::blocking::Client,
}

/// The base URLs of a comma-separated list (`https://a:7071,https://b:7071`).
fn base_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(|b| b.trim().trim_end_matches('/').to_string())
        .filter(|b| !b.is_empty())
        .collect()
}

/// Whether another replica may answer what this error refused.
fn try_another(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } => true,
        ClientError::Refused { status, .. } => *status == 503,
        ClientError::Untrusted { .. } | ClientError::Unreadable { .. } => false,
    }
}

impl ControlPlaneClient {
    /// A client of the control plane's internal API at `base` (https; several replicas
    /// separated by commas), trusting only the CA `ca_pem` and only a certificate naming
    /// the control plane; every call times out after `timeout`.
    pub fn new(base: &str, ca_pem: &str, timeout: Duration) -> Result<Self, ClientError> {
        let bases = base_urls(base);
        if bases.is_empty() {
            return Err(ClientError::Unreachable {
                url: base.to_string(),
                detail: "no control-plane URL given".into(),
            });
        }
        crate::tls::install_provider();
        let tls =
            crate::tls::client_config(ca_pem, crate::tls::CONTROL_PLANE_NAME).map_err(|e| {
                ClientError::Untrusted {
                    url: base.to_string(),
                    detail: e.to_string(),
                }
            })?;
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| unreachable(base, e))?;
        Ok(ControlPlaneClient {
            bases: bases.into(),
            current: Arc::new(AtomicUsize::new(0)),
            http,
        })
    }

    /// Runs `call` on the base URL of the replica that answered last, then, while the
    /// error says another may answer, on each other one; the first answer wins.
    fn on_any<T>(&self, call: impl Fn(&str) -> Result<T, ClientError>) -> Result<T, ClientError> {
        let start = self.current.load(Ordering::Relaxed);
        let n = self.bases.len();
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            match call(&self.bases[at]) {
                Ok(v) => {
                    if at != start {
                        tracing::warn!(from = %self.bases[start], to = %self.bases[at], "control plane replica failed over");
                        self.current.store(at, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(e) if try_another(&e) && n > 1 => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable {
            url: self.bases.join(","),
            detail: "no replica answered".into(),
        }))
    }

    /// The CA certificate the control plane at `base` shows, accepted only if its sha256
    /// is `pin` (what a bootstrap token carries), the way `kubeadm join` trusts a cluster.
    /// With several replicas (comma-separated), the first that answers.
    pub fn fetch_pinned_ca(
        bases: &str,
        pin: &str,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        let mut last = None;
        for base in base_urls(bases) {
            match Self::fetch_pinned_ca_from(&base, pin, timeout) {
                Err(e) if try_another(&e) => last = Some(e),
                answer => return answer,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable {
            url: bases.to_string(),
            detail: "no control-plane URL given".into(),
        }))
    }

    fn fetch_pinned_ca_from(
        base: &str,
        pin: &str,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        crate::tls::install_provider();
        let url = format!("{base}{}", routes::CA);
        let untrusted = |detail: String| ClientError::Untrusted {
            url: url.clone(),
            detail,
        };
        let tls = crate::tls::pinning_fetch_config().map_err(|e| untrusted(e.to_string()))?;
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| unreachable(&url, e))?;
        let resp = http.get(&url).send().map_err(|e| unreachable(&url, e))?;
        let status = resp.status();
        let bytes = resp.bytes().map_err(|e| unreachable(&url, e))?;
        if !status.is_success() {
            return Err(refused(&url, status.as_u16(), &bytes));
        }
        let pem = String::from_utf8(bytes.to_vec()).map_err(|e| unreadable(&url, e))?;
        let shown = crate::tls::certificate_sha256(&pem).map_err(|e| untrusted(e.to_string()))?;
        if !shown.eq_ignore_ascii_case(pin) {
            return Err(untrusted(format!(
                "the CA shown hashes to {shown}, not to the pinned {pin}"
            )));
        }
        Ok(pem)
    }

    /// The base URL of the replica that answered last.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let resp = req.send().map_err(|e| unreachable(url, e))?;
        let status = resp.status();
        let bytes = resp.bytes().map_err(|e| unreachable(url, e))?.to_vec();
        if !status.is_success() {
            return Err(refused(url, status.as_u16(), &bytes));
        }
        Ok(bytes)
    }

    fn json<T: DeserializeOwned>(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let bytes = self.send(req, url)?;
        serde_json::from_slice(&bytes).map_err(|e| unreadable(url, e))
    }

    /// Registers this node with a bootstrap token; answers its credential.
    pub fn register(
        &self,
        bootstrap: &str,
        node: &RegisterNode,
    ) -> Result<NodeCredential, ClientError> {
        self.on_any(|base| {
            let url = format!("{base}{}", routes::NODE_REGISTER);
            self.json(self.http.post(&url).bearer_auth(bootstrap).json(node), &url)
        })
    }

    /// Reports what node `name` holds; answers what it should remove.
    pub fn heartbeat(
        &self,
        token: &str,
        name: &str,
        beat: &Heartbeat,
    ) -> Result<HeartbeatReply, ClientError> {
        self.on_any(|base| {
            let url = format!("{base}{}", fill(routes::NODE_HEARTBEAT, &[("name", name)]));
            self.json(self.http.post(&url).bearer_auth(token).json(beat), &url)
        })
    }

    /// A module blob by its sha256.
    pub fn blob(&self, token: &str, sha256: &str) -> Result<Vec<u8>, ClientError> {
        self.on_any(|base| {
            let url = format!("{base}{}", fill(routes::BLOB, &[("sha256", sha256)]));
            self.send(self.http.get(&url).bearer_auth(token), &url)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_answer_says_its_first_cause_without_repeating_the_url() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("http://127.0.0.1:{port}/v1/nodes");
        crate::tls::install_provider();
        let e = reqwest::blocking::Client::new()
            .get(&url)
            .send()
            .expect_err("nothing listens");
        let why = why_unanswered(e);
        assert!(why.to_lowercase().contains("connection refused"), "{why}");
        assert!(!why.contains(&url), "{why}");
    }
}
