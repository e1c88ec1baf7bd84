//! Incoming mapping (original §4.2 / §4.3): Close leads and contacts → Hull traits and
//! identity claims, plus the deletion and merge traits this project adds.
//!
//! Traits are Hull attribute operations: `{"<name>": {"value": v, "operation": "set"}}` or
//! `"setIfNull"`. All of them but `name` are written under the `closeio/` group.

use serde_json::{json, Map, Value};

use super::metadata::{custom_field_name, CloseMetadata, CustomField};
use super::path;
use super::settings::Settings;
use super::snake_case::snake_case;

/// Prefix of every attribute this connector writes.
pub const TRAIT_PREFIX: &str = "closeio/";

/// Prefix of the anonymous ids this connector claims (`closeio:<lead or contact id>`).
pub const ANONYMOUS_ID_PREFIX: &str = "closeio:";

/// Close's typed lists, the trait prefix of each and the key holding the value.
const TYPED_LISTS: [(&str, &str); 3] = [("phones", "phone"), ("emails", "email"), ("urls", "url")];

/// Label of an address without a `label` key.
const DEFAULT_ADDRESS_LABEL: &str = "office";

/// A trait operation `{"value": v, "operation": "set"}`.
pub(crate) fn set(value: Value) -> Value {
    json!({ "value": value, "operation": "set" })
}

/// A trait operation `{"value": v, "operation": "setIfNull"}`.
pub(crate) fn set_if_null(value: Value) -> Value {
    json!({ "value": value, "operation": "setIfNull" })
}

/// §4.2 account traits for a Close lead: every `lead_attributes_inbound` field, then
/// `closeio/id`, `name` (setIfNull, only when `closeio/name` is a non-empty string),
/// `closeio/created_at` (setIfNull) and `closeio/updated_at`. A non-object lead gives no
/// traits.
pub fn lead_traits(s: &Settings, meta: &CloseMetadata, lead: &Value) -> Map<String, Value> {
    let Some(lead) = lead.as_object() else {
        return Map::new();
    };
    let mut traits = apply_mapping(
        &s.lead_attributes_inbound,
        meta,
        &meta.lead_custom_fields,
        lead,
    );
    if let Some(id) = present(lead, "id") {
        traits.insert(format!("{TRAIT_PREFIX}id"), set(id.clone()));
    }
    add_name(&mut traits);
    if let Some(created) = present(lead, "date_created") {
        traits.insert(
            format!("{TRAIT_PREFIX}created_at"),
            set_if_null(created.clone()),
        );
    }
    if let Some(updated) = present(lead, "date_updated") {
        traits.insert(format!("{TRAIT_PREFIX}updated_at"), set(updated.clone()));
    }
    traits
}

/// §4.2 user traits for a Close contact: every `contact_attributes_inbound` field, then
/// `closeio/id`, `name` (setIfNull, same rule as leads) and `closeio/lead_id` (always
/// written; `null` when the contact has none). A non-object contact gives no traits.
///
/// For the write-back after an outgoing contact write, the original sets the response's
/// `lead_id` to the lead id that was sent before mapping; callers do the same.
pub fn contact_traits(s: &Settings, meta: &CloseMetadata, contact: &Value) -> Map<String, Value> {
    let Some(contact) = contact.as_object() else {
        return Map::new();
    };
    let mut traits = apply_mapping(
        &s.contact_attributes_inbound,
        meta,
        &meta.contact_custom_fields,
        contact,
    );
    if let Some(id) = present(contact, "id") {
        traits.insert(format!("{TRAIT_PREFIX}id"), set(id.clone()));
    }
    add_name(&mut traits);
    let lead_id = contact.get("lead_id").cloned().unwrap_or(Value::Null);
    traits.insert(format!("{TRAIT_PREFIX}lead_id"), set(lead_id));
    traits
}

/// §4.3 account identity claims for a Close lead.
///
/// - `lead_identifier_hull = "domain"` and `lead[lead_identifier_service]` is a string:
///   `domain` = [`normalize_url`] of it;
/// - `lead_identifier_hull = "external_id"`: `external_id` = `lead[lead_identifier_service]`
///   as it is (when not null), and `domain` = [`normalize_url`] of `lead.url` if a string;
/// - always `anonymous_id` = `closeio:<lead.id>` (when the lead has an id).
///
/// An empty normalised domain is not claimed (Hull cannot resolve it).
pub fn account_claims(s: &Settings, lead: &Value) -> Map<String, Value> {
    let mut claims = Map::new();
    let Some(lead) = lead.as_object() else {
        return claims;
    };
    let service_value = s
        .lead_identifier_service
        .as_deref()
        .and_then(|field| present(lead, field));
    match s.lead_identifier_hull.as_deref() {
        Some("domain") => insert_domain(service_value, &mut claims),
        Some("external_id") => {
            if let Some(external_id) = service_value {
                claims.insert("external_id".to_owned(), external_id.clone());
            }
            insert_domain(lead.get("url"), &mut claims);
        }
        _ => {}
    }
    if let Some(id) = entity_id(lead) {
        claims.insert(
            "anonymous_id".to_owned(),
            Value::String(format!("{ANONYMOUS_ID_PREFIX}{id}")),
        );
    }
    claims
}

/// §4.3 user identity claims for a Close contact: `email` = the first entry of `emails`
/// (whatever its type, case kept) and `anonymous_id` = `closeio:<contact.id>`.
pub fn user_claims(contact: &Value) -> Map<String, Value> {
    let mut claims = Map::new();
    let Some(contact) = contact.as_object() else {
        return claims;
    };
    let first_email = contact
        .get("emails")
        .and_then(Value::as_array)
        .and_then(|emails| emails.first())
        .and_then(|entry| entry.get("email"))
        .and_then(Value::as_str)
        .filter(|email| !email.is_empty());
    if let Some(email) = first_email {
        claims.insert("email".to_owned(), Value::String(email.to_owned()));
    }
    if let Some(id) = entity_id(contact) {
        claims.insert(
            "anonymous_id".to_owned(),
            Value::String(format!("{ANONYMOUS_ID_PREFIX}{id}")),
        );
    }
    claims
}

/// `normalizeUrl`: parse as a WHATWG URL and return the lowercased hostname (`www.` kept);
/// input that does not parse (no scheme, e.g. `medici.com`) is returned unchanged.
pub fn normalize_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(url) => url.host_str().unwrap_or_default().to_lowercase(),
        Err(_) => s.to_owned(),
    }
}

/// Traits for a lead or contact deleted in Close: `closeio/deleted_at` = `deleted_at`.
pub fn deleted_traits(deleted_at: &str) -> Map<String, Value> {
    let mut traits = Map::new();
    traits.insert(
        format!("{TRAIT_PREFIX}deleted_at"),
        set(Value::String(deleted_at.to_owned())),
    );
    traits
}

/// Traits for a lead absorbed by a merge in Close: `closeio/merged_into` = the surviving
/// lead's id and `closeio/deleted_at` = `at`.
pub fn merged_traits(destination_lead_id: &str, at: &str) -> Map<String, Value> {
    let mut traits = Map::new();
    traits.insert(
        format!("{TRAIT_PREFIX}merged_into"),
        set(Value::String(destination_lead_id.to_owned())),
    );
    traits.insert(
        format!("{TRAIT_PREFIX}deleted_at"),
        set(Value::String(at.to_owned())),
    );
    traits
}

/// Claims `domain` = [`normalize_url`] of `raw` when it is a string with a non-empty result.
fn insert_domain(raw: Option<&Value>, claims: &mut Map<String, Value>) {
    if let Some(domain) = raw.and_then(Value::as_str).map(normalize_url) {
        if !domain.is_empty() {
            claims.insert("domain".to_owned(), Value::String(domain));
        }
    }
}

/// A key's value unless missing or `null`.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// The `id` of a Close object as text (ids are strings; numbers are tolerated).
fn entity_id(obj: &Map<String, Value>) -> Option<String> {
    match present(obj, "id")? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// How JavaScript interpolates a value into a template string (`${v}`), for list types and
/// address labels: a missing key is `undefined`, `null` is `null`.
fn js_text(v: Option<&Value>) -> String {
    match v {
        None => "undefined".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(_)) | Some(Value::Object(_)) => "[object Object]".to_owned(),
    }
}

/// `name` (setIfNull) from `closeio/name` when that trait is a non-empty string.
fn add_name(traits: &mut Map<String, Value>) {
    let name = traits
        .get(&format!("{TRAIT_PREFIX}name"))
        .and_then(|t| t.get("value"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if let Some(name) = name {
        traits.insert("name".to_owned(), set_if_null(Value::String(name)));
    }
}

/// `MappingUtil.applyMapping`: every configured inbound field, in order, as `set` traits.
fn apply_mapping(
    fields: &[String],
    meta: &CloseMetadata,
    custom_fields: &[CustomField],
    obj: &Map<String, Value>,
) -> Map<String, Value> {
    let mut traits = Map::new();
    for field in fields {
        let field = field.as_str();
        if let Some((_, key)) = TYPED_LISTS.iter().find(|(list, _)| *list == field) {
            map_typed_list(&mut traits, obj.get(field), key);
            continue;
        }
        match field {
            "status_id" => {
                let label = present(obj, "status_id")
                    .and_then(Value::as_str)
                    .and_then(|id| meta.status_label(id));
                if let Some(label) = label {
                    traits.insert(
                        format!("{TRAIT_PREFIX}status"),
                        set(Value::String(label.to_owned())),
                    );
                }
            }
            "addresses" => map_addresses(&mut traits, obj.get(field)),
            "opportunities" => {}
            _ => {
                if let Some(value) = path::get_present(obj, field) {
                    let human = custom_field_name(custom_fields, field).unwrap_or(field);
                    traits.insert(
                        format!("{TRAIT_PREFIX}{}", snake_case(human)),
                        set(value.clone()),
                    );
                }
            }
        }
    }
    traits
}

/// `closeio/<key>_<type>` for each entry; the last entry of a type wins; a missing type is
/// `undefined`. Entries without the value key are skipped.
fn map_typed_list(traits: &mut Map<String, Value>, list: Option<&Value>, key: &str) {
    let Some(entries) = list.and_then(Value::as_array) else {
        return;
    };
    for entry in entries {
        let Some(value) = entry.get(key) else {
            continue;
        };
        let kind = js_text(entry.get("type"));
        traits.insert(format!("{TRAIT_PREFIX}{key}_{kind}"), set(value.clone()));
    }
}

/// `closeio/address_<label>_<key>` for every key but `label` of the first address of each
/// label (a missing label is `office`, an explicit `null` label is `null`).
fn map_addresses(traits: &mut Map<String, Value>, addresses: Option<&Value>) {
    let Some(addresses) = addresses.and_then(Value::as_array) else {
        return;
    };
    let mut seen: Vec<String> = Vec::new();
    for address in addresses {
        let Some(address) = address.as_object() else {
            continue;
        };
        let label = match address.get("label") {
            None => DEFAULT_ADDRESS_LABEL.to_owned(),
            Some(label) => js_text(Some(label)),
        };
        if seen.contains(&label) {
            continue;
        }
        for (key, value) in address.iter().filter(|(k, _)| k.as_str() != "label") {
            traits.insert(
                format!("{TRAIT_PREFIX}address_{label}_{key}"),
                set(value.clone()),
            );
        }
        seen.push(label);
    }
}
