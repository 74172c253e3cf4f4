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
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value, json};
use std::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_agent_popup))
        .routes(routes!(show_agent_popup_alias))
        .routes(routes!(log_call))
        .routes(routes!(log_call_alias))
        .routes(routes!(call_route))
}

/// The generic agent-popup body (SPEC 2.1; names match case-insensitively; Super
/// Receptionist V2 connectors also accept `caller_id`, `agent_number`, `destination`,
/// `dispnumber`, `callid`, `call_type`, as JSON or form fields).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "PascalCase")]
struct AgentPopupBody {
    /// The caller (inbound) or the agent (outbound).
    source_number: Option<String>,
    /// The agent (inbound) or the customer (outbound).
    destination_number: Option<String>,
    /// The virtual number the call came through.
    display_number: Option<String>,
    /// `Inbound` or `Outbound`.
    direction: String,
    /// The provider's id of the call.
    call_session_id: String,
    /// A known lead (wins over the number).
    lead_id: Option<String>,
    /// A known agent (wins over the agent-side number).
    user_id: Option<String>,
    /// Origin of a new lead when the virtual number has no tag.
    tag: Option<String>,
    /// The opportunity the call is about.
    opportunity_id: Option<String>,
    /// Source of a new lead.
    caller_source: Option<String>,
    /// First name of a new lead.
    caller_name: Option<String>,
}

/// The generic call-log body (SPEC 2.2): the popup fields plus these. Super Receptionist
/// V2 connectors also accept `start_time`, `end_time`, `call_duration`, `resource_url`.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "PascalCase")]
struct CallLogBody {
    /// The popup's fields.
    #[schema(inline)]
    call: AgentPopupBody,
    /// `YYYY-MM-DD HH:MM:SS` in the connector's time zone, or with an offset.
    start_time: String,
    /// Not before `StartTime`.
    end_time: String,
    /// Talk time in seconds (a number or a string of digits).
    call_duration: i64,
    /// `Answered`, `Missed`/`NotAnswered`/`No Answer`, `Voicemail`, `Busy`, `Declined`, `Cancelled`.
    status: String,
    /// Notes.
    call_notes: Option<String>,
    /// The recording.
    #[schema(rename = "ResourceURL")]
    resource_url: Option<String>,
    /// Kept in the activity's data, as are any unknown fields.
    caller_city: Option<String>,
    /// Kept in the activity's data.
    caller_state: Option<String>,
    /// Kept in the activity's data.
    caller_country: Option<String>,
    /// Kept in the activity's data.
    caller_zip_code: Option<String>,
    /// Kept in the activity's data.
    agent_name: Option<String>,
}

/// `Message` of an accepted popup.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "PascalCase")]
struct PopupMessage {
    /// The popup (null when popups are disabled).
    id: Option<String>,
    /// Its lead.
    lead_id: Option<String>,
    /// Sockets it was sent to.
    delivered: u32,
    /// Waiting for the agent to connect.
    queued: bool,
    /// `Message broadcasted successfully`, `Queued for agent`, `Agent popup disabled`.
    message: String,
}

/// The LGTC success envelope of a popup.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "PascalCase")]
struct PopupEnvelope {
    /// `Success`.
    status: String,
    /// The answer.
    message: PopupMessage,
}

/// `Message` of an accepted call log.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "PascalCase")]
struct CallLogMessage {
    /// The activity.
    id: String,
    /// Its lead.
    lead_id: String,
    /// Whether the lead was created for this log.
    lead_created: bool,
    /// Whether the activity already existed.
    duplicate: bool,
    /// `Call logged successfully` or `Call log updated`.
    message: String,
}

/// The LGTC success envelope of a call log.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "PascalCase")]
struct CallLogEnvelope {
    /// `Success`.
    status: String,
    /// The answer.
    message: CallLogMessage,
}

/// The call-route answer (top-level, SPEC 2.3).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "PascalCase")]
struct CallRouteAnswer {
    /// `Success`.
    status: String,
    /// Whether an owner was found.
    #[schema(rename = "Match")]
    is_match: bool,
    /// The lead.
    lead_id: Option<String>,
    /// The owner.
    owner_id: Option<String>,
    /// The owner's name.
    owner_name: Option<String>,
    /// The owner's email.
    owner_email: Option<String>,
    /// The owner's first number.
    owner_number: Option<String>,
    /// The owner's provider agent id for this connector.
    telephony_agent_id: Option<String>,
    /// Whether the owner has an open socket.
    online: Option<bool>,
    /// Without a match: `NoLead`, `NoOwner`, `OwnerInactive`, `OwnerNotInConnectorTeams`.
    reason: Option<String>,
}

/// Call-route query parameters (names match case-insensitively).
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RouteQuery {
    /// The caller's number, any format.
    caller_id: String,
    /// One of the connector's virtual numbers.
    virtual_number: Option<String>,
    /// `lead` or `opportunity` (default: the connector's mode).
    route: Option<String>,
    /// `json` (default) or `text`.
    format: Option<String>,
}

/// A request that passed authentication, with its body read.
pub(super) struct Admitted {
    pub(super) connector: Connector,
    pub(super) body: Body,
    pub(super) query: Vec<(String, String)>,
}

/// A provider body: a JSON object or (SR V2) form fields.
pub(super) enum Body {
    Json(Map<String, Value>),
    Form(Vec<(String, String)>),
    Other,
}

/// What the telephony-log row of this request will say.
pub(super) struct LogDraft {
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
pub(super) async fn admit(
    state: &AppState,
    req: Request,
) -> (Result<Admitted, ProviderError>, LogDraft) {
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
pub(super) fn envelope(message: Value) -> Response {
    axum::Json(json!({"Status": "Success", "Message": message})).into_response()
}

pub(super) fn finish(
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

pub(super) fn fields_of(
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

/// SPEC 2.1 — `POST /api/v1/telephony/agent-popup` (alias).
#[utoipa::path(post, path = "/api/v1/telephony/agent-popup", tag = "provider", request_body = AgentPopupBody, responses((status = 200, body = PopupEnvelope, description = "the popup"), (status = 401, body = crate::error::ProviderErrorBody, description = "bad keys"), (status = 422, body = crate::error::ProviderErrorBody, description = "a field is missing or invalid")), security(("connector_keys" = [])))]
async fn show_agent_popup_alias(state: State<AppState>, req: Request) -> Response {
    show_agent_popup(state, req).await
}

/// SPEC 2.1 — `POST /v2/Telephony.svc/ShowAgentPopup`.
#[utoipa::path(post, path = "/v2/Telephony.svc/ShowAgentPopup", tag = "provider", request_body = AgentPopupBody, responses((status = 200, body = PopupEnvelope, description = "the popup"), (status = 401, body = crate::error::ProviderErrorBody, description = "bad keys"), (status = 404, body = crate::error::ProviderErrorBody, description = "unknown UserId/LeadId/OpportunityId"), (status = 422, body = crate::error::ProviderErrorBody, description = "a field is missing or invalid"), (status = 429, body = crate::error::ProviderErrorBody, description = "rate limited")), security(("connector_keys" = [])))]
async fn show_agent_popup(State(state): State<AppState>, req: Request) -> Response {
    let (admitted, draft) = admit(&state, req).await;
    let accepted = draft.started;
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
        let answer = popup::show(&state, &a.connector, event, accepted)
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

/// SPEC 2.2 — `POST /api/v1/telephony/call-log` (alias).
#[utoipa::path(post, path = "/api/v1/telephony/call-log", tag = "provider", request_body = CallLogBody, responses((status = 200, body = CallLogEnvelope, description = "the activity"), (status = 401, body = crate::error::ProviderErrorBody, description = "bad keys"), (status = 422, body = crate::error::ProviderErrorBody, description = "a field is missing or invalid")), security(("connector_keys" = [])))]
async fn log_call_alias(state: State<AppState>, req: Request) -> Response {
    log_call(state, req).await
}

/// SPEC 2.2 — `POST /v2/Telephony.svc/LogCall`.
#[utoipa::path(post, path = "/v2/Telephony.svc/LogCall", tag = "provider", request_body = CallLogBody, responses((status = 200, body = CallLogEnvelope, description = "the activity"), (status = 401, body = crate::error::ProviderErrorBody, description = "bad keys"), (status = 404, body = crate::error::ProviderErrorBody, description = "unknown UserId/LeadId/OpportunityId"), (status = 422, body = crate::error::ProviderErrorBody, description = "a field is missing or invalid"), (status = 429, body = crate::error::ProviderErrorBody, description = "rate limited")), security(("connector_keys" = [])))]
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
#[utoipa::path(get, path = "/api/v1/telephony/call-route", tag = "provider", params(RouteQuery), responses((status = 200, body = CallRouteAnswer, description = "the owner, or Match false (JSON); the owner number (text)"), (status = 204, description = "no match (text)"), (status = 401, body = crate::error::ProviderErrorBody, description = "bad keys"), (status = 422, body = crate::error::ProviderErrorBody, description = "a parameter is invalid")), security(("connector_keys" = [])))]
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
