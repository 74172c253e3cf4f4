//! The agent console (`GET /`, SPEC 3) and the admin page (`GET /admin`), served from
//! `web/` and embedded in the binary, with `Referrer-Policy: no-referrer` and a strict
//! content security policy.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

const INDEX: &str = include_str!("../../web/index.html");
const ADMIN: &str = include_str!("../../web/admin.html");
const COMMON_JS: &str = include_str!("../../web/common.js");
const CONSOLE_JS: &str = include_str!("../../web/console.js");
const ADMIN_JS: &str = include_str!("../../web/admin.js");
const STYLE: &str = include_str!("../../web/style.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; \
                   img-src 'self' data:; media-src *; frame-src *; base-uri 'none'; form-action 'self'";

/// Web routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_console))
        .routes(routes!(get_admin))
        .routes(routes!(get_common_js))
        .routes(routes!(get_console_js))
        .routes(routes!(get_admin_js))
        .routes(routes!(get_style))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// SPEC 3 — `GET /`: the agent console.
#[utoipa::path(get, path = "/", tag = "web", responses((status = 200, body = String, content_type = "text/html", description = "the agent console")))]
async fn get_console() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// SPEC 6 — `GET /admin`: the admin page (it signs in with the admin token).
#[utoipa::path(get, path = "/admin", tag = "web", responses((status = 200, body = String, content_type = "text/html", description = "the admin page")))]
async fn get_admin() -> Response {
    page("text/html; charset=utf-8", ADMIN)
}

/// Helpers shared by both pages.
#[utoipa::path(get, path = "/assets/common.js", tag = "web", responses((status = 200, body = String, content_type = "text/javascript", description = "script")))]
async fn get_common_js() -> Response {
    page("text/javascript; charset=utf-8", COMMON_JS)
}

/// The admin page's script.
#[utoipa::path(get, path = "/assets/admin.js", tag = "web", responses((status = 200, body = String, content_type = "text/javascript", description = "script")))]
async fn get_admin_js() -> Response {
    page("text/javascript; charset=utf-8", ADMIN_JS)
}

/// The console's script.
#[utoipa::path(get, path = "/assets/console.js", tag = "web", responses((status = 200, body = String, content_type = "text/javascript", description = "script")))]
async fn get_console_js() -> Response {
    page("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// The pages' style sheet.
#[utoipa::path(get, path = "/assets/style.css", tag = "web", responses((status = 200, body = String, content_type = "text/css", description = "style sheet")))]
async fn get_style() -> Response {
    page("text/css; charset=utf-8", STYLE)
}
