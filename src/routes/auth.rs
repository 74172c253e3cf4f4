//! Bearer authentication for admin and agent routes: the admin token, or an agent JWT
//! whose user is re-read on every request (an inactive user gets 403 `user_inactive`).

use crate::domain::user::User;
use crate::error::ApiError;
use crate::service::agent::{AgentAuthError, authenticate};
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

/// Who is calling.
pub enum Caller {
    /// The admin token.
    Admin,
    /// An agent.
    Agent(Box<User>),
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if state.keys.is_admin(token) {
            return Ok(Self::Admin);
        }
        match authenticate(state, token).await {
            Ok(u) => Ok(Self::Agent(Box::new(u))),
            Err(AgentAuthError::Unauthenticated) => Err(ApiError::unauthorized()),
            Err(AgentAuthError::Inactive) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "user_inactive",
                "this user is inactive",
            )),
            Err(AgentAuthError::Store(e)) => Err(e.into()),
        }
    }
}

/// The admin token (agents get 403 `forbidden`).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Self),
            Caller::Agent(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs the admin token",
            )),
        }
    }
}

/// An active agent.
pub struct Agent(pub User);

impl FromRequestParts<AppState> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Agent(u) => Ok(Self(*u)),
            Caller::Admin => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs an agent token",
            )),
        }
    }
}
