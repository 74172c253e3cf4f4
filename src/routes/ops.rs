//! Operations (SPEC 7): liveness and readiness. They need no token and reveal nothing.

use crate::hub::bus::RedisStatus;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Ops routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(get_openapi))
}

/// The OpenAPI document of this build, rendered once when the router is built.
pub static OPENAPI_JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// SPEC 6 — `GET /api/openapi.json`: every route with its request and response schemas.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops", responses((status = 200, body = Object, description = "this document")))]
async fn get_openapi() -> impl IntoResponse {
    let body = OPENAPI_JSON.get().cloned().unwrap_or_default();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

/// SPEC 7 — `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, body = String, description = "Prometheus text")))]
async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    metrics::gauge!("utc_ws_sockets").set(state.hub.count() as f64);
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

/// SPEC 7 — `GET /healthz`: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Object, description = "the process runs")))]
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// SPEC 7 — `GET /readyz`: the store must commit a probe write within 2 s; 503 from SIGTERM on.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Object, description = "ready or degraded"), (status = 503, body = Object, description = "unavailable")))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.probe()).await,
        Ok(Ok(()))
    );
    let store = if store_ok { "ok" } else { "down" };
    let redis = state.bus.redis_status();
    if state.shutdown.is_draining() || !store_ok {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "store": store, "redis": redis.as_str()})),
        );
    }
    let status = if redis == RedisStatus::Down {
        "degraded"
    } else {
        "ready"
    };
    (
        StatusCode::OK,
        axum::Json(json!({"status": status, "store": store, "redis": redis.as_str()})),
    )
}
