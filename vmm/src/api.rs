//! The control API on a Unix socket (actix-web, one worker, its own thread — as
//! Firecracker serves its API apart from the vCPUs):
//!
//! - `GET /vm`: `{"state": "Running", "uptime_ms": 1234, "console_dropped": 0}`; an ended
//!   VM also has `"reason"`.
//! - `PUT /vm/state` with `{"action": "pause" | "resume" | "stop"}`: the new report, or
//!   409 once the VM has ended.
//!
//! Errors are RFC 9457 `application/problem+json` with a `urn:modvisor:problem:<slug>` type.

use crate::state::{Action, VmStatus};
use actix_web::{web, App, HttpResponse, HttpServer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Starting the API failed.
#[derive(Debug, thiserror::Error)]
#[error("API socket {path}: {detail}")]
pub struct ApiError {
    /// The socket path.
    pub path: PathBuf,
    /// Why.
    pub detail: String,
}

/// The running API server; dropping it stops the server and removes the socket.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // Fire and forget: the server thread ends on its own.
        drop(self.handle.stop(false));
        let _ = std::fs::remove_file(&self.path);
    }
}

fn problem(status: u16, slug: &str, title: &str, detail: String) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(code)
        .content_type("application/problem+json")
        .body(
            serde_json::json!({
                "type": format!("urn:modvisor:problem:{slug}"),
                "title": title,
                "status": status,
                "detail": detail,
            })
            .to_string(),
        )
}

async fn get_vm(status: web::Data<Arc<VmStatus>>) -> HttpResponse {
    HttpResponse::Ok().json(status.report())
}

async fn put_state(status: web::Data<Arc<VmStatus>>, body: web::Bytes) -> HttpResponse {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                400,
                "invalid-body",
                "The body is not JSON",
                format!("expected {{\"action\": \"pause\" | \"resume\" | \"stop\"}}: {e}"),
            )
        }
    };
    let action = match value.get("action").and_then(|a| a.as_str()) {
        Some("pause") => Action::Pause,
        Some("resume") => Action::Resume,
        Some("stop") => Action::Stop,
        other => {
            return problem(
                400,
                "invalid-action",
                "Unknown action",
                format!("action must be pause, resume or stop, not {other:?}"),
            )
        }
    };
    match status.apply(action) {
        Ok(_) => HttpResponse::Ok().json(status.report()),
        Err(conflict) => problem(409, "vm-ended", "The VM has ended", conflict.to_string()),
    }
}

async fn not_found() -> HttpResponse {
    problem(
        404,
        "not-found",
        "No such resource",
        "the API has GET /vm and PUT /vm/state".into(),
    )
}

/// Serves the API for `status` on `path` from a thread of its own.
pub fn spawn(path: &Path, status: Arc<VmStatus>) -> Result<ApiServer, ApiError> {
    let err = |detail: String| ApiError {
        path: path.to_path_buf(),
        detail,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = path.to_path_buf();
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(status.clone()))
                        .route("/vm", web::get().to(get_vm))
                        .route("/vm/state", web::put().to(put_state))
                        .default_service(web::to(not_found))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .bind_uds(&sock);
                match server {
                    Ok(s) => {
                        let s = s.run();
                        let _ = tx.send(Ok(s.handle()));
                        if let Err(e) = s.await {
                            tracing::warn!(error = %e, "API server ended");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
        })
        .map_err(|e| err(e.to_string()))?;
    let handle = rx
        .recv()
        .map_err(|_| err("the API thread ended before binding".into()))?
        .map_err(err)?;
    Ok(ApiServer {
        path: path.to_path_buf(),
        handle,
    })
}
