//! Client of the Close REST API (formerly Close.io).
//!
//! - [`CloseClient`]: authenticated, rate-limited (per API key, honouring 429 resets for every
//!   request of the key), typed errors ([`CloseError`]), bounded retries for reads only.
//! - [`webhook`]: verification of Close webhook signatures.
//! - [`parse_close_datetime`]: tolerant parsing of Close timestamps.

mod api;
pub mod budget;
mod client;
mod datetime;
mod error;
mod model;
pub mod rate_limit;
pub mod webhook;

pub use api::{format_close_datetime, SEARCH_LEAD_FIELDS};
pub use budget::{
    deferring, is_booked, Budget, BudgetError, Deferring, LanePlaces, LocalBudget, Slot,
};
pub use client::{
    CloseClient, CloseClientConfig, EndpointGroup, DEFAULT_BASE_URL, DEFAULT_INITIAL_RPS,
};
pub use datetime::parse_close_datetime;
pub use error::{flatten_field_errors, CloseError};
pub use model::{
    ApiKey, CustomField, CustomFieldObject, EventPage, EventQuery, LeadStatus, SearchPage,
    WebhookEventSpec, WebhookSubscription,
};
