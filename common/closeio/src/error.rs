//! Typed failures of the Close client and the parsing of Close error bodies.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use domain::error::{Classify, ErrorClass};

/// Everything a Close API call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloseError {
    /// 400: Close rejected the data. `field_errors` is the raw (possibly nested) `field-errors`
    /// object; the `Display` output flattens it into readable `path: message` lines.
    #[error("{}", describe_bad_request(errors, field_errors, message.as_deref()))]
    BadRequest {
        /// Top-level `errors` strings.
        errors: Vec<String>,
        /// The raw `field-errors` object (`Value::Null` when absent).
        field_errors: Value,
        /// The `error` message of the body, when it has one.
        message: Option<String>,
    },
    /// 401: the API key is wrong or revoked.
    #[error("Close rejected the API key (401 Unauthorized)")]
    Unauthorized,
    /// 403: the key's user is not allowed to do this.
    #[error("Close denied the request (403 Forbidden)")]
    Forbidden,
    /// 404: the object does not exist.
    #[error("Close object not found: {message}")]
    NotFound {
        /// The message Close gave (or a generic one).
        message: String,
    },
    /// 429: the rate limit was hit; nothing for this key should be sent before `wait` passes.
    #[error("Close rate limit hit; retry in {:.3} s", wait.as_secs_f64())]
    RateLimited {
        /// How long to wait before the next request for the same key.
        wait: Duration,
    },
    /// 5xx answer.
    #[error("Close server error {status}: {body}")]
    Server {
        /// HTTP status code.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// The request timed out (it may have been applied).
    #[error("request to Close timed out")]
    Timeout,
    /// The connection could not be established; the request was never sent.
    #[error("could not connect to Close: {0}")]
    Connect(String),
    /// The connection failed after the request may have been sent (reset, broken pipe...).
    #[error("transport error talking to Close: {0}")]
    Transport(String),
    /// A 2xx response whose body is not what was expected.
    #[error("could not decode the Close response: {0}")]
    Decode(String),
    /// Any other non-2xx status (402, 405, 415...).
    #[error("Close answered HTTP {status}: {body}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// The key's budget for this endpoint group is booked further ahead than the caller would
    /// wait (see [`crate::budget::deferring`]); the request was not sent and nothing was
    /// reserved.
    #[error("the Close budget of this key ({group}) is booked for the next {after:?}")]
    BudgetBusy {
        /// Fingerprint of the API key.
        key_fp: String,
        /// The endpoint group.
        group: &'static str,
        /// How long until its next free slot.
        after: std::time::Duration,
        /// The group's spacing.
        spacing: std::time::Duration,
    },
    /// The shared request budget could not be reached; the request was not sent.
    #[error("Close request budget unavailable: {0}")]
    Budget(String),
    /// The client configuration is unusable (bad base URL, zero rate...).
    #[error("invalid Close client configuration: {0}")]
    InvalidConfig(String),
}

impl CloseError {
    /// A short, bounded label of the kind of failure (dead letters are grouped by it).
    pub fn label(&self) -> &'static str {
        match self {
            CloseError::BadRequest { .. } => "close_bad_request",
            CloseError::Unauthorized => "close_unauthorized",
            CloseError::Forbidden => "close_forbidden",
            CloseError::NotFound { .. } => "close_not_found",
            CloseError::RateLimited { .. } | CloseError::BudgetBusy { .. } => "close_rate_limited",
            CloseError::Server { .. } => "close_server_error",
            CloseError::Timeout => "close_timeout",
            CloseError::Connect(_) | CloseError::Transport(_) => "close_unreachable",
            CloseError::Decode(_) => "close_bad_answer",
            CloseError::Http { .. } => "close_http_error",
            CloseError::Budget(_) => "budget_unavailable",
            CloseError::InvalidConfig(_) => "configuration",
        }
    }

    /// True when a failed *write* may nevertheless have been applied by Close: a timeout, a
    /// transport failure after the request was sent, or a 5xx. Only meaningful for the result
    /// of a write call (create/update/delete); the caller must then look the object up before
    /// writing again instead of re-sending blindly.
    pub fn is_ambiguous_write(&self) -> bool {
        matches!(
            self,
            CloseError::Timeout | CloseError::Transport(_) | CloseError::Server { .. }
        )
    }

    /// True for failures a read may be retried on (429, 5xx, timeout, connection problems).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CloseError::RateLimited { .. }
                | CloseError::Server { .. }
                | CloseError::Timeout
                | CloseError::Connect(_)
                | CloseError::Transport(_)
                | CloseError::Budget(_)
        )
    }

    /// Builds the error for a non-2xx, non-429 status from the response body text.
    pub(crate) fn from_status(status: u16, body: &str) -> CloseError {
        let json: Option<Value> = serde_json::from_str(body).ok();
        match status {
            400 => bad_request_from_body(json.as_ref(), body),
            401 => CloseError::Unauthorized,
            403 => CloseError::Forbidden,
            404 => CloseError::NotFound {
                message: json
                    .as_ref()
                    .and_then(error_message)
                    .unwrap_or_else(|| "not found".to_owned()),
            },
            500..=599 => CloseError::Server {
                status,
                body: truncate(body),
            },
            _ => CloseError::Http {
                status,
                body: truncate(body),
            },
        }
    }
}

impl Classify for CloseError {
    fn class(&self) -> ErrorClass {
        match self {
            CloseError::RateLimited { wait } => ErrorClass::Retryable { after: Some(*wait) },
            CloseError::BudgetBusy { after, .. } => ErrorClass::Retryable {
                after: Some(*after),
            },
            CloseError::Server { .. }
            | CloseError::Timeout
            | CloseError::Connect(_)
            | CloseError::Transport(_)
            | CloseError::Budget(_) => ErrorClass::Retryable { after: None },
            CloseError::Unauthorized | CloseError::Forbidden | CloseError::InvalidConfig(_) => {
                ErrorClass::Configuration
            }
            // 402 means the Close plan limit is reached: only the operator can fix that.
            CloseError::Http { status: 402, .. } => ErrorClass::Configuration,
            CloseError::BadRequest { .. }
            | CloseError::NotFound { .. }
            | CloseError::Decode(_)
            | CloseError::Http { .. } => ErrorClass::Permanent,
        }
    }
}

/// Longest body kept in an error, so logs stay readable.
const MAX_BODY_CHARS: usize = 2_000;

fn truncate(body: &str) -> String {
    match body.char_indices().nth(MAX_BODY_CHARS) {
        Some((idx, _)) => format!("{}…", &body[..idx]),
        None => body.to_owned(),
    }
}

/// The `error` message of a body: a string, or an object with `message`, or the first of
/// `errors`.
fn error_message(json: &Value) -> Option<String> {
    match json.get("error") {
        Some(Value::String(s)) => return Some(s.clone()),
        Some(Value::Object(obj)) => {
            if let Some(Value::String(s)) = obj.get("message") {
                return Some(s.clone());
            }
        }
        _ => {}
    }
    if let Some(Value::String(s)) = json.get("message") {
        return Some(s.clone());
    }
    json.get("errors")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find_map(Value::as_str))
        .map(str::to_owned)
}

fn bad_request_from_body(json: Option<&Value>, raw: &str) -> CloseError {
    let Some(json) = json else {
        return CloseError::BadRequest {
            errors: Vec::new(),
            field_errors: Value::Null,
            message: (!raw.trim().is_empty()).then(|| truncate(raw.trim())),
        };
    };
    let errors = json
        .get("errors")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(value_text).collect())
        .unwrap_or_default();
    let message = match json.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(obj)) => obj.get("message").map(value_text),
        _ => None,
    };
    CloseError::BadRequest {
        errors,
        field_errors: json.get("field-errors").cloned().unwrap_or(Value::Null),
        message,
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe_bad_request(errors: &[String], field_errors: &Value, message: Option<&str>) -> String {
    let mut out = String::from("Close rejected the request (400)");
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = message {
        parts.push(m.to_owned());
    }
    parts.extend(errors.iter().cloned());
    parts.extend(flatten_field_errors(field_errors));
    for (i, p) in parts.iter().enumerate() {
        let sep = if i == 0 { ": " } else { "; " };
        let _ = write!(out, "{sep}{p}");
    }
    out
}

/// Flattens Close's (possibly nested) `field-errors` into `path: message` lines, e.g.
/// `contacts[0].phones[0].phone: Invalid phone number.`.
///
/// Nested list errors come as `{"errors": {"<index>": {"errors": [...], "field-errors": {...}}}}`.
pub fn flatten_field_errors(field_errors: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Object(map) = field_errors {
        for (field, v) in map {
            flatten_node(field, v, &mut out);
        }
    } else if !field_errors.is_null() {
        out.push(value_text(field_errors));
    }
    out
}

fn flatten_node(path: &str, node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                flatten_node(path, item, out);
            }
        }
        Value::Object(map) if map.contains_key("errors") || map.contains_key("field-errors") => {
            match map.get("errors") {
                Some(Value::Object(indexed)) => {
                    for (idx, child) in indexed {
                        flatten_node(&format!("{path}[{idx}]"), child, out);
                    }
                }
                Some(other) => flatten_node(path, other, out),
                None => {}
            }
            if let Some(Value::Object(fields)) = map.get("field-errors") {
                for (field, child) in fields {
                    flatten_node(&join_path(path, field), child, out);
                }
            }
        }
        Value::Object(fields) => {
            for (field, child) in fields {
                flatten_node(&join_path(path, field), child, out);
            }
        }
        leaf => {
            if path.is_empty() {
                out.push(value_text(leaf));
            } else {
                out.push(format!("{path}: {}", value_text(leaf)));
            }
        }
    }
}

fn join_path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_field_errors_are_flattened_readably() {
        let body = r#"{"errors":[],"field-errors":{"contacts":{"errors":{"0":{"errors":[],"field-errors":{"phones":{"errors":{"0":{"errors":[],"field-errors":{"phone":"Invalid phone number."}}}}}}}}}}"#;
        let err = CloseError::from_status(400, body);
        assert_eq!(
            err.to_string(),
            "Close rejected the request (400): contacts[0].phones[0].phone: Invalid phone number."
        );
        assert_eq!(err.class(), ErrorClass::Permanent);
    }

    #[test]
    fn flat_field_errors_and_messages() {
        let err = CloseError::from_status(
            400,
            r#"{"errors": ["bad"], "field-errors": {"status": "Not a valid choice.", "lead": "This field is required."}}"#,
        );
        let CloseError::BadRequest {
            errors, message, ..
        } = &err
        else {
            panic!("expected BadRequest, got {err:?}");
        };
        assert_eq!(errors, &vec!["bad".to_owned()]);
        assert_eq!(message, &None);
        assert_eq!(
            err.to_string(),
            "Close rejected the request (400): bad; status: Not a valid choice.; lead: This field is required."
        );

        let err = CloseError::from_status(400, r#"{"error": "max_skip = 250"}"#);
        assert_eq!(
            err.to_string(),
            "Close rejected the request (400): max_skip = 250"
        );

        let err = CloseError::from_status(400, "not json");
        assert_eq!(
            err.to_string(),
            "Close rejected the request (400): not json"
        );
    }

    #[test]
    fn list_of_messages_under_a_field() {
        let lines = flatten_field_errors(&json!({"emails": ["Invalid email.", "Too long."]}));
        assert_eq!(lines, vec!["emails: Invalid email.", "emails: Too long."]);
    }

    #[test]
    fn statuses_map_to_variants_and_classes() {
        assert!(matches!(
            CloseError::from_status(401, r#"{"error":"nope"}"#),
            CloseError::Unauthorized
        ));
        assert_eq!(CloseError::Unauthorized.class(), ErrorClass::Configuration);
        assert_eq!(CloseError::Forbidden.class(), ErrorClass::Configuration);
        let nf = CloseError::from_status(
            404,
            r#"{"error": "Empty query: Lead matching query does not exist."}"#,
        );
        match &nf {
            CloseError::NotFound { message } => {
                assert_eq!(message, "Empty query: Lead matching query does not exist.")
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(nf.class(), ErrorClass::Permanent);
        let nf = CloseError::from_status(404, r#"{"errors":["Source lead does not exist."]}"#);
        assert_eq!(
            nf.to_string(),
            "Close object not found: Source lead does not exist."
        );
        let s = CloseError::from_status(503, "down");
        assert_eq!(s.class(), ErrorClass::Retryable { after: None });
        assert!(s.is_ambiguous_write());
        assert!(!CloseError::Connect("refused".into()).is_ambiguous_write());
        assert_eq!(
            CloseError::RateLimited {
                wait: Duration::from_millis(250)
            }
            .class(),
            ErrorClass::Retryable {
                after: Some(Duration::from_millis(250))
            }
        );
        assert_eq!(
            CloseError::Decode("x".into()).class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            CloseError::from_status(402, "").class(),
            ErrorClass::Configuration
        );
        assert_eq!(
            CloseError::from_status(415, "").class(),
            ErrorClass::Permanent
        );
    }
}
