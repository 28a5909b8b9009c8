//! A typed, blocking client of API v1. Every call names its route from [`crate::routes`]
//! and returns the type the API promises; errors carry the RFC 9457 problem.

use crate::routes::{self, fill};
use crate::types::{
    CatalogModule, CreateNetwork, CreateTenant, Event, EventListParams, ExecRequest, ExecResult,
    IssueToken, IssuedToken, ModulePolicy, ModuleRequest, ModuleRequestBody, ModuleVersion,
    Network, Node, NodeDetail, Page, PageParams, Quota, Tenant, TokenRecord, TrustBody, TrustEntry,
    Vm, VmSpec,
};
use modvisor_node_api::client::why_unanswered;
use modvisor_node_api::Problem;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer (connection refused, timeout).
    #[error("{url}: no answer: {detail} (is the control plane running? see --api)")]
    Unreachable {
        /// What was called.
        url: String,
        /// Why.
        detail: String,
    },
    /// The API refused with a problem.
    #[error("{status} {}: {}", problem.slug(), problem.detail)]
    Problem {
        /// The HTTP status.
        status: u16,
        /// The problem body.
        problem: Box<Problem>,
    },
    /// The API answered an error status without a problem body.
    #[error("{status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer is not the type the API promises.
    #[error("{url}: unreadable answer: {detail}")]
    Unreadable {
        /// What was called.
        url: String,
        /// Why.
        detail: String,
    },
}

impl ApiError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Problem { status, .. } | ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The problem's slug (`not-found`, `quota-exceeded`, ...), for problem refusals.
    pub fn slug(&self) -> Option<&str> {
        match self {
            ApiError::Problem { problem, .. } => Some(problem.slug()),
            _ => None,
        }
    }
}

/// A resource with the ETag of its version.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The resource.
    pub value: T,
    /// Its `ETag` (pass it as `If-Match` to change exactly this version).
    pub etag: Option<String>,
}

/// What deleting a VM answered.
#[derive(Debug, Clone)]
pub enum VmDeletion {
    /// Accepted: the VM goes once its node has removed it.
    Accepted(Box<Vm>),
    /// Gone already (it was never placed).
    Gone,
}

/// A client of one control plane, calling as the holder of one token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: Client,
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:7070`) calling with `token`;
    /// every call times out after `timeout`.
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, ApiError> {
        modvisor_node_api::tls::install_provider();
        let http =
            Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| ApiError::Unreachable {
                    url: base.to_string(),
                    detail: format!("building the HTTP client: {e}"),
                })?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            http,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> (RequestBuilder, String) {
        let url = format!("{}{path}", self.base);
        (
            self.http.request(method, &url).bearer_auth(&self.token),
            url,
        )
    }

    fn send(&self, req: RequestBuilder, url: &str) -> Result<Response, ApiError> {
        let resp = req.send().map_err(|e| ApiError::Unreachable {
            url: url.to_string(),
            detail: why_unanswered(e),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = resp.bytes().map_err(|e| ApiError::Unreachable {
            url: url.to_string(),
            detail: why_unanswered(e),
        })?;
        Err(match serde_json::from_slice::<Problem>(&bytes) {
            Ok(problem) => ApiError::Problem {
                status,
                problem: Box::new(problem),
            },
            Err(_) => ApiError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            },
        })
    }

    fn read<T: DeserializeOwned>(resp: Response, url: &str) -> Result<T, ApiError> {
        let bytes = resp.bytes().map_err(|e| ApiError::Unreachable {
            url: url.to_string(),
            detail: why_unanswered(e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Unreadable {
            url: url.to_string(),
            detail: e.to_string(),
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, ApiError> {
        let (mut req, url) = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req, &url)?;
        Self::read(resp, &url)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call(Method::GET, path, None::<&()>)
    }

    /// `GET /healthz`.
    pub fn healthz(&self) -> Result<serde_json::Value, ApiError> {
        self.get(routes::HEALTHZ)
    }

    /// Every page of a paginated list, `limit` items a page.
    fn all_pages<T: DeserializeOwned>(&self, path: &str, limit: u32) -> Result<Vec<T>, ApiError> {
        let mut out = Vec::new();
        let mut params = PageParams {
            limit: Some(limit),
            page_token: None,
        };
        loop {
            let page: Page<T> = self.page(path, &params)?;
            out.extend(page.items);
            match page.next_page_token {
                Some(t) => params.page_token = Some(t),
                None => return Ok(out),
            }
        }
    }

    fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &PageParams,
    ) -> Result<Page<T>, ApiError> {
        let (req, url) = self.request(Method::GET, path);
        let resp = self.send(req.query(params), &url)?;
        Self::read(resp, &url)
    }

    /// `POST /v1/tenants` (admin).
    pub fn create_tenant(&self, body: &CreateTenant) -> Result<Tenant, ApiError> {
        self.call(Method::POST, routes::TENANTS, Some(body))
    }

    /// `GET /v1/tenants` (admin).
    pub fn list_tenants(&self) -> Result<Vec<Tenant>, ApiError> {
        self.get(routes::TENANTS)
    }

    /// `GET /v1/tenants/{name}`.
    pub fn get_tenant(&self, name: &str) -> Result<Tenant, ApiError> {
        self.get(&fill(routes::TENANT, &[("name", name)]))
    }

    /// `PUT /v1/tenants/{name}/quota` (admin).
    pub fn set_quota(&self, name: &str, quota: &Quota) -> Result<Tenant, ApiError> {
        let path = fill(routes::TENANT_QUOTA, &[("name", name)]);
        self.call(Method::PUT, &path, Some(quota))
    }

    /// `POST /v1/vms`.
    pub fn create_vm(&self, spec: &VmSpec) -> Result<Vm, ApiError> {
        self.call(Method::POST, routes::VMS, Some(spec))
    }

    /// One page of `GET /v1/vms`.
    pub fn list_vms_page(&self, params: &PageParams) -> Result<Page<Vm>, ApiError> {
        self.page(routes::VMS, params)
    }

    /// Every VM the caller sees, `limit` a page.
    pub fn list_vms(&self, limit: u32) -> Result<Vec<Vm>, ApiError> {
        self.all_pages(routes::VMS, limit)
    }

    /// `GET /v1/vms?name=`: the caller's VM of that name (an admin: each tenant's).
    pub fn vms_named(&self, name: &str) -> Result<Vec<Vm>, ApiError> {
        let (req, url) = self.request(Method::GET, routes::VMS);
        let resp = self.send(req.query(&[("name", name)]), &url)?;
        Ok(Self::read::<Page<Vm>>(resp, &url)?.items)
    }

    /// `GET /v1/vms/{id}` with its ETag.
    pub fn get_vm(&self, id: &str) -> Result<Versioned<Vm>, ApiError> {
        let (req, url) = self.request(Method::GET, &fill(routes::VM, &[("id", id)]));
        let resp = self.send(req, &url)?;
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Versioned {
            value: Self::read(resp, &url)?,
            etag,
        })
    }

    /// `PUT /v1/vms/{id}`: the whole new spec, optionally only if its version is `if_match`.
    pub fn replace_vm(
        &self,
        id: &str,
        spec: &VmSpec,
        if_match: Option<&str>,
    ) -> Result<Vm, ApiError> {
        let (mut req, url) = self.request(Method::PUT, &fill(routes::VM, &[("id", id)]));
        req = req.json(spec);
        if let Some(tag) = if_match {
            req = req.header(IF_MATCH, tag);
        }
        let resp = self.send(req, &url)?;
        Self::read(resp, &url)
    }

    /// `DELETE /v1/vms/{id}`.
    pub fn delete_vm(&self, id: &str) -> Result<VmDeletion, ApiError> {
        let (req, url) = self.request(Method::DELETE, &fill(routes::VM, &[("id", id)]));
        let resp = self.send(req, &url)?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(VmDeletion::Gone);
        }
        Ok(VmDeletion::Accepted(Box::new(Self::read(resp, &url)?)))
    }

    /// `GET /v1/modules`: what the caller may request (admins: everything, with policies).
    pub fn list_modules(&self) -> Result<Vec<CatalogModule>, ApiError> {
        self.get(routes::MODULES)
    }

    /// `PUT /v1/admin/modules/{name}?kernel_release=...`: publishes a .ko (admin).
    pub fn publish_module(
        &self,
        name: &str,
        kernel_release: &str,
        force: bool,
        bytes: Vec<u8>,
    ) -> Result<ModuleVersion, ApiError> {
        let path = fill(routes::ADMIN_MODULE, &[("name", name)]);
        let (req, url) = self.request(Method::PUT, &path);
        let req = req
            .query(&[("kernel_release", kernel_release)])
            .query(&[("force", force)])
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        let resp = self.send(req, &url)?;
        Self::read(resp, &url)
    }

    /// `GET /v1/admin/modules/{name}/policy` (admin).
    pub fn get_policy(&self, name: &str) -> Result<ModulePolicy, ApiError> {
        let path = fill(routes::ADMIN_MODULE_POLICY, &[("name", name)]);
        self.call(Method::GET, &path, None::<&()>)
    }

    /// `PUT /v1/admin/modules/{name}/policy` (admin).
    pub fn set_policy(&self, name: &str, policy: &ModulePolicy) -> Result<ModulePolicy, ApiError> {
        let path = fill(routes::ADMIN_MODULE_POLICY, &[("name", name)]);
        self.call(Method::PUT, &path, Some(policy))
    }

    /// `PUT /v1/admin/trust/{name}`: adds or replaces an operator certificate (admin).
    pub fn put_trusted(&self, name: &str, certificate_pem: &str) -> Result<TrustEntry, ApiError> {
        let path = fill(routes::ADMIN_TRUST_ONE, &[("name", name)]);
        let body = TrustBody {
            certificate_pem: certificate_pem.to_string(),
        };
        self.call(Method::PUT, &path, Some(&body))
    }

    /// `GET /v1/admin/trust` (admin).
    pub fn list_trusted(&self) -> Result<Vec<TrustEntry>, ApiError> {
        self.get(routes::ADMIN_TRUST)
    }

    /// `DELETE /v1/admin/trust/{name}` (admin).
    pub fn remove_trusted(&self, name: &str) -> Result<(), ApiError> {
        let path = fill(routes::ADMIN_TRUST_ONE, &[("name", name)]);
        self.no_content(Method::DELETE, &path)
    }

    /// `POST /v1/vms/{id}/modules`.
    pub fn request_module(
        &self,
        vm: &str,
        body: &ModuleRequestBody,
    ) -> Result<ModuleRequest, ApiError> {
        let path = fill(routes::VM_MODULES, &[("id", vm)]);
        self.call(Method::POST, &path, Some(body))
    }

    /// `POST /v1/networks`.
    pub fn create_network(&self, body: &CreateNetwork) -> Result<Network, ApiError> {
        self.call(Method::POST, routes::NETWORKS, Some(body))
    }

    /// `GET /v1/networks`.
    pub fn list_networks(&self) -> Result<Vec<Network>, ApiError> {
        self.get(routes::NETWORKS)
    }

    /// `GET /v1/networks/{name}`.
    pub fn get_network(&self, name: &str) -> Result<Network, ApiError> {
        self.get(&fill(routes::NETWORK, &[("name", name)]))
    }

    /// `DELETE /v1/networks/{name}`.
    pub fn delete_network(&self, name: &str) -> Result<(), ApiError> {
        let path = fill(routes::NETWORK, &[("name", name)]);
        let (req, url) = self.request(Method::DELETE, &path);
        self.send(req, &url).map(drop)
    }

    /// `POST /v1/vms/{id}/exec`: waits for the command (up to its timeout and a minute
    /// more), whatever the client's own timeout.
    pub fn exec(&self, vm: &str, body: &ExecRequest) -> Result<ExecResult, ApiError> {
        let path = fill(routes::VM_EXEC, &[("id", vm)]);
        let (req, url) = self.request(Method::POST, &path);
        let timeout_s = body
            .timeout_s
            .unwrap_or(modvisor_node_api::exec::DEFAULT_TIMEOUT_S);
        let req = req
            .json(body)
            .timeout(Duration::from_secs(u64::from(timeout_s) + 60));
        let resp = self.send(req, &url)?;
        Self::read(resp, &url)
    }

    /// `GET /v1/vms/{id}/console?tail_bytes=N`: the last bytes of the console, as text.
    pub fn console_tail(&self, vm: &str, bytes: usize) -> Result<String, ApiError> {
        self.get_text(&format!(
            "{}?tail_bytes={bytes}",
            fill(routes::VM_CONSOLE, &[("id", vm)])
        ))
    }

    /// `GET /v1/nodes/{name}/metrics` (admin or metrics): the node agent's metrics, as text.
    pub fn node_metrics(&self, name: &str) -> Result<String, ApiError> {
        self.get_text(&fill(routes::NODE_METRICS, &[("name", name)]))
    }

    /// `GET path`, answered with text.
    fn get_text(&self, path: &str) -> Result<String, ApiError> {
        let (req, url) = self.request(Method::GET, path);
        let resp = self.send(req, &url)?;
        resp.text().map_err(|e| ApiError::Unreadable {
            url,
            detail: e.to_string(),
        })
    }

    /// `GET /v1/vms/{id}/modules`.
    pub fn module_requests(&self, vm: &str) -> Result<Vec<ModuleRequest>, ApiError> {
        self.get(&fill(routes::VM_MODULES, &[("id", vm)]))
    }

    /// `DELETE /v1/vms/{id}/modules/{name}`.
    pub fn unload_module(&self, vm: &str, name: &str) -> Result<ModuleRequest, ApiError> {
        let path = fill(routes::VM_MODULE, &[("id", vm), ("name", name)]);
        self.call(Method::DELETE, &path, None::<&()>)
    }

    /// Every event of the audit trail the caller sees, `limit` a page.
    pub fn events(&self, limit: u32) -> Result<Vec<Event>, ApiError> {
        self.all_pages(routes::EVENTS, limit)
    }

    /// One page of `GET /v1/events` (filtered by resource, or after a sequence number).
    pub fn events_page(&self, params: &EventListParams) -> Result<Page<Event>, ApiError> {
        let (req, url) = self.request(Method::GET, routes::EVENTS);
        let resp = self.send(req.query(params), &url)?;
        Self::read(resp, &url)
    }

    /// `GET /v1/nodes` (admin).
    pub fn list_nodes(&self) -> Result<Vec<Node>, ApiError> {
        self.get(routes::NODES)
    }

    /// `GET /v1/nodes/{name}` (admin): the node and what its VMs hold.
    pub fn get_node(&self, name: &str) -> Result<NodeDetail, ApiError> {
        self.get(&fill(routes::NODE, &[("name", name)]))
    }

    /// `POST /v1/nodes/{name}/{action}` (admin): `cordon`, `uncordon` or `drain`.
    pub fn node_action(&self, name: &str, action: &str) -> Result<Node, ApiError> {
        let path = fill(routes::NODE_ACTION, &[("name", name), ("action", action)]);
        self.call(Method::POST, &path, None::<&()>)
    }

    /// `DELETE /v1/nodes/{name}` (admin): a node that holds no VMs; its credential is revoked.
    pub fn delete_node(&self, name: &str) -> Result<(), ApiError> {
        self.no_content(Method::DELETE, &fill(routes::NODE, &[("name", name)]))
    }

    /// `POST /v1/tokens` (admin): a listed, revocable token.
    pub fn issue_token(&self, body: &IssueToken) -> Result<IssuedToken, ApiError> {
        self.call(Method::POST, routes::TOKENS, Some(body))
    }

    /// `GET /v1/tokens` (admin): every listed token.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, ApiError> {
        self.get(routes::TOKENS)
    }

    /// `GET /v1/me/tokens`: the caller's own listed tokens.
    pub fn my_tokens(&self) -> Result<Vec<TokenRecord>, ApiError> {
        self.get(routes::MY_TOKENS)
    }

    /// `DELETE /v1/tokens/{jti}`: revokes a token (admins any, tenants their own).
    pub fn revoke_token(&self, jti: &str) -> Result<(), ApiError> {
        self.no_content(Method::DELETE, &fill(routes::TOKEN, &[("jti", jti)]))
    }

    fn no_content(&self, method: Method, path: &str) -> Result<(), ApiError> {
        let (req, url) = self.request(method, path);
        self.send(req, &url).map(drop)
    }
}
