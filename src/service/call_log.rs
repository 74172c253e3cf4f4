//! Call logs (SPEC 2.2): every call ends up on the right lead as one phone-call
//! activity, stored before the answer, exactly once per connector + call session, and
//! the agents who saw the call hear of it (`call_logged`).

use crate::domain::call::{CallLog, Direction};
use crate::domain::connector::Connector;
use crate::domain::ids::{ActivityId, LeadId, PopupId, UserId};
use crate::domain::lead::{Activity, ActivityKind};
use crate::domain::user::User;
use crate::hub::protocol;
use crate::service::popup::{PopupError, known_leads, resolve_lead, tag_of};
use crate::state::AppState;
use crate::store::{CallActivityWrite, PopupRecord, UserKey};
use serde_json::{Value, json};

/// What the provider is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLogAnswer {
    /// The activity.
    pub id: ActivityId,
    /// Its lead.
    pub lead_id: LeadId,
    /// Whether the lead was created for this log.
    pub lead_created: bool,
    /// Whether the activity already existed (a repeat of the same call session).
    pub duplicate: bool,
}

/// The agent of a log, if any: `UserId` whatever the user's state (404 when unknown),
/// else the active user who sees this connector and holds the agent-side number.
async fn agent_of(
    state: &AppState,
    connector: &Connector,
    log: &CallLog,
) -> Result<Option<User>, PopupError> {
    if let Some(id) = log.user_id {
        return state
            .store
            .get_user(id)
            .await?
            .map(Some)
            .ok_or(PopupError::UserNotFound);
    }
    let Some(number) = &log.agent_number else {
        return Ok(None);
    };
    match state
        .store
        .user_seeing(UserKey::Number(number.as_str()), connector.id)
        .await?
    {
        Some((u, true)) if u.active => Ok(Some(u)),
        _ => Ok(None),
    }
}

/// `call_logged` goes to every user with an open popup for the call, and to the log's
/// agent, once each.
fn recipients(popups: &[PopupRecord], agent: Option<UserId>) -> Vec<(UserId, Option<PopupId>)> {
    let mut out: Vec<(UserId, Option<PopupId>)> = popups
        .iter()
        .filter(|p| p.state.is_open())
        .map(|p| (p.call.user_id, Some(p.id)))
        .collect();
    if let Some(a) = agent
        && !out.iter().any(|(u, _)| *u == a)
    {
        out.push((a, popups.iter().find(|p| p.call.user_id == a).map(|p| p.id)));
    }
    out
}

/// Records a call log for `connector` (already authenticated and parsed).
///
/// # Errors
/// [`PopupError`] for unknown `UserId`, `LeadId` or `OpportunityId`; store failures.
pub async fn log(
    state: &AppState,
    connector: &Connector,
    log: CallLog,
) -> Result<CallLogAnswer, PopupError> {
    // independent lookups go to the store together (one trip on the embedded store)
    let popups = async {
        match &log.call_session_id {
            Some(s) => state.store.popups_for_session(connector.id, s).await,
            None => Ok(Vec::new()),
        }
    };
    let (agent, popups, tag, known) = tokio::join!(
        agent_of(state, connector, &log),
        popups,
        tag_of(state, connector, &log.party),
        known_leads(state, &log.party)
    );
    let (agent, popups) = (agent?, popups?);
    let mut log = log;
    let linked = crate::service::click_to_call::link_outbound(
        state,
        agent.as_ref().map(|a| a.id),
        &log.party,
    )
    .await?;
    // an outbound call linked to a click-to-call names another lead than was read
    let known = if linked.lead_id == log.party.lead_id {
        known
    } else {
        Ok(Vec::new())
    };
    log.party = linked;
    if let Some(o) = log.opportunity_id
        && state.store.get_opportunity(o).await?.is_none()
    {
        return Err(PopupError::OpportunityNotFound);
    }
    // the agent's own popup for the call, else the latest one
    let popup = agent
        .as_ref()
        .and_then(|a| popups.iter().find(|p| p.call.user_id == a.id))
        .or_else(|| popups.first());
    let (lead_id, lead_created) = match (log.lead_id, popup) {
        (None, Some(p)) => (p.call.lead_id, false),
        _ => {
            let tag = tag?;
            let (lead, _, created) = resolve_lead(
                state,
                connector,
                &log.party,
                agent.as_ref().map(|a| a.id),
                tag.as_deref(),
                known?,
            )
            .await?;
            (lead.id, created)
        }
    };
    let write = CallActivityWrite {
        new_id: ActivityId::time_ordered(),
        kind: match log.direction {
            Direction::Inbound => ActivityKind::InboundCall,
            Direction::Outbound => ActivityKind::OutboundCall,
        },
        lead_id,
        opportunity_id: log
            .opportunity_id
            .or_else(|| popup.and_then(|p| p.call.opportunity_id)),
        user_id: agent.as_ref().map(|a| a.id),
        connector_id: connector.id,
        call_session_id: log.call_session_id.clone(),
        status: log.status.as_str().to_owned(),
        started_at: log.started_at,
        ended_at: log.ended_at,
        duration_secs: log.duration_secs,
        recording_url: log.recording_url.clone(),
        notes: log.notes.clone(),
        data: Value::Object(log.extras.clone()),
    };
    let to = recipients(&popups, agent.as_ref().map(|a| a.id));
    let payload = |popup: Option<PopupId>, a: &Activity| json!({"popup_id": popup, "activity": a});
    let (activity, duplicate, events) = state.store.log_call(&write, &to, payload).await?;
    for e in events {
        let frame = protocol::event("call_logged", e.seq, &e.payload);
        state.bus.send(e.user_id, &frame, 0, None).await;
    }
    metrics::counter!("utc_call_logs_total", "result" => if duplicate { "updated" } else { "created" }).increment(1);
    Ok(CallLogAnswer {
        id: activity.id,
        lead_id: activity.lead_id,
        lead_created,
        duplicate,
    })
}
