//! The error taxonomy every worker decision is based on.
//!
//! Every failure that reaches the worker loop is classified as one of three kinds:
//! - [`ErrorClass::Retryable`]: transient (5xx, timeouts, connection errors, broker or database
//!   hiccups, a 429); retried with backoff, optionally not before `after`.
//! - [`ErrorClass::Permanent`]: the input itself is wrong (a 400 whose field-errors say the data
//!   is invalid, a malformed message); retrying cannot help, so it goes to the dead letters.
//! - [`ErrorClass::Configuration`]: the connector's settings are wrong (401, missing API key);
//!   the connector's jobs are parked until the settings change.

use std::time::Duration;

/// How the worker must treat a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later; `after` is a lower bound given by the remote side (429 reset).
    Retryable { after: Option<Duration> },
    /// Retrying cannot succeed: dead-letter it.
    Permanent,
    /// The connector is misconfigured: park its jobs until the settings are fixed.
    Configuration,
}

impl ErrorClass {
    /// Short label used in logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ErrorClass::Retryable { .. } => "retryable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Configuration => "configuration",
        }
    }
}

/// Anything that can say how it should be handled.
pub trait Classify {
    /// The class of this failure.
    fn class(&self) -> ErrorClass;
}
