//! The dashboard: a static page that is a thin client of the REST API. It holds no state
//! and no secret; the caller pastes a token, kept in the browser's session storage.

use actix_web::{get, HttpResponse};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

/// The dashboard page.
#[get("/")]
pub async fn index() -> HttpResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    )
}

/// The dashboard's script.
#[get("/dashboard/app.js")]
pub async fn script() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    )
}

/// The dashboard's style sheet.
#[get("/dashboard/style.css")]
pub async fn style() -> HttpResponse {
    asset(
        "text/css; charset=utf-8",
        include_str!("dashboard/style.css"),
    )
}
