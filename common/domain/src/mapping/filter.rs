//! Outgoing filters (original §3.2 / §3.5): which accounts and users are sent to Close, and
//! why the others are skipped.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::settings::Settings;

/// Why an outgoing entity is not sent. [`SkipReason::message`] is the text logged with
/// `outgoing.account.skip` / `outgoing.user.skip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// The account has no value for `lead_identifier_hull`.
    AccountNoIdentValue {
        /// The identifier attribute (`domain`, `external_id`).
        attr: String,
    },
    /// The account is in none of `synchronized_account_segments`.
    AccountNotInSegments,
    /// The user has no account at all, so there is no lead to hang a contact on.
    UserNoAccount,
    /// The user's account is in none of `synchronized_account_segments`.
    UserAccountNotInSegments,
    /// `synchronized_user_segments` is set and the user is in none of them.
    UserNotInUserSegments,
    /// The user's account has no value for `lead_identifier_hull`, so no lead can exist.
    UserAccountNoIdentValue {
        /// The identifier attribute (`domain`, `external_id`).
        attr: String,
    },
    /// The only changes are `closeio/*` attributes this connector wrote itself.
    EchoOnly,
}

impl SkipReason {
    /// The log message. The reasons the original connector had keep its exact text.
    pub fn message(&self) -> String {
        match self {
            SkipReason::AccountNoIdentValue { attr } => format!(
                "The Hull account has no value for the unique identifier attribute '{attr}'"
            ),
            SkipReason::AccountNotInSegments => concat!(
                "The Hull account is not part of any whitelisted segment ",
                "and won't be synchronized with close.io."
            )
            .to_owned(),
            SkipReason::UserNoAccount => concat!(
                "The Hull user is not linked to an account; ",
                "cannot create a contact in close.io without a lead."
            )
            .to_owned(),
            SkipReason::UserAccountNotInSegments => concat!(
                "The linked Hull account is not part of any whitelisted segment, ",
                "the user won't be synchronized as contact to close.io."
            )
            .to_owned(),
            SkipReason::UserNotInUserSegments => concat!(
                "The Hull user is not part of any whitelisted user segment ",
                "and won't be synchronized as contact to close.io."
            )
            .to_owned(),
            SkipReason::UserAccountNoIdentValue { attr } => format!(
                "The linked Hull account has no value for the unique identifier attribute \
                 '{attr}', the user won't be synchronized as contact to close.io."
            ),
            SkipReason::EchoOnly => concat!(
                "The only changes are close.io attributes written by this connector; ",
                "nothing to send to close.io."
            )
            .to_owned(),
        }
    }

    /// A stable message id (the original's ids where it had the reason).
    pub fn id(&self) -> &'static str {
        match self {
            SkipReason::AccountNoIdentValue { .. } => "OperationSkipAccountNoServiceIdentValue",
            SkipReason::AccountNotInSegments => "OperationSkipAccountNotMatchingSegments",
            SkipReason::UserNoAccount => "OperationSkipUserNotLinkedToAccount",
            SkipReason::UserAccountNotInSegments => "OperationSkipAccountNotMatchingSegmentsUser",
            SkipReason::UserNotInUserSegments => "OperationSkipUserNotMatchingSegments",
            SkipReason::UserAccountNoIdentValue { .. } => {
                "OperationSkipUserAccountNoServiceIdentValue"
            }
            SkipReason::EchoOnly => "OperationSkipEchoOnly",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// The identifier attribute as the original prints it (a `null` setting prints as `null`).
fn ident_attr(s: &Settings) -> &str {
    s.lead_identifier_hull.as_deref().unwrap_or("null")
}

/// Whether `account[lead_identifier_hull]` (direct key lookup) holds a non-null value.
fn has_ident_value(s: &Settings, account: &Map<String, Value>) -> bool {
    s.lead_identifier_hull
        .as_deref()
        .and_then(|attr| account.get(attr))
        .is_some_and(|v| !v.is_null())
}

fn intersects(ids: &[String], whitelist: &[String]) -> bool {
    ids.iter().any(|id| whitelist.contains(id))
}

/// §3.2: whether an `account:update` account is sent. Checks the identifier value, then the
/// account segment whitelist (not applied when `is_export`: a manual export sends what the
/// user selected).
pub fn filter_account(
    s: &Settings,
    account: &Map<String, Value>,
    account_segment_ids: &[String],
    is_export: bool,
) -> Result<(), SkipReason> {
    if !has_ident_value(s, account) {
        return Err(SkipReason::AccountNoIdentValue {
            attr: ident_attr(s).to_owned(),
        });
    }
    if !is_export && !intersects(account_segment_ids, &s.synchronized_account_segments) {
        return Err(SkipReason::AccountNotInSegments);
    }
    Ok(())
}

/// §3.5 (with this project's fixes): whether a `user:update` user is sent.
///
/// In order: the user must have an account (`None` or an empty object means none), the
/// account must be whitelisted, the account must have an identifier value, and when
/// `synchronized_user_segments` is set the user must be in one of them. Segment checks do
/// not apply when `is_export`. An account without `closeio/id` is **not** a reason to skip:
/// the worker creates the lead first.
pub fn filter_user(
    s: &Settings,
    user_segment_ids: &[String],
    account: Option<&Map<String, Value>>,
    account_segment_ids: &[String],
    is_export: bool,
) -> Result<(), SkipReason> {
    let account = match account {
        Some(account) if !account.is_empty() => account,
        _ => return Err(SkipReason::UserNoAccount),
    };
    if !is_export && !intersects(account_segment_ids, &s.synchronized_account_segments) {
        return Err(SkipReason::UserAccountNotInSegments);
    }
    // An account already linked to its lead (`closeio/id`) needs no identifier: the contact
    // goes under that lead (the original dropped such users).
    let linked = account
        .get("closeio/id")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty());
    if !linked && !has_ident_value(s, account) {
        return Err(SkipReason::UserAccountNoIdentValue {
            attr: ident_attr(s).to_owned(),
        });
    }
    if let (false, Some(whitelist)) = (is_export, &s.synchronized_user_segments) {
        if !intersects(user_segment_ids, whitelist) {
            return Err(SkipReason::UserNotInUserSegments);
        }
    }
    Ok(())
}
