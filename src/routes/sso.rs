//! Single sign-on (SPEC 2.4): `POST /api/v1/sso` on the provider surface (connector
//! keys, LGTC envelope) and `POST /api/v1/sso/exchange` for the console (agent shape).

use super::provider::{admit, envelope, fields_of, finish};
use crate::domain::call::FieldError;
use crate::domain::ids::UserId;
use crate::domain::time::Timestamp;
use crate::domain::user::User;
use crate::error::{ApiError, ApiJson, ProviderError};
use crate::service::sso::{self, SsoError, SsoSubject};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// SSO routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_sso))
        .routes(routes!(post_sso_exchange))
}

fn canonical(lower: &str) -> Option<&'static str> {
    ["UserId", "Email"]
        .into_iter()
        .find(|f| f.eq_ignore_ascii_case(lower))
}

/// The SSO body (names match case-insensitively; `UserId` wins when both are given).
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "PascalCase")]
struct SsoBody {
    /// The agent's id.
    user_id: Option<String>,
    /// The agent's email.
    email: Option<String>,
}

/// `Message` of a successful sign-in.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
struct SsoMessage {
    /// The agent's JWT.
    token: String,
    /// When it expires.
    expires_at: Timestamp,
    /// `<server.public_url>/?sso=<one-time key>` (60 s, once).
    console_url: String,
}

/// SPEC 2.4 — `POST /api/v1/sso`.
#[utoipa::path(post, path = "/api/v1/sso", tag = "provider", request_body = SsoBody,
    responses((status = 200, body = SsoMessage, description = "inside the LGTC envelope's Message"),
        (status = 401, body = crate::error::ProviderErrorBody, description = "bad keys"),
        (status = 403, body = crate::error::ProviderErrorBody, description = "UserInactive or ConnectorNotVisible"),
        (status = 404, body = crate::error::ProviderErrorBody, description = "UserNotFound")),
    security(("connector_keys" = [])))]
async fn post_sso(State(state): State<AppState>, req: Request) -> Response {
    let (admitted, draft) = admit(&state, req).await;
    let result = async {
        let a = admitted?;
        let f = fields_of(&a, canonical)?;
        let who = match (f.text("UserId")?, f.text("Email")?) {
            (Some(id), _) => {
                SsoSubject::Id(UserId::parse(&id).map_err(|e| FieldError::invalid("UserId", e))?)
            }
            (None, Some(email)) => SsoSubject::Email(email),
            (None, None) => return Err(FieldError::missing("UserId").into()),
        };
        let (session, console_url) =
            sso::sign_in(&state, &a.connector, who).await.map_err(|e| {
                let (status, code, field) = match &e {
                    SsoError::UserNotFound | SsoError::KeyInvalid => {
                        (StatusCode::NOT_FOUND, "UserNotFound", Some("UserId"))
                    }
                    SsoError::UserInactive => (StatusCode::FORBIDDEN, "UserInactive", None),
                    SsoError::ConnectorNotVisible => {
                        (StatusCode::FORBIDDEN, "ConnectorNotVisible", None)
                    }
                    SsoError::Store(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", None)
                    }
                };
                if let SsoError::Store(cause) = &e {
                    tracing::error!(error = ?cause, "sso failed");
                }
                let err = ProviderError::new(status, code, e.to_string());
                match field {
                    Some(f) => err.with_field(f),
                    None => err,
                }
            })?;
        let message = SsoMessage {
            token: session.token,
            expires_at: session.expires_at,
            console_url,
        };
        Ok((
            envelope(serde_json::to_value(message).unwrap_or_default()),
            "ok",
        ))
    }
    .await;
    finish(&state, "sso", draft, result)
}

/// `POST /api/v1/sso/exchange` body.
#[derive(Deserialize, utoipa::ToSchema)]
struct ExchangeRequest {
    /// The one-time key from the console URL.
    key: String,
}

/// `POST /api/v1/sso/exchange` answer.
#[derive(Serialize, utoipa::ToSchema)]
struct ExchangeAnswer {
    /// The agent's JWT.
    token: String,
    /// When it expires.
    expires_at: Timestamp,
    /// The agent.
    user: User,
}

/// SPEC 2.4 — `POST /api/v1/sso/exchange`: the console trades its one-time key for a session.
#[utoipa::path(post, path = "/api/v1/sso/exchange", tag = "agent", request_body = ExchangeRequest,
    responses((status = 200, body = ExchangeAnswer, description = "a session"),
        (status = 401, body = crate::error::ApiErrorBody, description = "sso_key_invalid"),
        (status = 403, body = crate::error::ApiErrorBody, description = "user_inactive")))]
async fn post_sso_exchange(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ExchangeRequest>,
) -> Result<axum::Json<ExchangeAnswer>, ApiError> {
    match sso::exchange(&state, &req.key).await {
        Ok(s) => Ok(axum::Json(ExchangeAnswer {
            token: s.token,
            expires_at: s.expires_at,
            user: s.user,
        })),
        Err(SsoError::UserInactive) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "user_inactive",
            "this user is inactive",
        )),
        Err(SsoError::Store(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "sso_key_invalid",
            "the sign-in key is unknown, used or expired",
        )),
    }
}
