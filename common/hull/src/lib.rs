//! Hull platform client and notification handling.
//!
//! - [`HullClient`]: REST calls (connector settings, status, segments) and the firehose
//!   ([`HullClient::send_firehose`] with [`FirehoseEntry`] identity tokens; the worker's
//!   `firehose` sink batches entries across jobs).
//! - [`notification`]: verification of smart-notifier signatures.
//! - [`FlowControl`] / [`NotificationResponse`]: the answer to a notification.

mod client;
mod error;
mod firehose;
mod flow_control;
pub mod notification;

pub use client::{HullClient, HullClientConfig, HullCredentials};
pub use error::HullError;
pub use firehose::{
    filter_claims, FirehoseEntry, SubjectType, ACCOUNT_CLAIM_KEYS, USER_CLAIM_KEYS,
};
pub use flow_control::{FlowControl, FlowControlType, NotificationError, NotificationResponse};
pub use notification::{NotificationVerifier, VerifierConfig, VerifyError};
