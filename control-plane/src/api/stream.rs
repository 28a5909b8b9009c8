//! `GET /v1/stream`: what the caller may see, live, as server-sent events, so that a
//! dashboard shows changes as they happen without polling every list. The control plane
//! looks for changes about once a second and sends only what changed:
//!
//! - `audit` (with `id: <seq>`): each new event of the audit trail the caller sees;
//! - `vm`: each visible VM at the start, then each one that changes;
//! - `vm_deleted`: `{"id": ...}` for a VM that is gone;
//! - `module_requests`: `{"vm_id": ..., "items": [...]}` at the start and on change;
//! - `nodes` (admins): every node, at the start and when a node's state, cordon,
//!   capacity or allocation changes;
//! - a `: keepalive` comment after 15 s without anything else.
//!
//! Read it with `fetch` (it needs the Authorization header, which `EventSource` cannot
//! send). A stream does not count as a request in flight; each caller holds at most
//! [`crate::ratelimit::MAX_STREAMS`] at once.

use super::extract::{blocking, StrictQuery};
use super::problems::Unauthenticated;
use super::AppState;
use crate::auth::{Caller, Role};
use crate::error::{Error, Problem};
use crate::model::{ModuleRequest, Node, Vm};
use crate::ratelimit::InFlight;
use crate::store::{Datastore, VmFilter};
use actix_web::web::Bytes;
use actix_web::{get, web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use utoipa::IntoParams;

/// How often the stream looks for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Silence after which a keepalive comment is sent.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Most audit events sent in one look (the rest follow on the next).
const EVENTS_PER_LOOK: usize = 500;

/// Query parameters of `GET /v1/stream`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Send audit events after this sequence number (default: only those after the
    /// stream began).
    pub after_seq: Option<u64>,
}

/// What the caller may see, live: server-sent events (`audit`, `vm`, `vm_deleted`,
/// `module_requests`, and for admins `nodes`), each `data` one JSON object.
#[utoipa::path(
    tag = "events",
    params(StreamParams),
    responses(
        (status = 200, description = "A stream of server-sent events, until the client leaves", content_type = "text/event-stream", body = String),
        Unauthenticated,
        (status = 403, description = "Neither a tenant nor an admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stream")]
pub async fn stream(
    caller: Caller,
    state: web::Data<AppState>,
    query: StrictQuery<StreamParams>,
    req: HttpRequest,
) -> Result<HttpResponse, Error> {
    let tenant = match caller.scope()? {
        VmFilter::All => None,
        VmFilter::Tenant(t) => Some(t.to_string()),
    };
    let holder = tenant.clone().unwrap_or_else(|| caller.sub.clone());
    let held = state.limits.admit_stream(&holder)?;
    // The stream stays open: it gives back its request-in-flight slot at once.
    drop(req.extensions_mut().remove::<InFlight>());
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let watch = Watch {
        store: state.store.clone(),
        tenant,
        admin: caller.role == Role::Admin,
        after_seq: query.0.after_seq,
        vms: BTreeMap::new(),
        requests: BTreeMap::new(),
        nodes: None,
    };
    actix_web::rt::spawn(async move {
        let _held = held;
        watch.run(tx).await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, std::convert::Infallible>(frame), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body))
}

/// What one stream has sent, to send only what changed.
struct Watch {
    store: Datastore,
    tenant: Option<String>,
    admin: bool,
    after_seq: Option<u64>,
    vms: BTreeMap<String, Vm>,
    requests: BTreeMap<String, Vec<ModuleRequest>>,
    nodes: Option<Vec<NodeShape>>,
}

/// What of a node a change is sent for (not its heartbeat times).
#[derive(PartialEq)]
struct NodeShape(String, String, bool, u64, u64, u64, u64);

impl NodeShape {
    fn of(n: &Node) -> Self {
        NodeShape(
            n.name.clone(),
            format!("{:?}", n.state),
            n.cordoned,
            n.capacity.vcpus,
            n.capacity.memory_mib,
            n.allocated.vcpus,
            n.allocated.memory_mib,
        )
    }
}

/// One look at the store.
struct Look {
    events: Vec<crate::model::Event>,
    horizon: u64,
    vms: Vec<Vm>,
    requests: BTreeMap<String, Vec<ModuleRequest>>,
    nodes: Option<Vec<Node>>,
}

fn frame(kind: &str, id: Option<u64>, data: &impl serde::Serialize) -> Result<Bytes, Error> {
    let json = serde_json::to_string(data).map_err(|e| Error::Encoding(e.to_string()))?;
    let id = match id {
        Some(i) => format!("id: {i}\n"),
        None => String::new(),
    };
    Ok(Bytes::from(format!("event: {kind}\n{id}data: {json}\n\n")))
}

impl Watch {
    /// Sends what changes until the client leaves (or the store fails, which ends the
    /// stream: the client reconnects).
    async fn run(mut self, tx: tokio::sync::mpsc::Sender<Bytes>) {
        let mut last_sent = Instant::now();
        loop {
            let frames = match self.look().await.and_then(|look| self.changes(look)) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "a live stream ends: reading the store failed");
                    return;
                }
            };
            if frames.is_empty() && last_sent.elapsed() >= KEEPALIVE {
                if tx
                    .send(Bytes::from_static(b": keepalive\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
                last_sent = Instant::now();
            }
            for f in frames {
                if tx.send(f).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            tokio::select! {
                () = tx.closed() => return,
                () = actix_web::rt::time::sleep(CHECK_EVERY) => {}
            }
        }
    }

    async fn look(&self) -> Result<Look, Error> {
        let (store, tenant, admin, after) = (
            self.store.clone(),
            self.tenant.clone(),
            self.admin,
            self.after_seq,
        );
        blocking(move || {
            let filter = match &tenant {
                Some(t) => VmFilter::Tenant(t),
                None => VmFilter::All,
            };
            let horizon = store.event_horizon(filter)?;
            let events = match after {
                None => Vec::new(),
                Some(seq) => {
                    let from = Some(crate::store::event_key(seq));
                    store.list_events(filter, from, EVENTS_PER_LOOK, None)?.0
                }
            };
            let vms = store.visible_vms(filter)?;
            let mut requests = BTreeMap::new();
            for vm in &vms {
                requests.insert(vm.id.clone(), store.module_requests(filter, &vm.id)?);
            }
            let nodes = if admin {
                Some(store.list_nodes()?)
            } else {
                None
            };
            Ok(Look {
                events,
                horizon,
                vms,
                requests,
                nodes,
            })
        })
        .await
    }

    /// The frames of what changed since the last look, remembering what was sent.
    fn changes(&mut self, look: Look) -> Result<Vec<Bytes>, Error> {
        let mut out = Vec::new();
        for e in &look.events {
            out.push(frame("audit", Some(e.seq), e)?);
        }
        self.after_seq = Some(match look.events.last() {
            Some(e) => e.seq,
            // Nothing new (or the first look without after_seq): go on from the horizon.
            None => self.after_seq.unwrap_or(look.horizon).max(look.horizon),
        });
        let mut now: BTreeMap<String, Vm> = BTreeMap::new();
        for vm in look.vms {
            if self.vms.get(&vm.id) != Some(&vm) {
                out.push(frame("vm", None, &vm)?);
            }
            now.insert(vm.id.clone(), vm);
        }
        let mut gone: Vec<&str> = self
            .vms
            .keys()
            .filter(|id| !now.contains_key(*id))
            .map(String::as_str)
            .collect();
        // A VM created and deleted between two looks was never sent, but its deletion
        // (in the trail) is news all the same.
        for e in look.events.iter().filter(|e| e.action == "vm.delete") {
            if let Some(id) = e.resource.strip_prefix("vms/") {
                if !now.contains_key(id) && !gone.contains(&id) {
                    gone.push(id);
                }
            }
        }
        for id in gone {
            out.push(frame("vm_deleted", None, &serde_json::json!({ "id": id }))?);
        }
        self.vms = now;
        for (id, items) in &look.requests {
            if self.requests.get(id) != Some(items) {
                let data = serde_json::json!({ "vm_id": id, "items": items });
                out.push(frame("module_requests", None, &data)?);
            }
        }
        self.requests = look.requests;
        if let Some(nodes) = look.nodes {
            let shape: Vec<NodeShape> = nodes.iter().map(NodeShape::of).collect();
            if self.nodes.as_ref() != Some(&shape) {
                out.push(frame("nodes", None, &nodes)?);
                self.nodes = Some(shape);
            }
        }
        Ok(out)
    }
}
