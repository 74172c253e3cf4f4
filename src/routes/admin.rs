//! The admin surface (SPEC 6 and 9) plus the routes agents share (`GET /leads`,
//! `GET /activities`): users, teams, leads, opportunities, connectors, virtual
//! numbers, activities and telephony logs.

use crate::domain::ids::{ConnectorId, LeadId, OpportunityId, TeamId, UserId, VirtualNumberId};
use crate::domain::time::Timestamp;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::routes::auth::{Admin, Caller};
use crate::service::directory::{
    self as dir, ConnectorRequest, LeadRequest, OpportunityRequest, UserRequest,
    VirtualNumberRequest,
};
use crate::state::AppState;
use crate::store::{
    ActivityFilter, Cursor, LeadFilter, PageRequest, StoreError, TelephonyLogFilter,
};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use axum::Json;
type ApiResult = Result<Response, ApiError>;

/// Admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(list_users).post(create_user))
        .route(
            "/api/v1/users/{id}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route("/api/v1/users/{id}/tokens", post(create_token))
        .route("/api/v1/teams", get(list_teams).post(create_team))
        .route(
            "/api/v1/teams/{id}",
            get(get_team).patch(patch_team).delete(delete_team),
        )
        .route("/api/v1/leads", get(list_leads).post(create_lead))
        .route(
            "/api/v1/leads/{id}",
            get(get_lead).patch(patch_lead).delete(delete_lead),
        )
        .route(
            "/api/v1/opportunities",
            get(list_opportunities).post(create_opportunity),
        )
        .route(
            "/api/v1/opportunities/{id}",
            get(get_opportunity)
                .patch(patch_opportunity)
                .delete(delete_opportunity),
        )
        .route(
            "/api/v1/connectors",
            get(list_connectors).post(create_connector),
        )
        .route(
            "/api/v1/connectors/{id}",
            get(get_connector)
                .patch(patch_connector)
                .delete(delete_connector),
        )
        .route("/api/v1/connectors/{id}/clone", post(clone_connector))
        .route(
            "/api/v1/connectors/{id}/default",
            post(set_default_connector),
        )
        .route("/api/v1/connectors/{id}/rotate-keys", post(rotate_keys))
        .route("/api/v1/connectors/{id}/urls", get(get_connector_urls))
        .route(
            "/api/v1/connectors/{id}/virtual-numbers",
            get(list_virtual_numbers).post(add_virtual_number),
        )
        .route(
            "/api/v1/connectors/{id}/virtual-numbers/{vn}",
            patch(retag_virtual_number).delete(delete_virtual_number),
        )
        .route("/api/v1/connectors/{id}/teams", put(put_connector_teams))
        .route("/api/v1/activities", get(list_activities))
        .route("/api/v1/telephony-logs", get(list_telephony_logs))
}

/// `limit` and `cursor` of every list.
#[derive(Deserialize, Default)]
struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

impl PageQuery {
    fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::validation(
                "limit",
                "limit must be between 1 and 500",
            ));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
                ApiError::validation("cursor", "cursor is not one this API gave")
            })?),
        };
        Ok(PageRequest { limit, cursor })
    }
}

fn id<T>(
    raw: &str,
    parse: impl Fn(&str) -> Result<T, crate::domain::ids::IdError>,
    what: &str,
) -> Result<T, ApiError> {
    parse(raw).map_err(|_| ApiError::not_found(what))
}

fn found<T>(v: Option<T>, what: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::not_found(what))
}

fn created(v: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn ok(v: impl serde::Serialize) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn store_404(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}

fn since(raw: Option<&str>, field: &str) -> Result<Option<Timestamp>, ApiError> {
    raw.map(|s| {
        Timestamp::parse_rfc3339(s)
            .map_err(|_| ApiError::validation(field, format!("{field} must be an RFC 3339 time")))
    })
    .transpose()
}

// ---------------------------------------------------------------- users

/// SPEC 9 — `GET /api/v1/users`.
async fn list_users(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult {
    Ok(ok(s.store.list_users(&q.page()?).await?))
}

/// SPEC 9 — `POST /api/v1/users`.
async fn create_user(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<UserRequest>,
) -> ApiResult {
    Ok(created(dir::create_user(&s, req).await?))
}

/// SPEC 9 — `GET /api/v1/users/{id}`.
async fn get_user(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    Ok(ok(found(
        s.store.get_user(id(&raw, UserId::parse, "user")?).await?,
        "user",
    )?))
}

/// SPEC 9 — `PATCH /api/v1/users/{id}` (JSON Merge Patch).
async fn patch_user(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(p): ApiJson<Value>,
) -> ApiResult {
    let uid = id(&raw, UserId::parse, "user")?;
    Ok(ok(dir::patch_user(&s, uid, &p)
        .await
        .map_err(|e| not_found_as(e, "user"))?))
}

/// SPEC 9 — `DELETE /api/v1/users/{id}`.
async fn delete_user(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    dir::delete_user(&s, id(&raw, UserId::parse, "user")?)
        .await
        .map_err(|e| not_found_as(e, "user"))?;
    Ok(no_content())
}

/// SPEC 9 — `POST /api/v1/users/{id}/tokens`.
async fn create_token(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    let user = found(
        s.store.get_user(id(&raw, UserId::parse, "user")?).await?,
        "user",
    )?;
    let (token, expires_at) = s.keys.issue(&user).map_err(|e| {
        tracing::error!(error = ?e, "token signing failed");
        ApiError::unavailable()
    })?;
    Ok(created(json!({"token": token, "expires_at": expires_at})))
}

fn not_found_as(e: dir::DirectoryError, what: &'static str) -> ApiError {
    match e {
        dir::DirectoryError::Store(StoreError::NotFound) => ApiError::not_found(what),
        other => other.into(),
    }
}

// ---------------------------------------------------------------- teams

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamRequest {
    name: String,
}

/// SPEC 9 — `GET /api/v1/teams`.
async fn list_teams(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult {
    Ok(ok(s.store.list_teams(&q.page()?).await?))
}

/// SPEC 9 — `POST /api/v1/teams`.
async fn create_team(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<TeamRequest>,
) -> ApiResult {
    let name = dir::team_name(&req.name)?;
    Ok(created(s.store.create_team(TeamId::new(), &name).await?))
}

/// SPEC 9 — `GET /api/v1/teams/{id}`.
async fn get_team(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    Ok(ok(found(
        s.store.get_team(id(&raw, TeamId::parse, "team")?).await?,
        "team",
    )?))
}

/// SPEC 9 — `PATCH /api/v1/teams/{id}`.
async fn patch_team(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(req): ApiJson<TeamRequest>,
) -> ApiResult {
    let name = dir::team_name(&req.name)?;
    Ok(ok(s
        .store
        .rename_team(id(&raw, TeamId::parse, "team")?, &name)
        .await
        .map_err(store_404("team"))?))
}

/// SPEC 9 — `DELETE /api/v1/teams/{id}`.
async fn delete_team(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    s.store
        .delete_team(id(&raw, TeamId::parse, "team")?)
        .await
        .map_err(store_404("team"))?;
    Ok(no_content())
}

// ---------------------------------------------------------------- leads

#[derive(Deserialize, Default)]
struct LeadQuery {
    phone: Option<String>,
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 6 — `GET /api/v1/leads?phone=` (admin) and `?q=` (admin or agent; at most 20).
async fn list_leads(
    caller: Caller,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<LeadQuery>,
) -> ApiResult {
    let mut page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    let filter = match (&q.phone, &q.q) {
        (Some(p), _) => LeadFilter::Number(dir::search_number(&s, "phone", p)?),
        (None, Some(term)) => {
            page.limit = page.limit.min(20);
            match dir::search_number(&s, "q", term) {
                Ok(n) => LeadFilter::Number(n),
                Err(_) if term.trim().is_empty() => {
                    return Err(ApiError::validation("q", "q must not be empty"));
                }
                Err(_) => LeadFilter::Prefix(term.trim().to_owned()),
            }
        }
        (None, None) if matches!(caller, Caller::Admin) => LeadFilter::All,
        (None, None) => return Err(ApiError::validation("q", "agents search leads with q")),
    };
    Ok(ok(s.store.list_leads(&filter, &page).await?))
}

/// SPEC 9 — `POST /api/v1/leads`.
async fn create_lead(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<LeadRequest>,
) -> ApiResult {
    Ok(created(dir::create_lead(&s, req).await?))
}

/// SPEC 9 — `GET /api/v1/leads/{id}`.
async fn get_lead(_: Caller, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    Ok(ok(found(
        s.store.get_lead(id(&raw, LeadId::parse, "lead")?).await?,
        "lead",
    )?))
}

/// SPEC 9 — `PATCH /api/v1/leads/{id}` (JSON Merge Patch).
async fn patch_lead(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(p): ApiJson<Value>,
) -> ApiResult {
    let lid = id(&raw, LeadId::parse, "lead")?;
    Ok(ok(dir::patch_lead(&s, lid, &p)
        .await
        .map_err(|e| not_found_as(e, "lead"))?))
}

/// SPEC 9 — `DELETE /api/v1/leads/{id}`.
async fn delete_lead(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    s.store
        .delete_lead(id(&raw, LeadId::parse, "lead")?)
        .await
        .map_err(store_404("lead"))?;
    Ok(no_content())
}

// ---------------------------------------------------------------- opportunities

#[derive(Deserialize, Default)]
struct OpportunityQuery {
    lead_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 9 — `GET /api/v1/opportunities[?lead_id=]`.
async fn list_opportunities(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<OpportunityQuery>,
) -> ApiResult {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    let lead = q
        .lead_id
        .as_deref()
        .map(|l| {
            LeadId::parse(l).map_err(|_| ApiError::validation("lead_id", "lead_id must be an id"))
        })
        .transpose()?;
    Ok(ok(s.store.list_opportunities(lead, &page).await?))
}

/// SPEC 9 — `POST /api/v1/opportunities`.
async fn create_opportunity(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<OpportunityRequest>,
) -> ApiResult {
    Ok(created(dir::create_opportunity(&s, req).await?))
}

/// SPEC 9 — `GET /api/v1/opportunities/{id}`.
async fn get_opportunity(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult {
    Ok(ok(found(
        s.store
            .get_opportunity(id(&raw, OpportunityId::parse, "opportunity")?)
            .await?,
        "opportunity",
    )?))
}

/// SPEC 9 — `PATCH /api/v1/opportunities/{id}`.
async fn patch_opportunity(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(p): ApiJson<Value>,
) -> ApiResult {
    let oid = id(&raw, OpportunityId::parse, "opportunity")?;
    Ok(ok(dir::patch_opportunity(&s, oid, &p)
        .await
        .map_err(|e| not_found_as(e, "opportunity"))?))
}

/// SPEC 9 — `DELETE /api/v1/opportunities/{id}`.
async fn delete_opportunity(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult {
    s.store
        .delete_opportunity(id(&raw, OpportunityId::parse, "opportunity")?)
        .await
        .map_err(store_404("opportunity"))?;
    Ok(no_content())
}

// ---------------------------------------------------------------- connectors

/// SPEC 9 — `GET /api/v1/connectors`.
async fn list_connectors(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult {
    let page = s.store.list_connectors(&q.page()?).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|c| dir::connector_json(c, false))
        .collect();
    Ok(ok(json!({"items": items, "next_cursor": page.next_cursor})))
}

/// SPEC 9 — `POST /api/v1/connectors` (the answer carries both keys).
async fn create_connector(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ConnectorRequest>,
) -> ApiResult {
    let c = dir::create_connector(&s, req).await?;
    Ok(created(dir::connector_json(&c, true)))
}

/// SPEC 9 — `GET /api/v1/connectors/{id}` (access key only).
async fn get_connector(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    let c = found(
        s.store
            .get_connector(id(&raw, ConnectorId::parse, "connector")?)
            .await?,
        "connector",
    )?;
    Ok(ok(dir::connector_json(&c, false)))
}

/// SPEC 9 — `PATCH /api/v1/connectors/{id}` (JSON Merge Patch; `kind` cannot change).
async fn patch_connector(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(p): ApiJson<Value>,
) -> ApiResult {
    let cid = id(&raw, ConnectorId::parse, "connector")?;
    let c = dir::patch_connector(&s, cid, &p)
        .await
        .map_err(|e| not_found_as(e, "connector"))?;
    Ok(ok(dir::connector_json(&c, false)))
}

/// SPEC 9 — `DELETE /api/v1/connectors/{id}`.
async fn delete_connector(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult {
    s.store
        .delete_connector(id(&raw, ConnectorId::parse, "connector")?)
        .await
        .map_err(store_404("connector"))?;
    Ok(no_content())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CloneRequest {
    #[serde(default)]
    name: Option<String>,
}

/// SPEC 9 — `POST /api/v1/connectors/{id}/clone` (201; new keys, same settings and teams;
/// an optional `{"name"}` body renames the clone).
async fn clone_connector(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let cid = id(&raw, ConnectorId::parse, "connector")?;
    let req: CloneRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CloneRequest::default()
    } else {
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {e}"),
            )
        })?;
        crate::error::parse_value(v)?
    };
    let c = dir::clone_connector(&s, cid, req.name)
        .await
        .map_err(|e| not_found_as(e, "connector"))?;
    Ok(created(dir::connector_json(&c, true)))
}

/// SPEC 9 — `POST /api/v1/connectors/{id}/default`.
async fn set_default_connector(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult {
    let c = s
        .store
        .set_default_connector(id(&raw, ConnectorId::parse, "connector")?)
        .await
        .map_err(store_404("connector"))?;
    Ok(ok(dir::connector_json(&c, false)))
}

/// SPEC 9 — `POST /api/v1/connectors/{id}/rotate-keys` (the answer carries both new keys).
async fn rotate_keys(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    let c = dir::rotate_keys(&s, id(&raw, ConnectorId::parse, "connector")?)
        .await
        .map_err(|e| not_found_as(e, "connector"))?;
    Ok(ok(dir::connector_json(&c, true)))
}

/// SPEC 9 — `GET /api/v1/connectors/{id}/urls`.
async fn get_connector_urls(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult {
    let c = found(
        s.store
            .get_connector(id(&raw, ConnectorId::parse, "connector")?)
            .await?,
        "connector",
    )?;
    Ok(ok(dir::connector_urls(&s, &c)))
}

/// SPEC 9 — `GET /api/v1/connectors/{id}/virtual-numbers`.
async fn list_virtual_numbers(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult {
    let cid = id(&raw, ConnectorId::parse, "connector")?;
    found(s.store.get_connector(cid).await?, "connector")?;
    Ok(ok(
        json!({"items": s.store.list_virtual_numbers(cid).await?, "next_cursor": null}),
    ))
}

/// SPEC 9 — `POST /api/v1/connectors/{id}/virtual-numbers`.
async fn add_virtual_number(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(req): ApiJson<VirtualNumberRequest>,
) -> ApiResult {
    let cid = id(&raw, ConnectorId::parse, "connector")?;
    Ok(created(
        dir::add_virtual_number(&s, cid, req)
            .await
            .map_err(|e| not_found_as(e, "connector"))?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetagRequest {
    tag: Option<String>,
}

/// SPEC 9 — `PATCH /api/v1/connectors/{id}/virtual-numbers/{vn_id}`.
async fn retag_virtual_number(
    _: Admin,
    State(s): State<AppState>,
    Path((c, v)): Path<(String, String)>,
    ApiJson(req): ApiJson<RetagRequest>,
) -> ApiResult {
    let cid = id(&c, ConnectorId::parse, "virtual number")?;
    let vid = id(&v, VirtualNumberId::parse, "virtual number")?;
    let tag = req
        .tag
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    Ok(ok(s
        .store
        .retag_virtual_number(cid, vid, tag)
        .await
        .map_err(store_404("virtual number"))?))
}

/// SPEC 9 — `DELETE /api/v1/connectors/{id}/virtual-numbers/{vn_id}`.
async fn delete_virtual_number(
    _: Admin,
    State(s): State<AppState>,
    Path((c, v)): Path<(String, String)>,
) -> ApiResult {
    let cid = id(&c, ConnectorId::parse, "virtual number")?;
    let vid = id(&v, VirtualNumberId::parse, "virtual number")?;
    s.store
        .delete_virtual_number(cid, vid)
        .await
        .map_err(store_404("virtual number"))?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamsRequest {
    team_ids: Vec<TeamId>,
}

/// SPEC 9 — `PUT /api/v1/connectors/{id}/teams`.
async fn put_connector_teams(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(req): ApiJson<TeamsRequest>,
) -> ApiResult {
    let cid = id(&raw, ConnectorId::parse, "connector")?;
    s.store
        .set_connector_teams(cid, &req.team_ids)
        .await
        .map_err(store_404("connector"))?;
    Ok(ok(json!({"connector_id": cid, "team_ids": req.team_ids})))
}

// ---------------------------------------------------------------- activities and logs

#[derive(Deserialize, Default)]
struct ActivityQuery {
    lead_id: Option<String>,
    opportunity_id: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 6 — `GET /api/v1/activities?lead_id=&opportunity_id=&since=` (admin or agent).
async fn list_activities(
    _: Caller,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    let filter = ActivityFilter {
        lead_id: q
            .lead_id
            .as_deref()
            .map(|v| {
                LeadId::parse(v)
                    .map_err(|_| ApiError::validation("lead_id", "lead_id must be an id"))
            })
            .transpose()?,
        opportunity_id: q
            .opportunity_id
            .as_deref()
            .map(|v| {
                OpportunityId::parse(v).map_err(|_| {
                    ApiError::validation("opportunity_id", "opportunity_id must be an id")
                })
            })
            .transpose()?,
        user_id: None,
        since: since(q.since.as_deref(), "since")?,
    };
    Ok(ok(s.store.list_activities(&filter, &page).await?))
}

#[derive(Deserialize, Default)]
struct LogQuery {
    connector_id: Option<String>,
    endpoint: Option<String>,
    outcome: Option<String>,
    call_session_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 6 — `GET /api/v1/telephony-logs`.
async fn list_telephony_logs(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    let filter = TelephonyLogFilter {
        connector_id: q
            .connector_id
            .as_deref()
            .map(|v| {
                ConnectorId::parse(v)
                    .map_err(|_| ApiError::validation("connector_id", "connector_id must be an id"))
            })
            .transpose()?,
        endpoint: q.endpoint.clone(),
        outcome: q.outcome.clone(),
        call_session_id: q.call_session_id.clone(),
        since: since(q.since.as_deref(), "since")?,
        until: since(q.until.as_deref(), "until")?,
    };
    Ok(ok(s.store.list_telephony_logs(&filter, &page).await?))
}
