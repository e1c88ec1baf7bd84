//! HTTP errors of the simulated platform, answered as `{"message": …}` like Hull.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to the caller.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Malformed JSON or wrong types (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid credentials / tokens (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown route, connector or object, or credentials that match no connector (404).
    #[error("{0}")]
    NotFound(String),
    /// Body over the configured limit (413).
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    /// Injected fault or other non-success status.
    #[error("{message}")]
    Status {
        /// Status to answer.
        status: StatusCode,
        /// Message to answer.
        message: String,
    },
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Status { status, .. } => *status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "message": self.to_string() }))).into_response()
    }
}

/// Errors of the notifier side (sending to a connector).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    /// No connector with that id.
    #[error("unknown connector {0}")]
    UnknownConnector(String),
    /// The connector has no base URL configured.
    #[error("connector {0} has no url")]
    NoUrl(String),
    /// The channel is not one the simulator sends.
    #[error("unsupported channel {0:?} (expected \"user:update\" or \"account:update\")")]
    UnknownChannel(String),
    /// The object type is not `user_report` / `account_report`.
    #[error("unsupported object_type {0:?} (expected \"user_report\" or \"account_report\")")]
    UnknownObjectType(String),
    /// Some requested profiles do not exist.
    #[error("unknown {kind} ids: {ids:?}")]
    UnknownProfiles {
        /// `user` or `account`.
        kind: &'static str,
        /// The missing ids.
        ids: Vec<String>,
    },
    /// The connector URL is not a valid URL.
    #[error("invalid connector url {0:?}")]
    BadUrl(String),
    /// Signing the notification failed.
    #[error("signing the notification: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    /// Transport failure on a call that is not retried (batch).
    #[error("calling the connector: {0}")]
    Transport(#[from] reqwest::Error),
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::UnknownConnector(_) | NotifyError::UnknownProfiles { .. } => {
                ApiError::NotFound(err.to_string())
            }
            NotifyError::Transport(_) | NotifyError::Sign(_) => ApiError::Status {
                status: StatusCode::BAD_GATEWAY,
                message: err.to_string(),
            },
            _ => ApiError::BadRequest(err.to_string()),
        }
    }
}
