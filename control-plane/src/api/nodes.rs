//! Node endpoints: registration (bootstrap token, or the node's own credential), heartbeats
//! and the blobs a node fetches (its current node credential), and node administration
//! (admin).

use super::extract::{blocking, parse_json, read_body, RegisteringCaller, StrictJson};
use super::problems::{AdminOnly, InvalidBody, NodeOnly, Unauthenticated};
use super::AppState;
use crate::auth::{unix_now, Caller, Role};
use crate::error::{Error, Problem};
use crate::model::{Heartbeat, HeartbeatReply, Node, NodeCredential, NodeDetail, RegisterNode};
use crate::reconciler::NodeConnector;
use crate::store::{Cordon, Datastore, Registrant};
use crate::validate;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use modvisor_node_api::NodeApi;

/// Lifetime of a node credential unless configured; heartbeats renew it in its last quarter.
pub const DEFAULT_NODE_CREDENTIAL_TTL_SECS: u64 = 30 * 24 * 3600;

/// The node whose current credential `caller` presents: a node token names its node, and
/// only the credential the name is bound to counts (one it replaced is refused).
fn calling_node(store: &Datastore, caller: &Caller) -> Result<Node, Error> {
    if caller.role != Role::Node {
        return Err(Error::Forbidden("this endpoint is for node agents".into()));
    }
    store
        .get_node(&caller.sub)?
        .filter(|n| n.holds_credential(&caller.jti))
        .ok_or_else(|| {
            Error::Unauthenticated(format!(
                "invalid token: not the current credential of a node {}",
                caller.sub
            ))
        })
}

/// Registers a node agent and returns its new node credential (the one it replaces is
/// revoked). A bootstrap token registers a name not yet bound; a bound name needs the
/// node's own credential (also past its expiry, if still bound and unrevoked: a node
/// that was down longer than its credential's life) or an admin.
#[utoipa::path(
    tag = "nodes",
    request_body = RegisterNode,
    responses(
        (status = 200, description = "Registered", body = NodeCredential),
        InvalidBody,
        Unauthenticated,
        (status = 403, description = "Not a bootstrap, admin or this node's token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A node token of a node that no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is bound to another node's credential", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/nodes/register")]
pub async fn register_node(
    caller: RegisteringCaller,
    state: web::Data<AppState>,
    body: StrictJson<RegisterNode>,
) -> Result<web::Json<NodeCredential>, Error> {
    let RegisteringCaller(caller) = caller;
    let reg = body.0;
    match caller.role {
        Role::Bootstrap | Role::Admin => {}
        Role::Node if caller.sub == reg.name => {}
        _ => {
            return Err(Error::Forbidden(
                "registration needs a bootstrap token, an admin's, or the node's own".into(),
            ))
        }
    }
    validate::resource_name("name", &reg.name)?;
    validate::kernel_release("kernel_release", &reg.kernel_release)?;
    if !reg.address.starts_with("https://") || reg.address.len() > 200 {
        return Err(Error::invalid(
            "address",
            "must be an https URL of at most 200 characters",
        ));
    }
    if reg.csr_pem.len() > 16 * 1024 {
        return Err(Error::invalid("csr_pem", "at most 16 KiB"));
    }
    if let Some(a) = &reg.underlay_address {
        if a.parse::<std::net::Ipv4Addr>().map_or(true, |ip| {
            ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast()
        }) {
            return Err(Error::invalid(
                "underlay_address",
                "must be a unicast IPv4 address",
            ));
        }
    }
    if !["qemu", "kvm"].contains(&reg.driver.as_str()) {
        return Err(Error::invalid("driver", "must be qemu or kvm"));
    }
    if reg.capacity.vcpus == 0
        || reg.capacity.vcpus > 4096
        || reg.capacity.memory_mib < 128
        || reg.capacity.memory_mib > 1 << 30
    {
        return Err(Error::invalid(
            "capacity",
            "vcpus 1..=4096 and memory_mib 128..=2^30",
        ));
    }
    let certificate_pem = state.ca.sign_node_request(&reg.name, &reg.csr_pem)?;
    let (token, credential) = state
        .keys
        .node_credential(&reg.name, state.node_credential_ttl_secs)?;
    let store = state.store.clone();
    let node = blocking(move || {
        let by = match caller.role {
            Role::Admin => Registrant::Admin { sub: &caller.sub },
            Role::Node => Registrant::Node { jti: &caller.jti },
            _ => Registrant::Bootstrap,
        };
        store.register_node(&reg, by, &credential)
    })
    .await?;
    Ok(web::Json(NodeCredential {
        node,
        token,
        control_plane_public_key: state.keys.public_key_pem().to_string(),
        certificate_pem,
        ca_pem: state.ca.cert_pem().to_string(),
    }))
}

/// The control plane's CA certificate (PEM). No token: a node fetching it compares its
/// sha256 with the pin its bootstrap token carries before it trusts it.
#[utoipa::path(
    tag = "nodes", security(()),
    responses((status = 200, description = "The CA certificate", content_type = "application/x-pem-file", body = String))
)]
#[get("/v1/ca.pem")]
pub async fn ca_certificate(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(state.ca.cert_pem().to_string())
}

/// A node's heartbeat: it is alive, and this is what its VMs are doing.
#[utoipa::path(
    tag = "nodes",
    params(("name" = String, Path, description = "Node name")),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "What the node should remove", body = HeartbeatReply),
        Unauthenticated,
        NodeOnly,
        (status = 404, description = "Not this node", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than what this node's VMs can report", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/nodes/{name}/heartbeat")]
pub async fn heartbeat(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<web::Json<HeartbeatReply>, Error> {
    let name = name.into_inner();
    // The body may be as large as what the node holds can report: sized from its
    // placed vCPUs (every VM has at least one), never the 64 KiB of tenants' bodies.
    let store = state.store.clone();
    let presented = caller.clone();
    let node = blocking(move || calling_node(&store, &presented)).await?;
    if node.name != name {
        return Err(Error::not_found("node", name));
    }
    let placed = node.allocated.vcpus;
    let limit = validate::heartbeat_limit(placed);
    let bytes = read_body(&req, &mut payload.into_inner(), limit).await?;
    let hb: Heartbeat = parse_json(&bytes)?;
    validate::heartbeat(&hb, placed)?;
    // A credential in the last quarter of its life is renewed, and so is one a renewal
    // replaced (the node did not get the renewal's answer).
    let ttl = state.node_credential_ttl_secs;
    let renew = caller.exp.saturating_sub(unix_now()) < ttl / 4
        || node.previous_credential_jti.as_deref() == Some(caller.jti.as_str());
    let renewal = match renew {
        true => Some(state.keys.node_credential(&name, ttl)?),
        false => None,
    };
    let store = state.store.clone();
    let record = renewal.as_ref().map(|(_, record)| record.clone());
    let with_underlay = node.underlay_address.is_some();
    let (mut reply, renewed) = blocking(move || {
        let (mut reply, renewed) = store.heartbeat(&name, &caller.jti, &hb, record.as_ref())?;
        // Only a node that has an underlay can reach peers (and needs the node list).
        if with_underlay {
            reply.underlay_peers = store.underlay_peers(&name)?;
        }
        Ok::<_, Error>((reply, renewed))
    })
    .await?;
    if renewed {
        reply.credential = renewal.map(|(token, _)| token);
    }
    // What the node observed (a guest that booted, stopped or failed) is decided on now.
    state.wake.now();
    Ok(web::Json(reply))
}

/// A module blob by sha256 (node token). The node re-verifies the digest.
#[utoipa::path(
    tag = "nodes",
    params(("sha256" = String, Path, description = "Lowercase hex sha256")),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>),
        Unauthenticated,
        NodeOnly,
        (status = 404, description = "No such blob", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/blobs/{sha256}")]
pub async fn blob(
    caller: Caller,
    state: web::Data<AppState>,
    sha: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let store = state.store.clone();
    let bytes = blocking(move || {
        calling_node(&store, &caller)?;
        store
            .blob(&sha)?
            .ok_or_else(|| Error::not_found("blob", sha.as_str()))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}

/// Every node with its capacity and allocations (admin).
#[utoipa::path(
    tag = "nodes",
    responses(
        (status = 200, description = "Nodes", body = Vec<Node>),
        AdminOnly,
    )
)]
#[get("/v1/nodes")]
pub async fn list_nodes(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<Node>>, Error> {
    caller.require_admin()?;
    Ok(web::Json(state.store.list_nodes()?))
}

/// One node with what the VMs placed on it hold by their specs (admin): `allocated` and
/// `placed` are equal, whatever sequence of creates, resizes, power changes and deletes
/// came before.
#[utoipa::path(
    tag = "nodes",
    params(("name" = String, Path, description = "Node name")),
    responses(
        (status = 200, description = "The node", body = NodeDetail),
        Unauthenticated,
        AdminOnly,
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/nodes/{name}")]
pub async fn get_node(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<web::Json<NodeDetail>, Error> {
    caller.require_admin()?;
    let name = name.into_inner();
    let store = state.store.clone();
    let detail = blocking(move || {
        let node = store
            .get_node(&name)?
            .ok_or_else(|| Error::not_found("node", &name))?;
        let placed = store.placed_on(&name)?;
        Ok(NodeDetail { node, placed })
    })
    .await?;
    Ok(web::Json(detail))
}

/// A node agent's own metrics in Prometheus's text format (admin or `metrics` tokens): its
/// VMs by phase, guest channel errors by kind, module loads by outcome and their latency
/// on the node, heartbeats by result. Fetched from the node when asked.
#[utoipa::path(
    tag = "nodes",
    params(("name" = String, Path, description = "Node name")),
    responses(
        (status = 200, description = "The node agent's metrics", content_type = "text/plain", body = String),
        Unauthenticated,
        (status = 403, description = "Neither an admin nor a metrics token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The node did not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/nodes/{name}/metrics")]
pub async fn node_metrics(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    caller.require_metrics_reader()?;
    let name = name.into_inner();
    let store = state.store.clone();
    let wanted = name.clone();
    let node = blocking(move || {
        store
            .get_node(&wanted)?
            .ok_or_else(|| Error::not_found("node", &wanted))
    })
    .await?;
    let unavailable = |detail: String| Error::NodeUnavailable {
        node: name.clone(),
        detail,
    };
    let client = state.nodes.connect(&node).map_err(unavailable)?;
    let text = client
        .metrics()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

/// Deletes a node (admin) that holds no VMs (drain it first), revoking its credential:
/// the name can then be registered again with a bootstrap token.
#[utoipa::path(
    tag = "nodes",
    params(("name" = String, Path, description = "Node name")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthenticated,
        AdminOnly,
        (status = 404, description = "No such node", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "VMs are still placed on it", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/nodes/{name}")]
pub async fn delete_node(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Error> {
    caller.require_admin()?;
    let name = name.into_inner();
    let store = state.store.clone();
    blocking(move || store.delete_node(&caller.sub, &name)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Cordons, uncordons or drains a node (admin). A drained node is cordoned and its VMs are
/// placed elsewhere, their modules loaded again.
#[utoipa::path(
    tag = "nodes",
    params(
        ("name" = String, Path, description = "Node name"),
        ("action" = String, Path, description = "cordon, uncordon or drain"),
    ),
    responses(
        (status = 200, description = "The node", body = Node),
        AdminOnly,
        (status = 404, description = "No such node or action", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/nodes/{name}/{action:cordon|uncordon|drain}")]
pub async fn node_action(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<web::Json<Node>, Error> {
    caller.require_admin()?;
    let (name, action) = path.into_inner();
    let store = state.store.clone();
    let node = blocking(move || {
        let how = match action.as_str() {
            "cordon" => Cordon::Cordon,
            "uncordon" => Cordon::Uncordon,
            _ => Cordon::Drain,
        };
        let node = store.set_cordoned(&caller.sub, &name, how)?;
        if how == Cordon::Drain {
            for vm in store.all_vms()? {
                if vm.status.node.as_deref() == Some(name.as_str()) && !vm.deleting {
                    store.unplace_vm(
                        &vm.id,
                        &format!("node {name} was drained; placing elsewhere"),
                    )?;
                }
            }
        }
        Ok(node)
    })
    .await?;
    Ok(web::Json(node))
}
