//! API errors of the Close simulator, rendered in the body shapes Close uses.

use hyper::StatusCode;
use serde_json::{json, Map, Value};

/// The 401 message Close sends for a missing or unknown API key (recorded response).
pub const UNAUTHORIZED_MESSAGE: &str = "The server could not verify that you are authorized to access the URL requested.  You either supplied the wrong credentials (e.g. a bad password), or your browser doesn't understand how to supply the credentials required.";

/// An error answer of the simulated API: an HTTP status plus Close's JSON error body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Close API error {status}: {body}")]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// JSON body of the answer.
    pub body: Value,
}

impl ApiError {
    /// Any status with a `{"error": message}` body.
    pub fn message(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    /// 400 with `{"error": message}`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::message(StatusCode::BAD_REQUEST, message)
    }

    /// 400 with `{"errors": [], "field-errors": {field: message}}`.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut fields = Map::new();
        fields.insert(field.to_string(), Value::String(message.into()));
        Self::fields(fields)
    }

    /// 400 with `{"errors": [], "field-errors": fields}`; values may nest (see [`nested`]).
    pub fn fields(fields: Map<String, Value>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "errors": [], "field-errors": fields }),
        }
    }

    /// 401 with Close's body.
    pub fn unauthorized() -> Self {
        Self::message(StatusCode::UNAUTHORIZED, UNAUTHORIZED_MESSAGE)
    }

    /// 404 "Empty query: <Object> matching query does not exist."
    pub fn not_found(object: &str) -> Self {
        Self::message(
            StatusCode::NOT_FOUND,
            format!("Empty query: {object} matching query does not exist."),
        )
    }

    /// 404 for a path the API does not have.
    pub fn no_route() -> Self {
        Self::message(
            StatusCode::NOT_FOUND,
            "The requested URL was not found on the server.",
        )
    }

    /// 405 for a known path with an unsupported method.
    pub fn method_not_allowed() -> Self {
        Self::message(
            StatusCode::METHOD_NOT_ALLOWED,
            "The method is not allowed for the requested URL.",
        )
    }

    /// 413 for a body over the size limit.
    pub fn too_large(limit: usize) -> Self {
        Self::message(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds the limit of {limit} bytes."),
        )
    }

    /// The field errors of a 400 validation error, if it is one.
    pub fn field_errors(&self) -> Option<&Map<String, Value>> {
        self.body.get("field-errors").and_then(Value::as_object)
    }
}

/// Wraps a validation error of list item `index` under `field` the way Close nests them:
/// `{"field": {"errors": {"<index>": {"errors": [], "field-errors": {...}}}}}`.
pub fn nested(field: &str, index: usize, inner: &ApiError) -> ApiError {
    let inner_fields = inner.field_errors().cloned().unwrap_or_else(|| {
        let mut m = Map::new();
        m.insert(
            "__all__".to_string(),
            inner.body.get("error").cloned().unwrap_or(Value::Null),
        );
        m
    });
    let mut items = Map::new();
    items.insert(
        index.to_string(),
        json!({ "errors": [], "field-errors": inner_fields }),
    );
    let mut fields = Map::new();
    fields.insert(field.to_string(), json!({ "errors": items }));
    ApiError::fields(fields)
}

/// Result type of simulator operations.
pub type ApiResult<T> = Result<T, ApiError>;
