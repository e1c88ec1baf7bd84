//! Typed shapes of the Close responses whose structure is stable.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Close API key. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (trimmed of surrounding whitespace).
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into().trim().to_owned())
    }

    /// A short, stable fingerprint of the key (never the key), naming its request budget.
    pub fn fingerprint(&self) -> String {
        domain::crypto::fingerprint(&self.0)
    }

    /// The secret itself, for the HTTP Basic username. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A lead status (`GET /status/lead/`) and a custom field definition
/// (`GET /custom_field/lead|contact/`) are the domain's own types: the client decodes Close's
/// answers straight into what the mapping uses (fields the mapping does not need are ignored).
pub use domain::mapping::{CustomField, LeadStatus};

/// Which object a custom field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomFieldObject {
    /// `/custom_field/lead/`
    Lead,
    /// `/custom_field/contact/`
    Contact,
}

impl CustomFieldObject {
    /// The path segment for this object type.
    pub fn as_str(&self) -> &'static str {
        match self {
            CustomFieldObject::Lead => "lead",
            CustomFieldObject::Contact => "contact",
        }
    }
}

/// One page of `POST /data/search/` results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchPage {
    /// The matched objects.
    pub data: Vec<Value>,
    /// Cursor of the next page; `None` when this was the last one.
    pub cursor: Option<String>,
}

/// Filters of `GET /event/`. Only the combinations Close allows work (see the API notes);
/// `cursor` must be sent together with the same filters as the first page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// `object_type`, e.g. `lead`, `contact`.
    pub object_type: Option<String>,
    /// `action`, e.g. `created`, `updated`, `deleted`, `merged`.
    pub action: Option<String>,
    /// `lead_id` (also matches the lead's child objects).
    pub lead_id: Option<String>,
    /// `date_updated__gte`.
    pub date_updated_gte: Option<chrono::DateTime<chrono::Utc>>,
    /// `date_updated__lt`.
    pub date_updated_lt: Option<chrono::DateTime<chrono::Utc>>,
    /// `_cursor` from a previous page's `cursor_next`.
    pub cursor: Option<String>,
    /// `_limit` (Close caps it at 50).
    pub limit: Option<u32>,
}

/// One page of the event log, newest first.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct EventPage {
    /// Events (full Close event objects).
    #[serde(default)]
    pub data: Vec<Value>,
    /// Cursor to older events; `None` at the end.
    #[serde(default)]
    pub cursor_next: Option<String>,
}

/// One `(object_type, action)` pair of a webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEventSpec {
    /// e.g. `lead`.
    pub object_type: String,
    /// e.g. `updated`.
    pub action: String,
}

/// A webhook subscription (`/webhook/`). `signature_key` is only returned on creation; it is a
/// secret and is redacted from `Debug`.
#[derive(Clone, PartialEq, Deserialize)]
pub struct WebhookSubscription {
    /// `whsub_…`
    pub id: String,
    /// Hex HMAC key, present in the creation response.
    #[serde(default)]
    pub signature_key: Option<String>,
    /// Delivery URL.
    #[serde(default)]
    pub url: String,
    /// `active` or `paused`.
    #[serde(default)]
    pub status: Option<String>,
    /// Subscribed events.
    #[serde(default)]
    pub events: Vec<WebhookEventSpec>,
}

impl fmt::Debug for WebhookSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSubscription")
            .field("id", &self.id)
            .field(
                "signature_key",
                &self.signature_key.as_ref().map(|_| "<redacted>"),
            )
            .field("url", &self.url)
            .field("status", &self.status)
            .field("events", &self.events)
            .finish()
    }
}

/// A `{data, has_more}` list page.
#[derive(Debug, Deserialize)]
pub(crate) struct ListPage<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let key = ApiKey::new(" api_secret ");
        assert_eq!(key.expose(), "api_secret");
        assert!(!format!("{key:?} {key}").contains("secret"));
        let sub = WebhookSubscription {
            id: "whsub_1".into(),
            signature_key: Some("deadbeef".into()),
            url: "https://x".into(),
            status: None,
            events: vec![],
        };
        assert!(!format!("{sub:?}").contains("deadbeef"));
    }

    #[test]
    fn custom_field_type_is_renamed() {
        let f: CustomField = serde_json::from_str(
            r#"{"id":"cf_1","name":"Domain","type":"text","choices":[],"accepts_multiple_values":false}"#,
        )
        .expect("ok");
        assert_eq!(f.field_type, "text");
    }
}
