//! The admin surface (SPEC 6 and 9) plus the routes agents share (`GET /leads`,
//! `GET /activities`): users, teams, leads, opportunities, connectors, virtual
//! numbers, activities and telephony logs.

use crate::domain::ids::{ConnectorId, LeadId, OpportunityId, TeamId, UserId, VirtualNumberId};
use crate::domain::lead::{Activity, Lead, Opportunity};
use crate::domain::time::Timestamp;
use crate::domain::user::{Team, User};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::routes::auth::{Admin, Caller};
use crate::service::directory::ConnectorView;
use crate::service::directory::{
    self as dir, ConnectorRequest, LeadRequest, OpportunityRequest, UserRequest,
    VirtualNumberRequest,
};
use crate::service::import::{ImportFormat, ImportReport, Importer};
use crate::state::AppState;
use crate::store::{
    ActivityFilter, Cursor, OutboxItem, Page, PageRequest, StoreError, TelephonyLogFilter,
    TelephonyLogRow, VirtualNumber,
};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::Json;
type ApiResult = Result<Response, ApiError>;

/// Admin routes, each documented in the OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(create_token))
        .routes(routes!(list_teams, create_team))
        .routes(routes!(get_team, patch_team, delete_team))
        .routes(routes!(list_leads, create_lead))
        .routes(routes!(import_leads))
        .routes(routes!(get_lead, patch_lead, delete_lead))
        .routes(routes!(list_opportunities, create_opportunity))
        .routes(routes!(
            get_opportunity,
            patch_opportunity,
            delete_opportunity
        ))
        .routes(routes!(list_connectors, create_connector))
        .routes(routes!(get_connector, patch_connector, delete_connector))
        .routes(routes!(clone_connector))
        .routes(routes!(set_default_connector))
        .routes(routes!(rotate_keys))
        .routes(routes!(get_connector_urls))
        .routes(routes!(list_virtual_numbers, add_virtual_number))
        .routes(routes!(retag_virtual_number, delete_virtual_number))
        .routes(routes!(put_connector_teams))
        .routes(routes!(list_activities))
        .routes(routes!(list_telephony_logs))
        .routes(routes!(list_outbox))
        .routes(routes!(retry_outbox))
}

/// `POST /api/v1/users/{id}/tokens` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TokenAnswer {
    /// The JWT.
    token: String,
    /// When it expires.
    expires_at: Timestamp,
}

/// `PUT /api/v1/connectors/{id}/teams` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TeamsAnswer {
    /// The connector.
    connector_id: ConnectorId,
    /// Its teams now.
    team_ids: Vec<TeamId>,
}

/// `limit` and `cursor` of every list.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageQuery), responses((status = 200, body = Page<User>, description = "users, newest first")), security(("admin_token" = [])))]
async fn list_users(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult {
    Ok(ok(s.store.list_users(&q.page()?).await?))
}

/// SPEC 9 — `POST /api/v1/users`.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = UserRequest, responses((status = 201, body = User, description = "the user"), (status = 409, body = crate::error::ApiErrorBody, description = "email or number in use"), (status = 422, body = crate::error::ApiErrorBody, description = "a field is invalid")), security(("admin_token" = [])))]
async fn create_user(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<UserRequest>,
) -> ApiResult {
    Ok(created(dir::create_user(&s, req).await?))
}

/// SPEC 9 — `GET /api/v1/users/{id}`.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "id")), responses((status = 200, body = User, description = "the user"), (status = 404, body = crate::error::ApiErrorBody, description = "no such user")), security(("admin_token" = [])))]
async fn get_user(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    Ok(ok(found(
        s.store.get_user(id(&raw, UserId::parse, "user")?).await?,
        "user",
    )?))
}

/// SPEC 9 — `PATCH /api/v1/users/{id}` (JSON Merge Patch).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "id")), request_body = Object, responses((status = 200, body = User, description = "the user"), (status = 422, body = crate::error::ApiErrorBody, description = "a field is invalid")), security(("admin_token" = [])))]
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
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "id")), responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ApiErrorBody, description = "no such user")), security(("admin_token" = [])))]
async fn delete_user(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    dir::delete_user(&s, id(&raw, UserId::parse, "user")?)
        .await
        .map_err(|e| not_found_as(e, "user"))?;
    Ok(no_content())
}

/// SPEC 9 — `POST /api/v1/users/{id}/tokens`.
#[utoipa::path(post, path = "/api/v1/users/{id}/tokens", tag = "users", params(("id" = String, Path, description = "id")), responses((status = 201, body = TokenAnswer, description = "an agent token"), (status = 404, body = crate::error::ApiErrorBody, description = "no such user")), security(("admin_token" = [])))]
async fn create_token(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    let user = found(
        s.store.get_user(id(&raw, UserId::parse, "user")?).await?,
        "user",
    )?;
    let (token, expires_at) = s.keys.issue(&user).map_err(|e| {
        tracing::error!(error = ?e, "token signing failed");
        ApiError::unavailable()
    })?;
    Ok(created(TokenAnswer { token, expires_at }))
}

fn not_found_as(e: dir::DirectoryError, what: &'static str) -> ApiError {
    match e {
        dir::DirectoryError::Store(StoreError::NotFound) => ApiError::not_found(what),
        other => other.into(),
    }
}

// ---------------------------------------------------------------- teams

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TeamRequest {
    name: String,
}

/// SPEC 9 — `GET /api/v1/teams`.
#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", params(PageQuery), responses((status = 200, body = Page<Team>, description = "teams")), security(("admin_token" = [])))]
async fn list_teams(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult {
    Ok(ok(s.store.list_teams(&q.page()?).await?))
}

/// SPEC 9 — `POST /api/v1/teams`.
#[utoipa::path(post, path = "/api/v1/teams", tag = "teams", request_body = TeamRequest, responses((status = 201, body = Team, description = "the team"), (status = 422, body = crate::error::ApiErrorBody, description = "invalid name")), security(("admin_token" = [])))]
async fn create_team(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<TeamRequest>,
) -> ApiResult {
    let name = dir::team_name(&req.name)?;
    Ok(created(s.store.create_team(TeamId::new(), &name).await?))
}

/// SPEC 9 — `GET /api/v1/teams/{id}`.
#[utoipa::path(get, path = "/api/v1/teams/{id}", tag = "teams", params(("id" = String, Path, description = "id")), responses((status = 200, body = Team, description = "the team"), (status = 404, body = crate::error::ApiErrorBody, description = "no such team")), security(("admin_token" = [])))]
async fn get_team(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    Ok(ok(found(
        s.store.get_team(id(&raw, TeamId::parse, "team")?).await?,
        "team",
    )?))
}

/// SPEC 9 — `PATCH /api/v1/teams/{id}`.
#[utoipa::path(patch, path = "/api/v1/teams/{id}", tag = "teams", params(("id" = String, Path, description = "id")), request_body = TeamRequest, responses((status = 200, body = Team, description = "the team"), (status = 404, body = crate::error::ApiErrorBody, description = "no such team")), security(("admin_token" = [])))]
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
#[utoipa::path(delete, path = "/api/v1/teams/{id}", tag = "teams", params(("id" = String, Path, description = "id")), responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ApiErrorBody, description = "no such team")), security(("admin_token" = [])))]
async fn delete_team(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    s.store
        .delete_team(id(&raw, TeamId::parse, "team")?)
        .await
        .map_err(store_404("team"))?;
    Ok(no_content())
}

// ---------------------------------------------------------------- leads

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LeadQuery {
    phone: Option<String>,
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 6 — `GET /api/v1/leads?phone=` (admin) and `?q=` (admin or agent; at most 20).
#[utoipa::path(get, path = "/api/v1/leads", tag = "leads", params(LeadQuery), responses((status = 200, body = Page<Lead>, description = "leads"), (status = 422, body = crate::error::ApiErrorBody, description = "invalid phone")), security(("admin_token" = []), ("agent_token" = [])))]
async fn list_leads(
    caller: Caller,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<LeadQuery>,
) -> ApiResult {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    let admin = matches!(caller, Caller::Admin);
    Ok(ok(dir::search_leads(
        &s,
        q.phone.as_deref(),
        q.q.as_deref(),
        admin,
        page,
    )
    .await?))
}

/// SPEC 9 — `POST /api/v1/leads`.
#[utoipa::path(post, path = "/api/v1/leads", tag = "leads", request_body = LeadRequest, responses((status = 201, body = Lead, description = "the lead"), (status = 409, body = crate::error::ApiErrorBody, description = "external_id in use"), (status = 422, body = crate::error::ApiErrorBody, description = "a field is invalid")), security(("admin_token" = [])))]
async fn create_lead(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<LeadRequest>,
) -> ApiResult {
    Ok(created(dir::create_lead(&s, req).await?))
}

/// SPEC 6 "Lead import" — `POST /api/v1/leads/import`: CSV or NDJSON, read as it
/// arrives (never held whole) under `import.max_bytes`, not `server.max_body_bytes`.
#[utoipa::path(post, path = "/api/v1/leads/import", tag = "leads",
    request_body(description = "`text/csv`: a header row of lead field names (first_name, last_name, email, phone, mobile, secondary_numbers separated by `;`, owner_id, source, origin, stage, external_id) and `fields.<key>` for custom fields; or `application/x-ndjson`: one POST /api/v1/leads object per line. UTF-8. A row updates the lead with its external_id, else the only lead with its email (case-insensitive), else creates one; the fields it gives (non-empty cells, present keys) replace, the rest is kept.",
        content(("text/csv"), ("application/x-ndjson"))),
    responses((status = 200, body = ImportReport, description = "rows created, updated and failed; `errors[].row` is the line of the file the row starts on (the CSV header is line 1); the first 1000 errors"),
        (status = 413, body = crate::error::ApiErrorBody, description = "payload_too_large: over import.max_bytes (batches of 500 rows written before the limit was reached stay)"),
        (status = 415, body = crate::error::ApiErrorBody, description = "unsupported_media_type: neither text/csv nor application/x-ndjson in UTF-8"),
        (status = 422, body = crate::error::ApiErrorBody, description = "validation_failed: the CSV header has an unknown, duplicate or unnamed column (field names it); nothing was imported")),
    security(("admin_token" = [])))]
async fn import_leads(
    _: Admin,
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    use futures_util::StreamExt as _;
    let format = import_format(&headers)?;
    let limit = s.settings.import.max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(import_too_large(limit, None));
    }
    let mut importer = Importer::new(s.store.clone(), dir::default_country(&s), format);
    let mut chunks = body.into_data_stream();
    let mut read = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "the body could not be read",
            )
        })?;
        read = read.saturating_add(chunk.len());
        if read > limit {
            return Err(import_too_large(limit, Some(importer.report())));
        }
        importer.push(&chunk).await?;
    }
    Ok(ok(importer.finish().await?))
}

/// The import format named by `Content-Type`: 415 `unsupported_media_type` for any
/// other type or a charset other than UTF-8.
fn import_format(headers: &HeaderMap) -> Result<ImportFormat, ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut parts = raw.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let utf8 = parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim().trim_matches('"');
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    match essence.as_str() {
        "text/csv" if utf8 => Ok(ImportFormat::Csv),
        "application/x-ndjson" | "application/ndjson" if utf8 => Ok(ImportFormat::Ndjson),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send text/csv or application/x-ndjson, in UTF-8",
        )),
    }
}

/// 413 `payload_too_large`; `so_far` tells what the batches written before did.
fn import_too_large(limit: usize, so_far: Option<&ImportReport>) -> ApiError {
    let mut message = format!("the body is larger than import.max_bytes ({limit} bytes)");
    if let Some(r) = so_far.filter(|r| r.created + r.updated + r.failed > 0) {
        message.push_str(&format!(
            "; rows before the limit were imported: {} created, {} updated, {} failed",
            r.created, r.updated, r.failed
        ));
    }
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
}

/// SPEC 9 — `GET /api/v1/leads/{id}`.
#[utoipa::path(get, path = "/api/v1/leads/{id}", tag = "leads", params(("id" = String, Path, description = "id")), responses((status = 200, body = Lead, description = "the lead"), (status = 404, body = crate::error::ApiErrorBody, description = "no such lead")), security(("admin_token" = []), ("agent_token" = [])))]
async fn get_lead(_: Caller, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    Ok(ok(found(
        s.store.get_lead(id(&raw, LeadId::parse, "lead")?).await?,
        "lead",
    )?))
}

/// SPEC 9 — `PATCH /api/v1/leads/{id}` (JSON Merge Patch).
#[utoipa::path(patch, path = "/api/v1/leads/{id}", tag = "leads", params(("id" = String, Path, description = "id")), request_body = Object, responses((status = 200, body = Lead, description = "the lead"), (status = 422, body = crate::error::ApiErrorBody, description = "a field is invalid")), security(("admin_token" = [])))]
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
#[utoipa::path(delete, path = "/api/v1/leads/{id}", tag = "leads", params(("id" = String, Path, description = "id")), responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ApiErrorBody, description = "no such lead")), security(("admin_token" = [])))]
async fn delete_lead(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    s.store
        .delete_lead(id(&raw, LeadId::parse, "lead")?)
        .await
        .map_err(store_404("lead"))?;
    Ok(no_content())
}

// ---------------------------------------------------------------- opportunities

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct OpportunityQuery {
    lead_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 9 — `GET /api/v1/opportunities[?lead_id=]`.
#[utoipa::path(get, path = "/api/v1/opportunities", tag = "opportunities", params(OpportunityQuery), responses((status = 200, body = Page<Opportunity>, description = "opportunities")), security(("admin_token" = [])))]
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
#[utoipa::path(post, path = "/api/v1/opportunities", tag = "opportunities", request_body = OpportunityRequest, responses((status = 201, body = Opportunity, description = "the opportunity"), (status = 422, body = crate::error::ApiErrorBody, description = "a field is invalid")), security(("admin_token" = [])))]
async fn create_opportunity(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<OpportunityRequest>,
) -> ApiResult {
    Ok(created(dir::create_opportunity(&s, req).await?))
}

/// SPEC 9 — `GET /api/v1/opportunities/{id}`.
#[utoipa::path(get, path = "/api/v1/opportunities/{id}", tag = "opportunities", params(("id" = String, Path, description = "id")), responses((status = 200, body = Opportunity, description = "the opportunity"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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
#[utoipa::path(patch, path = "/api/v1/opportunities/{id}", tag = "opportunities", params(("id" = String, Path, description = "id")), request_body = Object, responses((status = 200, body = Opportunity, description = "the opportunity"), (status = 422, body = crate::error::ApiErrorBody, description = "a field is invalid")), security(("admin_token" = [])))]
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
#[utoipa::path(delete, path = "/api/v1/opportunities/{id}", tag = "opportunities", params(("id" = String, Path, description = "id")), responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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
#[utoipa::path(get, path = "/api/v1/connectors", tag = "connectors", params(PageQuery), responses((status = 200, body = Page<ConnectorView>, description = "connectors (access keys only)")), security(("admin_token" = [])))]
async fn list_connectors(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult {
    let page = s.store.list_connectors(&q.page()?).await?;
    let items: Vec<ConnectorView> = page
        .items
        .iter()
        .map(|c| dir::connector_json(c, false))
        .collect();
    Ok(ok(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// SPEC 9 — `POST /api/v1/connectors` (the answer carries both keys).
#[utoipa::path(post, path = "/api/v1/connectors", tag = "connectors", request_body = ConnectorRequest, responses((status = 201, body = ConnectorView, description = "the connector with both keys"), (status = 422, body = crate::error::ApiErrorBody, description = "a setting is invalid")), security(("admin_token" = [])))]
async fn create_connector(
    _: Admin,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ConnectorRequest>,
) -> ApiResult {
    let c = dir::create_connector(&s, req).await?;
    Ok(created(dir::connector_json(&c, true)))
}

/// SPEC 9 — `GET /api/v1/connectors/{id}` (access key only).
#[utoipa::path(get, path = "/api/v1/connectors/{id}", tag = "connectors", params(("id" = String, Path, description = "id")), responses((status = 200, body = ConnectorView, description = "the connector (access key only)"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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
#[utoipa::path(patch, path = "/api/v1/connectors/{id}", tag = "connectors", params(("id" = String, Path, description = "id")), request_body = Object, responses((status = 200, body = ConnectorView, description = "the connector"), (status = 422, body = crate::error::ApiErrorBody, description = "a setting is invalid")), security(("admin_token" = [])))]
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
#[utoipa::path(delete, path = "/api/v1/connectors/{id}", tag = "connectors", params(("id" = String, Path, description = "id")), responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
async fn delete_connector(
    _: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult {
    let cid = id(&raw, ConnectorId::parse, "connector")?;
    s.store
        .fail_connector_outbox(cid, "the connector was deleted")
        .await?;
    s.store
        .delete_connector(cid)
        .await
        .map_err(store_404("connector"))?;
    Ok(no_content())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CloneRequest {
    #[serde(default)]
    name: Option<String>,
}

/// SPEC 9 — `POST /api/v1/connectors/{id}/clone` (201; new keys, same settings and teams;
/// an optional `{"name"}` body renames the clone).
#[utoipa::path(post, path = "/api/v1/connectors/{id}/clone", tag = "connectors", params(("id" = String, Path, description = "id")), request_body = CloneRequest, responses((status = 201, body = ConnectorView, description = "the clone with its keys"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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
#[utoipa::path(post, path = "/api/v1/connectors/{id}/default", tag = "connectors", params(("id" = String, Path, description = "id")), responses((status = 200, body = ConnectorView, description = "the new default"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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
#[utoipa::path(post, path = "/api/v1/connectors/{id}/rotate-keys", tag = "connectors", params(("id" = String, Path, description = "id")), responses((status = 200, body = ConnectorView, description = "the connector with its new keys"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
async fn rotate_keys(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    let c = dir::rotate_keys(&s, id(&raw, ConnectorId::parse, "connector")?)
        .await
        .map_err(|e| not_found_as(e, "connector"))?;
    Ok(ok(dir::connector_json(&c, true)))
}

/// SPEC 9 — `GET /api/v1/connectors/{id}/urls`.
#[utoipa::path(get, path = "/api/v1/connectors/{id}/urls", tag = "connectors", params(("id" = String, Path, description = "id")), responses((status = 200, body = crate::service::directory::ConnectorUrls, description = "provider-facing URLs"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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
#[utoipa::path(get, path = "/api/v1/connectors/{id}/virtual-numbers", tag = "virtual numbers", params(("id" = String, Path, description = "id")), responses((status = 200, body = Page<VirtualNumber>, description = "the numbers, oldest first"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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
#[utoipa::path(post, path = "/api/v1/connectors/{id}/virtual-numbers", tag = "virtual numbers", params(("id" = String, Path, description = "id")), request_body = VirtualNumberRequest, responses((status = 201, body = VirtualNumber, description = "the number"), (status = 409, body = crate::error::ApiErrorBody, description = "number_in_use"), (status = 422, body = crate::error::ApiErrorBody, description = "invalid number")), security(("admin_token" = [])))]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RetagRequest {
    tag: Option<String>,
}

/// SPEC 9 — `PATCH /api/v1/connectors/{id}/virtual-numbers/{vn_id}`.
#[utoipa::path(patch, path = "/api/v1/connectors/{id}/virtual-numbers/{vn}", tag = "virtual numbers", params(("id" = String, Path, description = "id"), ("vn" = String, Path, description = "virtual number id")), request_body = RetagRequest, responses((status = 200, body = VirtualNumber, description = "the number"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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
#[utoipa::path(delete, path = "/api/v1/connectors/{id}/virtual-numbers/{vn}", tag = "virtual numbers", params(("id" = String, Path, description = "id"), ("vn" = String, Path, description = "virtual number id")), responses((status = 204, description = "removed"), (status = 404, body = crate::error::ApiErrorBody, description = "not found")), security(("admin_token" = [])))]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TeamsRequest {
    team_ids: Vec<TeamId>,
}

/// SPEC 9 — `PUT /api/v1/connectors/{id}/teams`.
#[utoipa::path(put, path = "/api/v1/connectors/{id}/teams", tag = "connectors", params(("id" = String, Path, description = "id")), request_body = TeamsRequest, responses((status = 200, body = TeamsAnswer, description = "the assignment"), (status = 404, body = crate::error::ApiErrorBody, description = "not found"), (status = 422, body = crate::error::ApiErrorBody, description = "unknown team")), security(("admin_token" = [])))]
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
    Ok(ok(TeamsAnswer {
        connector_id: cid,
        team_ids: req.team_ids,
    }))
}

// ---------------------------------------------------------------- activities and logs

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ActivityQuery {
    lead_id: Option<String>,
    opportunity_id: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 6 — `GET /api/v1/activities?lead_id=&opportunity_id=&since=` (admin or agent).
#[utoipa::path(get, path = "/api/v1/activities", tag = "activities", params(ActivityQuery), responses((status = 200, body = Page<Activity>, description = "activities, newest first")), security(("admin_token" = []), ("agent_token" = [])))]
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

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
#[utoipa::path(get, path = "/api/v1/telephony-logs", tag = "telephony logs", params(LogQuery), responses((status = 200, body = Page<TelephonyLogRow>, description = "rows, newest first")), security(("admin_token" = [])))]
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
    one_of(
        "endpoint",
        q.endpoint.as_deref(),
        &[
            "agent_popup",
            "call_log",
            "call_route",
            "sso",
            "click_to_call",
            "disposition_forward",
        ],
    )?;
    one_of(
        "outcome",
        q.outcome.as_deref(),
        &["ok", "duplicate", "rejected", "failed"],
    )?;
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

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct OutboxQuery {
    /// `pending`, `failed` or `delivered`.
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// SPEC 6 — `GET /api/v1/outbox?status=pending|failed|delivered`.
#[utoipa::path(get, path = "/api/v1/outbox", tag = "outbox", params(OutboxQuery),
    responses((status = 200, body = Page<OutboxItem>, description = "items, newest first"),
        (status = 422, body = crate::error::ApiErrorBody, description = "unknown status")),
    security(("admin_token" = [])))]
async fn list_outbox(
    _: Admin,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> ApiResult {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    one_of(
        "status",
        q.status.as_deref(),
        &["pending", "failed", "delivered"],
    )?;
    Ok(ok(s.store.list_outbox(q.status.as_deref(), &page).await?))
}

/// SPEC 4 — `POST /api/v1/outbox/{id}/retry`: back to `pending`, due now, its maximum
/// age counting from now.
#[utoipa::path(post, path = "/api/v1/outbox/{id}/retry", tag = "outbox", params(("id" = String, Path, description = "id")),
    responses((status = 200, body = OutboxItem, description = "the item, pending again"),
        (status = 404, body = crate::error::ApiErrorBody, description = "no such item, or already delivered")),
    security(("admin_token" = [])))]
async fn retry_outbox(_: Admin, State(s): State<AppState>, Path(raw): Path<String>) -> ApiResult {
    let oid = id(&raw, crate::domain::ids::OutboxId::parse, "outbox item")?;
    let item = s
        .store
        .retry_outbox(oid, Timestamp::now())
        .await
        .map_err(store_404("outbox item"))?;
    s.outbox_wake.notify_one();
    Ok(ok(item))
}

/// A query value that must be one of `allowed` when given (422 naming the parameter).
fn one_of(field: &'static str, value: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(ApiError::validation(
            field,
            format!("{field} must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}
