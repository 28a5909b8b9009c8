//! `GET /v1/vms/{id}/console`: the guest's serial console, relayed tenant <-> control
//! plane <-> node <-> hypervisor. A WebSocket (binary messages both ways; see
//! `modvisor_node_api::console`), or with `tail_bytes` the recent output as text.
//!
//! Authorization is the VM's (another tenant gets 404 before any upgrade). Sessions are
//! bounded per tenant, closed when idle or too old, and audited when they end. Memory
//! stays bounded: each direction awaits the other side before it reads more, and the
//! node drops output for a session that reads too slowly.

use super::extract::StrictQuery;
use super::problems::{Unauthenticated, VmNotFound};
use super::AppState;
use crate::auth::Caller;
use crate::error::{Error, Problem};
use crate::reconciler::NodeConnector;
use actix_web::{get, web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::{SinkExt, StreamExt};
use modvisor_node_api::console::{ConsoleQuery, IDLE_TIMEOUT, MAX_TAIL_BYTES, SESSION_EXPIRED};
use modvisor_node_api::{ClientError, NodeApi};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as UpstreamCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Upstream;

/// Console sessions one tenant may hold at once.
pub const MAX_SESSIONS_PER_TENANT: usize = 8;
/// A session with no message from its client for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// No session lasts longer.
pub const MAX_SESSION: Duration = Duration::from_secs(8 * 3600);

/// The guest's serial console of one of the caller's VMs: a WebSocket (`write=true` to
/// type; one writer at a time, a second is closed with code 4409), or with `tail_bytes`
/// the last bytes of output as text.
#[utoipa::path(
    tag = "vms",
    params(("id" = String, Path, description = "VM id"), ConsoleQuery),
    responses(
        (status = 101, description = "The console as a WebSocket: binary messages of output (the recent history first); a writer's binary or text messages are keystrokes. Close codes: 4409 another writer, 4408 idle, 4410 too long"),
        (status = 200, description = "With `tail_bytes`: the last bytes of console output", body = String, content_type = "text/plain"),
        (status = 400, description = "Neither a WebSocket upgrade nor `tail_bytes`, or an invalid query", body = Problem, content_type = "application/problem+json"),
        Unauthenticated,
        (status = 403, description = "Not a tenant token", body = Problem, content_type = "application/problem+json"),
        VmNotFound,
        (status = 409, description = "The VM is not running, or its driver serves no console", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant holds as many console sessions as it may", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The VM's node did not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/vms/{id}/console")]
pub async fn console(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: StrictQuery<ConsoleQuery>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, Error> {
    let tenant = caller.require_tenant()?.to_string();
    let (vm, node) = super::guest::running_vm(&state, &caller, &id)?;
    let query = query.0;
    if let Some(n) = query.tail_bytes {
        if !(1..=MAX_TAIL_BYTES).contains(&n) {
            return Err(Error::invalid(
                "tail_bytes",
                format!("1 to {MAX_TAIL_BYTES}"),
            ));
        }
    }
    let upgrade = req
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if query.tail_bytes.is_none() && !upgrade {
        return Err(Error::invalid(
            "upgrade",
            "open the console as a WebSocket, or ask for tail_bytes",
        ));
    }
    let unavailable = |detail: String| Error::NodeUnavailable {
        node: node.name.clone(),
        detail,
    };
    let not_running = |detail: String| {
        Error::Conflict(format!("VM {} has no console on its node: {detail}", vm.id))
    };
    if let Some(n) = query.tail_bytes {
        let client = state.nodes.connect(&node).map_err(unavailable)?;
        let text = client.console_tail(&vm.id, n).await.map_err(|e| match e {
            ClientError::Refused {
                status: 404 | 409,
                detail,
                ..
            } => not_running(detail),
            other => unavailable(other.to_string()),
        })?;
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(text));
    }
    let slot = state
        .console_sessions
        .claim(&tenant)
        .ok_or(Error::RateLimited {
            tenant: tenant.clone(),
            limit: "console_sessions",
            retry_after_secs: 5,
        })?;
    let writer = query.write.unwrap_or(false);
    let upstream = state
        .nodes
        .console(&node, &vm.id, writer)
        .await
        .map_err(|e| match e {
            crate::reconciler::ConsoleDialError::Refused {
                status: 404 | 409,
                detail,
            } => not_running(detail),
            other => unavailable(other.to_string()),
        })?;
    let (response, session, messages) =
        actix_ws::handle(&req, body).map_err(|e| Error::invalid("upgrade", e.to_string()))?;
    let state = state.clone();
    let (actor, resource) = (caller.sub.clone(), format!("vms/{}", vm.id));
    actix_web::rt::spawn(async move {
        let started = Instant::now();
        let ended = relay(upstream, session, messages).await;
        drop(slot);
        let detail = format!(
            "{}, {} s, {} bytes in, {} bytes out, ended: {}",
            if writer { "writer" } else { "viewer" },
            started.elapsed().as_secs(),
            ended.bytes_in,
            ended.bytes_out,
            ended.why
        );
        let store = state.store.clone();
        let recorded = super::extract::blocking(move || {
            store.record_outcome(
                &actor,
                Some(&tenant),
                "vm.console",
                &resource,
                crate::model::Outcome::Success,
                &detail,
            )
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "could not record a console session in the audit trail");
        }
    });
    Ok(response)
}

/// How a relayed session ended.
struct Ended {
    bytes_in: u64,
    bytes_out: u64,
    why: String,
}

type UpstreamSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn client_reason(code: u16, why: &str) -> CloseReason {
    CloseReason {
        code: CloseCode::from(code),
        description: Some(why.to_string()),
    }
}

/// Relays until one side ends; closes the other with the reason.
async fn relay(
    mut upstream: UpstreamSocket,
    mut client: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
) -> Ended {
    let mut ended = Ended {
        bytes_in: 0,
        bytes_out: 0,
        why: String::new(),
    };
    let expires = tokio::time::sleep(MAX_SESSION);
    tokio::pin!(expires);
    let idle = tokio::time::sleep(IDLE);
    tokio::pin!(idle);
    let (to_client, to_node): (Option<CloseReason>, Option<CloseFrame>) = loop {
        tokio::select! {
            () = &mut expires => {
                ended.why = format!("longer than {} s", MAX_SESSION.as_secs());
                break (Some(client_reason(SESSION_EXPIRED, &ended.why)), None);
            }
            () = &mut idle => {
                ended.why = format!("idle for {} s", IDLE.as_secs());
                break (Some(client_reason(IDLE_TIMEOUT, &ended.why)), None);
            }
            from_node = upstream.next() => match from_node {
                Some(Ok(Upstream::Binary(b))) => {
                    ended.bytes_out += b.len() as u64;
                    if client.binary(b).await.is_err() {
                        ended.why = "the client went away".into();
                        break (None, None);
                    }
                }
                Some(Ok(Upstream::Text(t))) => {
                    ended.bytes_out += t.len() as u64;
                    if client.text(t.as_str().to_string()).await.is_err() {
                        ended.why = "the client went away".into();
                        break (None, None);
                    }
                }
                Some(Ok(Upstream::Close(frame))) => {
                    let (code, why) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1001, "the node closed the console".into()));
                    ended.why = why.clone();
                    break (Some(client_reason(code, &why)), None);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    ended.why = format!("the node's connection broke: {e}");
                    break (Some(client_reason(1011, "the node's connection broke")), None);
                }
                None => {
                    ended.why = "the node closed the console".into();
                    break (Some(client_reason(1001, &ended.why)), None);
                }
            },
            from_client = messages.next() => {
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
                let forward = match from_client {
                    Some(Ok(Message::Binary(b))) => Upstream::Binary(b),
                    Some(Ok(Message::Text(t))) => Upstream::Text(t.to_string().into()),
                    Some(Ok(Message::Ping(p))) => {
                        if client.pong(&p).await.is_err() {
                            ended.why = "the client went away".into();
                            break (None, Some(close_frame(1001, "the client went away")));
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(r))) => {
                        ended.why = r
                            .as_ref()
                            .and_then(|r| r.description.clone())
                            .unwrap_or_else(|| "closed by the client".into());
                        break (None, Some(close_frame(1000, "closed by the client")));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        ended.why = "the client went away".into();
                        break (None, Some(close_frame(1001, "the client went away")));
                    }
                };
                ended.bytes_in += forward.len() as u64;
                if let Err(e) = upstream.send(forward).await {
                    ended.why = format!("the node's connection broke: {e}");
                    break (Some(client_reason(1011, "the node's connection broke")), None);
                }
            }
        }
    };
    if let Some(reason) = to_client {
        if let Err(e) = client.close(Some(reason)).await {
            tracing::debug!(error = %e, "closing a console session");
        }
    }
    let frame = to_node.or_else(|| Some(close_frame(1000, "the session ended")));
    if let Err(e) = upstream.close(frame).await {
        tracing::debug!(error = %e, "closing a node's console session");
    }
    ended
}

fn close_frame(code: u16, why: &str) -> CloseFrame {
    CloseFrame {
        code: UpstreamCode::from(code),
        reason: why.to_string().into(),
    }
}

/// Console sessions held per tenant, each released when its slot is dropped.
#[derive(Debug, Default, Clone)]
pub struct ConsoleSessions(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
);

/// One tenant's claim on a console session.
#[derive(Debug)]
pub struct SessionSlot {
    tenant: String,
    sessions: ConsoleSessions,
}

impl ConsoleSessions {
    /// A slot for `tenant`, unless it holds [`MAX_SESSIONS_PER_TENANT`] already.
    pub fn claim(&self, tenant: &str) -> Option<SessionSlot> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(tenant.to_string()).or_default();
        if *n >= MAX_SESSIONS_PER_TENANT {
            return None;
        }
        *n += 1;
        Some(SessionSlot {
            tenant: tenant.to_string(),
            sessions: self.clone(),
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut held = self.sessions.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}
