//! Dispositions (SPEC 4, without forwarding yet): validate against the connector's
//! form, then apply everything in one transaction guarded by the popup's state, and
//! tell every tab of the agent.

use crate::domain::disposition::{DispositionError, DispositionInput, DispositionSettings};
use crate::domain::ids::OutboxId;
use crate::domain::ids::{ActivityId, PopupId};
use crate::domain::user::User;
use crate::hub::protocol;
use crate::state::AppState;
use crate::store::{
    DisposeError, DispositionWrite, NewEvent, NewOutboxItem, OutboxRequest, StoreError,
};
use serde_json::json;

/// Why a disposition was refused.
#[derive(Debug, thiserror::Error)]
pub enum DisposeFailure {
    /// No such popup for this agent.
    #[error("popup not found")]
    NotFound,
    /// The popup is already disposed or expired.
    #[error("the popup is already disposed")]
    AlreadyDisposed,
    /// The submission does not fit the form.
    #[error(transparent)]
    Invalid(#[from] DispositionError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DisposeError> for DisposeFailure {
    fn from(e: DisposeError) -> Self {
        match e {
            DisposeError::NotFound => Self::NotFound,
            DisposeError::AlreadyDisposed => Self::AlreadyDisposed,
            DisposeError::Store(s) => Self::Store(s),
        }
    }
}

/// Disposes popup `popup_id` of `user`; returns the `disposition` activity's id.
///
/// # Errors
/// [`DisposeFailure`]; nothing is changed when it fails.
pub async fn dispose(
    state: &AppState,
    user: &User,
    popup_id: PopupId,
    input: DispositionInput,
) -> Result<ActivityId, DisposeFailure> {
    let popup = state
        .store
        .get_popup(popup_id)
        .await?
        .filter(|p| p.call.user_id == user.id)
        .ok_or(DisposeFailure::NotFound)?;
    if !popup.state.is_open() {
        return Err(DisposeFailure::AlreadyDisposed);
    }
    let connector = state.store.get_connector(popup.call.connector_id).await?;
    let (form, country) = match &connector {
        Some(c) => (c.settings.disposition.clone(), c.settings.default_country),
        None => (
            DispositionSettings::default(),
            crate::domain::phone::Country::parse(&state.settings.phone.default_country)
                .map_err(|_| DisposeFailure::NotFound)?,
        ),
    };
    let disposition = form.validate(
        input,
        popup.call.lead_id,
        &popup.call.candidate_ids,
        country,
    )?;
    let activity_id = ActivityId::time_ordered();
    let outbox = match connector.as_ref() {
        Some(c) => forward_item(state, c, user, &popup, &disposition).await?,
        None => None,
    };
    let saved = json!({
        "popup_id": popup_id,
        "lead_id": disposition.lead_id,
        "activity_id": activity_id,
        "value": disposition.value,
    });
    let closed = json!({"popup_id": popup_id, "reason": "disposed"});
    let write = DispositionWrite {
        popup_id,
        user_id: user.id,
        connector_id: popup.call.connector_id,
        call_session_id: popup.call.call_session_id.clone(),
        opportunity_id: popup.call.opportunity_id,
        disposition,
        activity_id,
        outbox: outbox.clone(),
        events: vec![
            NewEvent {
                kind: "disposition_saved",
                payload: saved.clone(),
            },
            NewEvent {
                kind: "popup_closed",
                payload: closed.clone(),
            },
        ],
    };
    let seqs = state.store.dispose(&write).await?;
    if outbox.is_some() {
        state.outbox_wake.notify_one();
    }
    metrics::counter!("utc_dispositions_total").increment(1);
    for ((kind, payload), seq) in [("disposition_saved", &saved), ("popup_closed", &closed)]
        .into_iter()
        .zip(seqs)
    {
        let frame = protocol::event(kind, seq, payload);
        state.bus.send(user.id, &frame, 0, None).await;
    }
    Ok(activity_id)
}

/// The forwarding request of an accepted disposition, when the connector forwards
/// (SPEC 4): the connector's templates with `@dispositionValue`, `@callSessionId` and
/// `@notes` added, built now and kept in the outbox.
async fn forward_item(
    state: &AppState,
    connector: &crate::domain::connector::Connector,
    user: &User,
    popup: &crate::store::PopupRecord,
    d: &crate::domain::disposition::Disposition,
) -> Result<Option<NewOutboxItem>, DisposeFailure> {
    use crate::domain::phone::PhoneNumber;
    use crate::domain::template::{FORWARD_NAMES, Placeholder};
    use crate::service::click_to_call::{CallValues, RequestTemplate, build_call};
    let Some(forward) = &connector.settings.disposition.forward else {
        return Ok(None);
    };
    let Some(lead) = state.store.get_lead(d.lead_id).await? else {
        return Ok(None);
    };
    let number = popup
        .call
        .lead_number
        .clone()
        .map(PhoneNumber::from_e164_unchecked_db)
        .or_else(|| lead.numbers().next().cloned())
        .unwrap_or_else(|| PhoneNumber::from_e164_unchecked_db(String::new()));
    let vn = popup
        .call
        .virtual_number
        .clone()
        .map(PhoneNumber::from_e164_unchecked_db);
    let teams = state.store.connector_team_ids(connector.id).await?;
    let values = CallValues {
        lead: &lead,
        agent: user,
        number: &number,
        virtual_number: vn.as_ref(),
        opportunity_id: popup.call.opportunity_id,
        connector_teams: &teams,
    };
    let value = |p: &Placeholder| match p {
        Placeholder::Named("dispositionValue") => d.value.clone(),
        Placeholder::Named("callSessionId") => popup.call.call_session_id.clone(),
        Placeholder::Named("notes") => d.notes.clone().unwrap_or_default(),
        other => values.value(other),
    };
    let call = build_call(RequestTemplate::from(forward), FORWARD_NAMES, &value).map_err(|e| {
        DisposeFailure::Store(StoreError::Unavailable(anyhow::anyhow!(
            "disposition.forward template: {e}"
        )))
    })?;
    Ok(Some(NewOutboxItem {
        id: OutboxId::new(),
        connector_id: connector.id,
        kind: "disposition_forward",
        request: OutboxRequest {
            method: if call.post { "POST" } else { "GET" }.to_owned(),
            url: call.url,
            headers: call.headers,
            body: call.body.map(|(ct, b)| (ct.to_owned(), b)),
            timeout_ms: forward.timeout_ms,
        },
    }))
}
