//! The embedded SQLite store (WAL, `synchronous=NORMAL`). Every write that reads
//! before it writes runs under `BEGIN IMMEDIATE`, which takes SQLite's single write
//! lock up front: that is the per-key lock DESIGN.md asks for, at database scope.

use super::{
    ActivityFilter, CallActivityWrite, ClickToCallRecord, DisposeError, DispositionWrite,
    ExpiredPopup, ImportOutcome, LeadFilter, LeadPatch, LeadWrite, NewConnector, OpportunityWrite,
    OutboxItem, OutboxResult, Page, PageRequest, PopupCall, PopupOutcome, PopupRecord, PopupState,
    Recipients, StoreError, StoreResult, StoredEvent, TelephonyLogFilter, TelephonyLogRow,
    UserEvent, UserKey, UserWrite, VirtualNumber,
};
use crate::domain::call::Direction;
use crate::domain::connector::{
    CallRouteSettings, ClickToCallSettings, Connector, ConnectorKind, ConnectorSettings,
    PopupSettings,
};
use crate::domain::disposition::DispositionSettings;
use crate::domain::ids::{
    ActivityId, ConnectorId, LeadId, OpportunityId, OutboxId, PopupId, TeamId, TelephonyLogId,
    UserId, VirtualNumberId,
};
use crate::domain::lead::{
    Activity, ActivityKind, Lead, LeadField, Opportunity, OpportunityStatus,
};
use crate::domain::phone::{AgentNumber, Country, PhoneNumber, is_extension};
use crate::domain::time::Timestamp;
use crate::domain::user::{Role, Team, User};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, SqlSafeStr, Sqlite, SqliteConnection, SqlitePool};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

const OPEN_STATES: &str = "('queued','delivered','acked')";

/// The SQLite implementation of [`super::Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// Writers of this process queue here instead of in SQLite's busy handler, whose
    /// sleeping back-off (up to 100 ms a try) would put long tails on popups.
    write_lock: Arc<Mutex<()>>,
    /// Connectors by access key (cleared after every connector write).
    connectors: super::cache::ConnectorCache,
}

/// A write transaction that holds the process-wide write lock until it ends.
struct WriteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
    _lock: OwnedMutexGuard<()>,
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl WriteTx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back before the write lock is released (a dropped transaction would roll
    /// back later, when the next writer may already be waiting on SQLite's lock).
    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!("corrupt value in column {what}"))
}

fn parse_id<T>(
    raw: &str,
    what: &str,
    f: impl Fn(&str) -> Result<T, crate::domain::ids::IdError>,
) -> StoreResult<T> {
    f(raw).map_err(|_| corrupt(what))
}

fn opt_id<T>(
    raw: Option<String>,
    what: &str,
    f: impl Fn(&str) -> Result<T, crate::domain::ids::IdError>,
) -> StoreResult<Option<T>> {
    raw.map(|s| parse_id(&s, what, &f)).transpose()
}

fn json_col<T: for<'de> Deserialize<'de>>(r: &SqliteRow, col: &str) -> StoreResult<T> {
    let raw: String = r.try_get(col)?;
    serde_json::from_str(&raw).map_err(|_| corrupt(col))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

fn unique_violation(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Some(db.message().to_owned()),
        _ => None,
    }
}

fn fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

fn page_clause(qb: &mut QueryBuilder<Sqlite>, page: &PageRequest, at_col: &str, id_col: &str) {
    if let Some(c) = &page.cursor {
        qb.push(format!(" AND ({at_col} < "))
            .push_bind(c.at)
            .push(format!(" OR ({at_col} = "))
            .push_bind(c.at)
            .push(format!(" AND {id_col} < "))
            .push_bind(c.id.clone())
            .push("))");
    }
    qb.push(format!(" ORDER BY {at_col} DESC, {id_col} DESC LIMIT "))
        .push_bind(i64::from(page.limit) + 1);
}

/// Connector settings as kept in the `settings` JSON column.
#[derive(Serialize, Deserialize)]
struct StoredSettings {
    default_country: String,
    timezone: String,
    lead_source: Option<String>,
    popup: PopupSettings,
    disposition: DispositionSettings,
    click_to_call: Option<ClickToCallSettings>,
    call_route: CallRouteSettings,
}

impl From<&ConnectorSettings> for StoredSettings {
    fn from(s: &ConnectorSettings) -> Self {
        Self {
            default_country: s.default_country.as_str().to_owned(),
            timezone: s.timezone.name().to_owned(),
            lead_source: s.lead_source.clone(),
            popup: s.popup.clone(),
            disposition: s.disposition.clone(),
            click_to_call: s.click_to_call.clone(),
            call_route: s.call_route,
        }
    }
}

fn connector_from_row(r: &SqliteRow) -> StoreResult<Connector> {
    let s: StoredSettings = json_col(r, "settings")?;
    let kind: String = r.try_get("kind")?;
    let secret: String = r.try_get("secret_key")?;
    Ok(Connector {
        id: parse_id(
            &r.try_get::<String, _>("id")?,
            "connectors.id",
            ConnectorId::parse,
        )?,
        kind: ConnectorKind::parse(&kind).ok_or_else(|| corrupt("connectors.kind"))?,
        access_key: r.try_get("access_key")?,
        secret_key: secret.into(),
        settings: ConnectorSettings {
            name: r.try_get("name")?,
            default_country: Country::parse(&s.default_country)
                .map_err(|_| corrupt("settings.default_country"))?,
            timezone: s
                .timezone
                .parse()
                .map_err(|_| corrupt("settings.timezone"))?,
            lead_source: s.lead_source,
            popup: s.popup,
            disposition: s.disposition,
            click_to_call: s.click_to_call,
            call_route: s.call_route,
        },
        is_default: r.try_get("is_default")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
    })
}

fn vn_from_row(r: &SqliteRow) -> StoreResult<VirtualNumber> {
    Ok(VirtualNumber {
        id: parse_id(
            &r.try_get::<String, _>("id")?,
            "virtual_numbers.id",
            VirtualNumberId::parse,
        )?,
        number: PhoneNumber::from_e164_unchecked_db(r.try_get("number")?),
        tag: r.try_get("tag")?,
        connector_id: parse_id(
            &r.try_get::<String, _>("connector_id")?,
            "virtual_numbers.connector_id",
            ConnectorId::parse,
        )?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
    })
}

const USER_SELECT: &str = "SELECT u.id, u.name, u.email, u.group_ids, u.role, u.active, \
    u.provider_agent_ids, u.created_at, u.updated_at, \
    (SELECT json_group_array(number) FROM (SELECT number FROM user_numbers WHERE user_id = u.id ORDER BY position)) AS numbers, \
    (SELECT json_group_array(team_id) FROM (SELECT team_id FROM team_members WHERE user_id = u.id ORDER BY team_id)) AS team_ids \
    FROM users u";

/// SQL: whether the user `user` (a column or parameter) sees the connector `?2` (SPEC 1:
/// through a team assigned to it, or, in no team that has connectors, the default).
fn sees_connector(user: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM team_members tm JOIN team_connectors tc ON tc.team_id = tm.team_id \
                  WHERE tm.user_id = {user} AND tc.connector_id = ?2) \
          OR (NOT EXISTS (SELECT 1 FROM team_members tm JOIN team_connectors tc ON tc.team_id = tm.team_id \
                          WHERE tm.user_id = {user}) \
              AND EXISTS (SELECT 1 FROM connectors WHERE id = ?2 AND is_default = 1)))"
    )
}

fn agent_number_from_db(s: String) -> AgentNumber {
    if is_extension(&s) {
        AgentNumber::Extension(s)
    } else {
        AgentNumber::Phone(PhoneNumber::from_e164_unchecked_db(s))
    }
}

fn user_from_row(r: &SqliteRow) -> StoreResult<User> {
    let numbers: Vec<String> = json_col(r, "numbers")?;
    let teams: Vec<String> = json_col(r, "team_ids")?;
    let role: String = r.try_get("role")?;
    Ok(User {
        id: parse_id(&r.try_get::<String, _>("id")?, "users.id", UserId::parse)?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        phone_numbers: numbers.into_iter().map(agent_number_from_db).collect(),
        team_ids: teams
            .iter()
            .map(|t| parse_id(t, "team_members.team_id", TeamId::parse))
            .collect::<StoreResult<_>>()?,
        group_ids: json_col(r, "group_ids")?,
        role: if role == "admin" {
            Role::Admin
        } else {
            Role::Agent
        },
        active: r.try_get("active")?,
        provider_agent_ids: json_col(r, "provider_agent_ids")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
    })
}

fn phone_col(r: &SqliteRow, col: &str) -> StoreResult<Option<PhoneNumber>> {
    Ok(r.try_get::<Option<String>, _>(col)?
        .map(PhoneNumber::from_e164_unchecked_db))
}

fn lead_from_row(r: &SqliteRow) -> StoreResult<Lead> {
    let secondary: Vec<String> = json_col(r, "secondary_numbers")?;
    Ok(Lead {
        id: parse_id(&r.try_get::<String, _>("id")?, "leads.id", LeadId::parse)?,
        first_name: r.try_get("first_name")?,
        last_name: r.try_get("last_name")?,
        email: r.try_get("email")?,
        phone: phone_col(r, "phone")?,
        mobile: phone_col(r, "mobile")?,
        secondary_numbers: secondary
            .into_iter()
            .map(PhoneNumber::from_e164_unchecked_db)
            .collect(),
        owner_id: opt_id(r.try_get("owner_id")?, "leads.owner_id", UserId::parse)?,
        source: r.try_get("source")?,
        origin: r.try_get("origin")?,
        stage: r.try_get("stage")?,
        fields: json_col(r, "fields")?,
        external_id: r.try_get("external_id")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
    })
}

fn opportunity_from_row(r: &SqliteRow) -> StoreResult<Opportunity> {
    let status: String = r.try_get("status")?;
    Ok(Opportunity {
        id: parse_id(
            &r.try_get::<String, _>("id")?,
            "opportunities.id",
            OpportunityId::parse,
        )?,
        lead_id: parse_id(
            &r.try_get::<String, _>("lead_id")?,
            "opportunities.lead_id",
            LeadId::parse,
        )?,
        name: r.try_get("name")?,
        owner_id: opt_id(
            r.try_get("owner_id")?,
            "opportunities.owner_id",
            UserId::parse,
        )?,
        status: OpportunityStatus::parse(&status).ok_or_else(|| corrupt("opportunities.status"))?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
    })
}

fn activity_from_row(r: &SqliteRow) -> StoreResult<Activity> {
    let kind: String = r.try_get("kind")?;
    let ts = |c: &str| -> StoreResult<Option<Timestamp>> {
        Ok(r.try_get::<Option<i64>, _>(c)?.map(Timestamp::from_millis))
    };
    Ok(Activity {
        id: parse_id(
            &r.try_get::<String, _>("id")?,
            "activities.id",
            ActivityId::parse,
        )?,
        kind: ActivityKind::parse(&kind).ok_or_else(|| corrupt("activities.kind"))?,
        lead_id: parse_id(
            &r.try_get::<String, _>("lead_id")?,
            "activities.lead_id",
            LeadId::parse,
        )?,
        opportunity_id: opt_id(
            r.try_get("opportunity_id")?,
            "activities.opportunity_id",
            OpportunityId::parse,
        )?,
        user_id: opt_id(r.try_get("user_id")?, "activities.user_id", UserId::parse)?,
        connector_id: opt_id(
            r.try_get("connector_id")?,
            "activities.connector_id",
            ConnectorId::parse,
        )?,
        call_session_id: r.try_get("call_session_id")?,
        status: r.try_get("status")?,
        started_at: ts("started_at")?,
        ended_at: ts("ended_at")?,
        duration_secs: r.try_get("duration_secs")?,
        recording_url: r.try_get("recording_url")?,
        notes: r.try_get("notes")?,
        data: json_col(r, "data")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
    })
}

fn popup_from_row(r: &SqliteRow) -> StoreResult<PopupRecord> {
    let state: String = r.try_get("state")?;
    let direction: String = r.try_get("direction")?;
    let candidates: Vec<String> = json_col(r, "candidate_ids")?;
    Ok(PopupRecord {
        id: parse_id(&r.try_get::<String, _>("id")?, "popups.id", PopupId::parse)?,
        call: PopupCall {
            connector_id: parse_id(
                &r.try_get::<String, _>("connector_id")?,
                "popups.connector_id",
                ConnectorId::parse,
            )?,
            call_session_id: r.try_get("call_session_id")?,
            user_id: parse_id(
                &r.try_get::<String, _>("user_id")?,
                "popups.user_id",
                UserId::parse,
            )?,
            lead_id: parse_id(
                &r.try_get::<String, _>("lead_id")?,
                "popups.lead_id",
                LeadId::parse,
            )?,
            candidate_ids: candidates
                .iter()
                .map(|c| parse_id(c, "popups.candidate_ids", LeadId::parse))
                .collect::<StoreResult<_>>()?,
            new_lead: r.try_get("new_lead")?,
            opportunity_id: opt_id(
                r.try_get("opportunity_id")?,
                "popups.opportunity_id",
                OpportunityId::parse,
            )?,
            direction: Direction::parse(&direction).ok_or_else(|| corrupt("popups.direction"))?,
            lead_number: r.try_get("lead_number")?,
            agent_number: r.try_get("agent_number")?,
            virtual_number: r.try_get("virtual_number")?,
            tag: r.try_get("tag")?,
        },
        state: PopupState::parse(&state).ok_or_else(|| corrupt("popups.state"))?,
        seq: r.try_get("seq")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
    })
}

fn outbox_from_row(r: &SqliteRow) -> StoreResult<OutboxItem> {
    let request: String = r.try_get("request")?;
    let ts = |c: &str| -> StoreResult<Option<Timestamp>> {
        Ok(r.try_get::<Option<i64>, _>(c)?.map(Timestamp::from_millis))
    };
    let status: String = r.try_get("status")?;
    Ok(OutboxItem {
        id: parse_id(&r.try_get::<String, _>("id")?, "outbox.id", OutboxId::parse)?,
        connector_id: parse_id(
            &r.try_get::<String, _>("connector_id")?,
            "outbox.connector_id",
            ConnectorId::parse,
        )?,
        kind: r.try_get("kind")?,
        next_attempt_at: if status == "pending" {
            ts("next_attempt_at")?
        } else {
            None
        },
        status,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        delivered_at: ts("delivered_at")?,
        request: serde_json::from_str(&request).ok(),
        age_from: Timestamp::from_millis(r.try_get("age_from")?),
    })
}

fn log_from_row(r: &SqliteRow) -> StoreResult<TelephonyLogRow> {
    let status: i64 = r.try_get("http_status")?;
    Ok(TelephonyLogRow {
        id: parse_id(
            &r.try_get::<String, _>("id")?,
            "telephony_logs.id",
            TelephonyLogId::parse,
        )?,
        at: Timestamp::from_millis(r.try_get("at")?),
        connector_id: opt_id(
            r.try_get("connector_id")?,
            "telephony_logs.connector_id",
            ConnectorId::parse,
        )?,
        endpoint: r.try_get("endpoint")?,
        http_status: u16::try_from(status).map_err(|_| corrupt("telephony_logs.http_status"))?,
        outcome: r.try_get("outcome")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        call_session_id: r.try_get("call_session_id")?,
        latency_us: r.try_get("latency_us")?,
        request: json_col(r, "request")?,
    })
}

/// Appends an event for `user` inside a transaction; returns its `seq`.
async fn append_event(
    conn: &mut SqliteConnection,
    user: UserId,
    kind: &str,
    popup: Option<PopupId>,
    payload: Option<&serde_json::Value>,
    now: Timestamp,
) -> StoreResult<i64> {
    let seq: i64 = sqlx::query_scalar("UPDATE users SET seq = seq + 1 WHERE id = ? RETURNING seq")
        .bind(user.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    sqlx::query("INSERT INTO events (user_id, seq, kind, popup_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(user.to_string())
        .bind(seq)
        .bind(kind)
        .bind(popup.map(|p| p.to_string()))
        .bind(payload.map(to_json))
        .bind(now.millis())
        .execute(&mut *conn)
        .await?;
    Ok(seq)
}

async fn write_lead(
    conn: &mut SqliteConnection,
    id: LeadId,
    l: &LeadWrite,
    now: Timestamp,
    insert: bool,
) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO leads (first_name, last_name, email, phone, mobile, secondary_numbers, owner_id, \
         source, origin, stage, fields, external_id, created_at, updated_at, id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    } else {
        "UPDATE leads SET first_name = ?, last_name = ?, email = ?, phone = ?, mobile = ?, \
         secondary_numbers = ?, owner_id = ?, source = ?, origin = ?, stage = ?, fields = ?, \
         external_id = ?, created_at = created_at + 0 * ?, updated_at = ? WHERE id = ?"
    };
    let res = sqlx::query(sql)
        .bind(l.first_name.as_deref())
        .bind(l.last_name.as_deref())
        .bind(l.email.as_deref())
        .bind(l.phone.as_ref().map(|p| p.as_str().to_owned()))
        .bind(l.mobile.as_ref().map(|p| p.as_str().to_owned()))
        .bind(to_json(
            &l.secondary_numbers
                .iter()
                .map(PhoneNumber::as_str)
                .collect::<Vec<_>>(),
        ))
        .bind(l.owner_id.map(|u| u.to_string()))
        .bind(l.source.as_deref())
        .bind(l.origin.as_deref())
        .bind(l.stage.as_deref())
        .bind(to_json(&l.fields))
        .bind(l.external_id.as_deref())
        .bind(now.millis())
        .bind(now.millis())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await;
    match res {
        Err(e) if unique_violation(&e).is_some() => {
            return Err(StoreError::Conflict {
                code: "external_id_in_use",
                field: "external_id".into(),
            });
        }
        Err(e) if fk_violation(&e) => {
            return Err(StoreError::UnknownReference {
                field: "owner_id".into(),
            });
        }
        Err(e) => return Err(e.into()),
        Ok(r) if r.rows_affected() == 0 => return Err(StoreError::NotFound),
        Ok(_) => {}
    }
    sqlx::query("DELETE FROM lead_numbers WHERE lead_id = ?")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    let lead = Lead {
        id,
        first_name: None,
        last_name: None,
        email: None,
        phone: l.phone.clone(),
        mobile: l.mobile.clone(),
        secondary_numbers: l.secondary_numbers.clone(),
        owner_id: None,
        source: None,
        origin: None,
        stage: None,
        fields: BTreeMap::new(),
        external_id: None,
        created_at: now,
        updated_at: now,
    };
    for n in lead.numbers() {
        sqlx::query("INSERT OR IGNORE INTO lead_numbers (number, lead_id) VALUES (?, ?)")
            .bind(n.as_str())
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The lead an import row updates: the one with its `external_id`, else the only one
/// with its email (ASCII case-insensitive, the `leads_email` index) when that lead has
/// no other `external_id` — a lead known to the source system under another id is
/// another record, however its email reads.
async fn import_match(conn: &mut SqliteConnection, row: &LeadPatch) -> StoreResult<Option<Lead>> {
    let external_id = row
        .values
        .external_id
        .as_deref()
        .filter(|_| row.given.external_id);
    if let Some(x) = external_id
        && let Some(r) = sqlx::query("SELECT * FROM leads WHERE external_id = ?")
            .bind(x)
            .fetch_optional(&mut *conn)
            .await?
    {
        return lead_from_row(&r).map(Some);
    }
    let Some(email) = row.values.email.as_deref().filter(|_| row.given.email) else {
        return Ok(None);
    };
    let found = sqlx::query("SELECT * FROM leads WHERE email = ? COLLATE NOCASE LIMIT 2")
        .bind(email)
        .fetch_all(&mut *conn)
        .await?;
    let [only] = found.as_slice() else {
        return Ok(None);
    };
    let lead = lead_from_row(only)?;
    let other_record = external_id.is_some() && lead.external_id.is_some();
    Ok((!other_record).then_some(lead))
}

/// [`StoreError::NotFound`] unless the connector exists.
async fn require_connector(conn: &mut SqliteConnection, id: ConnectorId) -> StoreResult<()> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM connectors WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    exists.map(|_| ()).ok_or(StoreError::NotFound)
}

/// Leads holding `number`, most recently updated first, then by id.
async fn select_by_number(
    conn: &mut SqliteConnection,
    number: &PhoneNumber,
    limit: u32,
) -> StoreResult<Vec<Lead>> {
    sqlx::query(
        "SELECT l.* FROM lead_numbers n JOIN leads l ON l.id = n.lead_id \
         WHERE n.number = ? ORDER BY l.updated_at DESC, l.id LIMIT ?",
    )
    .bind(number.as_str())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(lead_from_row)
    .collect()
}

async fn fetch_lead(conn: &mut SqliteConnection, id: LeadId) -> StoreResult<Option<Lead>> {
    sqlx::query("SELECT * FROM leads WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| lead_from_row(&r))
        .transpose()
}

async fn fetch_user(conn: &mut SqliteConnection, id: UserId) -> StoreResult<Option<User>> {
    sqlx::query(AssertSqlSafe(format!("{USER_SELECT} WHERE u.id = ?")))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
}

use sqlx::AssertSqlSafe;

async fn write_user(
    conn: &mut SqliteConnection,
    id: UserId,
    u: &UserWrite,
    now: Timestamp,
    insert: bool,
) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO users (name, email, email_lower, group_ids, role, active, provider_agent_ids, created_at, updated_at, id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    } else {
        "UPDATE users SET name = ?, email = ?, email_lower = ?, group_ids = ?, role = ?, active = ?, \
         provider_agent_ids = ?, created_at = created_at + 0 * ?, updated_at = ? WHERE id = ?"
    };
    let res = sqlx::query(sql)
        .bind(&u.name)
        .bind(&u.email)
        .bind(u.email.to_lowercase())
        .bind(to_json(&u.group_ids))
        .bind(u.role.as_str())
        .bind(u.active)
        .bind(to_json(&u.provider_agent_ids))
        .bind(now.millis())
        .bind(now.millis())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await;
    match res {
        Err(e) if unique_violation(&e).is_some() => {
            return Err(StoreError::Conflict {
                code: "email_in_use",
                field: "email".into(),
            });
        }
        Err(e) => return Err(e.into()),
        Ok(r) if r.rows_affected() == 0 => return Err(StoreError::NotFound),
        Ok(_) => {}
    }
    for table in ["user_numbers", "team_members"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE user_id = ?"
        )))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    for (i, n) in u.phone_numbers.iter().enumerate() {
        let res =
            sqlx::query("INSERT INTO user_numbers (number, user_id, position) VALUES (?, ?, ?)")
                .bind(n.as_str())
                .bind(id.to_string())
                .bind(i64::try_from(i).unwrap_or(i64::MAX))
                .execute(&mut *conn)
                .await;
        if let Err(e) = res {
            return Err(if unique_violation(&e).is_some() {
                StoreError::Conflict {
                    code: "number_in_use",
                    field: format!("phone_numbers[{i}]"),
                }
            } else {
                e.into()
            });
        }
    }
    for (i, t) in u.team_ids.iter().enumerate() {
        let res =
            sqlx::query("INSERT OR IGNORE INTO team_members (team_id, user_id) VALUES (?, ?)")
                .bind(t.to_string())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await;
        if let Err(e) = res {
            return Err(if fk_violation(&e) {
                StoreError::UnknownReference {
                    field: format!("team_ids[{i}]"),
                }
            } else {
                e.into()
            });
        }
    }
    Ok(())
}

fn apply_lead_writes(l: &mut LeadWrite, writes: &[(LeadField, String)]) {
    for (field, value) in writes {
        let v = Some(value.clone()).filter(|v| !v.is_empty());
        match field {
            LeadField::FirstName => l.first_name = v,
            LeadField::LastName => l.last_name = v,
            LeadField::Email => l.email = v,
            LeadField::Phone => l.phone = v.map(PhoneNumber::from_e164_unchecked_db),
            LeadField::Mobile => l.mobile = v.map(PhoneNumber::from_e164_unchecked_db),
            LeadField::Source => l.source = v,
            LeadField::Origin => l.origin = v,
            LeadField::Stage => l.stage = v,
            LeadField::Custom(k) => {
                l.fields.insert(k.clone(), value.clone());
            }
        }
    }
}

struct NewActivity<'a> {
    id: ActivityId,
    kind: ActivityKind,
    lead_id: LeadId,
    d: &'a DispositionWrite,
    status: Option<&'a str>,
    notes: Option<&'a str>,
    data: serde_json::Value,
}

async fn insert_activity(
    conn: &mut SqliteConnection,
    a: NewActivity<'_>,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO activities (id, kind, lead_id, opportunity_id, user_id, connector_id, call_session_id, \
         status, notes, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.id.to_string())
    .bind(a.kind.as_str())
    .bind(a.lead_id.to_string())
    .bind(a.d.opportunity_id.map(|o| o.to_string()))
    .bind(a.d.user_id.to_string())
    .bind(a.d.connector_id.to_string())
    .bind(a.d.call_session_id.as_str())
    .bind(a.status)
    .bind(a.notes)
    .bind(to_json(&a.data))
    .bind(now.millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating the directory and file) and migrates the database at `url`
    /// (`sqlite://<path>`, relative to the working directory, or `sqlite:///abs/path`).
    ///
    /// # Errors
    /// The directory or database cannot be created, opened or migrated.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .context("store.url must start with sqlite://")?;
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .with_context(|| format!("opening SQLite database {path}"))?;
        let migrator = Migrator::with_migrations(vec![
            Migration::new(
                1,
                "init".into(),
                MigrationType::Simple,
                include_str!("../../migrations/sqlite/0001_init.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                2,
                "sso".into(),
                MigrationType::Simple,
                include_str!("../../migrations/sqlite/0002_sso.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                3,
                "click_to_call".into(),
                MigrationType::Simple,
                include_str!("../../migrations/sqlite/0003_click_to_call.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                4,
                "outbox".into(),
                MigrationType::Simple,
                include_str!("../../migrations/sqlite/0004_outbox.sql").into_sql_str(),
                false,
            ),
        ]);
        migrator
            .run(&pool)
            .await
            .context("migrating the SQLite database")?;
        Ok(Self {
            pool,
            write_lock: Arc::new(Mutex::new(())),
            connectors: super::cache::ConnectorCache::default(),
        })
    }

    async fn immediate(&self) -> StoreResult<WriteTx> {
        let lock = self.write_lock.clone().lock_owned().await;
        Ok(WriteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _lock: lock,
        })
    }

    /// Runs a list query newest first after the page's cursor and builds the page.
    async fn fetch_page<T: super::Paged>(
        &self,
        mut qb: QueryBuilder<Sqlite>,
        page: &PageRequest,
        (at_col, id_col): (&str, &str),
        map: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Page<T>> {
        page_clause(&mut qb, page, at_col, id_col);
        let items = qb
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(map)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_fetched(items, page.limit))
    }

    async fn write_guard(&self) -> OwnedMutexGuard<()> {
        self.write_lock.clone().lock_owned().await
    }

    async fn fetch_connector(
        &self,
        sql: &'static str,
        key: String,
    ) -> StoreResult<Option<Connector>> {
        sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| connector_from_row(&r))
            .transpose()
    }

    async fn team_of(&self, conn: &mut SqliteConnection, id: TeamId) -> StoreResult<Option<Team>> {
        let Some(r) = sqlx::query(
            "SELECT t.id, t.name, t.created_at, \
             (SELECT json_group_array(user_id) FROM (SELECT user_id FROM team_members WHERE team_id = t.id ORDER BY user_id)) AS user_ids, \
             (SELECT json_group_array(connector_id) FROM (SELECT connector_id FROM team_connectors WHERE team_id = t.id ORDER BY connector_id)) AS connector_ids \
             FROM teams t WHERE t.id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let users: Vec<String> = json_col(&r, "user_ids")?;
        let connectors: Vec<String> = json_col(&r, "connector_ids")?;
        Ok(Some(Team {
            id,
            name: r.try_get("name")?,
            user_ids: users
                .iter()
                .map(|u| parse_id(u, "team_members.user_id", UserId::parse))
                .collect::<StoreResult<_>>()?,
            connector_ids: connectors
                .iter()
                .map(|c| parse_id(c, "team_connectors.connector_id", ConnectorId::parse))
                .collect::<StoreResult<_>>()?,
            created_at: Timestamp::from_millis(r.try_get("created_at")?),
        }))
    }

    async fn delete_by_id(&self, table: &str, id: String) -> StoreResult<()> {
        let n = sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE id = ?")))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl super::Store for SqliteStore {
    async fn probe(&self) -> StoreResult<()> {
        let _w = self.write_guard().await;
        sqlx::query("INSERT INTO secrets (name, value) VALUES ('probe', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
            .bind(Timestamp::now().millis().to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn secret_insert_or_get(
        &self,
        name: &str,
        candidate: &str,
    ) -> StoreResult<(String, bool)> {
        let inserted = sqlx::query("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1;
        let value: String = sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok((value, inserted))
    }

    async fn create_connector(&self, c: NewConnector) -> StoreResult<Connector> {
        let now = Timestamp::now();
        let mut tx = self.immediate().await?;
        sqlx::query(
            "INSERT INTO connectors (id, name, kind, access_key, secret_key, settings, is_default, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, NOT EXISTS (SELECT 1 FROM connectors WHERE is_default = 1), ?, ?)",
        )
        .bind(c.id.to_string())
        .bind(&c.settings.name)
        .bind(c.kind.as_str())
        .bind(&c.access_key)
        .bind(&c.secret_key)
        .bind(to_json(&StoredSettings::from(&c.settings)))
        .bind(now.millis())
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_connector(c.id).await?.ok_or(StoreError::NotFound)
    }

    async fn list_connectors(&self, page: &PageRequest) -> StoreResult<Page<Connector>> {
        let qb = QueryBuilder::<Sqlite>::new("SELECT * FROM connectors WHERE 1 = 1");
        self.fetch_page(qb, page, ("created_at", "id"), connector_from_row)
            .await
    }

    async fn get_connector(&self, id: ConnectorId) -> StoreResult<Option<Connector>> {
        self.fetch_connector("SELECT * FROM connectors WHERE id = ?", id.to_string())
            .await
    }

    async fn connector_by_access_key(&self, key: &str) -> StoreResult<Option<Connector>> {
        if let Some(c) = self.connectors.get(key) {
            return Ok(Some(c));
        }
        let generation = self.connectors.generation();
        let found = self
            .fetch_connector(
                "SELECT * FROM connectors WHERE access_key = ?",
                key.to_owned(),
            )
            .await?;
        if let Some(c) = &found {
            self.connectors.fill(generation, c);
        }
        Ok(found)
    }

    async fn update_connector(
        &self,
        id: ConnectorId,
        s: &ConnectorSettings,
    ) -> StoreResult<Connector> {
        let n = sqlx::query(
            "UPDATE connectors SET name = ?, settings = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&s.name)
        .bind(to_json(&StoredSettings::from(s)))
        .bind(Timestamp::now().millis())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.connectors.invalidate();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_connector(id).await?.ok_or(StoreError::NotFound)
    }

    async fn delete_connector(&self, id: ConnectorId) -> StoreResult<()> {
        let mut tx = self.immediate().await?;
        let was_default: Option<bool> =
            sqlx::query_scalar("DELETE FROM connectors WHERE id = ? RETURNING is_default")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        match was_default {
            None => return Err(StoreError::NotFound),
            Some(true) => {
                sqlx::query(
                    "UPDATE connectors SET is_default = 1 WHERE id = \
                     (SELECT id FROM connectors ORDER BY created_at, rowid LIMIT 1)",
                )
                .execute(&mut *tx)
                .await?;
            }
            Some(false) => {}
        }
        tx.commit().await?;
        self.connectors.invalidate();
        Ok(())
    }

    async fn clone_connector(
        &self,
        from: ConnectorId,
        new: NewConnector,
    ) -> StoreResult<Connector> {
        let now = Timestamp::now();
        let mut tx = self.immediate().await?;
        let copied = sqlx::query(
            "INSERT INTO connectors (id, name, kind, access_key, secret_key, settings, is_default, created_at, updated_at) \
             SELECT ?, ?, kind, ?, ?, settings, 0, ?, ? FROM connectors WHERE id = ?",
        )
        .bind(new.id.to_string())
        .bind(&new.settings.name)
        .bind(&new.access_key)
        .bind(&new.secret_key)
        .bind(now.millis())
        .bind(now.millis())
        .bind(from.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if copied == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("INSERT INTO team_connectors (team_id, connector_id) SELECT team_id, ? FROM team_connectors WHERE connector_id = ?")
            .bind(new.id.to_string())
            .bind(from.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.get_connector(new.id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn set_default_connector(&self, id: ConnectorId) -> StoreResult<Connector> {
        let mut tx = self.immediate().await?;
        require_connector(&mut tx, id).await?;
        // clear first: the unique index allows one default at any time
        sqlx::query("UPDATE connectors SET is_default = 0 WHERE is_default = 1 AND id <> ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE connectors SET is_default = 1 WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.connectors.invalidate();
        self.get_connector(id).await?.ok_or(StoreError::NotFound)
    }

    async fn rotate_connector_keys(
        &self,
        id: ConnectorId,
        access_key: &str,
        secret_key: &str,
    ) -> StoreResult<Connector> {
        let n = sqlx::query(
            "UPDATE connectors SET access_key = ?, secret_key = ?, updated_at = ? WHERE id = ?",
        )
        .bind(access_key)
        .bind(secret_key)
        .bind(Timestamp::now().millis())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.connectors.invalidate();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_connector(id).await?.ok_or(StoreError::NotFound)
    }

    async fn set_connector_teams(&self, id: ConnectorId, teams: &[TeamId]) -> StoreResult<()> {
        let mut tx = self.immediate().await?;
        require_connector(&mut tx, id).await?;
        sqlx::query("DELETE FROM team_connectors WHERE connector_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        for (i, t) in teams.iter().enumerate() {
            let res = sqlx::query(
                "INSERT OR IGNORE INTO team_connectors (team_id, connector_id) VALUES (?, ?)",
            )
            .bind(t.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await;
            if let Err(e) = res {
                return Err(if fk_violation(&e) {
                    StoreError::UnknownReference {
                        field: format!("team_ids[{i}]"),
                    }
                } else {
                    e.into()
                });
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_virtual_number(&self, vn: VirtualNumber) -> StoreResult<VirtualNumber> {
        let res = sqlx::query("INSERT INTO virtual_numbers (id, connector_id, number, tag, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(vn.id.to_string())
            .bind(vn.connector_id.to_string())
            .bind(vn.number.as_str())
            .bind(vn.tag.as_deref())
            .bind(vn.created_at.millis())
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok(vn),
            Err(e) if unique_violation(&e).is_some() => Err(StoreError::Conflict {
                code: "number_in_use",
                field: "number".into(),
            }),
            Err(e) if fk_violation(&e) => Err(StoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_virtual_numbers(
        &self,
        connector: ConnectorId,
    ) -> StoreResult<Vec<VirtualNumber>> {
        sqlx::query(
            "SELECT * FROM virtual_numbers WHERE connector_id = ? ORDER BY created_at, rowid",
        )
        .bind(connector.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(vn_from_row)
        .collect()
    }

    async fn retag_virtual_number(
        &self,
        connector: ConnectorId,
        id: VirtualNumberId,
        tag: Option<String>,
    ) -> StoreResult<VirtualNumber> {
        sqlx::query(
            "UPDATE virtual_numbers SET tag = ? WHERE id = ? AND connector_id = ? RETURNING *",
        )
        .bind(tag)
        .bind(id.to_string())
        .bind(connector.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| vn_from_row(&r))
        .transpose()?
        .ok_or(StoreError::NotFound)
    }

    async fn delete_virtual_number(
        &self,
        connector: ConnectorId,
        id: VirtualNumberId,
    ) -> StoreResult<()> {
        let n = sqlx::query("DELETE FROM virtual_numbers WHERE id = ? AND connector_id = ?")
            .bind(id.to_string())
            .bind(connector.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn virtual_number(&self, number: &PhoneNumber) -> StoreResult<Option<VirtualNumber>> {
        sqlx::query("SELECT * FROM virtual_numbers WHERE number = ?")
            .bind(number.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| vn_from_row(&r))
            .transpose()
    }

    async fn create_team(&self, id: TeamId, name: &str) -> StoreResult<Team> {
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)")
            .bind(id.to_string())
            .bind(name)
            .bind(Timestamp::now().millis())
            .execute(&self.pool)
            .await?;
        self.get_team(id).await?.ok_or(StoreError::NotFound)
    }

    async fn list_teams(&self, page: &PageRequest) -> StoreResult<Page<Team>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT id FROM teams WHERE 1 = 1");
        page_clause(&mut qb, page, "created_at", "id");
        let ids: Vec<String> = qb
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        let mut conn = self.pool.acquire().await?;
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(t) = self
                .team_of(&mut conn, parse_id(&id, "teams.id", TeamId::parse)?)
                .await?
            {
                items.push(t);
            }
        }
        Ok(Page::from_fetched(items, page.limit))
    }

    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>> {
        let mut conn = self.pool.acquire().await?;
        self.team_of(&mut conn, id).await
    }

    async fn rename_team(&self, id: TeamId, name: &str) -> StoreResult<Team> {
        let n = sqlx::query("UPDATE teams SET name = ? WHERE id = ?")
            .bind(name)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_team(id).await?.ok_or(StoreError::NotFound)
    }

    async fn delete_team(&self, id: TeamId) -> StoreResult<()> {
        self.delete_by_id("teams", id.to_string()).await
    }

    async fn create_user(&self, id: UserId, u: &UserWrite) -> StoreResult<User> {
        let mut tx = self.immediate().await?;
        write_user(&mut tx, id, u, Timestamp::now(), true).await?;
        let user = fetch_user(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(user)
    }

    async fn list_users(&self, page: &PageRequest) -> StoreResult<Page<User>> {
        let qb = QueryBuilder::<Sqlite>::new(format!("{USER_SELECT} WHERE 1 = 1"));
        self.fetch_page(qb, page, ("u.created_at", "u.id"), user_from_row)
            .await
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let mut conn = self.pool.acquire().await?;
        fetch_user(&mut conn, id).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        sqlx::query(AssertSqlSafe(format!(
            "{USER_SELECT} WHERE u.email_lower = ?"
        )))
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
    }

    async fn user_by_number(&self, number: &str) -> StoreResult<Option<User>> {
        sqlx::query(AssertSqlSafe(format!(
            "{USER_SELECT} WHERE u.id = (SELECT user_id FROM user_numbers WHERE number = ?)"
        )))
        .bind(number)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
    }

    async fn update_user(&self, id: UserId, u: &UserWrite) -> StoreResult<User> {
        let mut tx = self.immediate().await?;
        write_user(&mut tx, id, u, Timestamp::now(), false).await?;
        let user = fetch_user(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(user)
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<()> {
        self.delete_by_id("users", id.to_string()).await
    }

    async fn user_seeing(
        &self,
        who: UserKey<'_>,
        connector: ConnectorId,
    ) -> StoreResult<Option<(User, bool)>> {
        let (filter, key) = match who {
            UserKey::Id(id) => ("u.id = ?1", id.to_string()),
            UserKey::Number(n) => (
                "u.id = (SELECT user_id FROM user_numbers WHERE number = ?1)",
                n.to_owned(),
            ),
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT x.*, {} AS sees FROM ({USER_SELECT} WHERE {filter}) x",
            sees_connector("x.id")
        )))
        .bind(key)
        .bind(connector.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get("sees")?)))
            .transpose()
    }

    async fn user_sees_connector(&self, user: UserId, connector: ConnectorId) -> StoreResult<bool> {
        Ok(
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT {}", sees_connector("?1"))))
                .bind(user.to_string())
                .bind(connector.to_string())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn visible_connectors(&self, user: UserId) -> StoreResult<Vec<Connector>> {
        sqlx::query(
            "SELECT c.* FROM connectors c WHERE c.id IN \
               (SELECT tc.connector_id FROM team_members tm JOIN team_connectors tc ON tc.team_id = tm.team_id WHERE tm.user_id = ?1) \
             OR (c.is_default = 1 AND NOT EXISTS \
               (SELECT 1 FROM team_members tm JOIN team_connectors tc ON tc.team_id = tm.team_id WHERE tm.user_id = ?1)) \
             ORDER BY c.created_at, c.rowid",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(connector_from_row)
        .collect()
    }

    async fn user_names(&self, ids: &[UserId]) -> StoreResult<BTreeMap<UserId, String>> {
        let mut out = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, name FROM users WHERE id IN (");
        let mut sep = qb.separated(", ");
        for id in ids {
            sep.push_bind(id.to_string());
        }
        qb.push(")");
        for r in qb.build().fetch_all(&self.pool).await? {
            let id: String = r.try_get("id")?;
            out.insert(
                parse_id(&id, "users.id", UserId::parse)?,
                r.try_get("name")?,
            );
        }
        Ok(out)
    }

    async fn create_lead(&self, id: LeadId, l: &LeadWrite) -> StoreResult<Lead> {
        let mut tx = self.immediate().await?;
        write_lead(&mut tx, id, l, Timestamp::now(), true).await?;
        let lead = fetch_lead(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(lead)
    }

    async fn list_leads(&self, filter: &LeadFilter, page: &PageRequest) -> StoreResult<Page<Lead>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT l.* FROM leads l WHERE 1 = 1");
        match filter {
            LeadFilter::All => {}
            LeadFilter::Number(n) => {
                qb.push(" AND l.id IN (SELECT lead_id FROM lead_numbers WHERE number = ")
                    .push_bind(n.as_str().to_owned())
                    .push(")");
            }
            LeadFilter::Prefix(p) => {
                let escaped = p
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                let pattern = format!("{escaped}%");
                qb.push(" AND (l.first_name LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR l.last_name LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR l.email LIKE ")
                    .push_bind(pattern)
                    .push(" ESCAPE '\\')");
            }
        }
        self.fetch_page(qb, page, ("l.created_at", "l.id"), lead_from_row)
            .await
    }

    async fn get_lead(&self, id: LeadId) -> StoreResult<Option<Lead>> {
        let mut conn = self.pool.acquire().await?;
        fetch_lead(&mut conn, id).await
    }

    async fn get_leads(&self, ids: &[LeadId]) -> StoreResult<Vec<Lead>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM leads WHERE id IN (");
        let mut sep = qb.separated(", ");
        for id in ids {
            sep.push_bind(id.to_string());
        }
        qb.push(")");
        let found: BTreeMap<LeadId, Lead> = qb
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| lead_from_row(r).map(|l| (l.id, l)))
            .collect::<StoreResult<_>>()?;
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    async fn update_lead(&self, id: LeadId, l: &LeadWrite) -> StoreResult<Lead> {
        let mut tx = self.immediate().await?;
        write_lead(&mut tx, id, l, Timestamp::now(), false).await?;
        let lead = fetch_lead(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(lead)
    }

    async fn delete_lead(&self, id: LeadId) -> StoreResult<()> {
        self.delete_by_id("leads", id.to_string()).await
    }

    async fn import_leads(&self, rows: &[LeadPatch]) -> StoreResult<Vec<ImportOutcome>> {
        let mut tx = self.immediate().await?;
        let now = Timestamp::now();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            // A refused row fails in write_lead's first statement, which SQLite undoes
            // alone: the transaction and the batch's other rows go on.
            let (outcome, written) = match import_match(&mut tx, row).await? {
                Some(current) => {
                    let before = LeadWrite::from(&current);
                    let after = row.apply(before.clone());
                    if after == before {
                        out.push(ImportOutcome::Updated(current.id));
                        continue;
                    }
                    let r = write_lead(&mut tx, current.id, &after, now, false).await;
                    (ImportOutcome::Updated(current.id), r)
                }
                None => {
                    let id = LeadId::new();
                    let r = write_lead(&mut tx, id, &row.values, now, true).await;
                    (ImportOutcome::Created(id), r)
                }
            };
            out.push(match written {
                Ok(()) => outcome,
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(refused) => ImportOutcome::Refused(refused),
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn leads_by_number(&self, number: &PhoneNumber, limit: u32) -> StoreResult<Vec<Lead>> {
        let mut conn = self.pool.acquire().await?;
        select_by_number(&mut conn, number, limit).await
    }

    async fn latest_open_opportunity(&self, lead: LeadId) -> StoreResult<Option<Opportunity>> {
        sqlx::query(
            "SELECT * FROM opportunities WHERE lead_id = ? AND status = 'open' ORDER BY updated_at DESC, id LIMIT 1",
        )
        .bind(lead.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| opportunity_from_row(&r))
        .transpose()
    }

    async fn resolve_lead_by_number(
        &self,
        number: &PhoneNumber,
        limit: u32,
        new: &LeadWrite,
    ) -> StoreResult<(Vec<Lead>, bool)> {
        // Fast path without the write lock: most callers are known.
        let mut conn = self.pool.acquire().await?;
        let found = select_by_number(&mut conn, number, limit).await?;
        drop(conn);
        if !found.is_empty() {
            return Ok((found, false));
        }
        let mut tx = self.immediate().await?;
        let found = select_by_number(&mut tx, number, limit).await?;
        if !found.is_empty() {
            return Ok((found, false));
        }
        let id = LeadId::new();
        write_lead(&mut tx, id, new, Timestamp::now(), true).await?;
        let lead = fetch_lead(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok((vec![lead], true))
    }

    async fn create_opportunity(
        &self,
        id: OpportunityId,
        o: &OpportunityWrite,
    ) -> StoreResult<Opportunity> {
        let now = Timestamp::now();
        let res = sqlx::query(
            "INSERT INTO opportunities (id, lead_id, name, owner_id, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(o.lead_id.to_string())
        .bind(&o.name)
        .bind(o.owner_id.map(|u| u.to_string()))
        .bind(o.status.as_str())
        .bind(now.millis())
        .bind(now.millis())
        .execute(&self.pool)
        .await;
        match res {
            Err(e) if fk_violation(&e) => {
                return Err(StoreError::UnknownReference {
                    field: "lead_id".into(),
                });
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        self.get_opportunity(id).await?.ok_or(StoreError::NotFound)
    }

    async fn list_opportunities(
        &self,
        lead: Option<LeadId>,
        page: &PageRequest,
    ) -> StoreResult<Page<Opportunity>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM opportunities WHERE 1 = 1");
        if let Some(l) = lead {
            qb.push(" AND lead_id = ").push_bind(l.to_string());
        }
        self.fetch_page(qb, page, ("created_at", "id"), opportunity_from_row)
            .await
    }

    async fn get_opportunity(&self, id: OpportunityId) -> StoreResult<Option<Opportunity>> {
        sqlx::query("SELECT * FROM opportunities WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| opportunity_from_row(&r))
            .transpose()
    }

    async fn update_opportunity(
        &self,
        id: OpportunityId,
        o: &OpportunityWrite,
    ) -> StoreResult<Opportunity> {
        let res = sqlx::query("UPDATE opportunities SET lead_id = ?, name = ?, owner_id = ?, status = ?, updated_at = ? WHERE id = ?")
            .bind(o.lead_id.to_string())
            .bind(&o.name)
            .bind(o.owner_id.map(|u| u.to_string()))
            .bind(o.status.as_str())
            .bind(Timestamp::now().millis())
            .bind(id.to_string())
            .execute(&self.pool)
            .await;
        match res {
            Err(e) if fk_violation(&e) => {
                return Err(StoreError::UnknownReference {
                    field: "lead_id".into(),
                });
            }
            Err(e) => return Err(e.into()),
            Ok(r) if r.rows_affected() == 0 => return Err(StoreError::NotFound),
            Ok(_) => {}
        }
        self.get_opportunity(id).await?.ok_or(StoreError::NotFound)
    }

    async fn delete_opportunity(&self, id: OpportunityId) -> StoreResult<()> {
        self.delete_by_id("opportunities", id.to_string()).await
    }

    async fn list_activities(
        &self,
        f: &ActivityFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Activity>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM activities WHERE 1 = 1");
        if let Some(l) = f.lead_id {
            qb.push(" AND lead_id = ").push_bind(l.to_string());
        }
        if let Some(o) = f.opportunity_id {
            qb.push(" AND opportunity_id = ").push_bind(o.to_string());
        }
        if let Some(u) = f.user_id {
            qb.push(" AND user_id = ").push_bind(u.to_string());
        }
        if let Some(s) = f.since {
            qb.push(" AND created_at >= ").push_bind(s.millis());
        }
        self.fetch_page(qb, page, ("created_at", "id"), activity_from_row)
            .await
    }

    async fn recent_calls(&self, lead: LeadId, limit: u32) -> StoreResult<Vec<Activity>> {
        sqlx::query(
            "SELECT * FROM activities WHERE lead_id = ? AND kind IN ('inbound_call', 'outbound_call') \
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(lead.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(activity_from_row)
        .collect()
    }

    async fn upsert_popup(
        &self,
        new_id: PopupId,
        c: &PopupCall,
        online: bool,
    ) -> StoreResult<(PopupRecord, PopupOutcome)> {
        let now = Timestamp::now();
        let mut tx = self.immediate().await?;
        // the event's seq first, so the popup row is written once, with it
        let seq: i64 =
            sqlx::query_scalar("UPDATE users SET seq = seq + 1 WHERE id = ? RETURNING seq")
                .bind(c.user_id.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO popups (id, connector_id, call_session_id, user_id, lead_id, candidate_ids, new_lead, \
               opportunity_id, direction, lead_number, agent_number, virtual_number, tag, state, seq, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (connector_id, call_session_id, user_id) DO UPDATE SET \
               lead_id = excluded.lead_id, candidate_ids = excluded.candidate_ids, \
               new_lead = (popups.new_lead OR excluded.new_lead), opportunity_id = excluded.opportunity_id, \
               direction = excluded.direction, lead_number = excluded.lead_number, \
               agent_number = excluded.agent_number, virtual_number = excluded.virtual_number, \
               tag = excluded.tag, seq = excluded.seq, updated_at = excluded.updated_at, \
               state = CASE WHEN popups.state = 'queued' THEN excluded.state ELSE popups.state END \
             WHERE popups.state IN {OPEN_STATES} \
             RETURNING *"
        )))
        .bind(new_id.to_string())
        .bind(c.connector_id.to_string())
        .bind(&c.call_session_id)
        .bind(c.user_id.to_string())
        .bind(c.lead_id.to_string())
        .bind(to_json(&c.candidate_ids))
        .bind(c.new_lead)
        .bind(c.opportunity_id.map(|o| o.to_string()))
        .bind(c.direction.as_str())
        .bind(c.lead_number.as_deref())
        .bind(c.agent_number.as_deref())
        .bind(c.virtual_number.as_deref())
        .bind(c.tag.as_deref())
        .bind(if online { "delivered" } else { "queued" })
        .bind(seq)
        .bind(now.millis())
        .bind(now.millis())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // disposed or expired: nothing changes, not even the user's seq
            tx.rollback().await?;
            let row = sqlx::query(
                "SELECT * FROM popups WHERE connector_id = ? AND call_session_id = ? AND user_id = ?",
            )
            .bind(c.connector_id.to_string())
            .bind(&c.call_session_id)
            .bind(c.user_id.to_string())
            .fetch_one(&self.pool)
            .await?;
            return Ok((popup_from_row(&row)?, PopupOutcome::Closed));
        };
        let record = popup_from_row(&row)?;
        let (outcome, kind) = if record.id == new_id {
            (PopupOutcome::Created, "popup")
        } else {
            (PopupOutcome::Updated, "popup_update")
        };
        sqlx::query("INSERT INTO events (user_id, seq, kind, popup_id, payload, created_at) VALUES (?, ?, ?, ?, NULL, ?)")
            .bind(c.user_id.to_string())
            .bind(seq)
            .bind(kind)
            .bind(record.id.to_string())
            .bind(now.millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((record, outcome))
    }

    async fn get_popup(&self, id: PopupId) -> StoreResult<Option<PopupRecord>> {
        sqlx::query("SELECT * FROM popups WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| popup_from_row(&r))
            .transpose()
    }

    async fn open_popups(&self, user: UserId) -> StoreResult<Vec<PopupRecord>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT * FROM popups WHERE user_id = ? AND state IN {OPEN_STATES} ORDER BY created_at, id"
        )))
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(popup_from_row)
        .collect()
    }

    async fn mark_delivered(&self, ids: &[PopupId]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _w = self.write_guard().await;
        let mut qb = QueryBuilder::<Sqlite>::new(
            "UPDATE popups SET state = 'delivered' WHERE state = 'queued' AND id IN (",
        );
        let mut sep = qb.separated(", ");
        for id in ids {
            sep.push_bind(id.to_string());
        }
        qb.push(")");
        qb.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn ack_popup(&self, user: UserId, id: PopupId) -> StoreResult<bool> {
        let _w = self.write_guard().await;
        Ok(sqlx::query("UPDATE popups SET state = 'acked' WHERE id = ? AND user_id = ? AND state IN ('queued', 'delivered')")
            .bind(id.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    async fn current_seq(&self, user: UserId) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT seq FROM users WHERE id = ?")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn events_since(&self, user: UserId, after: i64) -> StoreResult<Vec<StoredEvent>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT e.seq, e.kind, e.popup_id, e.payload FROM events e LEFT JOIN popups p ON p.id = e.popup_id \
             WHERE e.user_id = ? AND e.seq > ? AND (e.payload IS NOT NULL OR p.state IN {OPEN_STATES}) \
             ORDER BY e.seq"
        )))
        .bind(user.to_string())
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let payload: Option<String> = r.try_get("payload")?;
                Ok(StoredEvent {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    popup_id: opt_id(r.try_get("popup_id")?, "events.popup_id", PopupId::parse)?,
                    payload: payload
                        .map(|p| serde_json::from_str(&p).map_err(|_| corrupt("events.payload")))
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn dispose(&self, d: &DispositionWrite) -> Result<Vec<i64>, DisposeError> {
        let now = Timestamp::now();
        let mut tx = self.immediate().await?;
        let changed = sqlx::query(AssertSqlSafe(format!(
            "UPDATE popups SET state = 'disposed', lead_id = ?, updated_at = ? \
             WHERE id = ? AND user_id = ? AND state IN {OPEN_STATES}"
        )))
        .bind(d.disposition.lead_id.to_string())
        .bind(now.millis())
        .bind(d.popup_id.to_string())
        .bind(d.user_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?
        .rows_affected();
        if changed == 0 {
            let owner: Option<String> =
                sqlx::query_scalar("SELECT user_id FROM popups WHERE id = ?")
                    .bind(d.popup_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
            return Err(if owner == Some(d.user_id.to_string()) {
                DisposeError::AlreadyDisposed
            } else {
                DisposeError::NotFound
            });
        }
        let lead = fetch_lead(&mut tx, d.disposition.lead_id)
            .await?
            .ok_or(DisposeError::NotFound)?;
        let mut write = LeadWrite::from(&lead);
        apply_lead_writes(&mut write, &d.disposition.writes);
        write_lead(&mut tx, lead.id, &write, now, false).await?;

        let disp = &d.disposition;
        insert_activity(
            &mut tx,
            NewActivity {
                id: d.activity_id,
                kind: ActivityKind::Disposition,
                lead_id: lead.id,
                d,
                status: Some(&disp.value),
                notes: disp.notes.as_deref(),
                data: serde_json::json!({ "value": disp.value, "popup_id": d.popup_id }),
            },
            now,
        )
        .await?;
        if let Some(t) = &disp.task {
            insert_activity(
                &mut tx,
                NewActivity {
                    id: ActivityId::new(),
                    kind: ActivityKind::Task,
                    lead_id: lead.id,
                    d,
                    status: Some("open"),
                    notes: None,
                    data: serde_json::json!({ "subject": t.subject, "due_at": t.due_at }),
                },
                now,
            )
            .await?;
        }
        if let Some(a) = &disp.activity {
            insert_activity(
                &mut tx,
                NewActivity {
                    id: ActivityId::new(),
                    kind: ActivityKind::Custom,
                    lead_id: lead.id,
                    d,
                    status: None,
                    notes: a.note.as_deref(),
                    data: serde_json::json!({ "type": a.kind, "note": a.note }),
                },
                now,
            )
            .await?;
        }
        if let Some(o) = &d.outbox {
            sqlx::query(
                "INSERT INTO outbox (id, connector_id, kind, status, next_attempt_at, age_from, created_at, request) \
                 VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
            )
            .bind(o.id.to_string())
            .bind(o.connector_id.to_string())
            .bind(o.kind)
            .bind(now.millis())
            .bind(now.millis())
            .bind(now.millis())
            .bind(to_json(&o.request))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        }
        let mut seqs = Vec::with_capacity(d.events.len());
        for e in &d.events {
            seqs.push(
                append_event(
                    &mut tx,
                    d.user_id,
                    e.kind,
                    Some(d.popup_id),
                    Some(&e.payload),
                    now,
                )
                .await?,
            );
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(seqs)
    }

    async fn expire_popups(
        &self,
        queued_before: Timestamp,
        open_before: Timestamp,
        payload: &(dyn Fn(PopupId) -> serde_json::Value + Send + Sync),
    ) -> StoreResult<Vec<ExpiredPopup>> {
        let now = Timestamp::now();
        let mut tx = self.immediate().await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE popups SET state = 'expired', updated_at = ? \
             WHERE (state = 'queued' AND created_at < ?) OR (state IN {OPEN_STATES} AND created_at < ?) \
             RETURNING id, user_id"
        )))
        .bind(now.millis())
        .bind(queued_before.millis())
        .bind(open_before.millis())
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let popup_id = parse_id(&r.try_get::<String, _>("id")?, "popups.id", PopupId::parse)?;
            let user_id = parse_id(
                &r.try_get::<String, _>("user_id")?,
                "popups.user_id",
                UserId::parse,
            )?;
            let seq = append_event(
                &mut tx,
                user_id,
                "popup_closed",
                Some(popup_id),
                Some(&payload(popup_id)),
                now,
            )
            .await?;
            out.push(ExpiredPopup {
                user_id,
                popup_id,
                seq,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn popups_for_session(
        &self,
        connector: ConnectorId,
        call_session_id: &str,
    ) -> StoreResult<Vec<PopupRecord>> {
        sqlx::query("SELECT * FROM popups WHERE connector_id = ? AND call_session_id = ? ORDER BY updated_at DESC, id")
            .bind(connector.to_string())
            .bind(call_session_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(popup_from_row)
            .collect()
    }

    async fn log_call(
        &self,
        w: &CallActivityWrite,
        recipients: &Recipients,
        payload: &(
             dyn for<'a> Fn(Option<PopupId>, &'a Activity) -> serde_json::Value + Send + Sync
         ),
    ) -> StoreResult<(Activity, bool, Vec<UserEvent>)> {
        let now = Timestamp::now();
        let mut tx = self.immediate().await?;
        let id: String = sqlx::query_scalar(
            "INSERT INTO activities (id, kind, lead_id, opportunity_id, user_id, connector_id, call_session_id, \
               status, started_at, ended_at, duration_secs, recording_url, notes, data, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (connector_id, call_session_id) \
               WHERE kind IN ('inbound_call', 'outbound_call') AND call_session_id IS NOT NULL \
             DO UPDATE SET \
               opportunity_id = COALESCE(excluded.opportunity_id, activities.opportunity_id), \
               user_id = COALESCE(excluded.user_id, activities.user_id), \
               status = excluded.status, started_at = excluded.started_at, ended_at = excluded.ended_at, \
               duration_secs = excluded.duration_secs, \
               recording_url = COALESCE(excluded.recording_url, activities.recording_url), \
               notes = COALESCE(excluded.notes, activities.notes), \
               data = json_patch(activities.data, excluded.data) \
             RETURNING id",
        )
        .bind(w.new_id.to_string())
        .bind(w.kind.as_str())
        .bind(w.lead_id.to_string())
        .bind(w.opportunity_id.map(|o| o.to_string()))
        .bind(w.user_id.map(|u| u.to_string()))
        .bind(w.connector_id.to_string())
        .bind(w.call_session_id.as_deref())
        .bind(&w.status)
        .bind(w.started_at.millis())
        .bind(w.ended_at.millis())
        .bind(w.duration_secs)
        .bind(w.recording_url.as_deref())
        .bind(w.notes.as_deref())
        .bind(to_json(&w.data))
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await?;
        let duplicate = id != w.new_id.to_string();
        let row = sqlx::query("SELECT * FROM activities WHERE id = ?")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let activity = activity_from_row(&row)?;
        let mut events = Vec::with_capacity(recipients.len());
        for (user, popup) in recipients {
            let body = payload(*popup, &activity);
            let seq = append_event(&mut tx, *user, "call_logged", *popup, Some(&body), now).await?;
            events.push(UserEvent {
                user_id: *user,
                seq,
                payload: body,
            });
        }
        tx.commit().await?;
        Ok((activity, duplicate, events))
    }

    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM events WHERE created_at < ? AND NOT EXISTS \
             (SELECT 1 FROM popups p WHERE p.id = events.popup_id AND p.state IN {OPEN_STATES})"
        )))
        .bind(before.millis())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn insert_telephony_logs(&self, rows: &[TelephonyLogRow]) -> StoreResult<()> {
        let mut tx = self.immediate().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO telephony_logs (id, at, connector_id, endpoint, http_status, outcome, error_code, \
                 error_message, call_session_id, latency_us, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(r.id.to_string())
            .bind(r.at.millis())
            .bind(r.connector_id.map(|c| c.to_string()))
            .bind(&r.endpoint)
            .bind(i64::from(r.http_status))
            .bind(&r.outcome)
            .bind(r.error_code.as_deref())
            .bind(r.error_message.as_deref())
            .bind(r.call_session_id.as_deref())
            .bind(r.latency_us)
            .bind(to_json(&r.request))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_click_to_call(
        &self,
        c: &ClickToCallRecord,
        window_secs: i64,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.immediate().await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(created_at) FROM click_to_calls WHERE user_id = ? AND lead_id = ? AND created_at > ?",
        )
        .bind(c.user_id.to_string())
        .bind(c.lead_id.to_string())
        .bind(c.at.plus_secs(-window_secs).millis())
        .fetch_one(&mut *tx)
        .await?;
        if let Some(last) = last {
            let wait_ms = last + window_secs * 1000 - c.at.millis();
            return Ok(Some((wait_ms.max(1) + 999) / 1000));
        }
        sqlx::query(
            "INSERT INTO click_to_calls (id, user_id, lead_id, number, opportunity_id, connector_id, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(ActivityId::new().to_string())
        .bind(c.user_id.to_string())
        .bind(c.lead_id.to_string())
        .bind(c.number.as_str())
        .bind(c.opportunity_id.map(|o| o.to_string()))
        .bind(c.connector_id.to_string())
        .bind(c.at.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn recent_click_to_call(
        &self,
        user: UserId,
        number: &PhoneNumber,
        since: Timestamp,
    ) -> StoreResult<Option<ClickToCallRecord>> {
        let Some(r) = sqlx::query(
            "SELECT * FROM click_to_calls WHERE user_id = ? AND number = ? AND created_at >= ? ORDER BY created_at DESC LIMIT 1",
        )
        .bind(user.to_string())
        .bind(number.as_str())
        .bind(since.millis())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(ClickToCallRecord {
            user_id: user,
            lead_id: parse_id(
                &r.try_get::<String, _>("lead_id")?,
                "click_to_calls.lead_id",
                LeadId::parse,
            )?,
            number: number.clone(),
            opportunity_id: opt_id(
                r.try_get("opportunity_id")?,
                "click_to_calls.opportunity_id",
                OpportunityId::parse,
            )?,
            connector_id: parse_id(
                &r.try_get::<String, _>("connector_id")?,
                "click_to_calls.connector_id",
                ConnectorId::parse,
            )?,
            at: Timestamp::from_millis(r.try_get("created_at")?),
        }))
    }

    async fn connector_team_ids(&self, connector: ConnectorId) -> StoreResult<Vec<TeamId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT team_id FROM team_connectors WHERE connector_id = ? ORDER BY team_id",
        )
        .bind(connector.to_string())
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|t| parse_id(t, "team_connectors.team_id", TeamId::parse))
            .collect()
    }

    async fn create_sso_key(
        &self,
        key_hash: &str,
        user: UserId,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let _w = self.write_guard().await;
        sqlx::query("DELETE FROM sso_keys WHERE expires_at < ?")
            .bind(Timestamp::now().plus_secs(-3600).millis())
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO sso_keys (key_hash, user_id, expires_at) VALUES (?, ?, ?)")
            .bind(key_hash)
            .bind(user.to_string())
            .bind(expires_at.millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn consume_sso_key(&self, key_hash: &str, now: Timestamp) -> StoreResult<Option<UserId>> {
        let _w = self.write_guard().await;
        let user: Option<String> = sqlx::query_scalar(
            "UPDATE sso_keys SET used_at = ? WHERE key_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING user_id",
        )
        .bind(now.millis())
        .bind(key_hash)
        .bind(now.millis())
        .fetch_optional(&self.pool)
        .await?;
        opt_id(user, "sso_keys.user_id", UserId::parse)
    }

    async fn list_outbox(
        &self,
        status: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<OutboxItem>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM outbox WHERE 1 = 1");
        if let Some(s) = status {
            qb.push(" AND status = ").push_bind(s.to_owned());
        }
        self.fetch_page(qb, page, ("created_at", "id"), outbox_from_row)
            .await
    }

    async fn outbox_due_connectors(&self, now: Timestamp) -> StoreResult<Vec<ConnectorId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT connector_id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? \
             AND (locked_until IS NULL OR locked_until < ?)",
        )
        .bind(now.millis())
        .bind(now.millis())
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|c| parse_id(c, "outbox.connector_id", ConnectorId::parse))
            .collect()
    }

    async fn claim_outbox(
        &self,
        connector: ConnectorId,
        limit: u32,
        now: Timestamp,
        lock_secs: i64,
    ) -> StoreResult<Vec<OutboxItem>> {
        let _w = self.write_guard().await;
        sqlx::query(
            "UPDATE outbox SET locked_until = ? + COALESCE(json_extract(request, '$.timeout_ms'), 5000), \
               attempts = attempts + 1 WHERE id IN \
               (SELECT id FROM outbox WHERE connector_id = ? AND status = 'pending' AND next_attempt_at <= ? \
                AND (locked_until IS NULL OR locked_until < ?) ORDER BY next_attempt_at, id LIMIT ?) \
             RETURNING *",
        )
        .bind(now.plus_secs(lock_secs).millis())
        .bind(connector.to_string())
        .bind(now.millis())
        .bind(now.millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(outbox_from_row)
        .collect()
    }

    async fn finish_outbox(
        &self,
        id: OutboxId,
        result: &OutboxResult,
        now: Timestamp,
    ) -> StoreResult<()> {
        let _w = self.write_guard().await;
        let q = match result {
            OutboxResult::Delivered => sqlx::query(
                "UPDATE outbox SET status = 'delivered', delivered_at = ?, locked_until = NULL, last_error = NULL WHERE id = ?",
            )
            .bind(now.millis()),
            OutboxResult::Retry(at, why) => sqlx::query(
                "UPDATE outbox SET next_attempt_at = ?, locked_until = NULL, last_error = ? WHERE id = ? AND status = 'pending'",
            )
            .bind(at.millis())
            .bind(why.clone()),
            OutboxResult::Failed(why) => {
                sqlx::query("UPDATE outbox SET status = 'failed', locked_until = NULL, last_error = ? WHERE id = ?").bind(why.clone())
            }
        };
        q.bind(id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    async fn expire_outbox(&self, before: Timestamp, now: Timestamp) -> StoreResult<u64> {
        let _w = self.write_guard().await;
        Ok(sqlx::query(
            "UPDATE outbox SET status = 'failed', last_error = COALESCE(last_error, '') || ' (maximum age reached)' \
             WHERE status = 'pending' AND age_from < ? AND (locked_until IS NULL OR locked_until < ?)",
        )
        .bind(before.millis())
        .bind(now.millis())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn retry_outbox(&self, id: OutboxId, now: Timestamp) -> StoreResult<OutboxItem> {
        let _w = self.write_guard().await;
        sqlx::query(
            "UPDATE outbox SET status = 'pending', next_attempt_at = ?, age_from = ?, locked_until = NULL \
             WHERE id = ? AND status <> 'delivered' RETURNING *",
        )
        .bind(now.millis())
        .bind(now.millis())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| outbox_from_row(&r))
        .transpose()?
        .ok_or(StoreError::NotFound)
    }

    async fn fail_connector_outbox(&self, connector: ConnectorId, why: &str) -> StoreResult<u64> {
        let _w = self.write_guard().await;
        Ok(sqlx::query("UPDATE outbox SET status = 'failed', last_error = ? WHERE connector_id = ? AND status = 'pending'")
            .bind(why)
            .bind(connector.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn prune_telephony_logs(&self, before: Timestamp, max_rows: u64) -> StoreResult<u64> {
        let mut tx = self.immediate().await?;
        let old = sqlx::query("DELETE FROM telephony_logs WHERE at < ?")
            .bind(before.millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let over = sqlx::query(
            "DELETE FROM telephony_logs WHERE id IN \
             (SELECT id FROM telephony_logs ORDER BY at DESC, id DESC LIMIT -1 OFFSET ?)",
        )
        .bind(i64::try_from(max_rows).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(old + over)
    }

    async fn list_telephony_logs(
        &self,
        f: &TelephonyLogFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<TelephonyLogRow>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM telephony_logs WHERE 1 = 1");
        if let Some(c) = f.connector_id {
            qb.push(" AND connector_id = ").push_bind(c.to_string());
        }
        for (col, v) in [
            ("endpoint", &f.endpoint),
            ("outcome", &f.outcome),
            ("call_session_id", &f.call_session_id),
        ] {
            if let Some(v) = v {
                qb.push(format!(" AND {col} = ")).push_bind(v.clone());
            }
        }
        if let Some(s) = f.since {
            qb.push(" AND at >= ").push_bind(s.millis());
        }
        if let Some(u) = f.until {
            qb.push(" AND at < ").push_bind(u.millis());
        }
        self.fetch_page(qb, page, ("at", "id"), log_from_row).await
    }
}
