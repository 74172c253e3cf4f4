//! One error shape per surface: [`ApiError`] for admin and agent routes
//! (`{"error":{"code","message","field"}}`) and [`ProviderError`] for provider routes
//! (the LGTC envelope). Internal causes are logged once here and never sent.

use crate::store::StoreError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An admin/agent API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// snake_case code.
    pub code: &'static str,
    /// Human text (never contains secrets or internal causes).
    pub message: String,
    /// snake_case JSON path of the offending field.
    pub field: Option<String>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
    /// Extra keys of the error object where a section says so (e.g. `provider_status`).
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            extra: Vec::new(),
        }
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 422 `validation_failed` naming `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
        .with_field(field)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 503 `unavailable`.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is unavailable; nothing was changed",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message, "field": self.field});
        if let Some(map) = error.as_object_mut() {
            for (k, v) in &self.extra {
                map.insert((*k).to_owned(), v.clone());
            }
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found("resource"),
            StoreError::Conflict { code, field } => Self::new(
                StatusCode::CONFLICT,
                code,
                format!("{field} is already in use"),
            )
            .with_field(field),
            StoreError::UnknownReference { field } => {
                Self::validation(field.clone(), format!("{field} does not exist"))
            }
            StoreError::Unavailable(cause) => {
                tracing::error!(error = ?cause, "store failure");
                Self::unavailable()
            }
        }
    }
}

/// A provider API error: the LGTC envelope.
#[derive(Debug, Clone)]
pub struct ProviderError {
    /// HTTP status.
    pub status: StatusCode,
    /// PascalCase `ExceptionType`.
    pub code: &'static str,
    /// `ExceptionMessage`.
    pub message: String,
    /// `Field`, spelled as the connector's format spells it.
    pub field: Option<String>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ProviderError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 429 `RateLimited` with `Retry-After`.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RateLimited",
            "Too many requests for this connector; retry later",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 503 `ServiceUnavailable`.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "Service unavailable; nothing was accepted",
        )
    }

    /// The envelope body.
    pub fn body(&self) -> serde_json::Value {
        json!({"Status": "Error", "ExceptionType": self.code, "ExceptionMessage": self.message, "Field": self.field})
    }
}

impl IntoResponse for ProviderError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

impl From<StoreError> for ProviderError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Unavailable(cause) = &e {
            tracing::error!(error = ?cause, "store failure");
        }
        Self::unavailable()
    }
}

impl From<crate::domain::call::FieldError> for ProviderError {
    fn from(e: crate::domain::call::FieldError) -> Self {
        let code = match e.problem {
            crate::domain::call::FieldProblem::Missing => "MandatoryFieldMissing",
            crate::domain::call::FieldProblem::Invalid => "InvalidField",
        };
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.message).with_field(e.field)
    }
}

/// Reads a request body up to `limit` bytes.
///
/// # Errors
/// `None` when the body is larger than `limit` or cannot be read.
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable
        }
    })
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit.
    TooLarge,
    /// The connection failed.
    Unreadable,
}

/// Body limit for admin/agent JSON bodies, set from `server.max_body_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A JSON body for admin/agent routes: malformed JSON is 400 `invalid_json`, a value of
/// the wrong shape 422 `validation_failed` naming the field, an oversized body 413.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(65536, |l| l.0);
        let bytes = read_body(req.into_body(), limit)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the body is too large",
                ),
                BodyError::Unreadable => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "the body could not be read",
                ),
            })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body must be a JSON object",
            ));
        }
        parse_value(value).map(ApiJson)
    }
}

/// Deserialises a JSON value, naming the offending field (snake_case JSON path).
///
/// # Errors
/// 422 `validation_failed` with the path of the first wrong value.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if let Some(field) = crate::domain::text::nul_path(&value) {
        return Err(ApiError::validation(
            field,
            "contains a NUL character, which no field may hold",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = json_path(e.path());
        let inner = e.into_inner().to_string();
        let field = if path.is_empty() || path == "." {
            // a missing field: serde says "missing field `x`"
            inner.split('`').nth(1).unwrap_or_default().to_owned()
        } else {
            path
        };
        ApiError::validation(field, inner)
    })
}

fn json_path(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Query parameters for admin/agent routes: unreadable ones are 400 `invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q).map(ApiQuery).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("the query cannot be read: {e}"),
            )
        })
    }
}

/// The admin/agent error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiErrorDetail,
}

/// `{"code","message","field"}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ApiErrorDetail {
    /// snake_case code, e.g. `validation_failed`.
    pub code: String,
    /// Human text.
    pub message: String,
    /// snake_case JSON path of the offending field, e.g. `task.due_at`.
    pub field: Option<String>,
}

/// The LGTC error envelope, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ProviderErrorBody {
    /// Always `Error`.
    pub status: String,
    /// PascalCase code, e.g. `MandatoryFieldMissing`.
    pub exception_type: String,
    /// Human text.
    pub exception_message: String,
    /// The offending field as the connector's format spells it.
    pub field: Option<String>,
}
