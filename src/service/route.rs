//! Call routing (SPEC 2.3): who owns a caller, so the provider can put the call
//! through to them. One indexed lookup by number, then the owner's checks.

use crate::domain::call::RouteRequest;
use crate::domain::connector::{Connector, RouteMode};
use crate::domain::ids::LeadId;
use crate::domain::phone::AgentNumber;
use crate::domain::user::User;
use crate::state::AppState;
use crate::store::StoreError;

/// Why a route question was refused.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// `virtual_number` is not one of the connector's numbers.
    #[error("virtual_number is not one of this connector's numbers")]
    NotOurNumber,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer.
#[derive(Debug, Clone)]
pub enum RouteAnswer {
    /// The owner to route to.
    Match {
        /// The lead.
        lead_id: LeadId,
        /// Its owner (active, sees the connector).
        owner: Box<User>,
        /// The owner's first number (E.164 or the extension as stored).
        number: Option<String>,
        /// The owner's provider agent id for this connector.
        telephony_agent_id: Option<String>,
        /// Whether the owner has an open socket (on this node).
        online: bool,
    },
    /// No owner to route to: `NoLead`, `NoOwner`, `OwnerInactive`,
    /// `OwnerNotInConnectorTeams`.
    NoMatch(&'static str),
}

/// Answers a route question for `connector`.
///
/// # Errors
/// [`RouteError`].
pub async fn route(
    state: &AppState,
    connector: &Connector,
    q: RouteRequest,
) -> Result<RouteAnswer, RouteError> {
    if let Some(vn) = &q.virtual_number {
        match state.store.virtual_number(vn).await? {
            Some(v) if v.connector_id == connector.id => {}
            _ => return Err(RouteError::NotOurNumber),
        }
    }
    let Some(lead) = state
        .store
        .leads_by_number(&q.caller, 1)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(RouteAnswer::NoMatch("NoLead"));
    };
    let owner_id = match q.mode.unwrap_or(connector.settings.call_route.mode) {
        RouteMode::Opportunity => match state.store.latest_open_opportunity(lead.id).await? {
            Some(o) if o.owner_id.is_some() => o.owner_id,
            _ => lead.owner_id,
        },
        RouteMode::Lead => lead.owner_id,
    };
    let Some(owner) = (match owner_id {
        Some(id) => state.store.get_user(id).await?,
        None => None,
    }) else {
        return Ok(RouteAnswer::NoMatch("NoOwner"));
    };
    if !owner.active {
        return Ok(RouteAnswer::NoMatch("OwnerInactive"));
    }
    if !state
        .store
        .user_sees_connector(owner.id, connector.id)
        .await?
    {
        return Ok(RouteAnswer::NoMatch("OwnerNotInConnectorTeams"));
    }
    Ok(RouteAnswer::Match {
        lead_id: lead.id,
        number: owner
            .phone_numbers
            .first()
            .map(|n: &AgentNumber| n.as_str().to_owned()),
        telephony_agent_id: owner
            .provider_agent_ids
            .get(&connector.id.to_string())
            .cloned(),
        online: state.bus.sockets_of(owner.id).await > 0,
        owner: Box::new(owner),
    })
}
