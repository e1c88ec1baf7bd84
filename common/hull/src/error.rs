//! Typed failures of the Hull client.

use domain::error::{Classify, ErrorClass};

/// Everything a Hull REST or firehose call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HullError {
    /// Connection problem (refused, reset...).
    #[error("transport error talking to Hull: {0}")]
    Transport(String),
    /// The request timed out.
    #[error("request to Hull timed out")]
    Timeout,
    /// 401/403: the connector id or secret is wrong.
    #[error("Hull rejected the connector credentials (HTTP {status})")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// Any other non-2xx answer.
    #[error("Hull answered HTTP {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// An identity claim set has no usable key (or cannot be signed).
    #[error("invalid identity claims: {0}")]
    InvalidClaims(String),
    /// A 2xx response whose body is not what was expected.
    #[error("could not decode the Hull response: {0}")]
    Decode(String),
    /// The client configuration or credentials cannot produce a valid request
    /// (e.g. an organization host from which no firehose host can be derived).
    #[error("invalid Hull client configuration: {0}")]
    InvalidConfig(String),
}

impl Classify for HullError {
    fn class(&self) -> ErrorClass {
        match self {
            HullError::Transport(_) | HullError::Timeout => ErrorClass::Retryable { after: None },
            HullError::Status { status, .. } if *status >= 500 || *status == 429 => {
                ErrorClass::Retryable { after: None }
            }
            // 402: organization disabled; 404: connector not found / bad id-secret.
            HullError::Unauthorized { .. }
            | HullError::InvalidConfig(_)
            | HullError::Status {
                status: 402 | 404, ..
            } => ErrorClass::Configuration,
            HullError::Status { .. } | HullError::InvalidClaims(_) | HullError::Decode(_) => {
                ErrorClass::Permanent
            }
        }
    }
}

/// Longest body kept in an error.
const MAX_BODY_CHARS: usize = 2_000;

impl HullError {
    /// The error for a non-2xx status.
    pub(crate) fn from_status(status: u16, body: &str) -> HullError {
        match status {
            401 | 403 => HullError::Unauthorized { status },
            _ => HullError::Status {
                status,
                body: match body.char_indices().nth(MAX_BODY_CHARS) {
                    Some((idx, _)) => format!("{}…", &body[..idx]),
                    None => body.to_owned(),
                },
            },
        }
    }

    /// Maps a reqwest failure.
    pub(crate) fn from_reqwest(e: reqwest::Error) -> HullError {
        let e = e.without_url();
        if e.is_timeout() && !e.is_connect() {
            HullError::Timeout
        } else {
            HullError::Transport(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let retry = ErrorClass::Retryable { after: None };
        assert_eq!(HullError::from_status(503, "x").class(), retry);
        assert_eq!(HullError::Timeout.class(), retry);
        assert_eq!(HullError::Transport("reset".into()).class(), retry);
        assert_eq!(
            HullError::from_status(401, "").class(),
            ErrorClass::Configuration
        );
        assert_eq!(
            HullError::from_status(404, "").class(),
            ErrorClass::Configuration
        );
        assert_eq!(
            HullError::from_status(400, "bad").class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            HullError::InvalidClaims("none".into()).class(),
            ErrorClass::Permanent
        );
    }
}
