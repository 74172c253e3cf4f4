//! The embedded SQLite store (WAL, `synchronous=NORMAL`). Every write that reads
//! before it writes runs under `BEGIN IMMEDIATE`, which takes SQLite's single write
//! lock up front: that is the per-key lock DESIGN.md asks for, at database scope.

use super::common::DbRow as _;
use super::common::{
    ImportStep, NewActivity, activities_query, activity_from_row, apply_lead_writes,
    click_to_call_from_row, click_to_call_wait, connector_from_row, disposition_activities,
    embedded_migrator, event_from_row, import_email, import_email_match, import_external_id,
    import_step, lead_from_row, lead_numbers, lead_write_error, log_from_row, opportunity_from_row,
    opportunity_write_error, opt_id, outbox_from_row, page_clause, parse_id, popup_from_row,
    popup_owner_from_row, secondary_json, settings_json, team_from_row, team_ref_error,
    telephony_logs_query, to_json, user_from_row, user_number_error, user_write_error,
    virtual_number_error, vn_from_row,
};
use super::engine::Engine;
use super::{
    ActivityFilter, CallActivityWrite, ClickToCallRecord, DisposeError, DispositionWrite,
    ExpiredPopup, ImportOutcome, LeadFilter, LeadPatch, LeadWrite, NewConnector, OpportunityWrite,
    OutboxItem, OutboxResult, Page, PageRequest, PopupCall, PopupOutcome, PopupRecord, Recipients,
    StoreError, StoreResult, StoredEvent, TelephonyLogFilter, TelephonyLogRow, UserEvent, UserKey,
    UserWrite, VirtualNumber,
};
use super::{CallLoggedPayload, ExpiredPayload, Online, QuickKey, QuickPopup, QuickPopupDone};
use crate::domain::connector::{Connector, ConnectorSettings};
use crate::domain::ids::{
    ActivityId, ConnectorId, LeadId, OpportunityId, OutboxId, PopupId, TeamId, UserId,
    VirtualNumberId,
};
use crate::domain::lead::{Activity, Lead, Opportunity};
use crate::domain::phone::PhoneNumber;
use crate::domain::time::Timestamp;
use crate::domain::user::{Team, User};
use async_trait::async_trait;
use rusqlite::{Connection, params};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The states of an open popup, as an SQL list (a macro, for `concat!`).
macro_rules! open_states {
    () => {
        "('queued','delivered','acked')"
    };
}

/// The SQLite implementation of [`super::Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// Writers of this process queue here instead of in SQLite's busy handler, whose
    /// sleeping back-off (up to 100 ms a try) would put long tails on popups.
    write_lock: Arc<Mutex<()>>,
    /// The thread that runs the hot operations (popups, leads, call logs, events).
    engine: Engine,
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
}

const USER_SELECT: &str = "SELECT u.id, u.name, u.email, u.group_ids, u.role, u.active, \
    u.provider_agent_ids, u.created_at, u.updated_at, \
    (SELECT json_group_array(number) FROM (SELECT number FROM user_numbers WHERE user_id = u.id ORDER BY position)) AS numbers, \
    (SELECT json_group_array(team_id) FROM (SELECT team_id FROM team_members WHERE user_id = u.id ORDER BY team_id)) AS team_ids \
    FROM users u";

/// The user by id (`?1`) with whether they see the connector `?2`.
static USER_SEEING_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| user_seeing_sql("u.id = ?1"));
/// The user holding the number `?1` with whether they see the connector `?2`.
static USER_SEEING_BY_NUMBER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    user_seeing_sql("u.id = (SELECT user_id FROM user_numbers WHERE number = ?1)")
});

fn user_seeing_sql(filter: &str) -> String {
    format!(
        "SELECT x.*, {} AS sees FROM ({USER_SELECT} WHERE {filter}) x",
        sees_connector("x.id")
    )
}

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

/// The rows of `sql`, each read by `map` (a statement cached on the connection).
fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut map: impl FnMut(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(map(r)?);
    }
    Ok(out)
}

/// The first row of `sql`, read by `map`.
fn row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(map).transpose()
}

/// Gives `user` the next `seq` of their events (inside a write transaction).
fn next_seq(conn: &Connection, user: &str) -> StoreResult<i64> {
    row(
        conn,
        "UPDATE users SET seq = seq + 1 WHERE id = ? RETURNING seq",
        [user],
        |r| Ok(r.get(0)?),
    )?
    .ok_or(StoreError::NotFound)
}

/// Writes a popup (see [`Store::upsert_popup`]): the hot path of every popup: the
/// user's next seq, the popup written once with it, and its replay event; a closed
/// popup with this key changes nothing, not even the seq. Inside a write transaction.
fn write_popup(
    conn: &Connection,
    new_id: PopupId,
    c: &PopupCall,
    online: bool,
    now: Timestamp,
) -> StoreResult<(PopupRecord, PopupOutcome)> {
    let (connector, user) = (c.connector_id.to_string(), c.user_id.to_string());
    if let Some(closed) = row(
        conn,
        concat!(
            "SELECT * FROM popups WHERE connector_id = ? AND call_session_id = ? AND user_id = ? \
             AND state NOT IN ",
            open_states!()
        ),
        params![connector, c.call_session_id, user],
        |r| popup_from_row(r),
    )? {
        return Ok((closed, PopupOutcome::Closed));
    }
    let seq = next_seq(conn, &user)?;
    let record = row(
        conn,
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
         RETURNING *",
        params![
            new_id.to_string(),
            connector,
            c.call_session_id,
            user,
            c.lead_id.to_string(),
            to_json(&c.candidate_ids),
            c.new_lead,
            c.opportunity_id.map(|o| o.to_string()),
            c.direction.as_str(),
            c.lead_number,
            c.agent_number,
            c.virtual_number,
            c.tag,
            if online { "delivered" } else { "queued" },
            seq,
            now.millis(),
            now.millis(),
        ],
        |r| popup_from_row(r),
    )?
    .ok_or(StoreError::NotFound)?;
    let (kind, outcome) = if record.id == new_id {
        ("popup", PopupOutcome::Created)
    } else {
        ("popup_update", PopupOutcome::Updated)
    };
    exec(
        conn,
        "INSERT INTO events (user_id, seq, kind, popup_id, payload, created_at) VALUES (?, ?, ?, ?, NULL, ?)",
        params![user, seq, kind, record.id.to_string(), now.millis()],
    )?;
    Ok((record, outcome))
}

/// A lead's last `limit` call activities, newest first.
fn select_recent_calls(conn: &Connection, lead: LeadId, limit: u32) -> StoreResult<Vec<Activity>> {
    rows(
        conn,
        "SELECT * FROM activities WHERE lead_id = ? AND kind IN ('inbound_call', 'outbound_call') \
         ORDER BY created_at DESC, id DESC LIMIT ?",
        params![lead.to_string(), i64::from(limit)],
        |r| activity_from_row(r),
    )
}

/// The user by id or number, and whether they see `connector`.
fn select_user_seeing(
    conn: &Connection,
    who: &QuickKey<UserId, String>,
    connector: ConnectorId,
) -> StoreResult<Option<(User, bool)>> {
    let (sql, key) = match who {
        QuickKey::Id(id) => (&*USER_SEEING_BY_ID, id.to_string()),
        QuickKey::Number(n) => (&*USER_SEEING_BY_NUMBER, n.clone()),
    };
    row(conn, sql, params![key, connector.to_string()], |r| {
        Ok((user_from_row(r)?, r.col::<bool>("sees")?))
    })
}

/// [`Store::quick_popup`] inside a write transaction; `None` (nothing written) when
/// the agent or the lead is not found as asked.
fn quick_popup(
    conn: &Connection,
    q: &QuickPopup,
    online: &Online,
) -> StoreResult<Option<QuickPopupDone>> {
    let agent = match select_user_seeing(conn, &q.agent, q.base.connector_id)? {
        Some((user, true)) if user.active => user,
        _ => return Ok(None),
    };
    let mut leads = match &q.lead {
        QuickKey::Id(id) => fetch_lead(conn, *id)?.into_iter().collect(),
        QuickKey::Number(n) => select_by_number(conn, n.as_str(), q.max_candidates + 1)?,
    };
    if leads.is_empty() {
        return Ok(None);
    }
    let lead = leads.remove(0);
    let vn_tag = match &q.display_number {
        Some(n) => row(
            conn,
            "SELECT tag FROM virtual_numbers WHERE number = ? AND connector_id = ?",
            params![n.as_str(), q.base.connector_id.to_string()],
            |r| Ok(r.get::<_, Option<String>>(0)?),
        )?
        .flatten(),
        None => None,
    };
    let tag = vn_tag.or_else(|| q.tag.clone());
    let call = q
        .base
        .clone()
        .call(agent.id, (lead.id, false), &leads, None, tag);
    let (record, outcome) = write_popup(conn, q.new_id, &call, online(agent.id), Timestamp::now())?;
    let recent = select_recent_calls(conn, lead.id, q.recent_calls)?;
    Ok(Some(QuickPopupDone {
        agent,
        lead,
        candidates: leads,
        recent,
        record,
        outcome,
    }))
}

/// Runs `sql` (cached); returns the number of rows it changed.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<usize> {
    Ok(conn.prepare_cached(sql)?.execute(params)?)
}

/// `?, ?, …` with `n` placeholders (for `IN (…)`).
fn placeholders(n: usize) -> String {
    let mut s = "?, ".repeat(n);
    s.truncate(s.len().saturating_sub(2));
    s
}

/// Appends one event per item, each with its user's next `seq`; returns the seqs in
/// order. Inside a write transaction.
fn append_events(
    conn: &Connection,
    items: &[(UserId, &str, Option<PopupId>, Option<serde_json::Value>)],
    now: Timestamp,
) -> StoreResult<Vec<i64>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (user_id, seq, kind, popup_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    let mut seqs = Vec::with_capacity(items.len());
    for (user, kind, popup, payload) in items {
        let user = user.to_string();
        let seq = next_seq(conn, &user)?;
        insert.execute(params![
            user,
            seq,
            kind,
            popup.map(|p| p.to_string()),
            payload.as_ref().map(to_json),
            now.millis()
        ])?;
        seqs.push(seq);
    }
    Ok(seqs)
}

fn write_lead(
    conn: &Connection,
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
    let id = id.to_string();
    let changed = conn
        .prepare_cached(sql)?
        .execute(params![
            l.first_name,
            l.last_name,
            l.email,
            l.phone.as_ref().map(PhoneNumber::as_str),
            l.mobile.as_ref().map(PhoneNumber::as_str),
            secondary_json(l),
            l.owner_id.map(|u| u.to_string()),
            l.source,
            l.origin,
            l.stage,
            to_json(&l.fields),
            l.external_id,
            now.millis(),
            now.millis(),
            id,
        ])
        .map_err(lead_write_error)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    exec(conn, "DELETE FROM lead_numbers WHERE lead_id = ?", [&id])?;
    let mut add =
        conn.prepare_cached("INSERT OR IGNORE INTO lead_numbers (number, lead_id) VALUES (?, ?)")?;
    for n in lead_numbers(l) {
        add.execute([n.as_str(), &id])?;
    }
    Ok(())
}

/// The lead an import row updates: the one with its `external_id`, else the only one
/// with its email (ASCII case-insensitive, the `leads_email` index) when that lead has
/// no other `external_id` — a lead known to the source system under another id is
/// another record, however its email reads.
fn import_match(conn: &Connection, patch: &LeadPatch) -> StoreResult<Option<Lead>> {
    if let Some(x) = import_external_id(patch)
        && let Some(lead) = row(
            conn,
            "SELECT * FROM leads WHERE external_id = ?",
            [x],
            |r| lead_from_row(r),
        )?
    {
        return Ok(Some(lead));
    }
    let Some(email) = import_email(patch) else {
        return Ok(None);
    };
    let found = rows(
        conn,
        "SELECT * FROM leads WHERE email = ? COLLATE NOCASE LIMIT 2",
        [email],
        |r| lead_from_row(r),
    )?;
    Ok(import_email_match(patch, found))
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
fn select_by_number(conn: &Connection, number: &str, limit: u32) -> StoreResult<Vec<Lead>> {
    rows(
        conn,
        "SELECT l.* FROM lead_numbers n JOIN leads l ON l.id = n.lead_id \
         WHERE n.number = ? ORDER BY l.updated_at DESC, l.id LIMIT ?",
        params![number, i64::from(limit)],
        |r| lead_from_row(r),
    )
}

fn fetch_lead(conn: &Connection, id: LeadId) -> StoreResult<Option<Lead>> {
    row(
        conn,
        "SELECT * FROM leads WHERE id = ?",
        [id.to_string()],
        |r| lead_from_row(r),
    )
}

async fn fetch_user(conn: &mut SqliteConnection, id: UserId) -> StoreResult<Option<User>> {
    sqlx::query(AssertSqlSafe(format!("{USER_SELECT} WHERE u.id = ?")))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
}

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
        .await
        .map_err(user_write_error)?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound);
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
        sqlx::query("INSERT INTO user_numbers (number, user_id, position) VALUES (?, ?, ?)")
            .bind(n.as_str())
            .bind(id.to_string())
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .execute(&mut *conn)
            .await
            .map_err(|e| user_number_error(e, i))?;
    }
    for (i, t) in u.team_ids.iter().enumerate() {
        sqlx::query("INSERT OR IGNORE INTO team_members (team_id, user_id) VALUES (?, ?)")
            .bind(t.to_string())
            .bind(id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(|e| team_ref_error(e, i))?;
    }
    Ok(())
}

fn insert_activity(conn: &Connection, a: NewActivity<'_>, now: Timestamp) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO activities (id, kind, lead_id, opportunity_id, user_id, connector_id, call_session_id, \
         status, notes, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            a.id.to_string(),
            a.kind.as_str(),
            a.lead_id.to_string(),
            a.d.opportunity_id.map(|o| o.to_string()),
            a.d.user_id.to_string(),
            a.d.connector_id.to_string(),
            a.d.call_session_id.as_str(),
            a.status,
            a.notes,
            to_json(&a.data),
            now.millis()
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Writes lead `id` (creating it, or updating it when `create` is false) and reads
    /// it back, in one engine job.
    async fn put_lead(&self, id: LeadId, l: &LeadWrite, create: bool) -> StoreResult<Lead> {
        let l = l.clone();
        self.engine
            .write(move |c| {
                write_lead(c, id, &l, Timestamp::now(), create)?;
                fetch_lead(c, id)?.ok_or(StoreError::NotFound)
            })
            .await
    }

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
            // No checkpoint on commit: SQLite's automatic one runs in whichever commit
            // crosses 1,000 WAL pages and fsyncs there, holding up that request and every
            // writer behind it (100+ ms tails under load). The engine's checkpointer
            // thread checkpoints beside the writers instead (see engine.rs).
            .pragma("wal_autocheckpoint", "0")
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .with_context(|| format!("opening SQLite database {path}"))?;
        let migrator = embedded_migrator(&[
            (
                1,
                "init",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "sso",
                include_str!("../../migrations/sqlite/0002_sso.sql"),
            ),
            (
                3,
                "click_to_call",
                include_str!("../../migrations/sqlite/0003_click_to_call.sql"),
            ),
            (
                4,
                "outbox",
                include_str!("../../migrations/sqlite/0004_outbox.sql"),
            ),
        ]);
        migrator
            .run(&pool)
            .await
            .context("migrating the SQLite database")?;
        let write_lock = Arc::new(Mutex::new(()));
        let engine = Engine::open(Path::new(path), write_lock.clone())
            .with_context(|| format!("opening SQLite database {path}"))?;
        Ok(Self {
            pool,
            engine,
            write_lock,
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
        sqlx::query(
            "SELECT t.id, t.name, t.created_at, \
             (SELECT json_group_array(user_id) FROM (SELECT user_id FROM team_members WHERE team_id = t.id ORDER BY user_id)) AS user_ids, \
             (SELECT json_group_array(connector_id) FROM (SELECT connector_id FROM team_connectors WHERE team_id = t.id ORDER BY connector_id)) AS connector_ids \
             FROM teams t WHERE t.id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| team_from_row(&r))
        .transpose()
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
        .bind(settings_json(&c.settings))
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
        .bind(settings_json(s))
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
            sqlx::query(
                "INSERT OR IGNORE INTO team_connectors (team_id, connector_id) VALUES (?, ?)",
            )
            .bind(t.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| team_ref_error(e, i))?;
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
        res.map(|_| vn).map_err(virtual_number_error)
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
        let number = number.as_str().to_owned();
        self.engine
            .read(move |c| {
                row(
                    c,
                    "SELECT * FROM virtual_numbers WHERE number = ?",
                    [number],
                    |r| vn_from_row(r),
                )
            })
            .await
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
        let key = match who {
            UserKey::Id(id) => QuickKey::Id(id),
            UserKey::Number(n) => QuickKey::Number(n.to_owned()),
        };
        self.engine
            .read(move |c| select_user_seeing(c, &key, connector))
            .await
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
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.engine
            .read(move |c| {
                let sql = format!(
                    "SELECT id, name FROM users WHERE id IN ({})",
                    placeholders(ids.len())
                );
                let names = rows(c, &sql, rusqlite::params_from_iter(&ids), |r| {
                    let id: String = r.get(0)?;
                    Ok((parse_id(&id, "users.id", UserId::parse)?, r.get(1)?))
                })?;
                Ok(names.into_iter().collect())
            })
            .await
    }

    async fn create_lead(&self, id: LeadId, l: &LeadWrite) -> StoreResult<Lead> {
        self.put_lead(id, l, true).await
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
        self.engine.read(move |c| fetch_lead(c, id)).await
    }

    async fn get_leads(&self, ids: &[LeadId]) -> StoreResult<Vec<Lead>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        self.engine
            .read(move |c| {
                let sql = format!(
                    "SELECT * FROM leads WHERE id IN ({})",
                    placeholders(ids.len())
                );
                let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
                let mut found: BTreeMap<LeadId, Lead> =
                    rows(c, &sql, rusqlite::params_from_iter(&keys), |r| {
                        lead_from_row(r).map(|l| (l.id, l))
                    })?
                    .into_iter()
                    .collect();
                Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
            })
            .await
    }

    async fn update_lead(&self, id: LeadId, l: &LeadWrite) -> StoreResult<Lead> {
        self.put_lead(id, l, false).await
    }

    async fn delete_lead(&self, id: LeadId) -> StoreResult<()> {
        self.delete_by_id("leads", id.to_string()).await
    }

    async fn import_leads(&self, rows: &[LeadPatch]) -> StoreResult<Vec<ImportOutcome>> {
        let rows = rows.to_vec();
        self.engine
            .write(move |c| {
                let now = Timestamp::now();
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    // A refused row fails in write_lead's first statement, which SQLite
                    // undoes alone: the transaction and the batch's other rows go on.
                    let matched = import_match(c, row)?;
                    let (outcome, written) = match import_step(row, matched.as_ref()) {
                        ImportStep::Unchanged(id) => {
                            out.push(ImportOutcome::Updated(id));
                            continue;
                        }
                        ImportStep::Update(id, after) => (
                            ImportOutcome::Updated(id),
                            write_lead(c, id, &after, now, false),
                        ),
                        ImportStep::Create(id) => (
                            ImportOutcome::Created(id),
                            write_lead(c, id, &row.values, now, true),
                        ),
                    };
                    out.push(match written {
                        Ok(()) => outcome,
                        Err(e @ StoreError::Unavailable(_)) => return Err(e),
                        Err(refused) => ImportOutcome::Refused(refused),
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn leads_by_number(&self, number: &PhoneNumber, limit: u32) -> StoreResult<Vec<Lead>> {
        let number = number.as_str().to_owned();
        self.engine
            .read(move |c| select_by_number(c, &number, limit))
            .await
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
        // one trip: most callers are known, and an unknown one is created under the
        // write lock that made the lookup, so concurrent calls create one lead
        let number = number.as_str().to_owned();
        let new = new.clone();
        self.engine
            .write(move |c| {
                let found = select_by_number(c, &number, limit)?;
                if !found.is_empty() {
                    return Ok((found, false));
                }
                let id = LeadId::new();
                write_lead(c, id, &new, Timestamp::now(), true)?;
                let lead = fetch_lead(c, id)?.ok_or(StoreError::NotFound)?;
                Ok((vec![lead], true))
            })
            .await
    }

    async fn create_opportunity(
        &self,
        id: OpportunityId,
        o: &OpportunityWrite,
    ) -> StoreResult<Opportunity> {
        let now = Timestamp::now();
        sqlx::query(
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
        .await
        .map_err(opportunity_write_error)?;
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
            .await
            .map_err(opportunity_write_error)?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
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
        let qb = activities_query(f);
        self.fetch_page(qb, page, ("created_at", "id"), activity_from_row)
            .await
    }

    async fn recent_calls(&self, lead: LeadId, limit: u32) -> StoreResult<Vec<Activity>> {
        self.engine
            .read(move |c| select_recent_calls(c, lead, limit))
            .await
    }

    async fn upsert_popup(
        &self,
        new_id: PopupId,
        c: &PopupCall,
        online: bool,
    ) -> StoreResult<(PopupRecord, PopupOutcome)> {
        let now = Timestamp::now();
        let c = c.clone();
        self.engine
            .write(move |conn| write_popup(conn, new_id, &c, online, now))
            .await
    }

    async fn quick_popup(
        &self,
        popup: QuickPopup,
        online: Online,
    ) -> StoreResult<Option<QuickPopupDone>> {
        self.engine
            .write(move |conn| quick_popup(conn, &popup, &online))
            .await
    }

    async fn get_popup(&self, id: PopupId) -> StoreResult<Option<PopupRecord>> {
        self.engine
            .read(move |c| {
                row(
                    c,
                    "SELECT * FROM popups WHERE id = ?",
                    [id.to_string()],
                    |r| popup_from_row(r),
                )
            })
            .await
    }

    async fn open_popups(&self, user: UserId) -> StoreResult<Vec<PopupRecord>> {
        self.engine
            .read(move |c| {
                rows(
                    c,
                    concat!(
                        "SELECT * FROM popups WHERE user_id = ? AND state IN ",
                        open_states!(),
                        " ORDER BY created_at, id"
                    ),
                    [user.to_string()],
                    |r| popup_from_row(r),
                )
            })
            .await
    }

    async fn mark_delivered(&self, ids: &[PopupId]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.engine
            .write(move |c| {
                let sql = format!(
                    "UPDATE popups SET state = 'delivered' WHERE state = 'queued' AND id IN ({})",
                    placeholders(ids.len())
                );
                exec(c, &sql, rusqlite::params_from_iter(&ids))?;
                Ok(())
            })
            .await
    }

    async fn ack_popup(&self, user: UserId, id: PopupId) -> StoreResult<bool> {
        self.engine
            .write(move |c| {
                Ok(exec(
                    c,
                    "UPDATE popups SET state = 'acked' WHERE id = ? AND user_id = ? AND state IN ('queued', 'delivered')",
                    [id.to_string(), user.to_string()],
                )? == 1)
            })
            .await
    }

    async fn current_seq(&self, user: UserId) -> StoreResult<i64> {
        self.engine
            .read(move |c| {
                row(
                    c,
                    "SELECT seq FROM users WHERE id = ?",
                    [user.to_string()],
                    |r| Ok(r.get(0)?),
                )?
                .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn events_since(&self, user: UserId, after: i64) -> StoreResult<Vec<StoredEvent>> {
        self.engine
            .read(move |c| {
                rows(
                    c,
                    concat!(
                        "SELECT e.seq, e.kind, e.popup_id, e.payload FROM events e LEFT JOIN popups p ON p.id = e.popup_id \
                         WHERE e.user_id = ? AND e.seq > ? AND (e.payload IS NOT NULL OR p.state IN ",
                        open_states!(),
                        ") ORDER BY e.seq"
                    ),
                    params![user.to_string(), after],
                    |r| event_from_row(r),
                )
            })
            .await
    }

    async fn dispose(&self, d: &DispositionWrite) -> Result<Vec<i64>, DisposeError> {
        let d = d.clone();
        self.engine
            .write(move |c| {
                let now = Timestamp::now();
                let changed = exec(
                    c,
                    concat!(
                        "UPDATE popups SET state = 'disposed', lead_id = ?, updated_at = ? \
                         WHERE id = ? AND user_id = ? AND state IN ",
                        open_states!()
                    ),
                    params![
                        d.disposition.lead_id.to_string(),
                        now.millis(),
                        d.popup_id.to_string(),
                        d.user_id.to_string()
                    ],
                )?;
                if changed == 0 {
                    let owner = row(
                        c,
                        "SELECT user_id FROM popups WHERE id = ?",
                        [d.popup_id.to_string()],
                        |r| Ok(r.get::<_, String>(0)?),
                    )?;
                    return Err(if owner == Some(d.user_id.to_string()) {
                        DisposeError::AlreadyDisposed
                    } else {
                        DisposeError::NotFound
                    });
                }
                let lead = fetch_lead(c, d.disposition.lead_id)?.ok_or(DisposeError::NotFound)?;
                let mut write = LeadWrite::from(&lead);
                apply_lead_writes(&mut write, &d.disposition.writes);
                write_lead(c, lead.id, &write, now, false)?;
                for a in disposition_activities(&d, lead.id) {
                    insert_activity(c, a, now)?;
                }
                if let Some(o) = &d.outbox {
                    exec(
                        c,
                        "INSERT INTO outbox (id, connector_id, kind, status, next_attempt_at, age_from, created_at, request) \
                         VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
                        params![
                            o.id.to_string(),
                            o.connector_id.to_string(),
                            o.kind,
                            now.millis(),
                            now.millis(),
                            now.millis(),
                            to_json(&o.request)
                        ],
                    )?;
                }
                let items: Vec<_> = d
                    .events
                    .iter()
                    .map(|e| (d.user_id, e.kind, Some(d.popup_id), Some(e.payload.clone())))
                    .collect();
                Ok(append_events(c, &items, now)?)
            })
            .await
    }

    async fn expire_popups(
        &self,
        queued_before: Timestamp,
        open_before: Timestamp,
        payload: ExpiredPayload,
    ) -> StoreResult<Vec<ExpiredPopup>> {
        self.engine
            .write(move |c| {
                let now = Timestamp::now();
                let expired = rows(
                    c,
                    concat!(
                        "UPDATE popups SET state = 'expired', updated_at = ? \
                         WHERE (state = 'queued' AND created_at < ?) OR (state IN ",
                        open_states!(),
                        " AND created_at < ?) RETURNING id, user_id"
                    ),
                    params![now.millis(), queued_before.millis(), open_before.millis()],
                    |r| popup_owner_from_row(r),
                )?;
                let items: Vec<_> = expired
                    .iter()
                    .map(|&(popup, user)| (user, "popup_closed", Some(popup), Some(payload(popup))))
                    .collect();
                let seqs = append_events(c, &items, now)?;
                Ok(expired
                    .into_iter()
                    .zip(seqs)
                    .map(|((popup_id, user_id), seq)| ExpiredPopup {
                        user_id,
                        popup_id,
                        seq,
                    })
                    .collect())
            })
            .await
    }

    async fn popups_for_session(
        &self,
        connector: ConnectorId,
        call_session_id: &str,
    ) -> StoreResult<Vec<PopupRecord>> {
        let session = call_session_id.to_owned();
        self.engine
            .read(move |c| {
                rows(
                    c,
                    "SELECT * FROM popups WHERE connector_id = ? AND call_session_id = ? ORDER BY updated_at DESC, id",
                    [connector.to_string(), session],
                    |r| popup_from_row(r),
                )
            })
            .await
    }

    async fn log_call(
        &self,
        w: &CallActivityWrite,
        recipients: &Recipients,
        payload: CallLoggedPayload,
    ) -> StoreResult<(Activity, bool, Vec<UserEvent>)> {
        let w = w.clone();
        let recipients = recipients.to_vec();
        self.engine
            .write(move |c| {
                let now = Timestamp::now();
                let activity = row(
                    c,
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
                     RETURNING *",
                    params![
                        w.new_id.to_string(),
                        w.kind.as_str(),
                        w.lead_id.to_string(),
                        w.opportunity_id.map(|o| o.to_string()),
                        w.user_id.map(|u| u.to_string()),
                        w.connector_id.to_string(),
                        w.call_session_id,
                        w.status,
                        w.started_at.millis(),
                        w.ended_at.millis(),
                        w.duration_secs,
                        w.recording_url,
                        w.notes,
                        to_json(&w.data),
                        now.millis(),
                    ],
                    |r| activity_from_row(r),
                )?
                .ok_or(StoreError::NotFound)?;
                let duplicate = activity.id != w.new_id;
                let items: Vec<_> = recipients
                    .iter()
                    .map(|&(user, popup)| (user, "call_logged", popup, Some(payload(popup, &activity))))
                    .collect();
                let seqs = append_events(c, &items, now)?;
                let events = items
                    .into_iter()
                    .zip(seqs)
                    .map(|((user_id, _, _, body), seq)| UserEvent {
                        user_id,
                        seq,
                        payload: body.unwrap_or_default(),
                    })
                    .collect();
                Ok((activity, duplicate, events))
            })
            .await
    }

    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        self.engine
            .write(move |c| {
                let n = exec(
                    c,
                    concat!(
                        "DELETE FROM events WHERE created_at < ? AND NOT EXISTS \
                         (SELECT 1 FROM popups p WHERE p.id = events.popup_id AND p.state IN ",
                        open_states!(),
                        ")"
                    ),
                    [before.millis()],
                )?;
                Ok(n as u64)
            })
            .await
    }

    async fn insert_telephony_logs(&self, rows: &[TelephonyLogRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        self.engine
            .write(move |c| {
                let mut insert = c.prepare_cached(
                    "INSERT INTO telephony_logs (id, at, connector_id, endpoint, http_status, outcome, error_code, \
                     error_message, call_session_id, latency_us, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?;
                for r in &rows {
                    insert.execute(params![
                        r.id.to_string(),
                        r.at.millis(),
                        r.connector_id.map(|c| c.to_string()),
                        r.endpoint,
                        i64::from(r.http_status),
                        r.outcome,
                        r.error_code,
                        r.error_message,
                        r.call_session_id,
                        r.latency_us,
                        to_json(&r.request),
                    ])?;
                }
                Ok(())
            })
            .await
    }

    async fn record_click_to_call(
        &self,
        c: &ClickToCallRecord,
        window_secs: i64,
    ) -> StoreResult<Option<i64>> {
        let c = c.clone();
        self.engine
            .write(move |conn| {
                let last: Option<i64> = conn
                    .prepare_cached(
                        "SELECT MAX(created_at) FROM click_to_calls WHERE user_id = ? AND lead_id = ? AND created_at > ?",
                    )?
                    .query_row(
                        params![
                            c.user_id.to_string(),
                            c.lead_id.to_string(),
                            c.at.plus_secs(-window_secs).millis()
                        ],
                        |r| r.get(0),
                    )?;
                if let Some(last) = last {
                    return Ok(Some(click_to_call_wait(last, window_secs, c.at)));
                }
                exec(
                    conn,
                    "INSERT INTO click_to_calls (id, user_id, lead_id, number, opportunity_id, connector_id, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    params![
                        ActivityId::new().to_string(),
                        c.user_id.to_string(),
                        c.lead_id.to_string(),
                        c.number.as_str(),
                        c.opportunity_id.map(|o| o.to_string()),
                        c.connector_id.to_string(),
                        c.at.millis()
                    ],
                )?;
                Ok(None)
            })
            .await
    }

    async fn recent_click_to_call(
        &self,
        user: UserId,
        number: &PhoneNumber,
        since: Timestamp,
    ) -> StoreResult<Option<ClickToCallRecord>> {
        let number = number.clone();
        self.engine
            .read(move |c| {
                row(
                    c,
                    "SELECT * FROM click_to_calls WHERE user_id = ? AND number = ? AND created_at >= ? \
                     ORDER BY created_at DESC LIMIT 1",
                    params![user.to_string(), number.as_str(), since.millis()],
                    |r| click_to_call_from_row(r, user, &number),
                )
            })
            .await
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
        let qb = telephony_logs_query(f);
        self.fetch_page(qb, page, ("at", "id"), log_from_row).await
    }
}
