//! The agent surface (SPEC 3, 6): `GET /ws` and the agent's REST routes. The socket
//! loop authenticates the first frame, registers the session before replaying, and turns
//! client frames into service calls; all business rules live in `service/`.

use crate::domain::disposition::{CustomActivityInput, DispositionInput, TaskInput};
use crate::domain::ids::{LeadId, PopupId};
use crate::domain::user::User;
use crate::error::{ApiError, ApiJson};
use crate::hub::Hub;
use crate::hub::protocol::{self, ClientFrame, close};
use crate::hub::session::{Closer, SessionHandle, run_writer, send_close};
use crate::routes::auth::Agent;
use crate::service::agent::{AgentAuthError, authenticate};
use crate::service::{agent as agent_service, click_to_call, disposition, popup};
use crate::state::AppState;
use crate::store::Page;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Agent routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upgrade))
        .routes(routes!(get_me))
        .routes(routes!(get_my_connectors))
        .routes(routes!(get_my_activities))
        .routes(routes!(post_disposition))
        .routes(routes!(post_click_to_call))
}

/// SPEC 6 — `GET /api/v1/me`.
#[utoipa::path(get, path = "/api/v1/me", tag = "agent", responses((status = 200, body = User, description = "the agent"), (status = 401, body = crate::error::ApiErrorBody, description = "bad token"), (status = 403, body = crate::error::ApiErrorBody, description = "user_inactive")), security(("agent_token" = [])))]
async fn get_me(Agent(user): Agent) -> axum::Json<User> {
    axum::Json(user)
}

/// SPEC 6 — `GET /api/v1/me/connectors`.
#[utoipa::path(get, path = "/api/v1/me/connectors", tag = "agent", responses((status = 200, body = Page<crate::service::agent::AgentConnector>, description = "the connectors the agent sees")), security(("agent_token" = [])))]
async fn get_my_connectors(
    State(state): State<AppState>,
    Agent(user): Agent,
) -> Result<axum::Json<Page<agent_service::AgentConnector>>, ApiError> {
    let items = agent_service::my_connectors(&state, &user).await?;
    Ok(axum::Json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MyActivitiesQuery {
    since: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 6 — `GET /api/v1/me/activities?since=` (the agent's own, newest first).
#[utoipa::path(get, path = "/api/v1/me/activities", tag = "agent", params(MyActivitiesQuery), responses((status = 200, body = Page<crate::domain::lead::Activity>, description = "the agent's activities")), security(("agent_token" = [])))]
async fn get_my_activities(
    State(state): State<AppState>,
    Agent(user): Agent,
    crate::error::ApiQuery(q): crate::error::ApiQuery<MyActivitiesQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            crate::store::Cursor::decode(c)
                .ok_or_else(|| ApiError::validation("cursor", "cursor is not one this API gave"))
        })
        .transpose()?;
    let since = q
        .since
        .as_deref()
        .map(|s| {
            crate::domain::time::Timestamp::parse_rfc3339(s)
                .map_err(|_| ApiError::validation("since", "since must be an RFC 3339 time"))
        })
        .transpose()?;
    let filter = crate::store::ActivityFilter {
        user_id: Some(user.id),
        since,
        ..Default::default()
    };
    let page = state
        .store
        .list_activities(&filter, &crate::store::PageRequest { limit, cursor })
        .await?;
    Ok(axum::Json(serde_json::to_value(page).unwrap_or_default()))
}

/// A disposition as the socket's `dispose` frame or `POST /api/v1/dispositions` carries it.
#[derive(Deserialize, utoipa::ToSchema)]
struct DisposeRequest {
    popup_id: PopupId,
    #[serde(default)]
    lead_id: Option<LeadId>,
    #[serde(default)]
    value: String,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    task: Option<TaskInput>,
    #[serde(default)]
    activity: Option<CustomActivityInput>,
    #[serde(default)]
    fields: Option<BTreeMap<String, String>>,
}

impl DisposeRequest {
    fn into_parts(self) -> (PopupId, DispositionInput) {
        (
            self.popup_id,
            DispositionInput {
                lead_id: self.lead_id,
                value: self.value,
                notes: self.notes,
                task: self.task,
                activity: self.activity,
                fields: self.fields,
            },
        )
    }
}

/// `POST /api/v1/click-to-call` body (and the socket's `click_to_call` frame).
#[derive(Deserialize, utoipa::ToSchema)]
struct ClickToCallRequest {
    /// The lead to call.
    lead_id: LeadId,
    /// The virtual number to call from (default: by the team rules).
    #[serde(default)]
    virtual_number: Option<String>,
    /// The opportunity the call is about.
    #[serde(default)]
    opportunity_id: Option<crate::domain::ids::OpportunityId>,
    /// Which of the lead's numbers (default: phone, mobile, first secondary).
    #[serde(default)]
    number: Option<String>,
}

/// A placed call.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ClickToCallAnswer {
    /// Always true.
    ok: bool,
    /// The connector used.
    connector_id: crate::domain::ids::ConnectorId,
    /// The virtual number used.
    virtual_number: Option<String>,
    /// The provider's status.
    provider_status: u16,
    /// The provider's body (first 4 KiB).
    provider_body: String,
}

async fn place_call(
    state: &AppState,
    user: &User,
    req: ClickToCallRequest,
) -> Result<ClickToCallAnswer, ApiError> {
    let input = click_to_call::ClickToCallInput {
        lead_id: req.lead_id,
        virtual_number: req.virtual_number,
        opportunity_id: req.opportunity_id,
        number: req.number,
    };
    let ok = click_to_call::click_to_call(state, user, input).await?;
    Ok(ClickToCallAnswer {
        ok: true,
        connector_id: ok.connector_id,
        virtual_number: ok.virtual_number,
        provider_status: ok.provider_status,
        provider_body: ok.provider_body,
    })
}

/// SPEC 5 — `POST /api/v1/click-to-call`.
#[utoipa::path(post, path = "/api/v1/click-to-call", tag = "agent", request_body = ClickToCallRequest,
    responses((status = 200, body = ClickToCallAnswer, description = "the provider placed the call"),
        (status = 403, body = crate::error::ApiErrorBody, description = "virtual_number_not_visible"),
        (status = 422, body = crate::error::ApiErrorBody, description = "validation_failed or click_to_call_not_configured"),
        (status = 429, body = crate::error::ApiErrorBody, description = "rate_limited"),
        (status = 502, body = crate::error::ApiErrorBody, description = "provider_failed, with provider_status and provider_body")),
    security(("agent_token" = [])))]
async fn post_click_to_call(
    State(state): State<AppState>,
    Agent(user): Agent,
    ApiJson(req): ApiJson<ClickToCallRequest>,
) -> Result<axum::Json<ClickToCallAnswer>, ApiError> {
    Ok(axum::Json(place_call(&state, &user, req).await?))
}

/// The answer to an accepted disposition.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct DisposeAnswer {
    /// The `disposition` activity.
    activity_id: crate::domain::ids::ActivityId,
}

/// SPEC 4 — `POST /api/v1/dispositions`.
#[utoipa::path(post, path = "/api/v1/dispositions", tag = "agent", request_body = DisposeRequest, responses((status = 200, body = DisposeAnswer, description = "accepted"), (status = 404, body = crate::error::ApiErrorBody, description = "no such popup"), (status = 409, body = crate::error::ApiErrorBody, description = "already_disposed"), (status = 422, body = crate::error::ApiErrorBody, description = "a field is invalid")), security(("agent_token" = [])))]
async fn post_disposition(
    State(state): State<AppState>,
    Agent(user): Agent,
    ApiJson(req): ApiJson<DisposeRequest>,
) -> Result<Response, ApiError> {
    let (popup_id, input) = req.into_parts();
    let activity_id = disposition::dispose(&state, &user, popup_id, input).await?;
    Ok((StatusCode::OK, axum::Json(DisposeAnswer { activity_id })).into_response())
}

fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true; // not a browser: the token still guards the socket
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok())
        && (origin == format!("http://{host}") || origin == format!("https://{host}"))
    {
        return true;
    }
    if let Ok(u) = url::Url::parse(&state.settings.server.public_url)
        && u.origin().ascii_serialization() == origin
    {
        return true;
    }
    state
        .settings
        .server
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
}

/// SPEC 3 — `GET /ws`.
#[utoipa::path(get, path = "/ws", tag = "agent", responses((status = 101, description = "switching to the agent WebSocket (SPEC 3)"), (status = 403, body = crate::error::ApiErrorBody, description = "origin not allowed"), (status = 426, body = crate::error::ApiErrorBody, description = "not an upgrade"), (status = 503, body = crate::error::ApiErrorBody, description = "draining or full")))]
async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /ws must be a WebSocket upgrade",
        )
        .into_response();
    };
    if state.shutdown.is_draining() || state.hub.count() >= state.settings.ws.max_sockets {
        return ApiError::unavailable().into_response();
    }
    if !origin_allowed(&state, &headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this origin may not open agent sockets",
        )
        .into_response();
    }
    let max = state.settings.ws.max_message_bytes;
    // 1 KiB: browsers send small frames (auth, ack, dispose); a larger one grows it.
    // Memory per idle socket is a product feature (DESIGN.md)
    ws.read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(max.max(64 * 1024) * 2)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run_socket(state, socket))
}

#[derive(Deserialize)]
struct AuthFrame {
    #[serde(rename = "type")]
    kind: String,
    token: String,
    #[serde(default)]
    since: Option<i64>,
}

async fn run_socket(state: AppState, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let ws = &state.settings.ws;
    let first =
        tokio::time::timeout(Duration::from_secs(ws.auth_timeout_secs), stream.next()).await;
    let auth = match first {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<AuthFrame>(t.as_str())
            .ok()
            .filter(|a| a.kind == "auth"),
        _ => None,
    };
    let Some(auth) = auth else {
        send_close(&mut sink, close::UNAUTHENTICATED).await;
        return;
    };
    // the rarely taken steps are boxed: a task's future is as large as its largest
    // await point, and an idle socket should not carry the state of a disposition
    let user = match Box::pin(authenticate(&state, &auth.token)).await {
        Ok(u) => u,
        Err(AgentAuthError::Inactive) => return send_close(&mut sink, close::FORBIDDEN).await,
        Err(_) => return send_close(&mut sink, close::UNAUTHENTICATED).await,
    };
    if state.hub.user_count(user.id) >= ws.max_sockets_per_user {
        return send_close(&mut sink, close::TOO_MANY).await;
    }

    let (tx, rx) = mpsc::channel(ws.queue_capacity);
    let closer = Arc::new(Closer::default());
    let handle = SessionHandle {
        id: state.hub.next_session_id(),
        tx,
        closer: closer.clone(),
    };
    let writer = state.shutdown.spawn(run_writer(
        sink,
        rx,
        closer.clone(),
        Duration::from_secs(ws.heartbeat_secs),
    ));
    match Box::pin(greet(&state, &user, auth.since, &handle)).await {
        Ok(()) => read_loop(&state, &user, &mut stream, &handle).await,
        Err(e) => {
            tracing::error!(error = ?e, "socket greeting failed");
            closer.close(1011);
        }
    }
    state.hub.unregister(user.id, handle.id);
    state.bus.presence_changed(user.id);
    if closer.code() != 0 {
        metrics::counter!("utc_ws_closed_total", "code" => closer.code().to_string()).increment(1);
    }
    closer.close(0);
    let _ = writer.await;
}

/// Queues `ready` first, then registers the session, then replays: anything produced
/// after `ready` was read is either live-sent to the registered session or found by the
/// replay (a frame seen twice has the same `seq`, which clients ignore).
async fn greet(
    state: &AppState,
    user: &User,
    since: Option<i64>,
    handle: &SessionHandle,
) -> Result<(), crate::store::StoreError> {
    let (ready, seq) = agent_service::ready(state, user).await?;
    Hub::send_one(handle, ready.to_string().into());
    state.hub.register(user.id, handle.clone());
    state.bus.presence_changed(user.id);
    if state.shutdown.is_draining() {
        handle.closer.close(close::GOING_AWAY);
    }
    for frame in popup::replay(state, user, since, seq).await? {
        Hub::send_one(handle, frame);
    }
    Ok(())
}

async fn read_loop(
    state: &AppState,
    user: &User,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    handle: &SessionHandle,
) {
    let idle = Duration::from_secs(state.settings.ws.idle_timeout_secs);
    loop {
        let next = tokio::select! {
            () = handle.closer.closed() => return,
            n = tokio::time::timeout(idle, stream.next()) => n,
        };
        let msg = match next {
            Err(_) => return handle.closer.close(close::IDLE),
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                let too_big = matches!(
                    e.into_inner().downcast_ref::<tungstenite::Error>(),
                    Some(tungstenite::Error::Capacity(_))
                );
                return handle
                    .closer
                    .close(if too_big { close::PROTOCOL } else { 0 });
            }
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => Box::pin(on_frame(state, user, t.as_str(), handle)).await,
            Message::Binary(_) => return handle.closer.close(close::PROTOCOL),
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

async fn on_frame(state: &AppState, user: &User, text: &str, handle: &SessionHandle) {
    let frame = match protocol::parse_client(text) {
        Ok(f) => f,
        Err(e) => return Hub::send_one(handle, protocol::error(e.code, e.message)),
    };
    match frame {
        ClientFrame::Ping => Hub::send_one(handle, protocol::pong()),
        ClientFrame::Ack(v) => {
            if let Some(id) = v
                .get("popup_id")
                .and_then(Value::as_str)
                .and_then(|s| PopupId::parse(s).ok())
                && let Err(e) = popup::ack(state, user.id, id).await
            {
                tracing::warn!(error = ?e, "ack failed");
            }
        }
        ClientFrame::Request { kind, req, frame } => {
            let answer = match kind.as_str() {
                "dispose" => dispose_frame(state, user, frame).await,
                _ => click_to_call_frame(state, user, frame).await,
            };
            let out = match answer {
                Ok(data) => protocol::result_ok(&req, data),
                Err(e) => protocol::result_err(&req, e.body()["error"].clone()),
            };
            Hub::send_one(handle, out);
        }
    }
}

async fn click_to_call_frame(
    state: &AppState,
    user: &User,
    frame: Value,
) -> Result<Value, ApiError> {
    let req: ClickToCallRequest = crate::error::parse_value(frame)?;
    let answer = place_call(state, user, req).await?;
    Ok(serde_json::to_value(answer).unwrap_or_default())
}

async fn dispose_frame(state: &AppState, user: &User, frame: Value) -> Result<Value, ApiError> {
    let req: DisposeRequest = crate::error::parse_value(frame)?;
    let (popup_id, input) = req.into_parts();
    let activity_id = disposition::dispose(state, user, popup_id, input).await?;
    Ok(serde_json::to_value(DisposeAnswer { activity_id }).unwrap_or_default())
}
