//! The embedded SQLite store (WAL, `synchronous=NORMAL`). Every write that reads
//! before it writes runs under `BEGIN IMMEDIATE`, which takes SQLite's single write
//! lock up front: that is the per-key lock DESIGN.md asks for, at database scope.

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
use super::{
    ActivityFilter, CallActivityWrite, ClickToCallRecord, DisposeError, DispositionWrite,
    ExpiredPopup, ImportOutcome, LeadFilter, LeadPatch, LeadWrite, NewConnector, OpportunityWrite,
    OutboxItem, OutboxResult, Page, PageRequest, PopupCall, PopupOutcome, PopupRecord, Recipients,
    StoreError, StoreResult, StoredEvent, TelephonyLogFilter, TelephonyLogRow, UserEvent, UserKey,
    UserWrite, VirtualNumber,
};
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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
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
    /// Stops the checkpointing task when the store is dropped.
    _checkpoints: tokio_util::sync::DropGuard,
}

/// How often the WAL is checkpointed (see [`SqliteStore::open`]).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`] (PASSIVE: it never
/// waits for readers or writers) until `stop`.
async fn run_checkpoints(pool: SqlitePool, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sqlx::raw_sql("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries");
        }
    }
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

/// Appends one event per item, each with its user's next `seq`, in one trip to
/// SQLite's thread; returns the seqs in order. Inside a write transaction.
async fn append_events(
    conn: &mut SqliteConnection,
    items: &[(UserId, &str, Option<PopupId>, Option<serde_json::Value>)],
    now: Timestamp,
) -> StoreResult<Vec<i64>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // anonymous parameters, bound in the order they appear: sqlx numbers them across
    // the statements of one query (numbered ones would be bound per statement)
    let sql = "UPDATE users SET seq = seq + 1 WHERE id = ?; \
               INSERT INTO events (user_id, seq, kind, popup_id, payload, created_at) \
               VALUES (?, (SELECT seq FROM users WHERE id = ?), ?, ?, ?, ?) RETURNING seq; "
        .repeat(items.len());
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for (user, kind, popup, payload) in items {
        let user = user.to_string();
        q = q
            .bind(user.clone())
            .bind(user.clone())
            .bind(user)
            .bind((*kind).to_owned())
            .bind(popup.map(|p| p.to_string()))
            .bind(payload.as_ref().map(to_json))
            .bind(now.millis());
    }
    let rows = q.fetch_all(&mut *conn).await?;
    if rows.len() != items.len() {
        return Err(StoreError::NotFound);
    }
    rows.iter()
        .map(|r| r.try_get::<i64, _>("seq").map_err(StoreError::from))
        .collect()
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
        .bind(secondary_json(l))
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
        .await
        .map_err(lead_write_error)?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query("DELETE FROM lead_numbers WHERE lead_id = ?")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    for n in lead_numbers(l) {
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
    if let Some(x) = import_external_id(row)
        && let Some(r) = sqlx::query("SELECT * FROM leads WHERE external_id = ?")
            .bind(x)
            .fetch_optional(&mut *conn)
            .await?
    {
        return lead_from_row(&r).map(Some);
    }
    let Some(email) = import_email(row) else {
        return Ok(None);
    };
    let found = sqlx::query("SELECT * FROM leads WHERE email = ? COLLATE NOCASE LIMIT 2")
        .bind(email)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(lead_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(import_email_match(row, found))
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
            // No checkpoint on commit: SQLite's automatic one runs in whichever commit
            // crosses 1,000 WAL pages and fsyncs there, holding up that request and every
            // writer behind it (100+ ms tails under load). A task of the store's own
            // checkpoints every second instead, beside the writers.
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
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(run_checkpoints(pool.clone(), stop.clone()));
        Ok(Self {
            pool,
            write_lock: Arc::new(Mutex::new(())),
            connectors: super::cache::ConnectorCache::default(),
            _checkpoints: stop.drop_guard(),
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

    /// Runs `query` — a whole write transaction, `BEGIN IMMEDIATE; …; COMMIT` — in one
    /// trip to SQLite's thread, under the write lock; returns the rows its statements
    /// returned. A failure rolls back. It runs in a task of its own: a caller that goes
    /// away mid-way (a dropped request) cannot leave the transaction open on a pooled
    /// connection.
    async fn write_batch(
        &self,
        query: sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> StoreResult<Vec<SqliteRow>> {
        let pool = self.pool.clone();
        let lock = self.write_lock.clone();
        tokio::spawn(async move {
            let _lock = lock.lock_owned().await;
            let mut conn = pool.acquire().await?;
            match query.fetch_all(&mut *conn).await {
                Ok(rows) => Ok(rows),
                Err(e) => {
                    // the failed statement left the transaction open on this connection
                    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                    Err(e.into())
                }
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(anyhow::anyhow!("store write task failed: {e}")))?
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
            let matched = import_match(&mut tx, row).await?;
            let (outcome, written) = match import_step(row, matched.as_ref()) {
                ImportStep::Unchanged(id) => {
                    out.push(ImportOutcome::Updated(id));
                    continue;
                }
                ImportStep::Update(id, after) => (
                    ImportOutcome::Updated(id),
                    write_lead(&mut tx, id, &after, now, false).await,
                ),
                ImportStep::Create(id) => (
                    ImportOutcome::Created(id),
                    write_lead(&mut tx, id, &row.values, now, true).await,
                ),
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
        // One trip to SQLite's thread for the whole write (the hot path of every popup):
        // the user's next seq, the popup written once with it, and its replay event, in
        // one transaction. A closed popup with this key stops all three (nothing
        // changes, not even the seq); a failure rolls back before the lock is released.
        // anonymous parameters, bound in the order they appear across the statements
        let sql = format!(
            "BEGIN IMMEDIATE; \
             UPDATE users SET seq = seq + 1 WHERE id = ? AND NOT EXISTS (SELECT 1 FROM popups \
               WHERE connector_id = ? AND call_session_id = ? AND user_id = ? AND state NOT IN {OPEN_STATES}); \
             INSERT INTO popups (id, connector_id, call_session_id, user_id, lead_id, candidate_ids, new_lead, \
               opportunity_id, direction, lead_number, agent_number, virtual_number, tag, state, seq, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT seq FROM users WHERE id = ?), ?, ?) \
             ON CONFLICT (connector_id, call_session_id, user_id) DO UPDATE SET \
               lead_id = excluded.lead_id, candidate_ids = excluded.candidate_ids, \
               new_lead = (popups.new_lead OR excluded.new_lead), opportunity_id = excluded.opportunity_id, \
               direction = excluded.direction, lead_number = excluded.lead_number, \
               agent_number = excluded.agent_number, virtual_number = excluded.virtual_number, \
               tag = excluded.tag, seq = excluded.seq, updated_at = excluded.updated_at, \
               state = CASE WHEN popups.state = 'queued' THEN excluded.state ELSE popups.state END \
             WHERE popups.state IN {OPEN_STATES} \
             RETURNING *; \
             INSERT INTO events (user_id, seq, kind, popup_id, payload, created_at) \
             SELECT user_id, seq, CASE WHEN id = ? THEN 'popup' ELSE 'popup_update' END, id, NULL, ? \
             FROM popups WHERE connector_id = ? AND call_session_id = ? AND user_id = ? \
               AND state IN {OPEN_STATES} AND updated_at = ? AND seq = (SELECT seq FROM users WHERE id = ?); \
             COMMIT"
        );
        let (id, connector, session, user) = (
            new_id.to_string(),
            c.connector_id.to_string(),
            c.call_session_id.clone(),
            c.user_id.to_string(),
        );
        let query = sqlx::query(AssertSqlSafe(sql))
            // UPDATE users
            .bind(user.clone())
            .bind(connector.clone())
            .bind(session.clone())
            .bind(user.clone())
            // INSERT INTO popups
            .bind(id.clone())
            .bind(connector.clone())
            .bind(session.clone())
            .bind(user.clone())
            .bind(c.lead_id.to_string())
            .bind(to_json(&c.candidate_ids))
            .bind(c.new_lead)
            .bind(c.opportunity_id.map(|o| o.to_string()))
            .bind(c.direction.as_str())
            .bind(c.lead_number.clone())
            .bind(c.agent_number.clone())
            .bind(c.virtual_number.clone())
            .bind(c.tag.clone())
            .bind(if online { "delivered" } else { "queued" })
            .bind(user.clone())
            .bind(now.millis())
            .bind(now.millis())
            // INSERT INTO events
            .bind(id)
            .bind(now.millis())
            .bind(connector)
            .bind(session)
            .bind(user.clone())
            .bind(now.millis())
            .bind(user);
        let rows = self.write_batch(query).await?;
        let row = rows.into_iter().next();
        let Some(row) = row else {
            // disposed or expired: nothing changed, not even the user's seq
            let row = sqlx::query(
                "SELECT * FROM popups WHERE connector_id = ? AND call_session_id = ? AND user_id = ?",
            )
            .bind(c.connector_id.to_string())
            .bind(&c.call_session_id)
            .bind(c.user_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
            return Ok((popup_from_row(&row)?, PopupOutcome::Closed));
        };
        let record = popup_from_row(&row)?;
        let outcome = if record.id == new_id {
            PopupOutcome::Created
        } else {
            PopupOutcome::Updated
        };
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
        rows.iter().map(event_from_row).collect()
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

        for a in disposition_activities(d, lead.id) {
            insert_activity(&mut tx, a, now).await?;
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
        let items: Vec<_> = d
            .events
            .iter()
            .map(|e| (d.user_id, e.kind, Some(d.popup_id), Some(e.payload.clone())))
            .collect();
        let seqs = append_events(&mut tx, &items, now).await?;
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
            let (popup_id, user_id) = popup_owner_from_row(&r)?;
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
        let row = sqlx::query(
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
        let activity = activity_from_row(&row)?;
        let duplicate = activity.id != w.new_id;
        let items: Vec<_> = recipients
            .iter()
            .map(|(user, popup)| {
                (
                    *user,
                    "call_logged",
                    *popup,
                    Some(payload(*popup, &activity)),
                )
            })
            .collect();
        let seqs = append_events(&mut tx, &items, now).await?;
        let events = items
            .into_iter()
            .zip(seqs)
            .map(|((user_id, _, _, body), seq)| UserEvent {
                user_id,
                seq,
                payload: body.unwrap_or_default(),
            })
            .collect();
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
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.immediate().await?;
        // one statement per 500 rows (11 parameters a row, under SQLite's 32766): each
        // statement is one trip to SQLite's thread, and the write lock is held briefly
        for chunk in rows.chunks(500) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO telephony_logs (id, at, connector_id, endpoint, http_status, outcome, error_code, \
                 error_message, call_session_id, latency_us, request) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.id.to_string())
                    .push_bind(r.at.millis())
                    .push_bind(r.connector_id.map(|c| c.to_string()))
                    .push_bind(r.endpoint.clone())
                    .push_bind(i64::from(r.http_status))
                    .push_bind(r.outcome.clone())
                    .push_bind(r.error_code.clone())
                    .push_bind(r.error_message.clone())
                    .push_bind(r.call_session_id.clone())
                    .push_bind(r.latency_us)
                    .push_bind(to_json(&r.request));
            });
            qb.build().execute(&mut *tx).await?;
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
            return Ok(Some(click_to_call_wait(last, window_secs, c.at)));
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
        sqlx::query(
            "SELECT * FROM click_to_calls WHERE user_id = ? AND number = ? AND created_at >= ? ORDER BY created_at DESC LIMIT 1",
        )
        .bind(user.to_string())
        .bind(number.as_str())
        .bind(since.millis())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| click_to_call_from_row(&r, user, number))
        .transpose()
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
