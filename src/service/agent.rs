//! The agent's side: who a token belongs to, and what a socket is told on connect.

use crate::domain::connector::{Connector, ConnectorKind};
use crate::domain::ids::ConnectorId;
use crate::domain::phone::Country;
use crate::domain::user::User;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::VirtualNumber;
use serde_json::{Value, json};

/// Why an agent was refused.
#[derive(Debug, thiserror::Error)]
pub enum AgentAuthError {
    /// Bad, expired or unknown token.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The user is inactive.
    #[error("user inactive")]
    Inactive,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the user of an agent token, re-read from the store (SPEC 3).
///
/// # Errors
/// [`AgentAuthError`].
pub async fn authenticate(state: &AppState, token: &str) -> Result<User, AgentAuthError> {
    let id = state
        .keys
        .verify(token)
        .ok_or(AgentAuthError::Unauthenticated)?;
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or(AgentAuthError::Unauthenticated)?;
    if !user.active {
        return Err(AgentAuthError::Inactive);
    }
    Ok(user)
}

/// A connector as the agent sees it: no keys, with its virtual numbers and tags.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AgentConnector {
    /// Its id.
    pub id: ConnectorId,
    /// Its name.
    pub name: String,
    /// Its format.
    pub kind: ConnectorKind,
    /// Whether it is the default connector.
    pub is_default: bool,
    /// Region for national numbers.
    pub default_country: Country,
    /// Whether click-to-call is configured.
    pub click_to_call: bool,
    /// Its virtual numbers, oldest first.
    pub virtual_numbers: Vec<VirtualNumber>,
}

/// A connector as the agent sees it.
///
/// # Errors
/// Store failures.
pub async fn connector_view(state: &AppState, c: &Connector) -> Result<AgentConnector, StoreError> {
    Ok(AgentConnector {
        id: c.id,
        name: c.settings.name.clone(),
        kind: c.kind,
        is_default: c.is_default,
        default_country: c.settings.default_country,
        click_to_call: c.settings.click_to_call.is_some(),
        virtual_numbers: state.store.list_virtual_numbers(c.id).await?,
    })
}

/// The connectors `user` sees, each with its virtual numbers (`GET /api/v1/me/connectors`).
///
/// # Errors
/// Store failures.
pub async fn my_connectors(
    state: &AppState,
    user: &User,
) -> Result<Vec<AgentConnector>, StoreError> {
    let mut out = Vec::new();
    for c in state.store.visible_connectors(user.id).await? {
        out.push(connector_view(state, &c).await?);
    }
    Ok(out)
}

/// The `ready` frame body and the user's current `seq`.
///
/// # Errors
/// Store failures.
pub async fn ready(state: &AppState, user: &User) -> Result<(Value, i64), StoreError> {
    let seq = state.store.current_seq(user.id).await?;
    let connectors = my_connectors(state, user).await?;
    Ok((
        json!({"type": "ready", "seq": seq, "user": user, "connectors": connectors}),
        seq,
    ))
}
