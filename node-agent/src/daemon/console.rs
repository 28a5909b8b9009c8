//! `GET /v1/vms/{id}/console`: the guest's serial console. With `tail_bytes=N`, the last
//! N bytes of the console log (text); otherwise a WebSocket: first the recent output, then
//! the output as it comes (binary messages), and, for the one writer
//! (`write=true`), keystrokes from the client's messages to the guest.

use super::error::ApiError as Error;
use super::Node;
use crate::console::{AttachError, Session};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;
use modvisor_node_api::console::{ConsoleQuery, MAX_TAIL_BYTES, WRITER_TAKEN};
use std::sync::Arc;

/// The console log's last `n` bytes, or a WebSocket session.
pub async fn console(
    req: HttpRequest,
    node: web::Data<Arc<Node>>,
    id: web::Path<String>,
    query: web::Query<ConsoleQuery>,
    body: web::Payload,
) -> Result<HttpResponse, Error> {
    super::api::authorize(&req, &node)?;
    super::api::valid_id(&id)?;
    let id = id.into_inner();
    if let Some(n) = query.tail_bytes {
        if !(1..=MAX_TAIL_BYTES).contains(&n) {
            return Err(Error::invalid(
                "tail_bytes",
                format!("1 to {MAX_TAIL_BYTES}"),
            ));
        }
        if !node.holds(&id) {
            return Err(Error::NotFound(id));
        }
        let log = crate::driver::guest_dir(&node.host.run_root.join(&id)).join("console.log");
        let tail = web::block(move || crate::guest_files::read_tail(&log, n as u64))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(String::from_utf8_lossy(&tail).into_owned()));
    }
    let hub = node.console_of(&id)?.ok_or_else(|| {
        Error::Conflict(format!(
            "VM {id} has no interactive console now (not running, or its driver serves none)"
        ))
    })?;
    let attached = hub.attach(query.write.unwrap_or(false));
    let (response, session, messages) =
        actix_ws::handle(&req, body).map_err(|e| Error::invalid("upgrade", e.to_string()))?;
    actix_web::rt::spawn(async move {
        match attached {
            Ok(s) => relay(s, session, messages).await,
            Err(e) => {
                let code = match e {
                    AttachError::WriterTaken => CloseCode::Other(WRITER_TAKEN),
                    AttachError::Closed => CloseCode::Away,
                };
                let reason = CloseReason {
                    code,
                    description: Some(e.to_string()),
                };
                if let Err(e) = session.close(Some(reason)).await {
                    tracing::debug!(error = %e, "closing a refused console session");
                }
            }
        }
    });
    Ok(response)
}

/// Relays one session until either side ends it.
async fn relay(
    mut attached: Session,
    mut ws: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
) {
    let history = std::mem::take(&mut attached.history);
    if !history.is_empty() && ws.binary(history).await.is_err() {
        return;
    }
    let reason = loop {
        tokio::select! {
            out = attached.next_output() => match out {
                Some(bytes) => {
                    if ws.binary(bytes).await.is_err() {
                        return;
                    }
                }
                None => break Some(CloseReason { code: CloseCode::Away, description: Some("the guest stopped".into()) }),
            },
            msg = messages.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if !attached.send(&b) && attached.is_writer() {
                        break Some(CloseReason { code: CloseCode::Again, description: Some("the guest does not take input now".into()) });
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if !attached.send(t.as_bytes()) && attached.is_writer() {
                        break Some(CloseReason { code: CloseCode::Again, description: Some("the guest does not take input now".into()) });
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    if ws.pong(&p).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(r))) => break r,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
        }
    };
    if let Err(e) = ws.close(reason).await {
        tracing::debug!(error = %e, "closing a console session");
    }
}
