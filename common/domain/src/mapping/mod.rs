//! The mapping between Hull and Close: pure functions, no I/O, no clock.
//!
//! Compatible with the original Node.js connector (settings normalisation, skip reasons,
//! outgoing bodies, incoming traits and identity claims), without its bugs, plus this
//! project's additions (user segment whitelist, opportunity summaries, deletions and
//! merges, echo guards). Messages from Hull and Close objects are handled as
//! [`serde_json::Value`]s so that this module does not depend on the HTTP clients.
//!
//! - module [`settings`]: [`Settings::from_private_settings`] and its normalisation rules;
//! - module [`metadata`]: the cached Close statuses and custom fields ([`CloseMetadata`]);
//! - module [`filter`]: [`filter_account`], [`filter_user`] and [`SkipReason`];
//! - module [`outbound`]: [`lead_body`], [`contact_body`], [`contact_lookup_email`];
//! - module [`inbound`]: [`lead_traits`], [`contact_traits`], [`account_claims`],
//!   [`user_claims`], [`normalize_url`], [`deleted_traits`], [`merged_traits`];
//! - module [`opportunities`]: [`opportunity_traits`];
//! - module [`identity`]: [`account_key`] (accounts without a Hull id);
//! - module [`echo`]: [`changes_only_closeio`], [`body_hash`];
//! - module [`snake_case`](mod@snake_case): lodash-compatible [`snake_case()`].

pub mod echo;
pub mod filter;
pub mod identity;
pub mod inbound;
pub mod metadata;
pub mod opportunities;
pub mod outbound;
mod path;
pub mod settings;
pub mod snake_case;

#[cfg(test)]
mod tests;

pub use echo::{body_hash, changes_only_closeio};
pub use filter::{filter_account, filter_user, SkipReason};
pub use identity::account_key;
pub use inbound::{
    account_claims, contact_traits, deleted_traits, lead_traits, merged_traits, normalize_url,
    user_claims, ANONYMOUS_ID_PREFIX, TRAIT_PREFIX,
};
pub use metadata::{CloseMetadata, CustomField, LeadStatus};
pub use opportunities::opportunity_traits;
pub use outbound::{contact_body, contact_lookup_email, lead_body};
pub use settings::{FieldMapping, LeadStatusSetting, Settings, SettingsError};
pub use snake_case::snake_case;
