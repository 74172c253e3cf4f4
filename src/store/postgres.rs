//! The PostgreSQL store (`store.url = postgres://…`), which every node of a cluster
//! shares. Where SQLite serialises a read-then-write under its one write lock, this
//! store takes the narrowest lock that makes the rule hold on every node: a row lock
//! (`UPDATE … RETURNING`, `SELECT … FOR UPDATE`), a transaction-scoped advisory lock on
//! a key (`pg_advisory_xact_lock`), or `FOR UPDATE SKIP LOCKED` for outbox claims.
//!
//! Lock order, so that concurrent transactions never wait on each other in a circle: a
//! user's row (its `seq`) before that user's popups, a popup before its lead; several
//! users or popups in id order. Rows others reference are locked `FOR NO KEY UPDATE`
//! (what an `UPDATE` of non-key columns takes), so inserting a row that references
//! them does not wait.
//!
//! The connector cache of the SQLite store is not used here: another node may change a
//! connector, and this node would not hear of it.

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
use super::{CallLoggedPayload, ExpiredPayload};
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
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

const OPEN_STATES: &str = "('queued','delivered','acked')";

/// Classes of the two-key advisory locks (`pg_advisory_xact_lock(class, hashtext(key))`).
/// The per-number lead lock uses the one-key form, a separate key space.
#[derive(Clone, Copy)]
#[repr(i32)]
enum LockClass {
    /// The default-connector rule (key: `connectors`).
    Connectors = 1,
    /// Lead imports, one batch at a time (key: `import`).
    Import = 2,
    /// The click-to-call rate rule (key: user id + lead id).
    ClickToCall = 3,
}

/// The PostgreSQL implementation of [`super::Store`].
pub struct PostgresStore {
    pool: PgPool,
    /// Connectors by access key; used only while [`PostgresStore::cache_live`] holds,
    /// i.e. while this node listens for the `utc_connectors` notifications that every
    /// connector write sends (a trigger), so another node's change clears it.
    connectors: Arc<super::cache::ConnectorCache>,
    cache_live: Arc<std::sync::atomic::AtomicBool>,
    /// Stops the listening task when the store is dropped.
    _listener: tokio_util::sync::DropGuard,
}

/// Listens for `utc_connectors` notifications and clears `cache` on each; while the
/// listening connection is down the cache is off (`live` false), since changes made
/// meanwhile would go unheard.
async fn run_connector_listener(
    pool: PgPool,
    cache: Arc<super::cache::ConnectorCache>,
    live: Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) {
    use std::sync::atomic::Ordering;
    loop {
        let listening = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen("utc_connectors").await?;
            Ok::<_, sqlx::Error>(l)
        };
        let listener = tokio::select! {
            () = stop.cancelled() => return,
            l = listening => l,
        };
        if let Ok(mut listener) = listener {
            cache.invalidate();
            live.store(true, Ordering::Release);
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(_)) => cache.invalidate(),
                    // the connection dropped: notifications may have been missed
                    Ok(None) | Err(_) => break,
                }
            }
        }
        live.store(false, Ordering::Release);
        cache.invalidate();
        tracing::warn!("not listening for connector changes: connector cache off until it is back");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Takes a transaction-scoped advisory lock.
async fn advisory_lock(conn: &mut PgConnection, class: LockClass, key: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(class as i32)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Locks these users' rows in id order (before appending events to several users).
async fn lock_users(conn: &mut PgConnection, users: &[UserId]) -> StoreResult<()> {
    let ids: Vec<String> = users.iter().map(ToString::to_string).collect();
    sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends an event for `user` inside a transaction; returns its `seq`. The `UPDATE`
/// locks the user's row until the transaction ends, so no other node hands out the same
/// `seq`.
async fn append_event(
    conn: &mut PgConnection,
    user: UserId,
    kind: &str,
    popup: Option<PopupId>,
    payload: Option<&serde_json::Value>,
    now: Timestamp,
) -> StoreResult<i64> {
    let seq: i64 = sqlx::query_scalar("UPDATE users SET seq = seq + 1 WHERE id = $1 RETURNING seq")
        .bind(user.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    sqlx::query("INSERT INTO events (user_id, seq, kind, popup_id, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
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
    conn: &mut PgConnection,
    id: LeadId,
    l: &LeadWrite,
    now: Timestamp,
    insert: bool,
) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO leads (id, first_name, last_name, email, phone, mobile, secondary_numbers, owner_id, \
         source, origin, stage, fields, external_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)"
    } else {
        "UPDATE leads SET first_name = $2, last_name = $3, email = $4, phone = $5, mobile = $6, \
         secondary_numbers = $7, owner_id = $8, source = $9, origin = $10, stage = $11, fields = $12, \
         external_id = $13, updated_at = $14 WHERE id = $1"
    };
    let res = sqlx::query(sql)
        .bind(id.to_string())
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
        .execute(&mut *conn)
        .await
        .map_err(lead_write_error)?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query("DELETE FROM lead_numbers WHERE lead_id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    let numbers: Vec<String> = lead_numbers(l).map(|n| n.as_str().to_owned()).collect();
    if !numbers.is_empty() {
        sqlx::query(
            "INSERT INTO lead_numbers (number, lead_id) SELECT n, $2 FROM UNNEST($1::text[]) AS n \
             ON CONFLICT DO NOTHING",
        )
        .bind(numbers)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The lead an import row updates (see [`super::Store::import_leads`]), locked until
/// the batch commits (the row is read, merged, then written); the email comparison
/// folds ASCII case only, as SQLite's `NOCASE` does.
async fn import_match(conn: &mut PgConnection, row: &LeadPatch) -> StoreResult<Option<Lead>> {
    if let Some(x) = import_external_id(row)
        && let Some(r) = sqlx::query("SELECT * FROM leads WHERE external_id = $1 FOR NO KEY UPDATE")
            .bind(x)
            .fetch_optional(&mut *conn)
            .await?
    {
        return lead_from_row(&r).map(Some);
    }
    let Some(email) = import_email(row) else {
        return Ok(None);
    };
    let found = sqlx::query(
        "SELECT * FROM leads WHERE utc_ascii_lower(email) = utc_ascii_lower($1) LIMIT 2 \
         FOR NO KEY UPDATE",
    )
    .bind(email)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(lead_from_row)
    .collect::<StoreResult<Vec<_>>>()?;
    Ok(import_email_match(row, found))
}

/// Locks the connector's row ([`StoreError::NotFound`] unless it exists).
async fn lock_connector(conn: &mut PgConnection, id: ConnectorId) -> StoreResult<()> {
    sqlx::query("SELECT id FROM connectors WHERE id = $1 FOR NO KEY UPDATE")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

/// Leads holding `number`, most recently updated first, then by id.
async fn select_by_number(
    conn: &mut PgConnection,
    number: &PhoneNumber,
    limit: u32,
) -> StoreResult<Vec<Lead>> {
    sqlx::query(
        "SELECT l.* FROM lead_numbers n JOIN leads l ON l.id = n.lead_id \
         WHERE n.number = $1 ORDER BY l.updated_at DESC, l.id LIMIT $2",
    )
    .bind(number.as_str())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(lead_from_row)
    .collect()
}

async fn fetch_lead(conn: &mut PgConnection, id: LeadId) -> StoreResult<Option<Lead>> {
    sqlx::query("SELECT * FROM leads WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| lead_from_row(&r))
        .transpose()
}

const USER_SELECT: &str = "SELECT u.id, u.name, u.email, u.group_ids, u.role, u.active, \
    u.provider_agent_ids, u.created_at, u.updated_at, \
    (SELECT COALESCE(json_agg(number ORDER BY position), '[]')::text FROM user_numbers WHERE user_id = u.id) AS numbers, \
    (SELECT COALESCE(json_agg(team_id ORDER BY team_id), '[]')::text FROM team_members WHERE user_id = u.id) AS team_ids \
    FROM users u";

const TEAM_SELECT: &str = "SELECT t.id, t.name, t.created_at, \
    (SELECT COALESCE(json_agg(user_id ORDER BY user_id), '[]')::text FROM team_members WHERE team_id = t.id) AS user_ids, \
    (SELECT COALESCE(json_agg(connector_id ORDER BY connector_id), '[]')::text FROM team_connectors WHERE team_id = t.id) AS connector_ids \
    FROM teams t";

/// SQL: whether the user `user` (a column or parameter) sees the connector `$2` (SPEC 1:
/// through a team assigned to it, or, in no team that has connectors, the default).
fn sees_connector(user: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM team_members tm JOIN team_connectors tc ON tc.team_id = tm.team_id \
                  WHERE tm.user_id = {user} AND tc.connector_id = $2) \
          OR (NOT EXISTS (SELECT 1 FROM team_members tm JOIN team_connectors tc ON tc.team_id = tm.team_id \
                          WHERE tm.user_id = {user}) \
              AND EXISTS (SELECT 1 FROM connectors WHERE id = $2 AND is_default)))"
    )
}

async fn fetch_user(conn: &mut PgConnection, id: UserId) -> StoreResult<Option<User>> {
    sqlx::query(AssertSqlSafe(format!("{USER_SELECT} WHERE u.id = $1")))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
}

async fn write_user(
    conn: &mut PgConnection,
    id: UserId,
    u: &UserWrite,
    now: Timestamp,
    insert: bool,
) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO users (id, name, email, email_lower, group_ids, role, active, provider_agent_ids, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
    } else {
        "UPDATE users SET name = $2, email = $3, email_lower = $4, group_ids = $5, role = $6, active = $7, \
         provider_agent_ids = $8, updated_at = $9 WHERE id = $1"
    };
    let res = sqlx::query(sql)
        .bind(id.to_string())
        .bind(&u.name)
        .bind(&u.email)
        .bind(u.email.to_lowercase())
        .bind(to_json(&u.group_ids))
        .bind(u.role.as_str())
        .bind(u.active)
        .bind(to_json(&u.provider_agent_ids))
        .bind(now.millis())
        .execute(&mut *conn)
        .await
        .map_err(user_write_error)?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    for table in ["user_numbers", "team_members"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE user_id = $1"
        )))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    for (i, n) in u.phone_numbers.iter().enumerate() {
        sqlx::query("INSERT INTO user_numbers (number, user_id, position) VALUES ($1, $2, $3)")
            .bind(n.as_str())
            .bind(id.to_string())
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .execute(&mut *conn)
            .await
            .map_err(|e| user_number_error(e, i))?;
    }
    for (i, t) in u.team_ids.iter().enumerate() {
        sqlx::query(
            "INSERT INTO team_members (team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(t.to_string())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| team_ref_error(e, i))?;
    }
    Ok(())
}

async fn insert_activity(
    conn: &mut PgConnection,
    a: NewActivity<'_>,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO activities (id, kind, lead_id, opportunity_id, user_id, connector_id, call_session_id, \
         status, notes, data, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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

/// A telephony-log text as PostgreSQL can store it: TEXT cannot hold NUL, and one row
/// with a NUL (a provider's junk call session id) must not lose the whole batch. The
/// JSON `request` needs nothing: JSON text escapes NUL.
fn log_text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// Maps a store failure inside a dispose.
fn db(e: sqlx::Error) -> DisposeError {
    DisposeError::Store(e.into())
}

impl PostgresStore {
    /// Connects a pool to the database at `url` (`postgres://…` or `postgresql://…`) and
    /// migrates it (the migrator holds an advisory lock, so nodes starting together
    /// migrate once).
    ///
    /// # Errors
    /// The URL cannot be read, or the database cannot be reached or migrated.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // the URL may hold a password: it is never part of an error
        let opts = PgConnectOptions::from_str(url)
            .context("store.url is not a valid PostgreSQL URL")?
            .application_name("utc-gateway");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .context("connecting to the PostgreSQL store")?;
        let migrator = embedded_migrator(&[
            (
                1,
                "init",
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "sso",
                include_str!("../../migrations/postgres/0002_sso.sql"),
            ),
            (
                3,
                "click_to_call",
                include_str!("../../migrations/postgres/0003_click_to_call.sql"),
            ),
            (
                4,
                "outbox",
                include_str!("../../migrations/postgres/0004_outbox.sql"),
            ),
            (
                5,
                "connector_notify",
                include_str!("../../migrations/postgres/0005_connector_notify.sql"),
            ),
        ]);
        migrator
            .run(&pool)
            .await
            .context("migrating the PostgreSQL database")?;
        let connectors = Arc::new(super::cache::ConnectorCache::default());
        let cache_live = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(run_connector_listener(
            pool.clone(),
            connectors.clone(),
            cache_live.clone(),
            stop.clone(),
        ));
        Ok(Self {
            pool,
            connectors,
            cache_live,
            _listener: stop.drop_guard(),
        })
    }

    /// Runs a list query newest first after the page's cursor and builds the page.
    async fn fetch_page<T: super::Paged>(
        &self,
        mut qb: QueryBuilder<Postgres>,
        page: &PageRequest,
        (at_col, id_col): (&str, &str),
        map: fn(&PgRow) -> StoreResult<T>,
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

    async fn delete_by_id(&self, table: &str, id: String) -> StoreResult<()> {
        let n = sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE id = $1")))
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
impl super::Store for PostgresStore {
    async fn probe(&self) -> StoreResult<()> {
        sqlx::query("INSERT INTO secrets (name, value) VALUES ('probe', $1) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value")
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
        let inserted = sqlx::query(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let value: String = sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok((value, inserted))
    }

    async fn create_connector(&self, c: NewConnector) -> StoreResult<Connector> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        advisory_lock(&mut tx, LockClass::Connectors, "connectors").await?;
        sqlx::query(
            "INSERT INTO connectors (id, name, kind, access_key, secret_key, settings, is_default, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NOT EXISTS (SELECT 1 FROM connectors WHERE is_default), $7, $7)",
        )
        .bind(c.id.to_string())
        .bind(&c.settings.name)
        .bind(c.kind.as_str())
        .bind(&c.access_key)
        .bind(&c.secret_key)
        .bind(settings_json(&c.settings))
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_connector(c.id).await?.ok_or(StoreError::NotFound)
    }

    async fn list_connectors(&self, page: &PageRequest) -> StoreResult<Page<Connector>> {
        let qb = QueryBuilder::<Postgres>::new("SELECT * FROM connectors WHERE 1 = 1");
        self.fetch_page(qb, page, ("created_at", "id"), connector_from_row)
            .await
    }

    async fn get_connector(&self, id: ConnectorId) -> StoreResult<Option<Connector>> {
        self.fetch_connector("SELECT * FROM connectors WHERE id = $1", id.to_string())
            .await
    }

    async fn connector_by_access_key(&self, key: &str) -> StoreResult<Option<Connector>> {
        let live = self.cache_live.load(std::sync::atomic::Ordering::Acquire);
        if live && let Some(c) = self.connectors.get(key) {
            return Ok(Some(c));
        }
        let generation = self.connectors.generation();
        let found = self
            .fetch_connector(
                "SELECT * FROM connectors WHERE access_key = $1",
                key.to_owned(),
            )
            .await?;
        if let Some(c) = &found
            && live
        {
            self.connectors.fill(generation, c);
        }
        Ok(found)
    }

    async fn update_connector(
        &self,
        id: ConnectorId,
        s: &ConnectorSettings,
    ) -> StoreResult<Connector> {
        let updated = sqlx::query(
            "UPDATE connectors SET name = $1, settings = $2, updated_at = $3 WHERE id = $4 RETURNING *",
        )
        .bind(&s.name)
        .bind(settings_json(s))
        .bind(Timestamp::now().millis())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        // this node at once; the others when the trigger's notification reaches them
        self.connectors.invalidate();
        updated
            .map(|r| connector_from_row(&r))
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_connector(&self, id: ConnectorId) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        advisory_lock(&mut tx, LockClass::Connectors, "connectors").await?;
        let was_default: Option<bool> =
            sqlx::query_scalar("DELETE FROM connectors WHERE id = $1 RETURNING is_default")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        match was_default {
            None => return Err(StoreError::NotFound),
            Some(true) => {
                sqlx::query(
                    "UPDATE connectors SET is_default = TRUE WHERE id = \
                     (SELECT id FROM connectors ORDER BY created_at, ord LIMIT 1)",
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
        let mut tx = self.pool.begin().await?;
        let copied = sqlx::query(
            "INSERT INTO connectors (id, name, kind, access_key, secret_key, settings, is_default, created_at, updated_at) \
             SELECT $1, $2, kind, $3, $4, settings, FALSE, $5, $5 FROM connectors WHERE id = $6",
        )
        .bind(new.id.to_string())
        .bind(&new.settings.name)
        .bind(&new.access_key)
        .bind(&new.secret_key)
        .bind(now.millis())
        .bind(from.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if copied == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("INSERT INTO team_connectors (team_id, connector_id) SELECT team_id, $1 FROM team_connectors WHERE connector_id = $2")
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
        let mut tx = self.pool.begin().await?;
        advisory_lock(&mut tx, LockClass::Connectors, "connectors").await?;
        lock_connector(&mut tx, id).await?;
        // clear first: the unique index allows one default at any time
        sqlx::query("UPDATE connectors SET is_default = FALSE WHERE is_default AND id <> $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE connectors SET is_default = TRUE WHERE id = $1")
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
        let rotated = sqlx::query(
            "UPDATE connectors SET access_key = $1, secret_key = $2, updated_at = $3 WHERE id = $4 RETURNING *",
        )
        .bind(access_key)
        .bind(secret_key)
        .bind(Timestamp::now().millis())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        self.connectors.invalidate();
        rotated
            .map(|r| connector_from_row(&r))
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn set_connector_teams(&self, id: ConnectorId, teams: &[TeamId]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        lock_connector(&mut tx, id).await?;
        sqlx::query("DELETE FROM team_connectors WHERE connector_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        for (i, t) in teams.iter().enumerate() {
            sqlx::query(
                "INSERT INTO team_connectors (team_id, connector_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
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
        let res = sqlx::query("INSERT INTO virtual_numbers (id, connector_id, number, tag, created_at) VALUES ($1, $2, $3, $4, $5)")
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
            "SELECT * FROM virtual_numbers WHERE connector_id = $1 ORDER BY created_at, ord",
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
            "UPDATE virtual_numbers SET tag = $1 WHERE id = $2 AND connector_id = $3 RETURNING *",
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
        let n = sqlx::query("DELETE FROM virtual_numbers WHERE id = $1 AND connector_id = $2")
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
        sqlx::query("SELECT * FROM virtual_numbers WHERE number = $1")
            .bind(number.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| vn_from_row(&r))
            .transpose()
    }

    async fn create_team(&self, id: TeamId, name: &str) -> StoreResult<Team> {
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id.to_string())
            .bind(name)
            .bind(Timestamp::now().millis())
            .execute(&self.pool)
            .await?;
        self.get_team(id).await?.ok_or(StoreError::NotFound)
    }

    async fn list_teams(&self, page: &PageRequest) -> StoreResult<Page<Team>> {
        let qb = QueryBuilder::<Postgres>::new(format!("{TEAM_SELECT} WHERE 1 = 1"));
        self.fetch_page(qb, page, ("t.created_at", "t.id"), team_from_row)
            .await
    }

    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>> {
        sqlx::query(AssertSqlSafe(format!("{TEAM_SELECT} WHERE t.id = $1")))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| team_from_row(&r))
            .transpose()
    }

    async fn rename_team(&self, id: TeamId, name: &str) -> StoreResult<Team> {
        let n = sqlx::query("UPDATE teams SET name = $1 WHERE id = $2")
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
        let mut tx = self.pool.begin().await?;
        write_user(&mut tx, id, u, Timestamp::now(), true).await?;
        let user = fetch_user(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(user)
    }

    async fn list_users(&self, page: &PageRequest) -> StoreResult<Page<User>> {
        let qb = QueryBuilder::<Postgres>::new(format!("{USER_SELECT} WHERE 1 = 1"));
        self.fetch_page(qb, page, ("u.created_at", "u.id"), user_from_row)
            .await
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let mut conn = self.pool.acquire().await?;
        fetch_user(&mut conn, id).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        sqlx::query(AssertSqlSafe(format!(
            "{USER_SELECT} WHERE u.email_lower = $1"
        )))
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
    }

    async fn user_by_number(&self, number: &str) -> StoreResult<Option<User>> {
        sqlx::query(AssertSqlSafe(format!(
            "{USER_SELECT} WHERE u.id = (SELECT user_id FROM user_numbers WHERE number = $1)"
        )))
        .bind(number)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
    }

    async fn update_user(&self, id: UserId, u: &UserWrite) -> StoreResult<User> {
        let mut tx = self.pool.begin().await?;
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
            UserKey::Id(id) => ("u.id = $1", id.to_string()),
            UserKey::Number(n) => (
                "u.id = (SELECT user_id FROM user_numbers WHERE number = $1)",
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
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT {}",
            sees_connector("$1::text")
        )))
        .bind(user.to_string())
        .bind(connector.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn visible_connectors(&self, user: UserId) -> StoreResult<Vec<Connector>> {
        sqlx::query(
            "SELECT c.* FROM connectors c WHERE c.id IN \
               (SELECT tc.connector_id FROM team_members tm JOIN team_connectors tc ON tc.team_id = tm.team_id WHERE tm.user_id = $1) \
             OR (c.is_default AND NOT EXISTS \
               (SELECT 1 FROM team_members tm JOIN team_connectors tc ON tc.team_id = tm.team_id WHERE tm.user_id = $1)) \
             ORDER BY c.created_at, c.ord",
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
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        for r in sqlx::query("SELECT id, name FROM users WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?
        {
            let id: String = r.try_get("id")?;
            out.insert(
                parse_id(&id, "users.id", UserId::parse)?,
                r.try_get("name")?,
            );
        }
        Ok(out)
    }

    async fn create_lead(&self, id: LeadId, l: &LeadWrite) -> StoreResult<Lead> {
        let mut tx = self.pool.begin().await?;
        write_lead(&mut tx, id, l, Timestamp::now(), true).await?;
        let lead = fetch_lead(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(lead)
    }

    async fn list_leads(&self, filter: &LeadFilter, page: &PageRequest) -> StoreResult<Page<Lead>> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT l.* FROM leads l WHERE 1 = 1");
        match filter {
            LeadFilter::All => {}
            LeadFilter::Number(n) => {
                qb.push(" AND l.id IN (SELECT lead_id FROM lead_numbers WHERE number = ")
                    .push_bind(n.as_str().to_owned())
                    .push(")");
            }
            LeadFilter::Prefix(p) => {
                // SQLite's LIKE folds ASCII case only; so does utc_ascii_lower
                let escaped = p
                    .to_ascii_lowercase()
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                let pattern = format!("{escaped}%");
                qb.push(" AND (utc_ascii_lower(l.first_name) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR utc_ascii_lower(l.last_name) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR utc_ascii_lower(l.email) LIKE ")
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
        let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let found: BTreeMap<LeadId, Lead> = sqlx::query("SELECT * FROM leads WHERE id = ANY($1)")
            .bind(keys)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| lead_from_row(r).map(|l| (l.id, l)))
            .collect::<StoreResult<_>>()?;
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    async fn update_lead(&self, id: LeadId, l: &LeadWrite) -> StoreResult<Lead> {
        let mut tx = self.pool.begin().await?;
        write_lead(&mut tx, id, l, Timestamp::now(), false).await?;
        let lead = fetch_lead(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(lead)
    }

    async fn delete_lead(&self, id: LeadId) -> StoreResult<()> {
        self.delete_by_id("leads", id.to_string()).await
    }

    async fn import_leads(&self, rows: &[LeadPatch]) -> StoreResult<Vec<ImportOutcome>> {
        let mut tx = self.pool.begin().await?;
        // batches are matched and written one at a time, as under SQLite's write lock
        advisory_lock(&mut tx, LockClass::Import, "import").await?;
        let now = Timestamp::now();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let matched = import_match(&mut tx, row).await?;
            let (outcome, id, write, insert) = match import_step(row, matched.as_ref()) {
                ImportStep::Unchanged(id) => {
                    out.push(ImportOutcome::Updated(id));
                    continue;
                }
                ImportStep::Update(id, after) => {
                    (ImportOutcome::Updated(id), id, Cow::Owned(*after), false)
                }
                ImportStep::Create(id) => (
                    ImportOutcome::Created(id),
                    id,
                    Cow::Borrowed(&row.values),
                    true,
                ),
            };
            // A failed statement aborts a PostgreSQL transaction: each row writes under
            // a savepoint, so a refused row is undone alone and the batch goes on.
            let mut sp = sqlx::Connection::begin(&mut *tx).await?;
            let written = write_lead(&mut sp, id, &write, now, insert).await;
            out.push(match written {
                Ok(()) => {
                    sp.commit().await?;
                    outcome
                }
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(refused) => {
                    sp.rollback().await?;
                    ImportOutcome::Refused(refused)
                }
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
            "SELECT * FROM opportunities WHERE lead_id = $1 AND status = 'open' ORDER BY updated_at DESC, id LIMIT 1",
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
        // Fast path without the lock: most callers are known.
        let mut conn = self.pool.acquire().await?;
        let found = select_by_number(&mut conn, number, limit).await?;
        drop(conn);
        if !found.is_empty() {
            return Ok((found, false));
        }
        // One lock per number on every node (DESIGN.md); in READ COMMITTED the lookup
        // after the lock sees a lead the previous holder committed.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(number.as_str())
            .execute(&mut *tx)
            .await?;
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
        let row = sqlx::query(
            "INSERT INTO opportunities (id, lead_id, name, owner_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING *",
        )
        .bind(id.to_string())
        .bind(o.lead_id.to_string())
        .bind(&o.name)
        .bind(o.owner_id.map(|u| u.to_string()))
        .bind(o.status.as_str())
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await
        .map_err(opportunity_write_error)?;
        opportunity_from_row(&row)
    }

    async fn list_opportunities(
        &self,
        lead: Option<LeadId>,
        page: &PageRequest,
    ) -> StoreResult<Page<Opportunity>> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM opportunities WHERE 1 = 1");
        if let Some(l) = lead {
            qb.push(" AND lead_id = ").push_bind(l.to_string());
        }
        self.fetch_page(qb, page, ("created_at", "id"), opportunity_from_row)
            .await
    }

    async fn get_opportunity(&self, id: OpportunityId) -> StoreResult<Option<Opportunity>> {
        sqlx::query("SELECT * FROM opportunities WHERE id = $1")
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
        let row = sqlx::query("UPDATE opportunities SET lead_id = $1, name = $2, owner_id = $3, status = $4, updated_at = $5 WHERE id = $6 RETURNING *")
            .bind(o.lead_id.to_string())
            .bind(&o.name)
            .bind(o.owner_id.map(|u| u.to_string()))
            .bind(o.status.as_str())
            .bind(Timestamp::now().millis())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(opportunity_write_error)?
            .ok_or(StoreError::NotFound)?;
        opportunity_from_row(&row)
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
            "SELECT * FROM activities WHERE lead_id = $1 AND kind IN ('inbound_call', 'outbound_call') \
             ORDER BY created_at DESC, id DESC LIMIT $2",
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
        // One statement, one round trip, atomic: the user's next seq (locking the user's
        // row first, as every writer does), the popup written once with it, and its
        // replay event. A closed popup with this key stops all three: nothing changes,
        // not even the seq.
        let row = sqlx::query(AssertSqlSafe(format!(
            "WITH s AS ( \
               UPDATE users SET seq = seq + 1 WHERE id = $4 AND NOT EXISTS (SELECT 1 FROM popups \
                 WHERE connector_id = $2 AND call_session_id = $3 AND user_id = $4 AND state NOT IN {OPEN_STATES}) \
               RETURNING seq \
             ), p AS ( \
               INSERT INTO popups (id, connector_id, call_session_id, user_id, lead_id, candidate_ids, new_lead, \
                 opportunity_id, direction, lead_number, agent_number, virtual_number, tag, state, seq, created_at, updated_at) \
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, s.seq, $15, $15 FROM s \
               ON CONFLICT (connector_id, call_session_id, user_id) DO UPDATE SET \
                 lead_id = EXCLUDED.lead_id, candidate_ids = EXCLUDED.candidate_ids, \
                 new_lead = (popups.new_lead OR EXCLUDED.new_lead), opportunity_id = EXCLUDED.opportunity_id, \
                 direction = EXCLUDED.direction, lead_number = EXCLUDED.lead_number, \
                 agent_number = EXCLUDED.agent_number, virtual_number = EXCLUDED.virtual_number, \
                 tag = EXCLUDED.tag, seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at, \
                 state = CASE WHEN popups.state = 'queued' THEN EXCLUDED.state ELSE popups.state END \
               WHERE popups.state IN {OPEN_STATES} \
               RETURNING * \
             ), e AS ( \
               INSERT INTO events (user_id, seq, kind, popup_id, payload, created_at) \
               SELECT p.user_id, p.seq, CASE WHEN p.id = $1 THEN 'popup' ELSE 'popup_update' END, p.id, NULL, $15 \
               FROM p \
             ) \
             SELECT * FROM p"
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
        .bind(now.millis())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            // disposed or expired (or the user is gone): nothing changed
            let row = sqlx::query(
                "SELECT * FROM popups WHERE connector_id = $1 AND call_session_id = $2 AND user_id = $3",
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
        sqlx::query("SELECT * FROM popups WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| popup_from_row(&r))
            .transpose()
    }

    async fn open_popups(&self, user: UserId) -> StoreResult<Vec<PopupRecord>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT * FROM popups WHERE user_id = $1 AND state IN {OPEN_STATES} ORDER BY created_at, id"
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
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        // rows locked in id order, as expiry locks them
        sqlx::query(
            "UPDATE popups SET state = 'delivered' WHERE state = 'queued' AND id IN \
             (SELECT id FROM popups WHERE id = ANY($1) AND state = 'queued' ORDER BY id FOR UPDATE)",
        )
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn ack_popup(&self, user: UserId, id: PopupId) -> StoreResult<bool> {
        Ok(sqlx::query("UPDATE popups SET state = 'acked' WHERE id = $1 AND user_id = $2 AND state IN ('queued', 'delivered')")
            .bind(id.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    async fn current_seq(&self, user: UserId) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT seq FROM users WHERE id = $1")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn events_since(&self, user: UserId, after: i64) -> StoreResult<Vec<StoredEvent>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT e.seq, e.kind, e.popup_id, e.payload FROM events e LEFT JOIN popups p ON p.id = e.popup_id \
             WHERE e.user_id = $1 AND e.seq > $2 AND (e.payload IS NOT NULL OR p.state IN {OPEN_STATES}) \
             ORDER BY e.seq"
        )))
        .bind(user.to_string())
        .bind(after)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn dispose(&self, d: &DispositionWrite) -> Result<Vec<i64>, DisposeError> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // the user's row before the popup's (lock order; the events need it anyway)
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(d.user_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let changed = sqlx::query(AssertSqlSafe(format!(
            "UPDATE popups SET state = 'disposed', lead_id = $1, updated_at = $2 \
             WHERE id = $3 AND user_id = $4 AND state IN {OPEN_STATES}"
        )))
        .bind(d.disposition.lead_id.to_string())
        .bind(now.millis())
        .bind(d.popup_id.to_string())
        .bind(d.user_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if changed == 0 {
            let owner: Option<String> =
                sqlx::query_scalar("SELECT user_id FROM popups WHERE id = $1")
                    .bind(d.popup_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            return Err(if owner == Some(d.user_id.to_string()) {
                DisposeError::AlreadyDisposed
            } else {
                DisposeError::NotFound
            });
        }
        // read-modify-write of the lead under its row lock
        let lead = sqlx::query("SELECT * FROM leads WHERE id = $1 FOR NO KEY UPDATE")
            .bind(d.disposition.lead_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .map(|r| lead_from_row(&r))
            .transpose()?
            .ok_or(DisposeError::NotFound)?;
        let mut write = LeadWrite::from(&lead);
        apply_lead_writes(&mut write, &d.disposition.writes);
        write_lead(&mut tx, lead.id, &write, now, false).await?;
        for a in disposition_activities(d, lead.id) {
            insert_activity(&mut tx, a, now).await?;
        }
        if let Some(o) = &d.outbox {
            sqlx::query(
                "INSERT INTO outbox (id, connector_id, kind, status, next_attempt_at, age_from, created_at, request, timeout_ms) \
                 VALUES ($1, $2, $3, 'pending', $4, $4, $4, $5, $6)",
            )
            .bind(o.id.to_string())
            .bind(o.connector_id.to_string())
            .bind(o.kind)
            .bind(now.millis())
            .bind(to_json(&o.request))
            .bind(i64::try_from(o.request.timeout_ms).unwrap_or(i64::MAX / 4))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
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
        tx.commit().await.map_err(db)?;
        Ok(seqs)
    }

    async fn expire_popups(
        &self,
        queued_before: Timestamp,
        open_before: Timestamp,
        payload: ExpiredPayload,
    ) -> StoreResult<Vec<ExpiredPopup>> {
        let due = format!(
            "((state = 'queued' AND created_at < $1) OR (state IN {OPEN_STATES} AND created_at < $2))"
        );
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let users: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT user_id FROM popups WHERE {due}"
        )))
        .bind(queued_before.millis())
        .bind(open_before.millis())
        .fetch_all(&mut *tx)
        .await?;
        if users.is_empty() {
            return Ok(Vec::new());
        }
        // users' rows, then their popups (lock order); a popup that turns due meanwhile
        // waits for the next run
        let user_ids = users
            .iter()
            .map(|u| parse_id(u, "popups.user_id", UserId::parse))
            .collect::<StoreResult<Vec<_>>>()?;
        lock_users(&mut tx, &user_ids).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE popups SET state = 'expired', updated_at = $3 WHERE id IN \
             (SELECT id FROM popups WHERE user_id = ANY($4) AND {due} ORDER BY id FOR UPDATE) \
             RETURNING id, user_id"
        )))
        .bind(queued_before.millis())
        .bind(open_before.millis())
        .bind(now.millis())
        .bind(users)
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
        sqlx::query("SELECT * FROM popups WHERE connector_id = $1 AND call_session_id = $2 ORDER BY updated_at DESC, id")
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
        payload: CallLoggedPayload,
    ) -> StoreResult<(Activity, bool, Vec<UserEvent>)> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        // A second log of the session (on any node) waits here for the first to commit,
        // then merges into its row.
        let row = sqlx::query(
            "INSERT INTO activities (id, kind, lead_id, opportunity_id, user_id, connector_id, call_session_id, \
               status, started_at, ended_at, duration_secs, recording_url, notes, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (connector_id, call_session_id) \
               WHERE kind IN ('inbound_call', 'outbound_call') AND call_session_id IS NOT NULL \
             DO UPDATE SET \
               opportunity_id = COALESCE(EXCLUDED.opportunity_id, activities.opportunity_id), \
               user_id = COALESCE(EXCLUDED.user_id, activities.user_id), \
               status = EXCLUDED.status, started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, \
               duration_secs = EXCLUDED.duration_secs, \
               recording_url = COALESCE(EXCLUDED.recording_url, activities.recording_url), \
               notes = COALESCE(EXCLUDED.notes, activities.notes), \
               data = utc_json_patch(activities.data::jsonb, EXCLUDED.data::jsonb)::text \
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
        let users: Vec<UserId> = recipients.iter().map(|(u, _)| *u).collect();
        lock_users(&mut tx, &users).await?;
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
            "DELETE FROM events WHERE created_at < $1 AND NOT EXISTS \
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
        let mut tx = self.pool.begin().await?;
        // 11 parameters a row, well under PostgreSQL's 65535 a statement
        for chunk in rows.chunks(1000) {
            let mut qb = QueryBuilder::<Postgres>::new(
                "INSERT INTO telephony_logs (id, at, connector_id, endpoint, http_status, outcome, error_code, \
                 error_message, call_session_id, latency_us, request) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.id.to_string())
                    .push_bind(r.at.millis())
                    .push_bind(r.connector_id.map(|c| c.to_string()))
                    .push_bind(log_text(&r.endpoint))
                    .push_bind(i64::from(r.http_status))
                    .push_bind(log_text(&r.outcome))
                    .push_bind(r.error_code.as_deref().map(log_text))
                    .push_bind(r.error_message.as_deref().map(log_text))
                    .push_bind(r.call_session_id.as_deref().map(log_text))
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
        let mut tx = self.pool.begin().await?;
        advisory_lock(
            &mut tx,
            LockClass::ClickToCall,
            &format!("{}:{}", c.user_id, c.lead_id),
        )
        .await?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(created_at) FROM click_to_calls WHERE user_id = $1 AND lead_id = $2 AND created_at > $3",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            "SELECT * FROM click_to_calls WHERE user_id = $1 AND number = $2 AND created_at >= $3 ORDER BY created_at DESC LIMIT 1",
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
            "SELECT team_id FROM team_connectors WHERE connector_id = $1 ORDER BY team_id",
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
        sqlx::query("DELETE FROM sso_keys WHERE expires_at < $1")
            .bind(Timestamp::now().plus_secs(-3600).millis())
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO sso_keys (key_hash, user_id, expires_at) VALUES ($1, $2, $3)")
            .bind(key_hash)
            .bind(user.to_string())
            .bind(expires_at.millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn consume_sso_key(&self, key_hash: &str, now: Timestamp) -> StoreResult<Option<UserId>> {
        let user: Option<String> = sqlx::query_scalar(
            "UPDATE sso_keys SET used_at = $1 WHERE key_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
        )
        .bind(now.millis())
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        opt_id(user, "sso_keys.user_id", UserId::parse)
    }

    async fn list_outbox(
        &self,
        status: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<OutboxItem>> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM outbox WHERE 1 = 1");
        if let Some(s) = status {
            qb.push(" AND status = ").push_bind(s.to_owned());
        }
        self.fetch_page(qb, page, ("created_at", "id"), outbox_from_row)
            .await
    }

    async fn outbox_due_connectors(&self, now: Timestamp) -> StoreResult<Vec<ConnectorId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT connector_id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND (locked_until IS NULL OR locked_until < $1)",
        )
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
        // SKIP LOCKED: an item another node is claiming is left to it; one it claimed
        // and committed no longer matches (READ COMMITTED re-checks a locked row)
        sqlx::query(
            "UPDATE outbox SET locked_until = $1 + timeout_ms, attempts = attempts + 1 WHERE id IN \
               (SELECT id FROM outbox WHERE connector_id = $2 AND status = 'pending' AND next_attempt_at <= $3 \
                AND (locked_until IS NULL OR locked_until < $3) ORDER BY next_attempt_at, id LIMIT $4 \
                FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(now.plus_secs(lock_secs).millis())
        .bind(connector.to_string())
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
        let q = match result {
            OutboxResult::Delivered => sqlx::query(
                "UPDATE outbox SET status = 'delivered', delivered_at = $2, locked_until = NULL, last_error = NULL WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(now.millis()),
            OutboxResult::Retry(at, why) => sqlx::query(
                "UPDATE outbox SET next_attempt_at = $2, locked_until = NULL, last_error = $3 WHERE id = $1 AND status = 'pending'",
            )
            .bind(id.to_string())
            .bind(at.millis())
            .bind(why.clone()),
            OutboxResult::Failed(why) => sqlx::query(
                "UPDATE outbox SET status = 'failed', locked_until = NULL, last_error = $2 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(why.clone()),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    async fn expire_outbox(&self, before: Timestamp, now: Timestamp) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE outbox SET status = 'failed', last_error = COALESCE(last_error, '') || ' (maximum age reached)' \
             WHERE status = 'pending' AND age_from < $1 AND (locked_until IS NULL OR locked_until < $2)",
        )
        .bind(before.millis())
        .bind(now.millis())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn retry_outbox(&self, id: OutboxId, now: Timestamp) -> StoreResult<OutboxItem> {
        sqlx::query(
            "UPDATE outbox SET status = 'pending', next_attempt_at = $1, age_from = $1, locked_until = NULL \
             WHERE id = $2 AND status <> 'delivered' RETURNING *",
        )
        .bind(now.millis())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| outbox_from_row(&r))
        .transpose()?
        .ok_or(StoreError::NotFound)
    }

    async fn fail_connector_outbox(&self, connector: ConnectorId, why: &str) -> StoreResult<u64> {
        Ok(sqlx::query("UPDATE outbox SET status = 'failed', last_error = $1 WHERE connector_id = $2 AND status = 'pending'")
            .bind(why)
            .bind(connector.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn prune_telephony_logs(&self, before: Timestamp, max_rows: u64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let old = sqlx::query("DELETE FROM telephony_logs WHERE at < $1")
            .bind(before.millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let over = sqlx::query(
            "DELETE FROM telephony_logs WHERE id IN \
             (SELECT id FROM telephony_logs ORDER BY at DESC, id DESC OFFSET $1)",
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
