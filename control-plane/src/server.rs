//! The control plane process: opens the store and the signing key, bootstraps tenants and
//! tokens, and serves the API.

use crate::api::tokens::issue_listed;
use crate::api::{self, AppState};
use crate::auth::{Role, TokenKeys};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{Datastore, StoreLocation};
use actix_web::dev::Service;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Default upload limit for module blobs.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 16 * 1024 * 1024;
/// Where, under the data directory, the bound address is written once listening.
pub const ADDR_FILE: &str = "control-plane.addr";
/// Where, under the data directory, the internal (node-facing, TLS) address is written
/// once bound.
pub const INTERNAL_ADDR_FILE: &str = "control-plane-internal.addr";
/// Where, under the data directory, the `--metrics-listen` address is written once bound.
pub const METRICS_ADDR_FILE: &str = "metrics.addr";
/// The token signing key and the cluster CA kept in `store` for every replica (see
/// `store::secrets`), made by the first replica that starts.
pub fn shared_secrets(store: &Datastore) -> Result<(TokenKeys, crate::ca::ClusterCa)> {
    let keys = TokenKeys::from_pkcs8_pem(
        &store.shared_secret("token_signing_key", TokenKeys::generate_pem)?,
    )?;
    let ca = store.shared_secret("cluster_ca", || {
        let (cert, key) = crate::ca::ClusterCa::generate_pems()?;
        Ok(format!("{cert}{key}"))
    })?;
    let split = ca
        .find("-----BEGIN PRIVATE KEY-----")
        .ok_or_else(|| Error::Signing("the stored cluster CA has no private key".into()))?;
    let ca = crate::ca::ClusterCa::from_pems(ca[..split].to_string(), &ca[split..])?;
    Ok((keys, ca))
}

/// Puts the signing key and the CA of a one-replica installation (files under
/// `data_dir`) into a shared `store`, for `store copy`: tokens and node certificates it
/// issued stay valid. Refused when the store already holds different ones.
pub fn share_secrets_of(data_dir: &Path, store: &Datastore) -> Result<()> {
    let read = |name: &str| {
        let path = data_dir.join(name);
        fs::read_to_string(&path).map_err(|e| Error::DataDir {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    };
    let key = read(crate::auth::KEY_FILE)?;
    let ca = format!(
        "{}{}",
        read(crate::ca::CA_CERT_FILE)?,
        read(crate::ca::CA_KEY_FILE)?
    );
    for (name, ours) in [("token_signing_key", key), ("cluster_ca", ca)] {
        if store.shared_secret(name, || Ok(ours.clone()))? != ours {
            return Err(Error::Conflict(format!(
                "the destination already holds another {name}"
            )));
        }
    }
    Ok(())
}

/// Tenants `modvisor up` creates.
pub const DEFAULT_TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the sled database, the signing key and the tokens.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Largest module upload accepted, in bytes.
    pub max_module_bytes: usize,
    /// HTTP worker threads; the number of CPUs when `None`.
    pub workers: Option<usize>,
    /// How long a request body may take to arrive in full (slow senders get a 408).
    pub body_timeout: std::time::Duration,
    /// The reconciler's settings.
    pub reconciler: crate::reconciler::ReconcilerConfig,
    /// A second address serving only `/metrics` (with the same tokens), if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the internal API that node agents call, served over TLS.
    pub internal_listen: SocketAddr,
    /// Lifetime of node credentials, in seconds (heartbeats renew them in their last
    /// quarter).
    pub node_credential_ttl_secs: u64,
    /// The node agents `/readyz` waits for: those started with this control plane.
    pub expect_nodes: Vec<String>,
    /// Where the state is (`None`: sled in `data_dir/db`).
    pub store: Option<StoreLocation>,
    /// This replica's name among the control planes sharing a store (in the leader key
    /// and the logs).
    pub replica: String,
}

/// An opened control plane, ready to serve.
pub struct ControlPlane {
    config: Config,
    state: web::Data<AppState>,
}

impl ControlPlane {
    /// Opens the store and the signing key under `config.data_dir`, creating them on first start.
    pub fn open(config: Config) -> Result<Self> {
        fs::create_dir_all(&config.data_dir).map_err(|e| Error::DataDir {
            path: config.data_dir.display().to_string(),
            detail: e.to_string(),
        })?;
        let location = config
            .store
            .clone()
            .unwrap_or_else(|| StoreLocation::Sled(config.data_dir.join("db")));
        let kv = location.open().map_err(|e| match e {
            Error::Storage(m) if m.contains("WouldBlock") || m.contains("lock") => Error::DataDir {
                path: config.data_dir.display().to_string(),
                detail: format!("the store is in use by another modvisor process ({m})"),
            },
            other => other,
        })?;
        let metrics = Metrics::new()?;
        let store = Datastore::new(Arc::new(crate::store::TimedKv::new(kv, metrics.clone())));
        let (keys, ca) = match location {
            // One replica: the secrets are files of its own.
            StoreLocation::Sled(_) => (
                TokenKeys::load_or_create(&config.data_dir)?,
                crate::ca::ClusterCa::load_or_create(&config.data_dir)?,
            ),
            // Several replicas share them through the store.
            _ => shared_secrets(&store)?,
        };
        let (keys, ca) = (Arc::new(keys), Arc::new(ca));
        let nodes = crate::reconciler::HttpNodes::new(
            keys.clone(),
            ca.cert_pem(),
            config.reconciler.budgets,
        );
        let standing = Arc::new(crate::standing::StandingCache::start(store.clone())?);
        let state = web::Data::new(AppState {
            store,
            keys,
            standing,
            metrics,
            limits: Default::default(),
            ca,
            node_credential_ttl_secs: config.node_credential_ttl_secs,
            max_module_bytes: config.max_module_bytes,
            body_timeout: config.body_timeout,
            nodes,
            console_sessions: Default::default(),
            wake: Default::default(),
            expect_nodes: config.expect_nodes.clone(),
        });
        Ok(ControlPlane { config, state })
    }

    /// The typed store.
    pub fn store(&self) -> &Datastore {
        &self.state.store
    }

    /// The token keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.state.keys
    }

    /// Creates the default tenants if absent and writes an admin token and one token per
    /// default tenant under `data_dir/tokens/` (mode 0600). Returns `(name, path)` pairs.
    pub fn bootstrap(&self, token_ttl_secs: u64) -> Result<Vec<(String, PathBuf)>> {
        for t in DEFAULT_TENANTS {
            self.store().ensure_tenant("system:bootstrap", t)?;
        }
        let dir = self.config.data_dir.join("tokens");
        let issue = |sub: &str, role, tenant| {
            issue_listed(
                self.store(),
                self.keys(),
                &self.state.ca,
                "system:bootstrap",
                sub,
                role,
                tenant,
                token_ttl_secs,
            )
        };
        let mut written = vec![(
            "admin".to_string(),
            write_secret(&dir, "admin.jwt", &issue("admin", Role::Admin, None)?.token)?,
        )];
        for t in DEFAULT_TENANTS {
            let token = issue(t, Role::Tenant, Some(t))?.token;
            written.push((
                t.to_string(),
                write_secret(&dir, &format!("{t}.jwt"), &token)?,
            ));
        }
        Ok(written)
    }

    /// A bootstrap token (role `bootstrap`, listed): it can only register a node agent.
    pub fn bootstrap_token(&self, ttl_secs: u64) -> Result<String> {
        let issued = issue_listed(
            self.store(),
            self.keys(),
            &self.state.ca,
            "system:bootstrap",
            "bootstrap",
            Role::Bootstrap,
            None,
            ttl_secs,
        )?;
        Ok(issued.token)
    }

    /// Publishes every module of a guest kernel's tree that is not yet in the catalog for
    /// its release, and approves `allow` (with their dependencies) for all tenants once
    /// per store: a later start never re-approves over an admin's decision. Returns how
    /// many modules were published.
    pub fn seed_catalog(
        &self,
        release: &str,
        modules: &[std::path::PathBuf],
        allow: &[&str],
    ) -> Result<usize> {
        let published = self.store().published_for(release)?;
        let mut catalog = modvisor_modules::MemoryCatalog::new();
        let mut n = 0;
        for path in modules {
            let bytes =
                fs::read(path).map_err(|e| Error::Seed(format!("{}: {e}", path.display())))?;
            let Ok(module) = modvisor_modules::KernelModule::parse(&bytes) else {
                tracing::warn!(path = %path.display(), "not a kernel module; skipped");
                continue;
            };
            let name = modvisor_modules::normalize_name(module.name());
            if !published.contains_key(&name) {
                let info = crate::api::modinfo_map(&module);
                self.store()
                    .publish_module("system:seed", &name, release, &bytes, info, None)?;
                n += 1;
            }
            catalog.insert(module, None);
        }
        for root in allow {
            let names = modvisor_modules::load_order(root, &catalog)
                .map_err(|e| Error::Seed(format!("default allow-list: {e}")))?;
            for name in names {
                let policy = crate::model::ModulePolicy {
                    approved: true,
                    tenants: vec!["*".into()],
                    signers: vec!["kernel".into()],
                    licenses: Vec::new(),
                };
                self.store().seed_policy(&name, &policy)?;
            }
        }
        Ok(n)
    }

    /// Serves the API until the process is told to stop (SIGINT/SIGTERM). `on_bound` is
    /// called with the bound address, which is also written to `data_dir/control-plane.addr`.
    pub async fn serve(self, on_bound: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
        crate::reconciler::spawn(
            self.state.store.clone(),
            self.state.nodes.clone(),
            self.state.metrics.clone(),
            self.config.reconciler.clone(),
            self.state.wake.clone(),
            self.config.replica.clone(),
        )?;
        // One app shape for both listeners: shared state, path errors as problems, and
        // every request counted by route pattern and status.
        macro_rules! instrumented_app {
            ($state:expr, $routes:path, $methods:expr) => {{
                let state = $state.clone();
                let methods = $methods.clone();
                let metrics = state.metrics.clone();
                let app = App::new()
                    .app_data(state)
                    .app_data(
                        web::PathConfig::default()
                            .error_handler(|e, _| Error::invalid("path", e.to_string()).into()),
                    )
                    .wrap_fn(move |req, srv| {
                        let start = Instant::now();
                        let method = req.method().to_string();
                        let metrics = metrics.clone();
                        let request_id = request_id_of(req.headers());
                        let span = tracing::info_span!("request", request_id = %request_id);
                        let fut = tracing::Instrument::instrument(srv.call(req), span.clone());
                        let answer = async move {
                            let res = fut.await?;
                            let mut res = with_request_id(res, &request_id);
                            if let Ok(v) = header::HeaderValue::from_str(&request_id) {
                                res.headers_mut().insert(REQUEST_ID.clone(), v);
                            }
                            let route = res
                                .request()
                                .match_pattern()
                                .unwrap_or_else(|| "unmatched".to_string());
                            let status = res.status().as_u16();
                            let took = start.elapsed();
                            metrics.observe(&method, &route, status, took);
                            // Every mutation (asked for, whatever its answer) at info.
                            if method == "GET" || method == "HEAD" {
                                tracing::debug!(%method, %route, status, ?took, "request");
                            } else {
                                tracing::info!(%method, %route, status, ?took, "mutation");
                            }
                            Ok(res)
                        };
                        tracing::Instrument::instrument(answer, span)
                    });
                $routes(app).default_service(web::to(move |req: HttpRequest| {
                    let methods = methods.clone();
                    async move { no_route(req, &methods) }
                }))
            }};
        }
        let listening = |listen: SocketAddr| {
            move |e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("listening on {listen}: {e}"))
            }
        };
        let state = self.state.clone();
        let public_methods = std::sync::Arc::new(api::public_methods());
        let mut server = HttpServer::new(move || {
            instrumented_app!(state, api::configure_public, public_methods)
        })
        .backlog(4096)
        // Headers must arrive within 5 s and a closing client is given 1 s.
        .client_request_timeout(std::time::Duration::from_secs(5))
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .bind(self.config.listen)
        .map_err(listening(self.config.listen))?;
        if let Some(w) = self.config.workers {
            server = server.workers(w);
        }
        let addr = server
            .addrs()
            .first()
            .copied()
            .unwrap_or(self.config.listen);

        // The node-facing API: TLS with a certificate of the CA naming the control plane.
        let (cert, key) = self
            .state
            .ca
            .control_plane_identity()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tls = modvisor_node_api::tls::server_config(&cert, &key)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let state = self.state.clone();
        let internal_listen = self.config.internal_listen;
        let internal_methods = std::sync::Arc::new(api::internal_methods());
        let internal = HttpServer::new(move || {
            instrumented_app!(state, api::configure_internal, internal_methods)
        })
        // Nodes' calls are few: two workers, whatever the public API has.
        .workers(2)
        .client_request_timeout(std::time::Duration::from_secs(5))
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .bind_rustls_0_23(internal_listen, tls)
        .map_err(listening(internal_listen))?;
        let internal_addr = internal.addrs().first().copied().unwrap_or(internal_listen);
        write_atomically(
            &self.config.data_dir.join(INTERNAL_ADDR_FILE),
            internal_addr.to_string().as_bytes(),
        )?;
        tracing::info!(addr = %internal_addr, "internal (node) API listening, TLS");
        write_atomically(
            &self.config.data_dir.join(ADDR_FILE),
            addr.to_string().as_bytes(),
        )?;
        let metrics = match self.config.metrics_listen {
            Some(listen) => Some(self.metrics_server(listen)?),
            None => None,
        };
        on_bound(addr);
        let both = futures_util::future::try_join(server.run(), internal.run());
        match metrics {
            Some(m) => futures_util::future::try_join(both, m).await.map(drop),
            None => both.await.map(drop),
        }
    }

    /// A server of `/metrics` alone on `listen` (same tokens: admin or metrics).
    fn metrics_server(&self, listen: SocketAddr) -> std::io::Result<actix_web::dev::Server> {
        let state = self.state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .service(api::metrics_endpoint())
                .default_service(web::to(|req: HttpRequest| async move {
                    no_route(req, &api::methods::MethodTable::only("/metrics", "GET"))
                }))
        })
        .workers(1)
        .client_request_timeout(std::time::Duration::from_secs(5))
        .bind(listen)
        .map_err(|e| std::io::Error::new(e.kind(), format!("listening on {listen}: {e}")))?;
        let addr = server.addrs().first().copied().unwrap_or(listen);
        write_atomically(
            &self.config.data_dir.join(METRICS_ADDR_FILE),
            addr.to_string().as_bytes(),
        )?;
        tracing::info!(%addr, "metrics listening");
        Ok(server.run())
    }
}

/// The header a request's id travels in, both ways.
static REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The caller's `X-Request-Id` when it is a sane one (1-64 characters of
/// `[A-Za-z0-9._:-]`), else a new one: the id that ties a request's log lines to the
/// answer the caller got.
/// A problem answer carries the request's id in its body too (the one its logs name).
fn with_request_id(
    res: actix_web::dev::ServiceResponse,
    request_id: &str,
) -> actix_web::dev::ServiceResponse {
    let problem = res
        .response()
        .error()
        .and_then(|e| e.as_error::<Error>())
        .map(|e| modvisor_node_api::Problem {
            request_id: Some(request_id.to_string()),
            ..e.problem()
        });
    let Some(problem) = problem else {
        return res;
    };
    match serde_json::to_vec(&problem) {
        Ok(body) => res.map_body(|_, _| actix_web::body::BoxBody::new(body)),
        Err(e) => {
            tracing::error!(error = %e, "encoding a problem");
            res
        }
    }
}

fn request_id_of(headers: &header::HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// What a request no route takes gets: 405 with the methods its path takes, or 404.
fn no_route(req: HttpRequest, methods: &api::methods::MethodTable) -> HttpResponse {
    let allowed = methods.allowed(req.path());
    let error = if allowed.is_empty() || allowed.contains(&req.method().as_str()) {
        Error::not_found("route", req.path().chars().take(200).collect::<String>())
    } else {
        Error::MethodNotAllowed {
            method: req.method().as_str().chars().take(20).collect(),
            allowed,
        }
    };
    actix_web::ResponseError::error_response(&error)
}

/// Writes a secret file with mode 0600, replacing any earlier one atomically.
fn write_secret(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let err = |e: std::io::Error| Error::DataDir {
        path: dir.join(name).display().to_string(),
        detail: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    let path = dir.join(name);
    write_atomically(&path, contents.as_bytes()).map_err(err)?;
    Ok(path)
}

fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
