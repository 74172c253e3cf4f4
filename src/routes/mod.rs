//! HTTP surfaces, one file each, every one a `router()`; handlers extract, convert to
//! domain types, call one service function and map the result.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod ops;
pub mod provider;
pub mod sso;

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
