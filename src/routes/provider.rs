//! The provider surface (SPEC 2): connector-key authentication, the LGTC envelope, and
//! a telephony-log row for every request (keys removed).

use crate::domain::connector::{Connector, ConnectorKind};
use crate::domain::ids::TelephonyLogId;
use crate::domain::time::Timestamp;
use crate::error::{BodyError, ProviderError, read_body};
use crate::providers::{Fields, generic, super_receptionist};
use crate::service::auth::secrets_equal;
use crate::service::popup::{self, PopupError};
use crate::service::{call_log, route};
use crate::state::AppState;
use crate::store::TelephonyLogRow;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value, json};
use std::time::Instant;

/// Canonical spellings of the case-insensitive LGTC paths.
pub const LGTC_PATHS: &[&str] = &[
    "/v2/Telephony.svc/ShowAgentPopup",
    "/v2/Telephony.svc/LogCall",
];

/// The canonical spelling of an LGTC path sent in any letter case.
pub fn canonical_path(path: &str) -> Option<&'static str> {
    LGTC_PATHS
        .iter()
        .copied()
        .find(|p| p.eq_ignore_ascii_case(path) && *p != path)
}

/// Provider routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/Telephony.svc/ShowAgentPopup", post(show_agent_popup))
        .route("/api/v1/telephony/agent-popup", post(show_agent_popup))
        .route("/v2/Telephony.svc/LogCall", post(log_call))
        .route(
            "/api/v1/telephony/call-route",
            axum::routing::get(call_route),
        )
        .route("/api/v1/telephony/call-log", post(log_call))
}

/// A request that passed authentication, with its body read.
struct Admitted {
    connector: Connector,
    body: Body,
    query: Vec<(String, String)>,
}

/// A provider body: a JSON object or (SR V2) form fields.
enum Body {
    Json(Map<String, Value>),
    Form(Vec<(String, String)>),
    Other,
}

/// What the telephony-log row of this request will say.
struct LogDraft {
    started: Instant,
    at: Timestamp,
    connector_id: Option<crate::domain::ids::ConnectorId>,
    request: Value,
    call_session_id: Option<String>,
}

const LOG_BODY_MAX: usize = 4096;

fn parse_body(bytes: &[u8]) -> Body {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"{") {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(m)) => Body::Json(m),
            _ => Body::Other,
        };
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(bytes).into_owned().collect();
    if !pairs.is_empty()
        && pairs.iter().all(|(k, _)| !k.is_empty())
        && std::str::from_utf8(bytes).is_ok()
        && bytes.contains(&b'=')
    {
        Body::Form(pairs)
    } else {
        Body::Other
    }
}

fn is_key(name: &str) -> bool {
    name.eq_ignore_ascii_case("accessKey") || name.eq_ignore_ascii_case("secretKey")
}

fn logged_request(body: &Body, bytes: &[u8]) -> Value {
    match body {
        Body::Json(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_key(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Body::Form(p) => Value::Object(
            p.iter()
                .filter(|(k, _)| !is_key(k))
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
        ),
        Body::Other => {
            let cut = &bytes[..bytes.len().min(LOG_BODY_MAX)];
            Value::from(String::from_utf8_lossy(cut).into_owned())
        }
    }
}

fn session_of(body: &Body) -> Option<String> {
    let pick = |k: &str, v: &Value| -> Option<String> {
        (k.eq_ignore_ascii_case("CallSessionId") || k.eq_ignore_ascii_case("callid")).then(|| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
    };
    match body {
        Body::Json(m) => m.iter().find_map(|(k, v)| pick(k, v)),
        Body::Form(p) => p
            .iter()
            .find_map(|(k, v)| pick(k, &Value::from(v.as_str()))),
        Body::Other => None,
    }
    .filter(|s| !s.is_empty() && s != "null")
}

/// Reads the body and keys and authenticates the connector.
async fn admit(state: &AppState, req: Request) -> (Result<Admitted, ProviderError>, LogDraft) {
    let mut draft = LogDraft {
        started: Instant::now(),
        at: Timestamp::now(),
        connector_id: None,
        request: Value::Null,
        call_session_id: None,
    };
    let (parts, body) = req.into_parts();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let bytes = match read_body(body, state.settings.server.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return (
                Err(ProviderError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PayloadTooLarge",
                    "The body is larger than the server accepts",
                )),
                draft,
            );
        }
        Err(BodyError::Unreadable) => {
            return (
                Err(ProviderError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "The body could not be read",
                )),
                draft,
            );
        }
    };
    let body = parse_body(&bytes);
    draft.request = if bytes.is_empty() {
        // a GET (call route): its query is the request, without the keys
        logged_request(&Body::Form(query.clone()), &bytes)
    } else {
        logged_request(&body, &bytes)
    };
    draft.call_session_id = session_of(&body);

    let key = |name: &str, header: &str| -> Option<String> {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .or_else(|| {
                parts
                    .headers
                    .get(header)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
    };
    let unauthorized = || {
        ProviderError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "A valid accessKey and secretKey are required",
        )
    };
    let (Some(access), Some(secret)) = (
        key("accessKey", "x-lsq-accesskey"),
        key("secretKey", "x-lsq-secretkey"),
    ) else {
        return (Err(unauthorized()), draft);
    };
    let connector = match state.store.connector_by_access_key(&access).await {
        Ok(Some(c)) => c,
        Ok(None) => return (Err(unauthorized()), draft),
        Err(e) => return (Err(e.into()), draft),
    };
    draft.connector_id = Some(connector.id);
    if !secrets_equal(connector.secret_key.expose_secret(), &secret) {
        return (Err(unauthorized()), draft);
    }
    if let Err(wait) = state.limiter.check(connector.id) {
        return (Err(ProviderError::rate_limited(wait)), draft);
    }
    (
        Ok(Admitted {
            connector,
            body,
            query,
        }),
        draft,
    )
}

/// The LGTC success envelope around `message`.
fn envelope(message: Value) -> Response {
    axum::Json(json!({"Status": "Success", "Message": message})).into_response()
}

fn finish(
    state: &AppState,
    endpoint: &str,
    draft: LogDraft,
    result: Result<(Response, &'static str), ProviderError>,
) -> Response {
    let (response, outcome, error) = match result {
        Ok((response, outcome)) => (Some(response), outcome, None),
        Err(e) => {
            let outcome = if e.status.is_server_error() {
                "failed"
            } else {
                "rejected"
            };
            (None, outcome, Some(e))
        }
    };
    let status = response.as_ref().map_or_else(
        || error.as_ref().map_or(StatusCode::OK, |e| e.status),
        |r| r.status(),
    );
    metrics::counter!("utc_provider_requests_total", "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
    state.tlog.record(TelephonyLogRow {
        id: TelephonyLogId::time_ordered(),
        at: draft.at,
        connector_id: draft.connector_id,
        endpoint: endpoint.to_owned(),
        http_status: status.as_u16(),
        outcome: outcome.to_owned(),
        error_code: error.as_ref().map(|e| e.code.to_owned()),
        error_message: error.as_ref().map(|e| e.message.clone()),
        call_session_id: draft.call_session_id,
        latency_us: i64::try_from(draft.started.elapsed().as_micros()).unwrap_or(i64::MAX),
        request: draft.request,
    });
    match (response, error) {
        (Some(r), _) => r,
        (None, Some(e)) => e.into_response(),
        (None, None) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn fields_of(
    a: &Admitted,
    canonical: fn(&str) -> Option<&'static str>,
) -> Result<Fields, ProviderError> {
    let invalid = || {
        ProviderError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "The body must be a JSON object",
        )
    };
    match &a.body {
        Body::Json(m) => Ok(Fields::from_object(m.clone(), canonical)?),
        Body::Form(p) if a.connector.kind == ConnectorKind::SuperReceptionistV2 => {
            Ok(Fields::from_form(p.clone(), canonical)?)
        }
        _ => Err(invalid()),
    }
}

fn popup_error(e: PopupError) -> ProviderError {
    let nf = |code, field: &str| {
        ProviderError::new(StatusCode::NOT_FOUND, code, e.to_string()).with_field(field)
    };
    match &e {
        PopupError::UserNotFound => nf("UserNotFound", "UserId"),
        PopupError::LeadNotFound => nf("LeadNotFound", "LeadId"),
        PopupError::OpportunityNotFound => nf("OpportunityNotFound", "OpportunityId"),
        PopupError::AgentNotAvailable => ProviderError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "AgentNotAvailable",
            e.to_string(),
        )
        .with_field("UserId"),
        PopupError::AgentNotFound { field } => ProviderError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "AgentNotFound",
            e.to_string(),
        )
        .with_field(*field),
        PopupError::Store(_) => match e {
            PopupError::Store(s) => s.into(),
            _ => ProviderError::unavailable(),
        },
    }
}

/// SPEC 2.1 — `POST /v2/Telephony.svc/ShowAgentPopup` and `/api/v1/telephony/agent-popup`.
async fn show_agent_popup(State(state): State<AppState>, req: Request) -> Response {
    let (admitted, draft) = admit(&state, req).await;
    let result = async {
        let a = admitted?;
        let s = &a.connector.settings;
        let event = match a.connector.kind {
            ConnectorKind::Generic => {
                generic::parse_popup(&fields_of(&a, generic::canonical)?, s.default_country)?
            }
            ConnectorKind::SuperReceptionistV2 => super_receptionist::parse_popup(
                fields_of(&a, super_receptionist::canonical)?,
                s.default_country,
                s.timezone,
            )?,
        };
        let answer = popup::show(&state, &a.connector, event)
            .await
            .map_err(popup_error)?;
        Ok((
            envelope(json!({
                "Id": answer.id,
                "LeadId": answer.lead_id,
                "Delivered": answer.delivered,
                "Queued": answer.queued,
                "Message": answer.message,
            })),
            "ok",
        ))
    }
    .await;
    finish(&state, "agent_popup", draft, result)
}

/// SPEC 2.2 — `POST /v2/Telephony.svc/LogCall` and `/api/v1/telephony/call-log`.
async fn log_call(State(state): State<AppState>, req: Request) -> Response {
    let (admitted, draft) = admit(&state, req).await;
    let result = async {
        let a = admitted?;
        let s = &a.connector.settings;
        let log = match a.connector.kind {
            ConnectorKind::Generic => {
                generic::parse_call_log(&fields_of(&a, generic::canonical_log)?, s.default_country, s.timezone)?
            }
            ConnectorKind::SuperReceptionistV2 => {
                super_receptionist::parse_call_log(fields_of(&a, super_receptionist::canonical)?, s.default_country, s.timezone)?
            }
        };
        let answer = call_log::log(&state, &a.connector, log).await.map_err(popup_error)?;
        Ok((
            envelope(json!({
                "Id": answer.id,
                "LeadId": answer.lead_id,
                "LeadCreated": answer.lead_created,
                "Duplicate": answer.duplicate,
                "Message": if answer.duplicate { "Call log updated" } else { "Call logged successfully" },
            })),
            if answer.duplicate { "duplicate" } else { "ok" },
        ))
    }
    .await;
    finish(&state, "call_log", draft, result)
}

/// SPEC 2.3 — `GET /api/v1/telephony/call-route`: top-level JSON (LGTC routing clients
/// read `TelephonyAgentId` there) or `text/plain`; errors are the envelope.
async fn call_route(State(state): State<AppState>, req: Request) -> Response {
    let (admitted, draft) = admit(&state, req).await;
    let result = async {
        let a = admitted?;
        let pairs: Vec<(String, String)> = a
            .query
            .iter()
            .filter(|(k, _)| !is_key(k))
            .cloned()
            .collect();
        let fields = Fields::from_form(pairs, |_| None)?;
        let q = crate::providers::parse_route(&fields, a.connector.settings.default_country)?;
        let text = q.text;
        let answer = route::route(&state, &a.connector, q)
            .await
            .map_err(|e| match e {
                route::RouteError::NotOurNumber => ProviderError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "InvalidField",
                    e.to_string(),
                )
                .with_field("virtual_number"),
                route::RouteError::Store(s) => s.into(),
            })?;
        let response = match (answer, text) {
            (
                route::RouteAnswer::Match {
                    number: Some(n), ..
                },
                true,
            ) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; charset=utf-8",
                )],
                n,
            )
                .into_response(),
            (_, true) => StatusCode::NO_CONTENT.into_response(),
            (
                route::RouteAnswer::Match {
                    lead_id,
                    owner,
                    number,
                    telephony_agent_id,
                    online,
                },
                false,
            ) => axum::Json(json!({
                "Status": "Success",
                "Match": true,
                "LeadId": lead_id,
                "OwnerId": owner.id,
                "OwnerName": owner.name,
                "OwnerEmail": owner.email,
                "OwnerNumber": number,
                "TelephonyAgentId": telephony_agent_id,
                "Online": online,
            }))
            .into_response(),
            (route::RouteAnswer::NoMatch(reason), false) => {
                axum::Json(json!({"Status": "Success", "Match": false, "Reason": reason}))
                    .into_response()
            }
        };
        Ok((response, "ok"))
    }
    .await;
    finish(&state, "call_route", draft, result)
}
