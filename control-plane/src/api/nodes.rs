//! Node endpoints: registration (bootstrap token), heartbeats, the catalog and blobs a
//! node fetches (node token), and node administration (admin).

use super::extract::{blocking, parse_json, read_body, StrictJson};
use super::problems::{AdminOnly, InvalidBody, NodeOnly, Unauthenticated};
use super::AppState;
use crate::auth::{Caller, Role};
use crate::error::{Error, Problem};
use crate::model::{Heartbeat, HeartbeatReply, Node, NodeCredential, NodeDetail, RegisterNode};
use crate::validate;
use actix_web::{get, post, web, HttpRequest, HttpResponse};

/// Lifetime of a node credential.
pub const NODE_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

fn require_node(caller: &Caller, name: &str) -> Result<(), Error> {
    match caller.role {
        Role::Node if caller.sub == name => Ok(()),
        Role::Node => Err(Error::not_found("node", name)),
        _ => Err(Error::Forbidden("this endpoint is for node agents".into())),
    }
}

fn require_any_node(caller: &Caller) -> Result<(), Error> {
    match caller.role {
        Role::Node => Ok(()),
        _ => Err(Error::Forbidden("this endpoint is for node agents".into())),
    }
}

/// Registers a node agent (bootstrap token) and returns its node credential.
#[utoipa::path(
    tag = "nodes",
    request_body = RegisterNode,
    responses(
        (status = 200, description = "Registered", body = NodeCredential),
        InvalidBody,
        Unauthenticated,
        (status = 403, description = "Not a bootstrap token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/nodes/register")]
pub async fn register_node(
    caller: Caller,
    state: web::Data<AppState>,
    body: StrictJson<RegisterNode>,
) -> Result<web::Json<NodeCredential>, Error> {
    if caller.role != Role::Bootstrap {
        return Err(Error::Forbidden(
            "registration needs a bootstrap token".into(),
        ));
    }
    let reg = body.0;
    validate::resource_name("name", &reg.name)?;
    validate::kernel_release("kernel_release", &reg.kernel_release)?;
    if !(reg.address.starts_with("http://") || reg.address.starts_with("https://"))
        || reg.address.len() > 200
    {
        return Err(Error::invalid(
            "address",
            "must be an http(s) URL of at most 200 characters",
        ));
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
    let store = state.store.clone();
    let node = blocking(move || store.register_node(&reg)).await?;
    let token = state
        .keys
        .issue(&node.name, Role::Node, None, NODE_TOKEN_TTL_SECS)?;
    Ok(web::Json(NodeCredential {
        node,
        token,
        control_plane_public_key: state.keys.public_key_pem().to_string(),
    }))
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
    require_node(&caller, &name)?;
    let name = name.into_inner();
    // The body may be as large as what the node holds can report: sized from its
    // placed vCPUs (every VM has at least one), never the 64 KiB of tenants' bodies.
    let store = state.store.clone();
    let node = name.clone();
    let placed =
        blocking(move || Ok(store.get_node(&node)?.map_or(0, |n| n.allocated.vcpus))).await?;
    let limit = validate::heartbeat_limit(placed);
    let bytes = read_body(&req, &mut payload.into_inner(), limit).await?;
    let hb: Heartbeat = parse_json(&bytes)?;
    validate::heartbeat(&hb, placed)?;
    let store = state.store.clone();
    Ok(web::Json(
        blocking(move || store.heartbeat(&name, &hb)).await?,
    ))
}

/// A module blob by sha256 (node token). The node re-verifies the digest.
#[utoipa::path(
    tag = "nodes",
    params(("sha256" = String, Path, description = "Lowercase hex sha256")),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>),
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
    require_any_node(&caller)?;
    let bytes = state
        .store
        .blob(&sha)?
        .ok_or_else(|| Error::not_found("blob", sha.as_str()))?;
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
        let node = store.set_cordoned(&caller.sub, &name, action != "uncordon")?;
        if action == "drain" {
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
