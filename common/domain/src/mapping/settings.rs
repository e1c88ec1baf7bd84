//! The connector's private settings, normalised exactly like the original connector does
//! (`SyncAgent.normalizeSettings`), with the project's additions.
//!
//! Normalisation rules kept from the original:
//! - `lead_identifier_hull` defaults to `domain`, `lead_identifier_service` to `url` and
//!   `lead_status` to `N/A`, but only when the key is **absent**; a stored `null` or `""` is
//!   kept as it is;
//! - `lead_attributes_outbound` gets the implicit identifier mapping
//!   `{hull_field_name: <lead_identifier_hull>, closeio_field_name: <lead_identifier_service>}`
//!   appended, unless that exact pair is already listed;
//! - `lead_attributes_inbound` gets `<lead_identifier_service>` appended unless listed;
//! - outbound entries lacking `hull_field_name` or `closeio_field_name` (e.g. `{}`) are dropped.
//!
//! Deliberate fix: a stored `null` or `""` `lead_status` is *not* sent as `status_id` (the
//! original would send it, and Close rejects it); it means "no status", like `N/A`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// `lead_status` values that mean "send no `status_id`, let Close apply its default".
const NO_STATUS_VALUES: [&str; 2] = ["N/A", "hull-default"];

/// Default of `lead_identifier_hull` when the key is absent.
const DEFAULT_IDENTIFIER_HULL: &str = "domain";

/// Default of `lead_identifier_service` when the key is absent.
const DEFAULT_IDENTIFIER_SERVICE: &str = "url";

/// Smallest accepted `fetch_interval_minutes`.
const MIN_FETCH_INTERVAL_MINUTES: u64 = 1;

/// A private settings value that cannot be used. The message names the setting and what
/// was expected, e.g. `lead_attributes_outbound[2].closeio_field_name must be a string`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    /// `private_settings` itself is not a JSON object.
    #[error("private_settings must be an object, got {found}")]
    NotAnObject {
        /// JSON type that was found.
        found: &'static str,
    },
    /// A setting has the wrong JSON type.
    #[error("{setting} must be {expected}, got {found}")]
    WrongType {
        /// Path of the offending setting, e.g. `lead_attributes_outbound[2].closeio_field_name`.
        setting: String,
        /// What was expected, e.g. `a string`.
        expected: &'static str,
        /// JSON type that was found.
        found: &'static str,
    },
    /// A setting has the right type but an unusable value.
    #[error("{setting} {reason}")]
    InvalidValue {
        /// Name of the offending setting.
        setting: String,
        /// Why the value is unusable, e.g. `must be at least 1`.
        reason: String,
    },
}

/// What `lead_status` asks for when a lead is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "status_id", rename_all = "snake_case")]
pub enum LeadStatusSetting {
    /// Send no `status_id`: the key is absent, `N/A`, `hull-default`, `null` or `""`.
    NotSent,
    /// Send this Close status id (`stat_…`) when creating a lead.
    StatusId(String),
}

impl LeadStatusSetting {
    /// The status id to send on create, if any.
    pub fn status_id(&self) -> Option<&str> {
        match self {
            LeadStatusSetting::NotSent => None,
            LeadStatusSetting::StatusId(id) => Some(id),
        }
    }
}

/// One row of a data-mapping table: a Hull attribute sent to a Close field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMapping {
    /// Hull attribute path (`lodash.get` semantics: exact key first, then dotted path).
    pub hull_field_name: String,
    /// Close field: `name`, `url`, `description`, `custom.<id>`, `title`, `emails.<type>`…
    pub closeio_field_name: String,
}

/// Normalised private settings of one connector.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Close API key; `None` when absent, `null` or not a string (the status check then
    /// reports "no API key configured", as the original does).
    pub api_key: Option<String>,
    /// Whitelist of Hull account segment ids; absent or `null` means empty (nothing is sent).
    pub synchronized_account_segments: Vec<String>,
    /// Optional whitelist of Hull user segment ids. `None` (absent or `null`): every user of a
    /// whitelisted account passes. `Some(list)`: the user must be in one of them (an empty
    /// list lets no user through).
    pub synchronized_user_segments: Option<Vec<String>>,
    /// Status for new leads.
    pub lead_status: LeadStatusSetting,
    /// Hull account attribute identifying an account (`domain` or `external_id`); `None` when
    /// stored as `null`.
    pub lead_identifier_hull: Option<String>,
    /// Close lead field holding the identifier (`url`, `name`, `description`,
    /// `custom.<id>`); `None` when stored as `null`.
    pub lead_identifier_service: Option<String>,
    /// Hull account → Close lead mappings, the implicit identifier mapping included.
    pub lead_attributes_outbound: Vec<FieldMapping>,
    /// Close lead fields pulled into Hull, `lead_identifier_service` included.
    pub lead_attributes_inbound: Vec<String>,
    /// Hull user → Close contact mappings.
    pub contact_attributes_outbound: Vec<FieldMapping>,
    /// Close contact fields pulled into Hull.
    pub contact_attributes_inbound: Vec<String>,
    /// Opt-in (`sync_opportunities`): write opportunity summary traits on accounts.
    pub sync_opportunities: bool,
    /// Optional incremental fetch interval (`fetch_interval_minutes`), at least 1.
    pub fetch_interval_minutes: Option<u32>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "synchronized_account_segments",
                &self.synchronized_account_segments,
            )
            .field(
                "synchronized_user_segments",
                &self.synchronized_user_segments,
            )
            .field("lead_status", &self.lead_status)
            .field("lead_identifier_hull", &self.lead_identifier_hull)
            .field("lead_identifier_service", &self.lead_identifier_service)
            .field("lead_attributes_outbound", &self.lead_attributes_outbound)
            .field("lead_attributes_inbound", &self.lead_attributes_inbound)
            .field(
                "contact_attributes_outbound",
                &self.contact_attributes_outbound,
            )
            .field(
                "contact_attributes_inbound",
                &self.contact_attributes_inbound,
            )
            .field("sync_opportunities", &self.sync_opportunities)
            .field("fetch_interval_minutes", &self.fetch_interval_minutes)
            .finish()
    }
}

impl Settings {
    /// Reads and normalises a connector's `private_settings` object.
    ///
    /// Unknown keys (`last_sync_at`, `pending_export_id`, titles…) are ignored. A value of the
    /// wrong type is an error naming the setting, except where the original connector ignores
    /// it: `api_key` (treated as not configured) and outbound mapping rows missing either
    /// field (dropped).
    pub fn from_private_settings(v: &Value) -> Result<Settings, SettingsError> {
        let obj = v.as_object().ok_or(SettingsError::NotAnObject {
            found: json_type(v),
        })?;

        let api_key = obj
            .get("api_key")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let synchronized_account_segments =
            string_list(obj, "synchronized_account_segments")?.unwrap_or_default();
        let synchronized_user_segments = string_list(obj, "synchronized_user_segments")?;
        let lead_status = lead_status(obj)?;
        let lead_identifier_hull =
            defaulted_string(obj, "lead_identifier_hull", DEFAULT_IDENTIFIER_HULL)?;
        let lead_identifier_service =
            defaulted_string(obj, "lead_identifier_service", DEFAULT_IDENTIFIER_SERVICE)?;

        let mut lead_attributes_outbound = mapping_list(obj, "lead_attributes_outbound")?;
        if let (Some(hull), Some(service)) = (&lead_identifier_hull, &lead_identifier_service) {
            let implicit = FieldMapping {
                hull_field_name: hull.clone(),
                closeio_field_name: service.clone(),
            };
            if !lead_attributes_outbound.contains(&implicit) {
                lead_attributes_outbound.push(implicit);
            }
        }

        let mut lead_attributes_inbound =
            string_list(obj, "lead_attributes_inbound")?.unwrap_or_default();
        if let Some(service) = &lead_identifier_service {
            if !lead_attributes_inbound.contains(service) {
                lead_attributes_inbound.push(service.clone());
            }
        }

        Ok(Settings {
            api_key,
            synchronized_account_segments,
            synchronized_user_segments,
            lead_status,
            lead_identifier_hull,
            lead_identifier_service,
            lead_attributes_outbound,
            lead_attributes_inbound,
            contact_attributes_outbound: mapping_list(obj, "contact_attributes_outbound")?,
            contact_attributes_inbound: string_list(obj, "contact_attributes_inbound")?
                .unwrap_or_default(),
            sync_opportunities: optional_bool(obj, "sync_opportunities")?.unwrap_or(false),
            fetch_interval_minutes: fetch_interval(obj)?,
        })
    }

    /// Whether the API key counts as configured: a string longer than 5 characters.
    pub fn has_valid_api_key(&self) -> bool {
        self.api_key
            .as_deref()
            .is_some_and(|key| key.chars().count() > 5)
    }
}

/// The JSON type name used in error messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(setting: impl Into<String>, expected: &'static str, found: &Value) -> SettingsError {
    SettingsError::WrongType {
        setting: setting.into(),
        expected,
        found: json_type(found),
    }
}

/// A string setting with a default for an absent key; `null` stays `None`, `""` stays `""`.
fn defaulted_string(
    obj: &Map<String, Value>,
    key: &str,
    default: &str,
) -> Result<Option<String>, SettingsError> {
    match obj.get(key) {
        None => Ok(Some(default.to_owned())),
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn lead_status(obj: &Map<String, Value>) -> Result<LeadStatusSetting, SettingsError> {
    match obj.get("lead_status") {
        None | Some(Value::Null) => Ok(LeadStatusSetting::NotSent),
        Some(Value::String(s)) if s.is_empty() || NO_STATUS_VALUES.contains(&s.as_str()) => {
            Ok(LeadStatusSetting::NotSent)
        }
        Some(Value::String(s)) => Ok(LeadStatusSetting::StatusId(s.clone())),
        Some(other) => Err(wrong_type("lead_status", "a string", other)),
    }
}

/// A list of strings; `None` when absent or `null`. `null` elements are skipped.
fn string_list(obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, SettingsError> {
    let items = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type(key, "an array of strings", other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Null => {}
            Value::String(s) => out.push(s.clone()),
            other => return Err(wrong_type(format!("{key}[{i}]"), "a string", other)),
        }
    }
    Ok(Some(out))
}

/// A mapping table. Rows missing a field (absent, `null` or `""`) are dropped like the
/// original does; a field of another type is an error.
fn mapping_list(obj: &Map<String, Value>, key: &str) -> Result<Vec<FieldMapping>, SettingsError> {
    let items = match obj.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type(key, "an array of mappings", other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let row = match item {
            Value::Null => continue,
            Value::Object(row) => row,
            other => return Err(wrong_type(format!("{key}[{i}]"), "an object", other)),
        };
        let hull = mapping_field(row, key, i, "hull_field_name")?;
        let service = mapping_field(row, key, i, "closeio_field_name")?;
        if let (Some(hull_field_name), Some(closeio_field_name)) = (hull, service) {
            out.push(FieldMapping {
                hull_field_name,
                closeio_field_name,
            });
        }
    }
    Ok(out)
}

fn mapping_field(
    row: &Map<String, Value>,
    key: &str,
    index: usize,
    field: &str,
) -> Result<Option<String>, SettingsError> {
    match row.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(
            format!("{key}[{index}].{field}"),
            "a string",
            other,
        )),
    }
}

fn optional_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, SettingsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(key, "a boolean", other)),
    }
}

/// `fetch_interval_minutes`: a positive integer, as a number or a numeric string (Hull
/// stores interval settings as strings, e.g. `"720"`).
fn fetch_interval(obj: &Map<String, Value>) -> Result<Option<u32>, SettingsError> {
    const KEY: &str = "fetch_interval_minutes";
    let minutes = match obj.get(KEY) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(other) => return Err(wrong_type(KEY, "a positive integer", other)),
    };
    let minutes = minutes.ok_or_else(|| SettingsError::InvalidValue {
        setting: KEY.to_owned(),
        reason: "must be a positive integer".to_owned(),
    })?;
    if minutes < MIN_FETCH_INTERVAL_MINUTES {
        return Err(SettingsError::InvalidValue {
            setting: KEY.to_owned(),
            reason: format!("must be at least {MIN_FETCH_INTERVAL_MINUTES}"),
        });
    }
    u32::try_from(minutes)
        .map(Some)
        .map_err(|_| SettingsError::InvalidValue {
            setting: KEY.to_owned(),
            reason: format!("must be at most {}", u32::MAX),
        })
}
