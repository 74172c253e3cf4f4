//! Single sign-on (SPEC 2.4): a provider's own agent app gets a token for its agent and
//! a console URL with a one-time key (stored hashed, valid 60 s, used once).

use crate::domain::connector::Connector;
use crate::domain::ids::UserId;
use crate::domain::time::Timestamp;
use crate::domain::user::User;
use crate::service::auth::{random_secret, sha256_hex};
use crate::state::AppState;
use crate::store::StoreError;

/// How long a one-time key lives.
const KEY_TTL_SECS: i64 = 60;

/// Who to sign in: `UserId` wins when both are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoSubject {
    /// By id.
    Id(UserId),
    /// By email (case-insensitive).
    Email(String),
}

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// No such user.
    #[error("no such user")]
    UserNotFound,
    /// The user is inactive.
    #[error("the user is inactive")]
    UserInactive,
    /// The user does not see this connector.
    #[error("the user does not see this connector")]
    ConnectorNotVisible,
    /// A one-time key is unknown, used or expired.
    #[error("the sign-in key is unknown, used or expired")]
    KeyInvalid,
    /// The store failed, or signing did.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A session for an agent.
#[derive(Debug, Clone)]
pub struct Session {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The agent.
    pub user: User,
}

fn issue(state: &AppState, user: User) -> Result<Session, SsoError> {
    let (token, expires_at) = state
        .keys
        .issue(&user)
        .map_err(|e| SsoError::Store(StoreError::Unavailable(e)))?;
    Ok(Session {
        token,
        expires_at,
        user,
    })
}

/// Signs an agent in for `connector`; returns the session and the console URL carrying
/// a fresh one-time key.
///
/// # Errors
/// [`SsoError`].
pub async fn sign_in(
    state: &AppState,
    connector: &Connector,
    who: SsoSubject,
) -> Result<(Session, String), SsoError> {
    let user = match who {
        SsoSubject::Id(id) => state.store.get_user(id).await?,
        SsoSubject::Email(email) => state.store.user_by_email(&email).await?,
    }
    .ok_or(SsoError::UserNotFound)?;
    if !user.active {
        return Err(SsoError::UserInactive);
    }
    if !state
        .store
        .user_sees_connector(user.id, connector.id)
        .await?
    {
        return Err(SsoError::ConnectorNotVisible);
    }
    let key = random_secret(32);
    state
        .store
        .create_sso_key(
            &sha256_hex(&key),
            user.id,
            Timestamp::now().plus_secs(KEY_TTL_SECS),
        )
        .await?;
    let url = format!(
        "{}/?sso={key}",
        state.settings.server.public_url.trim_end_matches('/')
    );
    Ok((issue(state, user)?, url))
}

/// Exchanges a one-time key for a session (the console does this once).
///
/// # Errors
/// [`SsoError::KeyInvalid`] for an unknown, used or expired key;
/// [`SsoError::UserInactive`].
pub async fn exchange(state: &AppState, key: &str) -> Result<Session, SsoError> {
    let user_id = state
        .store
        .consume_sso_key(&sha256_hex(key.trim()), Timestamp::now())
        .await?
        .ok_or(SsoError::KeyInvalid)?;
    let user = state
        .store
        .get_user(user_id)
        .await?
        .ok_or(SsoError::KeyInvalid)?;
    if !user.active {
        return Err(SsoError::UserInactive);
    }
    issue(state, user)
}
