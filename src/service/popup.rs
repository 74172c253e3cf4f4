//! Agent popups (SPEC 2.1): resolve the agent and the lead, store the popup (one per
//! connector + call session + agent), push it to every socket of the agent, replay
//! what a reconnecting socket missed, and expire popups nobody closed.

use crate::domain::call::{CallEvent, CallParty, Direction};
use crate::domain::connector::Connector;
use crate::domain::ids::{LeadId, PopupId, UserId};
use crate::domain::lead::{Activity, Lead, LeadField};
use crate::domain::phone::AgentNumber;
use crate::domain::template::{Escape, Placeholder, Template};
use crate::domain::time::Timestamp;
use crate::domain::user::User;
use crate::hub::bus::BusSignal;
use crate::hub::protocol;
use crate::state::AppState;
use crate::store::{
    LeadWrite, Online, PopupBase, PopupOutcome, PopupRecord, PopupState, QuickKey, QuickPopup,
    StoreError, UserKey,
};
use axum::extract::ws::Utf8Bytes;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// At most this many other leads are offered as candidates.
const MAX_CANDIDATES: u32 = 10;
/// Calls shown in a popup.
const RECENT_CALLS: u32 = 5;

/// Why a popup was refused.
#[derive(Debug, thiserror::Error)]
pub enum PopupError {
    /// `UserId` names no user.
    #[error("UserId does not name a user")]
    UserNotFound,
    /// `LeadId` names no lead.
    #[error("LeadId does not name a lead")]
    LeadNotFound,
    /// `OpportunityId` names no opportunity.
    #[error("OpportunityId does not name an opportunity")]
    OpportunityNotFound,
    /// The user is inactive or does not see this connector.
    #[error("the user is inactive or does not see this connector")]
    AgentNotAvailable,
    /// No active user who sees this connector holds the agent-side number.
    #[error("no active agent of this connector holds {field}")]
    AgentNotFound {
        /// The agent-side number's field.
        field: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the provider is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopupAnswer {
    /// The popup.
    pub id: Option<PopupId>,
    /// Its lead.
    pub lead_id: Option<LeadId>,
    /// Sockets it was queued to.
    pub delivered: usize,
    /// Waiting for the agent to connect.
    pub queued: bool,
    /// Human summary.
    pub message: &'static str,
}

async fn resolve_agent(
    state: &AppState,
    connector: &Connector,
    e: &CallEvent,
) -> Result<User, PopupError> {
    if let Some(id) = e.user_id {
        return match state
            .store
            .user_seeing(UserKey::Id(id), connector.id)
            .await?
        {
            None => Err(PopupError::UserNotFound),
            Some((user, true)) if user.active => Ok(user),
            Some(_) => Err(PopupError::AgentNotAvailable),
        };
    }
    let not_found = PopupError::AgentNotFound {
        field: e.agent_number_field,
    };
    let Some(number) = &e.agent_number else {
        return Err(not_found);
    };
    match state
        .store
        .user_seeing(UserKey::Number(number.as_str()), connector.id)
        .await?
    {
        Some((u, true)) if u.active => Ok(u),
        _ => Err(not_found),
    }
}

/// The tag of a call: the tag of the connector's virtual number equal to
/// `DisplayNumber`, else the request's `Tag`.
///
/// # Errors
/// Store failures.
pub async fn tag_of(
    state: &AppState,
    connector: &Connector,
    e: &CallParty,
) -> Result<Option<String>, StoreError> {
    let vn = match &e.display_number {
        Some(n) => state
            .store
            .virtual_number(n)
            .await?
            .filter(|v| v.connector_id == connector.id),
        None => None,
    };
    Ok(vn.and_then(|v| v.tag).or_else(|| e.tag.clone()))
}

/// The leads a call's party resolves to without writing anything: the lead its
/// `LeadId` names, else the leads holding its number (most recently updated first).
/// Empty when there are none. It is read beside a request's other lookups, so a known
/// caller costs no store trip of its own; [`resolve_lead`] then writes only for an
/// unknown one.
///
/// # Errors
/// Store failures.
pub async fn known_leads(state: &AppState, e: &CallParty) -> Result<Vec<Lead>, StoreError> {
    if let Some(id) = e.lead_id {
        return Ok(state.store.get_lead(id).await?.into_iter().collect());
    }
    match &e.lead_number {
        Some(n) => state.store.leads_by_number(n, MAX_CANDIDATES + 1).await,
        None => Ok(Vec::new()),
    }
}

/// Resolves the lead of a call: `LeadId`, else every lead holding the number (the most
/// recently updated first, the others as candidates), else a new lead. Shared by popups
/// and call logs. `known` is what [`known_leads`] read for this very party, when it
/// was read (else empty). Returns the lead, the candidates and whether it was created.
///
/// # Errors
/// [`PopupError::LeadNotFound`] for an unknown `LeadId`; store failures.
pub async fn resolve_lead(
    state: &AppState,
    connector: &Connector,
    e: &CallParty,
    owner: Option<UserId>,
    tag: Option<&str>,
    mut known: Vec<Lead>,
) -> Result<(Lead, Vec<Lead>, bool), PopupError> {
    if !known.is_empty() {
        let first = known.remove(0);
        return Ok((first, known, false));
    }
    if let Some(id) = e.lead_id {
        let lead = state
            .store
            .get_lead(id)
            .await?
            .ok_or(PopupError::LeadNotFound)?;
        return Ok((lead, Vec::new(), false));
    }
    let Some(number) = &e.lead_number else {
        return Err(PopupError::LeadNotFound);
    };
    let new = LeadWrite {
        first_name: e.caller_name.clone(),
        phone: Some(number.clone()),
        owner_id: owner,
        source: e
            .caller_source
            .as_deref()
            .map(|s| s.chars().take(50).collect())
            .or_else(|| connector.settings.lead_source.clone()),
        origin: tag.map(str::to_owned),
        ..LeadWrite::default()
    };
    let (mut leads, created) = state
        .store
        .resolve_lead_by_number(number, MAX_CANDIDATES + 1, &new)
        .await?;
    let first = leads.remove(0);
    Ok((first, leads, created))
}

/// Handles an agent-popup notification for `connector` (already authenticated and
/// parsed), accepted at `accepted` (the popup round trip is measured from it).
///
/// # Errors
/// [`PopupError`] naming what is unknown or unavailable.
pub async fn show(
    state: &AppState,
    connector: &Connector,
    e: CallEvent,
    accepted: std::time::Instant,
) -> Result<PopupAnswer, PopupError> {
    if !connector.settings.popup.enabled {
        metrics::counter!("utc_popups_total", "result" => "disabled").increment(1);
        return Ok(PopupAnswer {
            id: None,
            lead_id: None,
            delivered: 0,
            queued: false,
            message: "Agent popup disabled",
        });
    }
    // a known agent and a known caller: one store operation where the store has it
    if let Some(q) = quick(connector, &e) {
        let hub = state.hub.clone();
        let online: Online = std::sync::Arc::new(move |id| hub.user_count(id) > 0);
        if let Some(done) = state.store.quick_popup(q, online).await? {
            let written = Written {
                lead: done.lead,
                candidates: done.candidates,
                recent: done.recent,
                record: done.record,
                outcome: done.outcome,
            };
            return deliver(state, connector, &done.agent, written, accepted).await;
        }
    }
    // independent lookups go to the store together (one trip on the embedded store)
    let (agent, tag, known) = tokio::join!(
        resolve_agent(state, connector, &e),
        tag_of(state, connector, &e.party),
        known_leads(state, &e.party)
    );
    let agent = agent?;
    if let Some(o) = e.opportunity_id
        && state.store.get_opportunity(o).await?.is_none()
    {
        return Err(PopupError::OpportunityNotFound);
    }
    let party =
        crate::service::click_to_call::link_outbound(state, Some(agent.id), &e.party).await?;
    let tag = tag?;
    // an outbound call linked to a click-to-call names another lead than was read
    let known = if party.lead_id == e.party.lead_id {
        known?
    } else {
        Vec::new()
    };
    let (lead, candidates, created) = resolve_lead(
        state,
        connector,
        &party,
        Some(agent.id),
        tag.as_deref(),
        known,
    )
    .await?;
    let call = base(connector, &e).call(
        agent.id,
        (lead.id, created),
        &candidates,
        party.opportunity_id,
        tag,
    );
    // a local socket answers at once; otherwise presence on other nodes decides
    let online = state.hub.user_count(agent.id) > 0 || state.bus.sockets_of(agent.id).await > 0;
    // the lead's recent calls are read beside the popup's write (a new lead has none)
    let recent = async {
        if created {
            Ok(Vec::new())
        } else {
            state.store.recent_calls(lead.id, RECENT_CALLS).await
        }
    };
    let (written, recent) = tokio::join!(
        state
            .store
            .upsert_popup(PopupId::time_ordered(), &call, online),
        recent
    );
    let (record, outcome) = written?;
    let written = Written {
        lead,
        candidates,
        recent: recent?,
        record,
        outcome,
    };
    deliver(state, connector, &agent, written, accepted).await
}

/// The quick path's request ([`crate::store::Store::quick_popup`]), when the popup can
/// take it: the agent given by id or number, the lead by id or number, no
/// opportunity to check, and no click-to-call to link it to (an outbound call
/// without `LeadId`).
fn quick(connector: &Connector, e: &CallEvent) -> Option<QuickPopup> {
    let p = &e.party;
    if p.opportunity_id.is_some() {
        return None;
    }
    let agent = match (e.user_id, &e.agent_number) {
        (Some(id), _) => QuickKey::Id(id),
        (None, Some(n)) => QuickKey::Number(n.as_str().to_owned()),
        (None, None) => return None,
    };
    let lead = match (p.lead_id, &p.lead_number) {
        (Some(id), _) => QuickKey::Id(id),
        (None, Some(n)) if p.direction != Direction::Outbound => QuickKey::Number(n.clone()),
        _ => return None,
    };
    Some(QuickPopup {
        new_id: PopupId::time_ordered(),
        base: base(connector, e),
        agent,
        lead,
        display_number: p.display_number.clone(),
        tag: p.tag.clone(),
        max_candidates: MAX_CANDIDATES,
        recent_calls: RECENT_CALLS,
    })
}

/// A popup's call as the request gives it.
fn base(connector: &Connector, e: &CallEvent) -> PopupBase {
    PopupBase {
        connector_id: connector.id,
        call_session_id: e.call_session_id.clone(),
        direction: e.direction,
        lead_number: e.lead_number.as_ref().map(|n| n.as_str().to_owned()),
        agent_number: e.agent_number.as_ref().map(|n| n.as_str().to_owned()),
        virtual_number: e.display_number.as_ref().map(|n| n.as_str().to_owned()),
    }
}

/// A popup as written, with what its frame shows.
struct Written {
    lead: Lead,
    candidates: Vec<Lead>,
    recent: Vec<Activity>,
    record: PopupRecord,
    outcome: PopupOutcome,
}

/// Sends a written popup to the agent's sockets and answers the provider.
async fn deliver(
    state: &AppState,
    connector: &Connector,
    agent: &User,
    written: Written,
    accepted: std::time::Instant,
) -> Result<PopupAnswer, PopupError> {
    let Written {
        lead,
        candidates,
        recent,
        record,
        outcome,
    } = written;
    let result = match outcome {
        PopupOutcome::Created => "created",
        PopupOutcome::Updated => "updated",
        PopupOutcome::Closed => "closed",
    };
    metrics::counter!("utc_popups_total", "result" => result).increment(1);
    if outcome == PopupOutcome::Closed {
        return Ok(PopupAnswer {
            id: Some(record.id),
            lead_id: Some(record.call.lead_id),
            delivered: 0,
            queued: false,
            message: "Popup already closed",
        });
    }
    let kind = if outcome == PopupOutcome::Created {
        "popup"
    } else {
        "popup_update"
    };
    let view = PopupView {
        record: &record,
        connector,
        agent,
        lead: Some(lead),
        candidates: Some(candidates),
        recent: Some(recent),
    };
    let body = popup_json(state, view).await?;
    let delivered = state
        .bus
        .send(
            agent.id,
            &protocol::event(kind, record.seq, &json!({ "popup": body })),
            crate::hub::session::clock_us(accepted),
            Some(record.id),
        )
        .await;
    metrics::counter!("utc_popup_frames_total").increment(delivered as u64);
    if delivered > 0 && record.state == PopupState::Queued {
        // the agent's first socket opened between the check and the send
        state.store.mark_delivered(&[record.id]).await?;
    }
    Ok(PopupAnswer {
        id: Some(record.id),
        lead_id: Some(record.call.lead_id),
        delivered,
        queued: delivered == 0,
        message: if delivered > 0 {
            "Message broadcasted successfully"
        } else {
            "Queued for agent"
        },
    })
}

/// What a popup frame is built from; `lead`/`candidates` are read from the store when
/// `None`.
pub struct PopupView<'a> {
    /// The popup.
    pub record: &'a PopupRecord,
    /// Its connector.
    pub connector: &'a Connector,
    /// Its agent.
    pub agent: &'a User,
    /// Its lead, when already loaded.
    pub lead: Option<Lead>,
    /// Its candidates, when already loaded.
    pub candidates: Option<Vec<Lead>>,
    /// The lead's recent calls, when already loaded (none for a lead created by this
    /// very request).
    pub recent: Option<Vec<Activity>>,
}

fn lead_json(lead: &Lead, owners: &BTreeMap<UserId, String>) -> Value {
    let mut v = serde_json::to_value(lead).unwrap_or_default();
    let owner = lead
        .owner_id
        .map(|id| json!({"id": id, "name": owners.get(&id).cloned().unwrap_or_default()}));
    if let Some(map) = v.as_object_mut() {
        map.insert("owner".into(), owner.unwrap_or(Value::Null));
    }
    v
}

/// The `popup` object of SPEC 9, in its current state.
///
/// # Errors
/// Store failures.
pub async fn popup_json(state: &AppState, view: PopupView<'_>) -> Result<Value, StoreError> {
    let r = view.record;
    let lead = match view.lead {
        Some(l) => Some(l),
        None => state.store.get_lead(r.call.lead_id).await?,
    };
    let candidates = match view.candidates {
        Some(c) => c,
        None => state.store.get_leads(&r.call.candidate_ids).await?,
    };
    let owner_ids: Vec<UserId> = lead
        .iter()
        .chain(candidates.iter())
        .filter_map(|l| l.owner_id)
        .collect();
    // most callers belong to the agent who takes the call: no query for that name
    let owners = if owner_ids.iter().all(|o| *o == view.agent.id) {
        owner_ids
            .first()
            .map(|id| (*id, view.agent.name.clone()))
            .into_iter()
            .collect()
    } else {
        state.store.user_names(&owner_ids).await?
    };
    let recent = match (view.recent, &lead) {
        (Some(recent), _) => recent,
        (None, Some(l)) => state.store.recent_calls(l.id, RECENT_CALLS).await?,
        (None, None) => Vec::new(),
    };
    let panel_url = view
        .connector
        .settings
        .popup
        .agent_panel_url
        .as_deref()
        .and_then(|t| Template::parse(t, &[]).ok())
        .map(|t| {
            t.render(
                |p| placeholder_value(p, lead.as_ref(), view.agent, r),
                Escape::UriComponent,
            )
        });
    // a live popup is shown as delivered: it is being written to a socket now
    let state_shown = if r.state == PopupState::Queued {
        PopupState::Delivered
    } else {
        r.state
    };
    Ok(json!({
        "id": r.id,
        "state": state_shown,
        "call": {
            "call_session_id": r.call.call_session_id,
            "direction": r.call.direction,
            "lead_number": r.call.lead_number,
            "agent_number": r.call.agent_number,
            "virtual_number": r.call.virtual_number,
            "tag": r.call.tag,
            "connector_id": view.connector.id,
            "connector_name": view.connector.settings.name,
        },
        "lead": lead.as_ref().map(|l| lead_json(l, &owners)),
        "new_lead": r.call.new_lead,
        "opportunity_id": r.call.opportunity_id,
        "candidates": candidates.iter().map(|l| lead_json(l, &owners)).collect::<Vec<_>>(),
        "recent_calls": recent,
        "disposition_form": view.connector.settings.disposition.form(),
        "agent_panel_url": panel_url,
        "use_external_url": view.connector.settings.popup.use_external_url,
    }))
}

fn placeholder_value(
    p: &Placeholder,
    lead: Option<&Lead>,
    agent: &User,
    r: &PopupRecord,
) -> String {
    let first_number = agent
        .phone_numbers
        .first()
        .map(AgentNumber::as_str)
        .unwrap_or_default();
    match p {
        Placeholder::Lead { field, default } => LeadField::parse(field)
            .ok()
            .and_then(|f| lead.and_then(|l| l.get(&f)))
            .unwrap_or_else(|| default.clone()),
        Placeholder::UserTeamId { default } => agent
            .team_ids
            .first()
            .map_or_else(|| default.clone(), |t| t.to_string()),
        Placeholder::UserGroupIds { default } => {
            if agent.group_ids.is_empty() {
                default.clone()
            } else {
                agent.group_ids.join(",")
            }
        }
        Placeholder::Named("leadId") => r.call.lead_id.to_string(),
        Placeholder::Named("opportunityId") => r
            .call
            .opportunity_id
            .map(|o| o.to_string())
            .unwrap_or_default(),
        Placeholder::Named("virtualNumber") => r.call.virtual_number.clone().unwrap_or_default(),
        Placeholder::Named("PhoneNumberWithCountryCode") => {
            r.call.lead_number.clone().unwrap_or_default()
        }
        Placeholder::Named("customerNumber") => r
            .call
            .lead_number
            .as_deref()
            .map(|n| {
                crate::domain::phone::PhoneNumber::from_e164_unchecked_db(n.to_owned())
                    .national_significant()
            })
            .unwrap_or_default(),
        Placeholder::Named("agentNumber") => first_number.to_owned(),
        Placeholder::Named("agentName") => agent.name.clone(),
        Placeholder::Named("agentEmail") => agent.email.clone(),
        Placeholder::Named(_) => String::new(),
    }
}

/// Builds popup frames for one agent, reading each connector once.
struct FrameBuilder<'a> {
    state: &'a AppState,
    user: &'a User,
    connectors: BTreeMap<String, Connector>,
}

impl<'a> FrameBuilder<'a> {
    fn new(state: &'a AppState, user: &'a User) -> Self {
        Self {
            state,
            user,
            connectors: BTreeMap::new(),
        }
    }

    /// The `kind` frame of `record` with `seq`; `None` when its connector is gone.
    async fn frame(
        &mut self,
        record: &PopupRecord,
        kind: &str,
        seq: i64,
    ) -> Result<Option<Utf8Bytes>, StoreError> {
        let key = record.call.connector_id.to_string();
        if !self.connectors.contains_key(&key) {
            match self
                .state
                .store
                .get_connector(record.call.connector_id)
                .await?
            {
                Some(c) => {
                    self.connectors.insert(key.clone(), c);
                }
                None => return Ok(None),
            }
        }
        let Some(connector) = self.connectors.get(&key) else {
            return Ok(None);
        };
        let view = PopupView {
            record,
            connector,
            agent: self.user,
            lead: None,
            candidates: None,
            recent: None,
        };
        let body = popup_json(self.state, view).await?;
        Ok(Some(protocol::event(kind, seq, &json!({ "popup": body }))))
    }
}

/// The frames a socket of `user` gets after `ready` (SPEC 3): with `since` absent or
/// ahead of the current `seq`, one `popup` per open popup, oldest first; otherwise every
/// kept event after `since`, in order. Queued popups replayed become `delivered`.
///
/// # Errors
/// Store failures.
pub async fn replay(
    state: &AppState,
    user: &User,
    since: Option<i64>,
    current: i64,
) -> Result<Vec<Utf8Bytes>, StoreError> {
    let mut builder = FrameBuilder::new(state, user);
    let mut frames = Vec::new();
    let mut queued = Vec::new();
    match since {
        Some(k) if k <= current => {
            for ev in state.store.events_since(user.id, k).await? {
                match (ev.payload, ev.popup_id) {
                    (Some(p), _) => frames.push(protocol::event(&ev.kind, ev.seq, &p)),
                    (None, Some(pid)) => {
                        if let Some(record) = state
                            .store
                            .get_popup(pid)
                            .await?
                            .filter(|r| r.state.is_open())
                        {
                            if record.state == PopupState::Queued {
                                queued.push(record.id);
                            }
                            frames.extend(builder.frame(&record, &ev.kind, ev.seq).await?);
                        }
                    }
                    (None, None) => {}
                }
            }
        }
        _ => {
            for record in state.store.open_popups(user.id).await? {
                if record.state == PopupState::Queued {
                    queued.push(record.id);
                }
                frames.extend(builder.frame(&record, "popup", record.seq).await?);
            }
        }
    }
    state.store.mark_delivered(&queued).await?;
    Ok(frames)
}

/// Sends this node's users their popups still `queued` — those nobody could be told
/// about while Redis was unreachable (SPEC 7) — and marks them delivered.
///
/// # Errors
/// Store failures.
pub async fn resend_queued(state: &AppState) -> Result<usize, StoreError> {
    let mut sent = 0;
    for user_id in state.hub.users() {
        let Some(user) = state.store.get_user(user_id).await? else {
            continue;
        };
        let mut builder = FrameBuilder::new(state, &user);
        let mut delivered = Vec::new();
        for record in state.store.open_popups(user_id).await? {
            if record.state != PopupState::Queued {
                continue;
            }
            if let Some(frame) = builder.frame(&record, "popup", record.seq).await?
                && state.hub.send(user_id, &frame) > 0
            {
                delivered.push(record.id);
            }
        }
        sent += delivered.len();
        state.store.mark_delivered(&delivered).await?;
    }
    Ok(sent)
}

/// Acts on what the bus signals until it stops: re-sends queued popups when Redis
/// returns, and marks popups another node published delivered once written here.
pub async fn run_bus_signals(
    state: AppState,
    mut signals: tokio::sync::mpsc::UnboundedReceiver<BusSignal>,
) {
    loop {
        let signal = tokio::select! {
            () = state.shutdown.token.cancelled() => return,
            s = signals.recv() => match s {
                Some(s) => s,
                None => return,
            },
        };
        let (mut resumed, mut delivered) = (false, Vec::new());
        for s in std::iter::once(signal).chain(std::iter::from_fn(|| signals.try_recv().ok())) {
            match s {
                BusSignal::Resumed => resumed = true,
                BusSignal::RemoteDelivered(id) => delivered.push(id),
            }
        }
        if let Err(e) = state.store.mark_delivered(&delivered).await {
            tracing::warn!(error = ?e, "marking popups delivered failed");
        }
        if resumed {
            match resend_queued(&state).await {
                Ok(n) => tracing::info!(popups = n, "queued popups re-sent after redis returned"),
                Err(e) => tracing::warn!(error = ?e, "re-sending queued popups failed"),
            }
        }
    }
}

/// Acknowledges a popup of `user` (SPEC 3 `ack`); unknown or closed popups are ignored.
///
/// # Errors
/// Store failures.
pub async fn ack(state: &AppState, user: UserId, popup: PopupId) -> Result<(), StoreError> {
    state.store.ack_popup(user, popup).await?;
    Ok(())
}

/// Expires popups past `popup.ttl_secs` (queued) or `popup.open_max_secs` (open) and
/// tells their agents; prunes replay events past `popup.ttl_secs`. Runs until shutdown.
pub async fn run_expiry(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Timestamp::now();
        let ttl = i64::try_from(state.settings.popup.ttl_secs).unwrap_or(i64::MAX / 2000);
        let open_max = i64::try_from(state.settings.popup.open_max_secs).unwrap_or(i64::MAX / 2000);
        let payload = |id: PopupId| json!({"popup_id": id, "reason": "expired"});
        match state
            .store
            .expire_popups(now.plus_secs(-ttl), now.plus_secs(-open_max), payload)
            .await
        {
            Ok(expired) => {
                for e in expired {
                    let frame = protocol::event("popup_closed", e.seq, &payload(e.popup_id));
                    state.bus.send(e.user_id, &frame, 0, None).await;
                }
            }
            Err(e) => tracing::warn!(error = ?e, "expiring popups failed"),
        }
        if let Err(e) = state.store.prune_events(now.plus_secs(-ttl)).await {
            tracing::warn!(error = ?e, "pruning events failed");
        }
    }
}
