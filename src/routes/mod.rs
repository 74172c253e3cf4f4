//! HTTP surfaces, one file each, every one a `router()`; handlers extract, convert to
//! domain types, call one service function and map the result.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod ops;
pub mod provider;
pub mod sso;
pub mod web;

use crate::domain::disposition::DispositionError;
use crate::error::ApiError;
use crate::service::directory::DirectoryError;
use crate::service::disposition::DisposeFailure;
use axum::http::StatusCode;

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Invalid { field, message } | DirectoryError::Shape(field, message) => {
                ApiError::validation(field, message)
            }
            DirectoryError::Store(s) => s.into(),
        }
    }
}

impl From<crate::service::import::ImportError> for ApiError {
    fn from(e: crate::service::import::ImportError) -> Self {
        use crate::service::import::ImportError as E;
        match e {
            E::Header { column, message } => {
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    message,
                );
                err.field = column;
                err
            }
            E::Store(s) => s.into(),
        }
    }
}

impl From<DisposeFailure> for ApiError {
    fn from(e: DisposeFailure) -> Self {
        match e {
            DisposeFailure::NotFound => ApiError::not_found("popup").with_field("popup_id"),
            DisposeFailure::AlreadyDisposed => ApiError::new(
                StatusCode::CONFLICT,
                "already_disposed",
                "the popup is already disposed or expired",
            )
            .with_field("popup_id"),
            DisposeFailure::Invalid(DispositionError { field, message }) => {
                ApiError::validation(field, message)
            }
            DisposeFailure::Store(s) => s.into(),
        }
    }
}

impl From<crate::service::click_to_call::ClickToCallError> for ApiError {
    fn from(e: crate::service::click_to_call::ClickToCallError) -> Self {
        use crate::service::click_to_call::ClickToCallError as E;
        match e {
            E::Invalid { field, message } => ApiError::validation(field, message),
            E::LeadNotFound => ApiError::not_found("lead").with_field("lead_id"),
            E::NotVisible => ApiError::new(
                StatusCode::FORBIDDEN,
                "virtual_number_not_visible",
                e.to_string(),
            )
            .with_field("virtual_number"),
            E::NotConfigured => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "click_to_call_not_configured",
                e.to_string(),
            ),
            E::RateLimited(wait) => {
                let mut err =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string());
                err.retry_after = Some(wait);
                err
            }
            E::ProviderFailed {
                message,
                provider_status,
                provider_body,
            } => {
                let mut err = ApiError::new(StatusCode::BAD_GATEWAY, "provider_failed", message);
                err.extra = vec![
                    ("provider_status", serde_json::json!(provider_status)),
                    ("provider_body", serde_json::json!(provider_body)),
                ];
                err
            }
            E::Store(s) => s.into(),
        }
    }
}
