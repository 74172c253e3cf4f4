//! The agent's side: who a token belongs to, and what a socket is told on connect.

use crate::domain::connector::Connector;
use crate::domain::user::User;
use crate::state::AppState;
use crate::store::StoreError;
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

/// A connector as the agent sees it: no keys, with its virtual numbers.
///
/// # Errors
/// Store failures.
pub async fn connector_json(state: &AppState, c: &Connector) -> Result<Value, StoreError> {
    let numbers = state.store.list_virtual_numbers(c.id).await?;
    Ok(json!({
        "id": c.id,
        "name": c.settings.name,
        "kind": c.kind,
        "is_default": c.is_default,
        "default_country": c.settings.default_country,
        "click_to_call": c.settings.click_to_call.is_some(),
        "virtual_numbers": numbers,
    }))
}

/// The connectors `user` sees, each with its virtual numbers (`GET /api/v1/me/connectors`).
///
/// # Errors
/// Store failures.
pub async fn my_connectors(state: &AppState, user: &User) -> Result<Vec<Value>, StoreError> {
    let mut out = Vec::new();
    for c in state.store.visible_connectors(user.id).await? {
        out.push(connector_json(state, &c).await?);
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
