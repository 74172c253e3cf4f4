//! Persistence: the [`Store`] trait and its implementations. The store is the truth for
//! popups, `seq`, generated secrets and idempotency; uniqueness is enforced by the
//! database (unique indexes, guarded updates), never by check-then-insert.

pub mod cache;
mod common;
mod engine;
pub mod postgres;
pub mod sqlite;

use crate::domain::call::Direction;
use crate::domain::connector::{Connector, ConnectorKind, ConnectorSettings};
use crate::domain::disposition::Disposition;
use crate::domain::ids::{
    ActivityId, ConnectorId, LeadId, OpportunityId, PopupId, TeamId, TelephonyLogId, UserId,
    VirtualNumberId,
};
use crate::domain::lead::{Activity, ActivityKind, Lead, Opportunity, OpportunityStatus};
use crate::domain::phone::{AgentNumber, PhoneNumber};
use crate::domain::time::Timestamp;
use crate::domain::user::{Role, Team, User};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Store failures the callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A unique rule was violated; `code` is the API error code, `field` the input field.
    #[error("conflict: {code}")]
    Conflict {
        /// e.g. `email_in_use`.
        code: &'static str,
        /// The input field at fault.
        field: String,
    },
    /// A referenced row does not exist (e.g. an unknown team id in a user).
    #[error("unknown reference in {field}")]
    UnknownReference {
        /// The input field at fault.
        field: String,
    },
    /// The database failed; nothing was committed.
    #[error("store unavailable")]
    Unavailable(#[source] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Unavailable(e.into())
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;

/// Position after the last item of a page: newest-first keyset pagination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The last item's time (ms).
    pub at: i64,
    /// The last item's id.
    pub id: String,
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at, self.id))
    }

    /// Reads the opaque text form.
    pub fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (at, id) = text.split_once(':')?;
        Some(Self {
            at: at.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// Which page of a list.
#[derive(Clone, Debug)]
pub struct PageRequest {
    /// At most this many items (1..=500).
    pub limit: u32,
    /// Continue after this item.
    pub cursor: Option<Cursor>,
}

/// One page of a list.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// Items, newest first.
    pub items: Vec<T>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<String>,
}

/// An item of a newest-first list: where a page after it starts.
pub trait Paged {
    /// The item's position.
    fn cursor(&self) -> Cursor;
}

macro_rules! paged_by {
    ($($t:ty => $at:ident),* $(,)?) => {$(
        impl Paged for $t {
            fn cursor(&self) -> Cursor {
                Cursor { at: self.$at.millis(), id: self.id.to_string() }
            }
        }
    )*};
}

paged_by! {
    OutboxItem => created_at,
    Connector => created_at,
    User => created_at,
    Team => created_at,
    Lead => created_at,
    Opportunity => created_at,
    Activity => created_at,
    TelephonyLogRow => at,
}

impl<T: Paged> Page<T> {
    /// Builds a page from `limit + 1` fetched items.
    pub fn from_fetched(mut items: Vec<T>, limit: u32) -> Self {
        let limit = limit as usize;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|i| i.cursor().encode())
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

/// A connector to create.
pub struct NewConnector {
    /// Its id.
    pub id: ConnectorId,
    /// Its format.
    pub kind: ConnectorKind,
    /// Generated access key.
    pub access_key: String,
    /// Generated secret key.
    pub secret_key: String,
    /// Its settings.
    pub settings: ConnectorSettings,
}

/// A virtual number owned by a connector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VirtualNumber {
    /// Its id.
    pub id: VirtualNumberId,
    /// E.164.
    pub number: PhoneNumber,
    /// Optional tag (a new lead's origin).
    pub tag: Option<String>,
    /// Its owner.
    pub connector_id: ConnectorId,
    /// When it was added.
    pub created_at: Timestamp,
}

/// Every writable field of a user (create and full update).
#[derive(Clone, Debug)]
pub struct UserWrite {
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Numbers and extensions.
    pub phone_numbers: Vec<AgentNumber>,
    /// Teams.
    pub team_ids: Vec<TeamId>,
    /// Provider groups.
    pub group_ids: Vec<String>,
    /// Role.
    pub role: Role,
    /// Active flag.
    pub active: bool,
    /// Provider agent id per connector id.
    pub provider_agent_ids: BTreeMap<String, String>,
}

/// Every writable field of a lead (create and full update).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeadWrite {
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<PhoneNumber>,
    /// Mobile.
    pub mobile: Option<PhoneNumber>,
    /// Further numbers.
    pub secondary_numbers: Vec<PhoneNumber>,
    /// Owner.
    pub owner_id: Option<UserId>,
    /// Source.
    pub source: Option<String>,
    /// Origin.
    pub origin: Option<String>,
    /// Stage.
    pub stage: Option<String>,
    /// Custom fields.
    pub fields: BTreeMap<String, String>,
    /// External id (unique).
    pub external_id: Option<String>,
}

impl From<&Lead> for LeadWrite {
    fn from(l: &Lead) -> Self {
        Self {
            first_name: l.first_name.clone(),
            last_name: l.last_name.clone(),
            email: l.email.clone(),
            phone: l.phone.clone(),
            mobile: l.mobile.clone(),
            secondary_numbers: l.secondary_numbers.clone(),
            owner_id: l.owner_id,
            source: l.source.clone(),
            origin: l.origin.clone(),
            stage: l.stage.clone(),
            fields: l.fields.clone(),
            external_id: l.external_id.clone(),
        }
    }
}

/// The top-level lead fields an import row gives (a CSV cell that is not empty, an
/// NDJSON key that is present); on an update the others keep their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GivenFields {
    /// `first_name`
    pub first_name: bool,
    /// `last_name`
    pub last_name: bool,
    /// `email`
    pub email: bool,
    /// `phone`
    pub phone: bool,
    /// `mobile`
    pub mobile: bool,
    /// `secondary_numbers` (the whole list)
    pub secondary_numbers: bool,
    /// `owner_id`
    pub owner_id: bool,
    /// `source`
    pub source: bool,
    /// `origin`
    pub origin: bool,
    /// `stage`
    pub stage: bool,
    /// `external_id`
    pub external_id: bool,
}

impl GivenFields {
    /// Whether no top-level field is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One validated lead import row (SPEC 6 "Lead import").
#[derive(Clone, Debug, Default)]
pub struct LeadPatch {
    /// The row's values; fields it does not give are empty.
    pub values: LeadWrite,
    /// Which top-level fields the row gives. Custom `fields` always merge by key.
    pub given: GivenFields,
}

impl LeadPatch {
    /// The lead `current` with this row applied: given fields replace, custom fields
    /// merge by key, the rest is kept.
    pub fn apply(&self, mut current: LeadWrite) -> LeadWrite {
        let (v, g) = (&self.values, &self.given);
        macro_rules! take {
            ($($f:ident),*) => {$(
                if g.$f {
                    current.$f = v.$f.clone();
                }
            )*};
        }
        take!(
            first_name,
            last_name,
            email,
            phone,
            mobile,
            secondary_numbers,
            owner_id,
            source,
            origin,
            stage,
            external_id
        );
        current
            .fields
            .extend(v.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        current
    }
}

/// What [`Store::import_leads`] did with one row.
#[derive(Debug)]
pub enum ImportOutcome {
    /// A new lead.
    Created(LeadId),
    /// An existing lead matched (changed or not).
    Updated(LeadId),
    /// The row was refused (e.g. [`StoreError::UnknownReference`] for `owner_id`);
    /// the rest of the batch went on.
    Refused(StoreError),
}

/// How to filter a lead list.
#[derive(Clone, Debug)]
pub enum LeadFilter {
    /// Every lead.
    All,
    /// Leads holding this number.
    Number(PhoneNumber),
    /// Case-insensitive prefix of first name, last name or email.
    Prefix(String),
}

/// Every writable field of an opportunity.
#[derive(Clone, Debug)]
pub struct OpportunityWrite {
    /// The lead.
    pub lead_id: LeadId,
    /// Name.
    pub name: String,
    /// Owner.
    pub owner_id: Option<UserId>,
    /// Status.
    pub status: OpportunityStatus,
}

/// An activity list filter.
#[derive(Clone, Debug, Default)]
pub struct ActivityFilter {
    /// Of this lead.
    pub lead_id: Option<LeadId>,
    /// Of this opportunity.
    pub opportunity_id: Option<OpportunityId>,
    /// Of this user.
    pub user_id: Option<UserId>,
    /// Created at or after.
    pub since: Option<Timestamp>,
}

/// A popup's life cycle (SPEC 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PopupState {
    /// Not yet written to any socket.
    Queued,
    /// Written to at least one socket.
    Delivered,
    /// A client acknowledged it.
    Acked,
    /// A disposition was accepted.
    Disposed,
    /// It timed out.
    Expired,
}

impl PopupState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Acked => "acked",
            Self::Disposed => "disposed",
            Self::Expired => "expired",
        }
    }

    /// Reads the stored form.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "queued" => Self::Queued,
            "delivered" => Self::Delivered,
            "acked" => Self::Acked,
            "disposed" => Self::Disposed,
            "expired" => Self::Expired,
            _ => return None,
        })
    }

    /// Open popups are replayed, updated and disposed.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Delivered | Self::Acked)
    }
}

/// The call details a popup carries (what a repost may change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PopupCall {
    /// The connector.
    pub connector_id: ConnectorId,
    /// The provider's call id.
    pub call_session_id: String,
    /// The agent.
    pub user_id: UserId,
    /// The chosen lead.
    pub lead_id: LeadId,
    /// Other leads holding the number.
    pub candidate_ids: Vec<LeadId>,
    /// Whether the lead was created for this call.
    pub new_lead: bool,
    /// The opportunity, if any.
    pub opportunity_id: Option<OpportunityId>,
    /// Direction.
    pub direction: Direction,
    /// Customer number (E.164).
    pub lead_number: Option<String>,
    /// Agent number or extension.
    pub agent_number: Option<String>,
    /// Virtual number (E.164).
    pub virtual_number: Option<String>,
    /// Tag of the virtual number, or the request's.
    pub tag: Option<String>,
}

/// What a popup's call is as the request gives it, before its agent, lead and tag
/// are resolved.
#[derive(Clone, Debug)]
pub struct PopupBase {
    /// The connector.
    pub connector_id: ConnectorId,
    /// The provider's call id.
    pub call_session_id: String,
    /// Direction.
    pub direction: Direction,
    /// Customer number (E.164).
    pub lead_number: Option<String>,
    /// Agent number or extension.
    pub agent_number: Option<String>,
    /// Virtual number (E.164).
    pub virtual_number: Option<String>,
}

impl PopupBase {
    /// The popup's call once resolved: its agent, its lead (created for this call
    /// or not) and the other leads holding the number, its opportunity and tag.
    pub fn call(
        self,
        user_id: UserId,
        (lead_id, new_lead): (LeadId, bool),
        candidates: &[Lead],
        opportunity_id: Option<OpportunityId>,
        tag: Option<String>,
    ) -> PopupCall {
        PopupCall {
            connector_id: self.connector_id,
            call_session_id: self.call_session_id,
            user_id,
            lead_id,
            candidate_ids: candidates.iter().map(|l| l.id).collect(),
            new_lead,
            opportunity_id,
            direction: self.direction,
            lead_number: self.lead_number,
            agent_number: self.agent_number,
            virtual_number: self.virtual_number,
            tag,
        }
    }
}

/// A popup as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PopupRecord {
    /// Its id.
    pub id: PopupId,
    /// The call.
    pub call: PopupCall,
    /// Its state.
    pub state: PopupState,
    /// `seq` of its latest `popup`/`popup_update` event.
    pub seq: i64,
    /// When it was created.
    pub created_at: Timestamp,
}

/// What [`Store::upsert_popup`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopupOutcome {
    /// A new popup (event `popup`).
    Created,
    /// An open popup was updated in place (event `popup_update`).
    Updated,
    /// The popup is disposed or expired: nothing changed.
    Closed,
}

/// A kept event of a user (SPEC 3 replay).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Its `seq`.
    pub seq: i64,
    /// Frame type.
    pub kind: String,
    /// The popup it concerns.
    pub popup_id: Option<PopupId>,
    /// The frame body (without `type`/`seq`); `None` for `popup`/`popup_update`, whose
    /// body is rebuilt from the popup's current state.
    pub payload: Option<serde_json::Value>,
}

/// An event to append in the same transaction as the change that produces it.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Frame type.
    pub kind: &'static str,
    /// Frame body without `type`/`seq`.
    pub payload: serde_json::Value,
}

/// An accepted disposition to apply atomically.
#[derive(Clone, Debug)]
pub struct DispositionWrite {
    /// The popup.
    pub popup_id: PopupId,
    /// The agent (must own the popup).
    pub user_id: UserId,
    /// The connector of the popup.
    pub connector_id: ConnectorId,
    /// The call session of the popup.
    pub call_session_id: String,
    /// The opportunity of the popup.
    pub opportunity_id: Option<OpportunityId>,
    /// What to write.
    pub disposition: Disposition,
    /// Id of the `disposition` activity.
    pub activity_id: ActivityId,
    /// Events to append (each gets the next `seq` of the user).
    pub events: Vec<NewEvent>,
    /// The forwarding to queue, when the connector forwards dispositions.
    pub outbox: Option<NewOutboxItem>,
}

/// Why a dispose was refused.
#[derive(Debug, thiserror::Error)]
pub enum DisposeError {
    /// No such popup for this user.
    #[error("not found")]
    NotFound,
    /// Already disposed or expired.
    #[error("already disposed")]
    AlreadyDisposed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A call activity to insert, or to merge into the one of the same connector + call
/// session (SPEC 2.2).
#[derive(Clone, Debug)]
pub struct CallActivityWrite {
    /// Used when a new activity is created.
    pub new_id: ActivityId,
    /// `inbound_call` or `outbound_call` (kept on a repeat).
    pub kind: ActivityKind,
    /// The lead (kept on a repeat).
    pub lead_id: LeadId,
    /// The opportunity.
    pub opportunity_id: Option<OpportunityId>,
    /// The agent.
    pub user_id: Option<UserId>,
    /// The connector.
    pub connector_id: ConnectorId,
    /// The provider's call id; `None` is never deduplicated.
    pub call_session_id: Option<String>,
    /// Call status.
    pub status: String,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub ended_at: Timestamp,
    /// Talk time.
    pub duration_secs: i64,
    /// Recording.
    pub recording_url: Option<String>,
    /// Notes.
    pub notes: Option<String>,
    /// Everything else (merged key by key on a repeat).
    pub data: serde_json::Value,
}

/// Who hears of a logged call, with their popup for it if any.
pub type Recipients = [(UserId, Option<PopupId>)];

/// Builds the payload of a `call_logged` event from its popup and the activity.
pub type CallLoggedPayload = fn(Option<PopupId>, &Activity) -> serde_json::Value;

/// Builds the payload of the `popup_closed` event of an expired popup.
pub type ExpiredPayload = fn(PopupId) -> serde_json::Value;

/// An event appended for one user.
#[derive(Clone, Debug)]
pub struct UserEvent {
    /// The user.
    pub user_id: UserId,
    /// Its `seq`.
    pub seq: i64,
    /// The frame body.
    pub payload: serde_json::Value,
}

/// A click-to-call that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickToCallRecord {
    /// The agent.
    pub user_id: UserId,
    /// The lead called.
    pub lead_id: LeadId,
    /// The lead's number called (E.164).
    pub number: PhoneNumber,
    /// The opportunity, if any.
    pub opportunity_id: Option<OpportunityId>,
    /// The connector used.
    pub connector_id: ConnectorId,
    /// When it was asked for.
    pub at: Timestamp,
}

/// An outbound webhook as stored: the request is built when the item is accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OutboxRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Headers (configured values: never logged).
    pub headers: Vec<(String, String)>,
    /// Content type and body.
    pub body: Option<(String, String)>,
    /// Timeout of one attempt.
    pub timeout_ms: u64,
}

/// An outbox item (SPEC 6 shape, plus its request for the worker).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OutboxItem {
    /// Its id (also the `Idempotency-Key`).
    pub id: crate::domain::ids::OutboxId,
    /// The connector.
    pub connector_id: ConnectorId,
    /// `disposition_forward`.
    pub kind: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_at: Option<Timestamp>,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When it was delivered.
    pub delivered_at: Option<Timestamp>,
    /// The request to send.
    #[serde(skip)]
    pub request: Option<OutboxRequest>,
    /// Its age counts from here (creation or the last admin retry).
    #[serde(skip)]
    pub age_from: Timestamp,
}

/// A new outbox item, written in the transaction that accepts it.
#[derive(Clone, Debug)]
pub struct NewOutboxItem {
    /// Its id.
    pub id: crate::domain::ids::OutboxId,
    /// The connector.
    pub connector_id: ConnectorId,
    /// `disposition_forward`.
    pub kind: &'static str,
    /// The request.
    pub request: OutboxRequest,
}

/// What happened to a delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxResult {
    /// Delivered.
    Delivered,
    /// Try again at this time.
    Retry(Timestamp, String),
    /// Give up.
    Failed(String),
}

/// A popup closed by expiry.
#[derive(Clone, Debug)]
pub struct ExpiredPopup {
    /// The agent.
    pub user_id: UserId,
    /// The popup.
    pub popup_id: PopupId,
    /// `seq` of its `popup_closed` event.
    pub seq: i64,
}

/// One telephony-log row (SPEC 6).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TelephonyLogRow {
    /// Its id.
    pub id: TelephonyLogId,
    /// When the request arrived.
    pub at: Timestamp,
    /// The connector whose access key was presented.
    pub connector_id: Option<ConnectorId>,
    /// `agent_popup`, `call_log`, …
    pub endpoint: String,
    /// Our answer's status.
    pub http_status: u16,
    /// `ok`, `duplicate`, `rejected`, `failed`.
    pub outcome: String,
    /// The error code answered.
    pub error_code: Option<String>,
    /// The error message answered.
    pub error_message: Option<String>,
    /// The call session, when known.
    pub call_session_id: Option<String>,
    /// Time to answer.
    pub latency_us: i64,
    /// The request body without keys (an object, or its first 4 KiB as a string).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
}

/// Telephony-log list filter.
#[derive(Clone, Debug, Default)]
pub struct TelephonyLogFilter {
    /// Connector.
    pub connector_id: Option<ConnectorId>,
    /// Endpoint.
    pub endpoint: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Call session id.
    pub call_session_id: Option<String>,
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
}

/// The gateway's persistence. Every method is atomic; `# Errors` for all:
/// [`StoreError::Unavailable`] when the database fails, plus the variants named.
/// A popup for a known agent and a known caller, written in one store operation
/// ([`Store::quick_popup`]): the agent by id or number, the lead by id or number.
#[derive(Clone, Debug)]
pub struct QuickPopup {
    /// The popup's id, when one is created.
    pub new_id: PopupId,
    /// The call, as the request gives it.
    pub base: PopupBase,
    /// `UserId`, else the agent-side number.
    pub agent: QuickKey<UserId, String>,
    /// `LeadId`, else the customer number.
    pub lead: QuickKey<LeadId, PhoneNumber>,
    /// `DisplayNumber`: its virtual number's tag wins over `tag`.
    pub display_number: Option<PhoneNumber>,
    /// The request's tag.
    pub tag: Option<String>,
    /// Other leads holding the number, at most.
    pub max_candidates: u32,
    /// The lead's recent calls, at most.
    pub recent_calls: u32,
}

/// A key by id, else by number.
#[derive(Clone, Debug)]
pub enum QuickKey<I, N> {
    /// By id.
    Id(I),
    /// By number.
    Number(N),
}

/// What [`Store::quick_popup`] wrote and read.
#[derive(Clone, Debug)]
pub struct QuickPopupDone {
    /// The agent.
    pub agent: User,
    /// The lead.
    pub lead: Lead,
    /// Other leads holding the number.
    pub candidates: Vec<Lead>,
    /// The lead's recent calls, newest first.
    pub recent: Vec<Activity>,
    /// The popup as stored.
    pub record: PopupRecord,
    /// Created, updated or left closed.
    pub outcome: PopupOutcome,
}

/// Whether an agent has a socket on this node now (called from the store).
pub type Online = Arc<dyn Fn(UserId) -> bool + Send + Sync>;

/// How [`Store::user_seeing`] finds the user.
#[derive(Clone, Copy, Debug)]
pub enum UserKey<'a> {
    /// By id.
    Id(UserId),
    /// By a number or extension, as stored.
    Number(&'a str),
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Commits a probe write (readiness).
    async fn probe(&self) -> StoreResult<()>;
    /// Stores `candidate` under `name` unless a value exists; returns the kept value and
    /// whether it was inserted now.
    async fn secret_insert_or_get(
        &self,
        name: &str,
        candidate: &str,
    ) -> StoreResult<(String, bool)>;

    /// Creates a connector; the first one becomes the default.
    async fn create_connector(&self, c: NewConnector) -> StoreResult<Connector>;
    /// Lists connectors, newest first.
    async fn list_connectors(&self, page: &PageRequest) -> StoreResult<Page<Connector>>;
    /// One connector.
    async fn get_connector(&self, id: ConnectorId) -> StoreResult<Option<Connector>>;
    /// The connector holding this access key.
    async fn connector_by_access_key(&self, key: &str) -> StoreResult<Option<Connector>>;
    /// Replaces a connector's settings ([`StoreError::NotFound`]).
    async fn update_connector(
        &self,
        id: ConnectorId,
        s: &ConnectorSettings,
    ) -> StoreResult<Connector>;
    /// Deletes a connector, its numbers and team assignments; promotes the oldest
    /// remaining connector when it was the default ([`StoreError::NotFound`]).
    async fn delete_connector(&self, id: ConnectorId) -> StoreResult<()>;
    /// Copies a connector's settings and team assignments (not its numbers) into a new,
    /// non-default connector with these keys and name ([`StoreError::NotFound`]).
    async fn clone_connector(&self, from: ConnectorId, new: NewConnector)
    -> StoreResult<Connector>;
    /// Makes this connector the only default ([`StoreError::NotFound`]).
    async fn set_default_connector(&self, id: ConnectorId) -> StoreResult<Connector>;
    /// Replaces both keys ([`StoreError::NotFound`]).
    async fn rotate_connector_keys(
        &self,
        id: ConnectorId,
        access_key: &str,
        secret_key: &str,
    ) -> StoreResult<Connector>;
    /// Replaces the teams a connector is assigned to.
    async fn set_connector_teams(&self, id: ConnectorId, teams: &[TeamId]) -> StoreResult<()>;
    /// Adds a virtual number ([`StoreError::Conflict`] `number_in_use`).
    async fn add_virtual_number(&self, vn: VirtualNumber) -> StoreResult<VirtualNumber>;
    /// A connector's numbers, oldest first.
    async fn list_virtual_numbers(&self, connector: ConnectorId)
    -> StoreResult<Vec<VirtualNumber>>;
    /// Retags a number ([`StoreError::NotFound`]).
    async fn retag_virtual_number(
        &self,
        connector: ConnectorId,
        id: VirtualNumberId,
        tag: Option<String>,
    ) -> StoreResult<VirtualNumber>;
    /// Removes a number ([`StoreError::NotFound`]).
    async fn delete_virtual_number(
        &self,
        connector: ConnectorId,
        id: VirtualNumberId,
    ) -> StoreResult<()>;
    /// The virtual number equal to `number`, whichever connector owns it.
    async fn virtual_number(&self, number: &PhoneNumber) -> StoreResult<Option<VirtualNumber>>;

    /// Creates a team.
    async fn create_team(&self, id: TeamId, name: &str) -> StoreResult<Team>;
    /// Lists teams.
    async fn list_teams(&self, page: &PageRequest) -> StoreResult<Page<Team>>;
    /// One team.
    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>>;
    /// Renames a team ([`StoreError::NotFound`]).
    async fn rename_team(&self, id: TeamId, name: &str) -> StoreResult<Team>;
    /// Deletes a team ([`StoreError::NotFound`]).
    async fn delete_team(&self, id: TeamId) -> StoreResult<()>;

    /// Creates a user ([`StoreError::Conflict`] `email_in_use`/`number_in_use`,
    /// [`StoreError::UnknownReference`] for a team).
    async fn create_user(&self, id: UserId, u: &UserWrite) -> StoreResult<User>;
    /// Lists users.
    async fn list_users(&self, page: &PageRequest) -> StoreResult<Page<User>>;
    /// One user.
    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// The user with this email (case-insensitive).
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// The user holding this number or extension (as stored).
    async fn user_by_number(&self, number: &str) -> StoreResult<Option<User>>;
    /// Replaces a user's fields (errors as create, plus [`StoreError::NotFound`]).
    async fn update_user(&self, id: UserId, u: &UserWrite) -> StoreResult<User>;
    /// Deletes a user ([`StoreError::NotFound`]).
    async fn delete_user(&self, id: UserId) -> StoreResult<()>;
    /// The user with this id or number, with whether they see `connector` (one query:
    /// the popup's and call log's agent lookup).
    async fn user_seeing(
        &self,
        who: UserKey<'_>,
        connector: ConnectorId,
    ) -> StoreResult<Option<(User, bool)>>;
    /// Whether the user sees the connector (SPEC 1 team rule).
    async fn user_sees_connector(&self, user: UserId, connector: ConnectorId) -> StoreResult<bool>;
    /// The connectors the user sees, oldest first.
    async fn visible_connectors(&self, user: UserId) -> StoreResult<Vec<Connector>>;
    /// Names of these users.
    async fn user_names(&self, ids: &[UserId]) -> StoreResult<BTreeMap<UserId, String>>;

    /// Creates a lead ([`StoreError::Conflict`] `external_id_in_use`).
    async fn create_lead(&self, id: LeadId, l: &LeadWrite) -> StoreResult<Lead>;
    /// Lists leads, newest first.
    async fn list_leads(&self, filter: &LeadFilter, page: &PageRequest) -> StoreResult<Page<Lead>>;
    /// One lead.
    async fn get_lead(&self, id: LeadId) -> StoreResult<Option<Lead>>;
    /// These leads, in the order given (missing ones skipped).
    async fn get_leads(&self, ids: &[LeadId]) -> StoreResult<Vec<Lead>>;
    /// Replaces a lead's fields (errors as create, plus [`StoreError::NotFound`]).
    async fn update_lead(&self, id: LeadId, l: &LeadWrite) -> StoreResult<Lead>;
    /// Deletes a lead ([`StoreError::NotFound`]).
    async fn delete_lead(&self, id: LeadId) -> StoreResult<()>;
    /// Imports a batch of rows in order, in one transaction (SPEC 6 "Lead import"):
    /// a row updates the lead with its `external_id`, else the only lead with its email
    /// (case-insensitive, ASCII) unless that lead carries another `external_id`, else
    /// it creates a lead. Numbers are re-indexed as [`Store::update_lead`] does. One
    /// outcome per row, in order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: nothing of this batch was committed.
    async fn import_leads(&self, rows: &[LeadPatch]) -> StoreResult<Vec<ImportOutcome>>;
    /// Leads holding `number`, most recently updated first (then by id), at most `limit`.
    async fn leads_by_number(&self, number: &PhoneNumber, limit: u32) -> StoreResult<Vec<Lead>>;
    /// The lead's most recently updated open opportunity.
    async fn latest_open_opportunity(&self, lead: LeadId) -> StoreResult<Option<Opportunity>>;
    /// Every lead holding `number` (most recently updated first, at most `limit`);
    /// when none does, creates `new` under a per-number lock so that concurrent calls
    /// make one lead. Returns the leads and whether the (single) lead was created.
    async fn resolve_lead_by_number(
        &self,
        number: &PhoneNumber,
        limit: u32,
        new: &LeadWrite,
    ) -> StoreResult<(Vec<Lead>, bool)>;

    /// Creates an opportunity ([`StoreError::UnknownReference`] for the lead).
    async fn create_opportunity(
        &self,
        id: OpportunityId,
        o: &OpportunityWrite,
    ) -> StoreResult<Opportunity>;
    /// Lists opportunities, optionally of one lead.
    async fn list_opportunities(
        &self,
        lead: Option<LeadId>,
        page: &PageRequest,
    ) -> StoreResult<Page<Opportunity>>;
    /// One opportunity.
    async fn get_opportunity(&self, id: OpportunityId) -> StoreResult<Option<Opportunity>>;
    /// Replaces an opportunity ([`StoreError::NotFound`]).
    async fn update_opportunity(
        &self,
        id: OpportunityId,
        o: &OpportunityWrite,
    ) -> StoreResult<Opportunity>;
    /// Deletes an opportunity ([`StoreError::NotFound`]).
    async fn delete_opportunity(&self, id: OpportunityId) -> StoreResult<()>;

    /// Lists activities, newest first.
    async fn list_activities(
        &self,
        f: &ActivityFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Activity>>;
    /// A lead's last `limit` call activities, newest first.
    async fn recent_calls(&self, lead: LeadId, limit: u32) -> StoreResult<Vec<Activity>>;

    /// Inserts a popup, or updates the open popup of the same connector + call session
    /// + user in place; appends its `popup`/`popup_update` event. A closed popup is left
    /// unchanged. `new_id` is used when a popup is created. `online`: the agent has a
    /// socket to send it to now, so a new (or still queued) popup is stored `delivered`
    /// at once rather than marked so by a second write.
    async fn upsert_popup(
        &self,
        new_id: PopupId,
        call: &PopupCall,
        online: bool,
    ) -> StoreResult<(PopupRecord, PopupOutcome)>;
    /// A popup's lookups and its write in one operation, for a store where that
    /// saves trips: the agent (active, seeing the connector), the tag, the lead and
    /// candidates, then [`Store::upsert_popup`] (`online` is asked once the agent is
    /// known) and the lead's recent calls. `None`, with nothing written, when the
    /// agent or the lead is not found as asked — the caller then takes the step-by-step
    /// path, which names the error or creates the lead — or when this store has no
    /// such operation (the default).
    async fn quick_popup(
        &self,
        _popup: QuickPopup,
        _online: Online,
    ) -> StoreResult<Option<QuickPopupDone>> {
        Ok(None)
    }
    /// One popup.
    async fn get_popup(&self, id: PopupId) -> StoreResult<Option<PopupRecord>>;
    /// A user's open popups, oldest first.
    async fn open_popups(&self, user: UserId) -> StoreResult<Vec<PopupRecord>>;
    /// Marks these popups `delivered` when still `queued`.
    async fn mark_delivered(&self, ids: &[PopupId]) -> StoreResult<()>;
    /// Marks a popup of this user `acked` when `queued`/`delivered`.
    async fn ack_popup(&self, user: UserId, id: PopupId) -> StoreResult<bool>;
    /// The user's current `seq`.
    async fn current_seq(&self, user: UserId) -> StoreResult<i64>;
    /// Kept events of the user with `seq > after`, in order.
    async fn events_since(&self, user: UserId, after: i64) -> StoreResult<Vec<StoredEvent>>;
    /// Applies an accepted disposition in one transaction guarded by the popup's
    /// state; returns the `seq` of each event appended.
    async fn dispose(&self, d: &DispositionWrite) -> Result<Vec<i64>, DisposeError>;
    /// Expires popups `queued` since before `queued_before` or open since before
    /// `open_before`, appending a `popup_closed` event built by `payload`.
    async fn expire_popups(
        &self,
        queued_before: Timestamp,
        open_before: Timestamp,
        payload: ExpiredPayload,
    ) -> StoreResult<Vec<ExpiredPopup>>;
    /// Every popup of this connector + call session (one per agent), newest first.
    async fn popups_for_session(
        &self,
        connector: ConnectorId,
        call_session_id: &str,
    ) -> StoreResult<Vec<PopupRecord>>;
    /// Inserts a call activity, or merges it into the existing one of the same connector
    /// + call session (it keeps that one's lead, connector and kind, overwrites the
    /// columns given a non-empty value and merges `data`), and appends one
    /// `call_logged` event per recipient with `payload(popup, activity)`. Returns the
    /// activity, whether it already existed, and the events.
    async fn log_call(
        &self,
        w: &CallActivityWrite,
        recipients: &Recipients,
        payload: CallLoggedPayload,
    ) -> StoreResult<(Activity, bool, Vec<UserEvent>)>;
    /// Drops events older than `before` whose popup is not open.
    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64>;

    /// Writes telephony-log rows.
    async fn insert_telephony_logs(&self, rows: &[TelephonyLogRow]) -> StoreResult<()>;
    /// Records a click-to-call that passed validation, unless the same agent asked for
    /// the same lead within `window_secs` (then nothing is written and the seconds to
    /// wait are returned) — atomically, so a double click places one call.
    async fn record_click_to_call(
        &self,
        c: &ClickToCallRecord,
        window_secs: i64,
    ) -> StoreResult<Option<i64>>;
    /// The agent's latest click-to-call to `number` since `since`.
    async fn recent_click_to_call(
        &self,
        user: UserId,
        number: &PhoneNumber,
        since: Timestamp,
    ) -> StoreResult<Option<ClickToCallRecord>>;
    /// The teams a connector is assigned to.
    async fn connector_team_ids(&self, connector: ConnectorId) -> StoreResult<Vec<TeamId>>;
    /// Stores a one-time SSO key (its hash) for `user`, valid until `expires_at`.
    async fn create_sso_key(
        &self,
        key_hash: &str,
        user: UserId,
        expires_at: Timestamp,
    ) -> StoreResult<()>;
    /// Consumes a one-time SSO key in one atomic update: the user when the key exists,
    /// is unused and has not expired at `now`; `None` otherwise.
    async fn consume_sso_key(&self, key_hash: &str, now: Timestamp) -> StoreResult<Option<UserId>>;
    /// Outbox items, newest first, optionally of one status.
    async fn list_outbox(
        &self,
        status: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<OutboxItem>>;
    /// Connectors with items due at `now`.
    async fn outbox_due_connectors(&self, now: Timestamp) -> StoreResult<Vec<ConnectorId>>;
    /// Claims up to `limit` due items of `connector` by setting `locked_until` (now + the
    /// item's timeout + `lock_secs`) in one atomic update, so an item is never claimed
    /// twice while locked; counts the attempt.
    async fn claim_outbox(
        &self,
        connector: ConnectorId,
        limit: u32,
        now: Timestamp,
        lock_secs: i64,
    ) -> StoreResult<Vec<OutboxItem>>;
    /// Records an attempt's result and releases the claim.
    async fn finish_outbox(
        &self,
        id: crate::domain::ids::OutboxId,
        result: &OutboxResult,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Fails pending items whose age (from creation or the last retry) passed `before`.
    async fn expire_outbox(&self, before: Timestamp, now: Timestamp) -> StoreResult<u64>;
    /// Sets an item back to `pending`, due now, its age counting from now
    /// ([`StoreError::NotFound`]).
    async fn retry_outbox(
        &self,
        id: crate::domain::ids::OutboxId,
        now: Timestamp,
    ) -> StoreResult<OutboxItem>;
    /// Fails the pending items of a deleted connector.
    async fn fail_connector_outbox(&self, connector: ConnectorId, why: &str) -> StoreResult<u64>;
    /// Deletes telephony-log rows older than `before`, then all but the newest
    /// `max_rows`; returns how many were deleted.
    async fn prune_telephony_logs(&self, before: Timestamp, max_rows: u64) -> StoreResult<u64>;
    /// Lists telephony-log rows, newest first.
    async fn list_telephony_logs(
        &self,
        f: &TelephonyLogFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<TelephonyLogRow>>;
}

/// Opens the store named by `url` (creating and migrating it).
///
/// # Errors
/// An unsupported URL, or a database that cannot be opened or migrated.
pub async fn open(url: &str) -> anyhow::Result<DynStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(url).await?))
    } else {
        anyhow::bail!("unsupported store.url scheme (use sqlite:// or postgres://)")
    }
}
