//! What the SQLite and PostgreSQL stores share: reading a row into a record (both
//! schemas name and type their columns alike: TEXT ids and JSON, integer milliseconds),
//! the JSON form of connector settings, and the decisions that are not SQL (which
//! activities a disposition writes, what an import row does to its match). The SQL
//! itself stays in each store's file: the dialects and the locking differ.

use super::{
    ActivityFilter, ClickToCallRecord, DispositionWrite, LeadPatch, LeadWrite, OutboxItem,
    PageRequest, PopupCall, PopupRecord, PopupState, StoreError, StoreResult, StoredEvent,
    TelephonyLogFilter, TelephonyLogRow, VirtualNumber,
};
use crate::domain::call::Direction;
use crate::domain::connector::{
    CallRouteSettings, ClickToCallSettings, Connector, ConnectorKind, ConnectorSettings,
    PopupSettings,
};
use crate::domain::disposition::DispositionSettings;
use crate::domain::ids::{
    ActivityId, ConnectorId, IdError, LeadId, OpportunityId, OutboxId, PopupId, TeamId,
    TelephonyLogId, UserId, VirtualNumberId,
};
use crate::domain::lead::{
    Activity, ActivityKind, Lead, LeadField, Opportunity, OpportunityStatus,
};
use crate::domain::phone::{AgentNumber, Country, PhoneNumber, is_extension};
use crate::domain::time::Timestamp;
use crate::domain::user::{Role, Team, User};
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Database, Decode, Encode, Postgres, QueryBuilder, Row, SqlSafeStr, Sqlite, Type};

/// A column type every driver decodes (`String`, `i64`, `bool` and their `Option`s).
pub(super) trait Col:
    for<'r> Decode<'r, Sqlite>
    + Type<Sqlite>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + rusqlite::types::FromSql
{
}

impl<T> Col for T where
    T: for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + rusqlite::types::FromSql
{
}

/// A result row of either store, read by column name.
pub(super) trait DbRow {
    /// The column `name` as `T`.
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error>;
}

impl DbRow for SqliteRow {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

impl DbRow for rusqlite::Row<'_> {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.get(name).map_err(|e| sqlx::Error::ColumnDecode {
            index: name.to_owned(),
            source: Box::new(e),
        })
    }
}

impl DbRow for PgRow {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

/// A migrator over migrations embedded in the binary: (version, name, SQL).
pub(super) fn embedded_migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!("corrupt value in column {what}"))
}

pub(super) fn parse_id<T>(
    raw: &str,
    what: &str,
    f: impl Fn(&str) -> Result<T, IdError>,
) -> StoreResult<T> {
    f(raw).map_err(|_| corrupt(what))
}

pub(super) fn opt_id<T>(
    raw: Option<String>,
    what: &str,
    f: impl Fn(&str) -> Result<T, IdError>,
) -> StoreResult<Option<T>> {
    raw.map(|s| parse_id(&s, what, &f)).transpose()
}

/// The id in column `col` (`what` names it in a corruption error).
fn id_col<T>(
    r: &impl DbRow,
    col: &str,
    what: &str,
    f: impl Fn(&str) -> Result<T, IdError>,
) -> StoreResult<T> {
    parse_id(&r.col::<String>(col)?, what, f)
}

fn opt_id_col<T>(
    r: &impl DbRow,
    col: &str,
    what: &str,
    f: impl Fn(&str) -> Result<T, IdError>,
) -> StoreResult<Option<T>> {
    opt_id(r.col(col)?, what, f)
}

fn ms(r: &impl DbRow, col: &str) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_millis(r.col(col)?))
}

fn opt_ms(r: &impl DbRow, col: &str) -> StoreResult<Option<Timestamp>> {
    Ok(r.col::<Option<i64>>(col)?.map(Timestamp::from_millis))
}

pub(super) fn json_col<T: for<'de> Deserialize<'de>>(r: &impl DbRow, col: &str) -> StoreResult<T> {
    let raw: String = r.col(col)?;
    serde_json::from_str(&raw).map_err(|_| corrupt(col))
}

pub(super) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// A driver's error, as far as the store tells them apart.
pub(super) trait DbError: Into<StoreError> {
    /// A unique (or primary key) constraint failed.
    fn unique_violation(&self) -> bool;
    /// A foreign key constraint failed.
    fn fk_violation(&self) -> bool;
}

impl DbError for sqlx::Error {
    fn unique_violation(&self) -> bool {
        matches!(self, sqlx::Error::Database(db) if db.is_unique_violation())
    }
    fn fk_violation(&self) -> bool {
        matches!(self, sqlx::Error::Database(db) if db.is_foreign_key_violation())
    }
}

impl DbError for rusqlite::Error {
    fn unique_violation(&self) -> bool {
        matches!(self, rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    }
    fn fk_violation(&self) -> bool {
        matches!(self, rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
    }
}

fn unique_or(e: impl DbError, code: &'static str, field: String) -> StoreError {
    if e.unique_violation() {
        StoreError::Conflict { code, field }
    } else {
        e.into()
    }
}

fn reference_or(e: impl DbError, field: String) -> StoreError {
    if e.fk_violation() {
        StoreError::UnknownReference { field }
    } else {
        e.into()
    }
}

/// A failed lead write: another lead has its `external_id`, or its `owner_id` is unknown.
pub(super) fn lead_write_error(e: impl DbError) -> StoreError {
    if e.fk_violation() {
        return reference_or(e, "owner_id".into());
    }
    unique_or(e, "external_id_in_use", "external_id".into())
}

/// A failed user write: another user has the email.
pub(super) fn user_write_error(e: impl DbError) -> StoreError {
    unique_or(e, "email_in_use", "email".into())
}

/// A failed insert of a user's `i`th number: another user holds it.
pub(super) fn user_number_error(e: impl DbError, i: usize) -> StoreError {
    unique_or(e, "number_in_use", format!("phone_numbers[{i}]"))
}

/// A failed insert of the `i`th of the `team_ids` given: no such team.
pub(super) fn team_ref_error(e: impl DbError, i: usize) -> StoreError {
    reference_or(e, format!("team_ids[{i}]"))
}

/// A failed opportunity write: no such lead.
pub(super) fn opportunity_write_error(e: impl DbError) -> StoreError {
    reference_or(e, "lead_id".into())
}

/// A failed virtual-number insert: another connector holds the number, or the
/// connector does not exist.
pub(super) fn virtual_number_error(e: impl DbError) -> StoreError {
    if e.fk_violation() {
        return StoreError::NotFound;
    }
    unique_or(e, "number_in_use", "number".into())
}

/// Appends the keyset condition after the page's cursor and the newest-first order.
pub(super) fn page_clause<DB: Database>(
    qb: &mut QueryBuilder<DB>,
    page: &PageRequest,
    at_col: &str,
    id_col: &str,
) where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
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

/// `SELECT * FROM activities` narrowed by the filter (the same SQL in both dialects).
pub(super) fn activities_query<DB: Database>(f: &ActivityFilter) -> QueryBuilder<DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("SELECT * FROM activities WHERE 1 = 1");
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
    qb
}

/// `SELECT * FROM telephony_logs` narrowed by the filter (the same SQL in both
/// dialects).
pub(super) fn telephony_logs_query<DB: Database>(f: &TelephonyLogFilter) -> QueryBuilder<DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("SELECT * FROM telephony_logs WHERE 1 = 1");
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
    qb
}

/// Connector settings as kept in the `settings` JSON column.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSettings {
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

/// The `settings` column value of a connector.
pub(super) fn settings_json(s: &ConnectorSettings) -> String {
    to_json(&StoredSettings::from(s))
}

pub(super) fn connector_from_row(r: &impl DbRow) -> StoreResult<Connector> {
    let s: StoredSettings = json_col(r, "settings")?;
    let kind: String = r.col("kind")?;
    let secret: String = r.col("secret_key")?;
    Ok(Connector {
        id: id_col(r, "id", "connectors.id", ConnectorId::parse)?,
        kind: ConnectorKind::parse(&kind).ok_or_else(|| corrupt("connectors.kind"))?,
        access_key: r.col("access_key")?,
        secret_key: secret.into(),
        settings: ConnectorSettings {
            name: r.col("name")?,
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
        is_default: r.col("is_default")?,
        created_at: ms(r, "created_at")?,
        updated_at: ms(r, "updated_at")?,
    })
}

pub(super) fn vn_from_row(r: &impl DbRow) -> StoreResult<VirtualNumber> {
    Ok(VirtualNumber {
        id: id_col(r, "id", "virtual_numbers.id", VirtualNumberId::parse)?,
        number: PhoneNumber::from_e164_unchecked_db(r.col("number")?),
        tag: r.col("tag")?,
        connector_id: id_col(
            r,
            "connector_id",
            "virtual_numbers.connector_id",
            ConnectorId::parse,
        )?,
        created_at: ms(r, "created_at")?,
    })
}

fn agent_number_from_db(s: String) -> AgentNumber {
    if is_extension(&s) {
        AgentNumber::Extension(s)
    } else {
        AgentNumber::Phone(PhoneNumber::from_e164_unchecked_db(s))
    }
}

fn ids_from_json<T>(
    r: &impl DbRow,
    col: &str,
    what: &str,
    f: impl Fn(&str) -> Result<T, IdError>,
) -> StoreResult<Vec<T>> {
    let raw: Vec<String> = json_col(r, col)?;
    raw.iter().map(|s| parse_id(s, what, &f)).collect()
}

/// A user row with its `numbers` and `team_ids` as JSON arrays.
pub(super) fn user_from_row(r: &impl DbRow) -> StoreResult<User> {
    let numbers: Vec<String> = json_col(r, "numbers")?;
    let role: String = r.col("role")?;
    Ok(User {
        id: id_col(r, "id", "users.id", UserId::parse)?,
        name: r.col("name")?,
        email: r.col("email")?,
        phone_numbers: numbers.into_iter().map(agent_number_from_db).collect(),
        team_ids: ids_from_json(r, "team_ids", "team_members.team_id", TeamId::parse)?,
        group_ids: json_col(r, "group_ids")?,
        role: if role == "admin" {
            Role::Admin
        } else {
            Role::Agent
        },
        active: r.col("active")?,
        provider_agent_ids: json_col(r, "provider_agent_ids")?,
        created_at: ms(r, "created_at")?,
        updated_at: ms(r, "updated_at")?,
    })
}

/// A team row with its `user_ids` and `connector_ids` as JSON arrays.
pub(super) fn team_from_row(r: &impl DbRow) -> StoreResult<Team> {
    Ok(Team {
        id: id_col(r, "id", "teams.id", TeamId::parse)?,
        name: r.col("name")?,
        user_ids: ids_from_json(r, "user_ids", "team_members.user_id", UserId::parse)?,
        connector_ids: ids_from_json(
            r,
            "connector_ids",
            "team_connectors.connector_id",
            ConnectorId::parse,
        )?,
        created_at: ms(r, "created_at")?,
    })
}

fn phone_col(r: &impl DbRow, col: &str) -> StoreResult<Option<PhoneNumber>> {
    Ok(r.col::<Option<String>>(col)?
        .map(PhoneNumber::from_e164_unchecked_db))
}

pub(super) fn lead_from_row(r: &impl DbRow) -> StoreResult<Lead> {
    let secondary: Vec<String> = json_col(r, "secondary_numbers")?;
    Ok(Lead {
        id: id_col(r, "id", "leads.id", LeadId::parse)?,
        first_name: r.col("first_name")?,
        last_name: r.col("last_name")?,
        email: r.col("email")?,
        phone: phone_col(r, "phone")?,
        mobile: phone_col(r, "mobile")?,
        secondary_numbers: secondary
            .into_iter()
            .map(PhoneNumber::from_e164_unchecked_db)
            .collect(),
        owner_id: opt_id_col(r, "owner_id", "leads.owner_id", UserId::parse)?,
        source: r.col("source")?,
        origin: r.col("origin")?,
        stage: r.col("stage")?,
        fields: json_col(r, "fields")?,
        external_id: r.col("external_id")?,
        created_at: ms(r, "created_at")?,
        updated_at: ms(r, "updated_at")?,
    })
}

/// The `secondary_numbers` column value of a lead.
pub(super) fn secondary_json(l: &LeadWrite) -> String {
    to_json(
        &l.secondary_numbers
            .iter()
            .map(PhoneNumber::as_str)
            .collect::<Vec<_>>(),
    )
}

/// Every number of a lead to index in `lead_numbers`: phone, mobile, then the secondary
/// numbers (duplicates are the caller's to ignore).
pub(super) fn lead_numbers(l: &LeadWrite) -> impl Iterator<Item = &PhoneNumber> {
    l.phone
        .iter()
        .chain(l.mobile.iter())
        .chain(l.secondary_numbers.iter())
}

pub(super) fn opportunity_from_row(r: &impl DbRow) -> StoreResult<Opportunity> {
    let status: String = r.col("status")?;
    Ok(Opportunity {
        id: id_col(r, "id", "opportunities.id", OpportunityId::parse)?,
        lead_id: id_col(r, "lead_id", "opportunities.lead_id", LeadId::parse)?,
        name: r.col("name")?,
        owner_id: opt_id_col(r, "owner_id", "opportunities.owner_id", UserId::parse)?,
        status: OpportunityStatus::parse(&status).ok_or_else(|| corrupt("opportunities.status"))?,
        created_at: ms(r, "created_at")?,
        updated_at: ms(r, "updated_at")?,
    })
}

pub(super) fn activity_from_row(r: &impl DbRow) -> StoreResult<Activity> {
    let kind: String = r.col("kind")?;
    Ok(Activity {
        id: id_col(r, "id", "activities.id", ActivityId::parse)?,
        kind: ActivityKind::parse(&kind).ok_or_else(|| corrupt("activities.kind"))?,
        lead_id: id_col(r, "lead_id", "activities.lead_id", LeadId::parse)?,
        opportunity_id: opt_id_col(
            r,
            "opportunity_id",
            "activities.opportunity_id",
            OpportunityId::parse,
        )?,
        user_id: opt_id_col(r, "user_id", "activities.user_id", UserId::parse)?,
        connector_id: opt_id_col(
            r,
            "connector_id",
            "activities.connector_id",
            ConnectorId::parse,
        )?,
        call_session_id: r.col("call_session_id")?,
        status: r.col("status")?,
        started_at: opt_ms(r, "started_at")?,
        ended_at: opt_ms(r, "ended_at")?,
        duration_secs: r.col("duration_secs")?,
        recording_url: r.col("recording_url")?,
        notes: r.col("notes")?,
        data: json_col(r, "data")?,
        created_at: ms(r, "created_at")?,
    })
}

pub(super) fn popup_from_row(r: &impl DbRow) -> StoreResult<PopupRecord> {
    let state: String = r.col("state")?;
    let direction: String = r.col("direction")?;
    Ok(PopupRecord {
        id: id_col(r, "id", "popups.id", PopupId::parse)?,
        call: PopupCall {
            connector_id: id_col(r, "connector_id", "popups.connector_id", ConnectorId::parse)?,
            call_session_id: r.col("call_session_id")?,
            user_id: id_col(r, "user_id", "popups.user_id", UserId::parse)?,
            lead_id: id_col(r, "lead_id", "popups.lead_id", LeadId::parse)?,
            candidate_ids: ids_from_json(
                r,
                "candidate_ids",
                "popups.candidate_ids",
                LeadId::parse,
            )?,
            new_lead: r.col("new_lead")?,
            opportunity_id: opt_id_col(
                r,
                "opportunity_id",
                "popups.opportunity_id",
                OpportunityId::parse,
            )?,
            direction: Direction::parse(&direction).ok_or_else(|| corrupt("popups.direction"))?,
            lead_number: r.col("lead_number")?,
            agent_number: r.col("agent_number")?,
            virtual_number: r.col("virtual_number")?,
            tag: r.col("tag")?,
        },
        state: PopupState::parse(&state).ok_or_else(|| corrupt("popups.state"))?,
        seq: r.col("seq")?,
        created_at: ms(r, "created_at")?,
    })
}

/// The `id` and `user_id` of a popup row (an expiry's `RETURNING`).
pub(super) fn popup_owner_from_row(r: &impl DbRow) -> StoreResult<(PopupId, UserId)> {
    Ok((
        id_col(r, "id", "popups.id", PopupId::parse)?,
        id_col(r, "user_id", "popups.user_id", UserId::parse)?,
    ))
}

pub(super) fn event_from_row(r: &impl DbRow) -> StoreResult<StoredEvent> {
    let payload: Option<String> = r.col("payload")?;
    Ok(StoredEvent {
        seq: r.col("seq")?,
        kind: r.col("kind")?,
        popup_id: opt_id_col(r, "popup_id", "events.popup_id", PopupId::parse)?,
        payload: payload
            .map(|p| serde_json::from_str(&p).map_err(|_| corrupt("events.payload")))
            .transpose()?,
    })
}

pub(super) fn outbox_from_row(r: &impl DbRow) -> StoreResult<OutboxItem> {
    let request: String = r.col("request")?;
    let status: String = r.col("status")?;
    Ok(OutboxItem {
        id: id_col(r, "id", "outbox.id", OutboxId::parse)?,
        connector_id: id_col(r, "connector_id", "outbox.connector_id", ConnectorId::parse)?,
        kind: r.col("kind")?,
        next_attempt_at: if status == "pending" {
            opt_ms(r, "next_attempt_at")?
        } else {
            None
        },
        status,
        attempts: r.col("attempts")?,
        last_error: r.col("last_error")?,
        created_at: ms(r, "created_at")?,
        delivered_at: opt_ms(r, "delivered_at")?,
        request: serde_json::from_str(&request).ok(),
        age_from: ms(r, "age_from")?,
    })
}

pub(super) fn log_from_row(r: &impl DbRow) -> StoreResult<TelephonyLogRow> {
    let status: i64 = r.col("http_status")?;
    Ok(TelephonyLogRow {
        id: id_col(r, "id", "telephony_logs.id", TelephonyLogId::parse)?,
        at: ms(r, "at")?,
        connector_id: opt_id_col(
            r,
            "connector_id",
            "telephony_logs.connector_id",
            ConnectorId::parse,
        )?,
        endpoint: r.col("endpoint")?,
        http_status: u16::try_from(status).map_err(|_| corrupt("telephony_logs.http_status"))?,
        outcome: r.col("outcome")?,
        error_code: r.col("error_code")?,
        error_message: r.col("error_message")?,
        call_session_id: r.col("call_session_id")?,
        latency_us: r.col("latency_us")?,
        request: json_col(r, "request")?,
    })
}

/// A `click_to_calls` row of `user` to `number`.
pub(super) fn click_to_call_from_row(
    r: &impl DbRow,
    user: UserId,
    number: &PhoneNumber,
) -> StoreResult<ClickToCallRecord> {
    Ok(ClickToCallRecord {
        user_id: user,
        lead_id: id_col(r, "lead_id", "click_to_calls.lead_id", LeadId::parse)?,
        number: number.clone(),
        opportunity_id: opt_id_col(
            r,
            "opportunity_id",
            "click_to_calls.opportunity_id",
            OpportunityId::parse,
        )?,
        connector_id: id_col(
            r,
            "connector_id",
            "click_to_calls.connector_id",
            ConnectorId::parse,
        )?,
        at: ms(r, "created_at")?,
    })
}

/// Whole seconds to wait before the next click-to-call, the last one being at `last`
/// (ms) and this one at `at`.
pub(super) fn click_to_call_wait(last: i64, window_secs: i64, at: Timestamp) -> i64 {
    let wait_ms = last + window_secs * 1000 - at.millis();
    (wait_ms.max(1) + 999) / 1000
}

/// Applies a disposition's lead-field writes (an empty value clears a column).
pub(super) fn apply_lead_writes(l: &mut LeadWrite, writes: &[(LeadField, String)]) {
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

/// An activity a disposition writes (the call columns come from its popup).
pub(super) struct NewActivity<'a> {
    pub id: ActivityId,
    pub kind: ActivityKind,
    pub lead_id: LeadId,
    pub d: &'a DispositionWrite,
    pub status: Option<&'a str>,
    pub notes: Option<&'a str>,
    pub data: serde_json::Value,
}

/// The activities an accepted disposition records on `lead`: the `disposition` itself,
/// then its task and custom activity when given.
pub(super) fn disposition_activities(d: &DispositionWrite, lead: LeadId) -> Vec<NewActivity<'_>> {
    let disp = &d.disposition;
    let mut out = vec![NewActivity {
        id: d.activity_id,
        kind: ActivityKind::Disposition,
        lead_id: lead,
        d,
        status: Some(&disp.value),
        notes: disp.notes.as_deref(),
        data: serde_json::json!({ "value": disp.value, "popup_id": d.popup_id }),
    }];
    if let Some(t) = &disp.task {
        out.push(NewActivity {
            id: ActivityId::time_ordered(),
            kind: ActivityKind::Task,
            lead_id: lead,
            d,
            status: Some("open"),
            notes: None,
            data: serde_json::json!({ "subject": t.subject, "due_at": t.due_at }),
        });
    }
    if let Some(a) = &disp.activity {
        out.push(NewActivity {
            id: ActivityId::time_ordered(),
            kind: ActivityKind::Custom,
            lead_id: lead,
            d,
            status: None,
            notes: a.note.as_deref(),
            data: serde_json::json!({ "type": a.kind, "note": a.note }),
        });
    }
    out
}

/// What an import row does, given the lead it matched.
pub(super) enum ImportStep {
    /// The match would not change: counted as updated, nothing written.
    Unchanged(LeadId),
    /// Rewrite the match with these values.
    Update(LeadId, Box<LeadWrite>),
    /// Create a lead with the row's values.
    Create(LeadId),
}

/// Decides an import row's step (SPEC 6 "Lead import").
pub(super) fn import_step(row: &LeadPatch, matched: Option<&Lead>) -> ImportStep {
    match matched {
        Some(current) => {
            let before = LeadWrite::from(current);
            let after = row.apply(before.clone());
            if after == before {
                ImportStep::Unchanged(current.id)
            } else {
                ImportStep::Update(current.id, Box::new(after))
            }
        }
        None => ImportStep::Create(LeadId::new()),
    }
}

/// The external id an import row matches by, when it gives one.
pub(super) fn import_external_id(row: &LeadPatch) -> Option<&str> {
    row.values
        .external_id
        .as_deref()
        .filter(|_| row.given.external_id)
}

/// The email an import row matches by, when it gives one.
pub(super) fn import_email(row: &LeadPatch) -> Option<&str> {
    row.values.email.as_deref().filter(|_| row.given.email)
}

/// The only lead found by an import row's email, unless it is another record: a lead
/// known to the source system under another id is another record, however its email
/// reads.
pub(super) fn import_email_match(row: &LeadPatch, found: Vec<Lead>) -> Option<Lead> {
    let [only] = <[Lead; 1]>::try_from(found).ok()?;
    let other_record = import_external_id(row).is_some() && only.external_id.is_some();
    (!other_record).then_some(only)
}
