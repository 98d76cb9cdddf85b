//! Errors as JSON responses.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use integrations::{Error, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error's kind and message. Never holds a secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_input`, `not_found`, `already_exists`, `unauthorized`,
    /// `refused`, `provider`, `timeout`, `transport`, `unavailable` (the
    /// store cannot be reached; `Retry-After` says when to try again) or
    /// `internal`.
    pub kind: &'static str,
    /// One line for a person.
    pub message: String,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

/// What a 503 tells clients to wait before trying again, in seconds.
const STORE_RETRY_AFTER: &str = "1";

impl ApiError {
    /// A response with `status`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// The response's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response's `kind`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// 401: a missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: send `Authorization: Bearer <key>`",
        )
    }

    /// The refusal of a request whose key is not accepted: 401, or 503
    /// while the keys cannot be read (the store is down), so that clients
    /// retry instead of dropping a key that is fine.
    pub fn key_refused(keys: &crate::keys::ApiKeys) -> Self {
        if keys.unreadable() {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the API keys cannot be read now: try again shortly",
            )
        } else {
            Self::unauthorized()
        }
    }

    /// 404 for a path parameter.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let (status, kind) = match error.kind() {
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Refused => (StatusCode::FORBIDDEN, "refused"),
            ErrorKind::Provider => (StatusCode::BAD_GATEWAY, "provider"),
            ErrorKind::Transport => (StatusCode::BAD_GATEWAY, "transport"),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            // The database is unreachable: the route works again when it is back.
            ErrorKind::Storage if error.is_temporary() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(%error, "the store is unavailable");
        }
        if status.is_server_error() && kind == "internal" {
            tracing::error!(%error, "request failed");
        }
        Self::new(status, kind, error.to_string())
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection;
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_input",
                "send the body as `Content-Type: application/json`",
            ),
            other if body_timed_out(&other) => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body did not arrive in time",
            ),
            other => Self::invalid(format!("invalid JSON body: {}", other.body_text())),
        }
    }
}

/// Whether a body was refused because it stalled past the body deadline
/// (the router's `RequestBodyTimeoutLayer`).
fn body_timed_out(rejection: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                message: self.message,
            },
        });
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            (self.status, [(header::RETRY_AFTER, STORE_RETRY_AFTER)], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}
