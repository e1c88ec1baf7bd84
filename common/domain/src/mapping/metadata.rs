//! The Close metadata the mapping needs, cached per connector: lead statuses and the custom
//! fields of leads and contacts.

use serde::{Deserialize, Serialize};

/// A Close lead status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadStatus {
    /// `stat_…`
    pub id: String,
    /// Display label, e.g. `Potential`; becomes `closeio/status`.
    pub label: String,
}

/// A Close custom field definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomField {
    /// `cf_…` (legacy `lcf_…`/`ccf_…`); objects carry values under `custom.<id>`.
    pub id: String,
    /// Human name; incoming traits are named `closeio/<snake_case(name)>`.
    pub name: String,
    /// Close field type (`text`, `number`, `date`, `choices`…).
    #[serde(rename = "type")]
    pub field_type: String,
}

/// Metadata cached per connector and refreshed periodically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseMetadata {
    /// All lead statuses of the Close organization.
    pub lead_statuses: Vec<LeadStatus>,
    /// All lead custom fields.
    pub lead_custom_fields: Vec<CustomField>,
    /// All contact custom fields.
    pub contact_custom_fields: Vec<CustomField>,
}

impl CloseMetadata {
    /// The label of a lead status id, if the status is known.
    pub fn status_label(&self, status_id: &str) -> Option<&str> {
        self.lead_statuses
            .iter()
            .find(|s| s.id == status_id)
            .map(|s| s.label.as_str())
    }
}

/// The name of the custom field addressed by `custom.<id>`, if `field` has that form and the
/// id is in `fields`.
pub(crate) fn custom_field_name<'a>(fields: &'a [CustomField], field: &str) -> Option<&'a str> {
    let id = field.strip_prefix("custom.")?;
    fields.iter().find(|f| f.id == id).map(|f| f.name.as_str())
}
