//! Operations (SPEC 7): liveness and readiness. They need no token and reveal nothing.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use std::time::Duration;

/// Ops routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// SPEC 7 — `GET /metrics`: Prometheus text.
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
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// SPEC 7 — `GET /readyz`: the store must commit a probe write within 2 s; 503 from SIGTERM on.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.probe()).await,
        Ok(Ok(()))
    );
    let store = if store_ok { "ok" } else { "down" };
    if state.shutdown.is_draining() || !store_ok {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "store": store, "redis": "off"})),
        );
    }
    (
        StatusCode::OK,
        axum::Json(json!({"status": "ready", "store": store, "redis": "off"})),
    )
}
