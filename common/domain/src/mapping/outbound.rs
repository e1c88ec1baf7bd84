//! Outgoing bodies (original §3.4 / §3.6): Hull account → Close lead, Hull user → Close
//! contact. Close ids are never part of a body; they live in the sync state.

use serde_json::{Map, Value};

use super::path;
use super::settings::{FieldMapping, Settings};

/// Close's typed lists and the key holding the value inside each entry.
const TYPED_LISTS: [(&str, &str); 3] = [("emails", "email"), ("phones", "phone"), ("urls", "url")];

/// §3.4 lead body for a Hull account (flat attributes: `domain`, `name`, `closeio/id`…).
///
/// `name` = `account.name` and `url` = `account.domain` (each only when the key exists; a
/// stored `null` is sent as `null`, as the original does), then `status_id` when `create`
/// and `lead_status` names a status, then every `lead_attributes_outbound` entry in order
/// (the implicit identifier mapping last, so it wins). Custom fields use flat
/// `custom.<id>` keys. Values are sent as they are.
pub fn lead_body(s: &Settings, account: &Map<String, Value>, create: bool) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(name) = account.get("name") {
        body.insert("name".to_owned(), name.clone());
    }
    if let Some(domain) = account.get("domain") {
        body.insert("url".to_owned(), domain.clone());
    }
    if create {
        if let Some(status_id) = s.lead_status.status_id() {
            body.insert("status_id".to_owned(), Value::String(status_id.to_owned()));
        }
    }
    apply_outbound(&mut body, &s.lead_attributes_outbound, account);
    body
}

/// §3.6 contact body for a flat Hull user (`traits_`-prefixed custom traits, as Hull sends
/// them): `name` = `user.name` (when the key exists), `lead_id`, then every
/// `contact_attributes_outbound` entry in order. `emails.<type>`, `phones.<type>` and
/// `urls.<type>` append `{type, email|phone|url}` entries in mapping order; anything else
/// sets the field (a mapping to `name` overrides the automatic name).
pub fn contact_body(s: &Settings, user: &Map<String, Value>, lead_id: &str) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(name) = user.get("name") {
        body.insert("name".to_owned(), name.clone());
    }
    body.insert("lead_id".to_owned(), Value::String(lead_id.to_owned()));
    apply_outbound(&mut body, &s.contact_attributes_outbound, user);
    body
}

/// The email used to find an existing contact within its lead before creating one: the
/// user's `email` attribute, else the first `emails[].email` of the mapped body.
pub fn contact_lookup_email(
    user: &Map<String, Value>,
    body: &Map<String, Value>,
) -> Option<String> {
    let non_empty = |v: &Value| {
        v.as_str()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
    };
    user.get("email").and_then(non_empty).or_else(|| {
        body.get("emails")?
            .as_array()?
            .iter()
            .find_map(|entry| entry.get("email").and_then(non_empty))
    })
}

/// Applies mapping rows in order, reading each value with `lodash.get` semantics and
/// skipping `null`/missing values.
fn apply_outbound(
    body: &mut Map<String, Value>,
    mappings: &[FieldMapping],
    source: &Map<String, Value>,
) {
    for mapping in mappings {
        let Some(value) = path::get_present(source, &mapping.hull_field_name) else {
            continue;
        };
        let field = mapping.closeio_field_name.as_str();
        match typed_list_target(field) {
            Some((list, key, kind)) => append_typed(body, list, key, kind, value),
            None => {
                body.insert(field.to_owned(), value.clone());
            }
        }
    }
}

/// `emails.office` → `("emails", "email", Some("office"))`.
fn typed_list_target(field: &str) -> Option<(&'static str, &'static str, Option<&str>)> {
    let mut parts = field.split('.');
    let head = parts.next()?;
    let kind = parts.next();
    TYPED_LISTS
        .iter()
        .find(|(list, _)| *list == head)
        .map(|(list, key)| (*list, *key, kind))
}

fn append_typed(
    body: &mut Map<String, Value>,
    list: &str,
    key: &str,
    kind: Option<&str>,
    value: &Value,
) {
    let mut entry = Map::new();
    if let Some(kind) = kind {
        entry.insert("type".to_owned(), Value::String(kind.to_owned()));
    }
    entry.insert(key.to_owned(), value.clone());
    let slot = body
        .entry(list.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    if let Value::Array(items) = slot {
        items.push(Value::Object(entry));
    }
}
