//! The simulated Close data model: organizations, statuses, custom fields, leads, contacts,
//! and how they are validated and rendered as JSON.

use std::collections::BTreeMap;

use rand::{Rng, RngCore};
use serde_json::{json, Map, Value};

use super::error::{nested, ApiError, ApiResult};
use super::time::{self, Micros};

const ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A Close-style id: `prefix` followed by `len` base62 characters.
pub fn new_id(rng: &mut dyn RngCore, prefix: &str, len: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    for _ in 0..len {
        let i = rng.gen_range(0..ID_ALPHABET.len());
        id.push(char::from(ID_ALPHABET[i]));
    }
    id
}

/// A user of an organization (the owner of an API key, or the "UI user").
#[derive(Debug, Clone)]
pub struct User {
    /// `user_…` id.
    pub id: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email address.
    pub email: String,
}

impl User {
    /// "First Last".
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

/// An API key, owned by one user of one organization.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The secret key (HTTP Basic username).
    pub key: String,
    /// The key's public id, reported as `api_key_id` on events.
    pub id: String,
    /// The owning user.
    pub user: User,
}

/// A lead status.
#[derive(Debug, Clone)]
pub struct Status {
    /// `stat_…` id.
    pub id: String,
    /// Label shown in the UI.
    pub label: String,
}

/// A custom field definition.
#[derive(Debug, Clone)]
pub struct CustomField {
    /// `cf_…` id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `text`, `number`, `date`, `datetime`, `choices`, `hidden`, `user`, `contact`, ...
    pub field_type: String,
    /// Allowed values of a `choices` field.
    pub choices: Vec<String>,
    /// Multi-value field (`.add`/`.remove` allowed).
    pub accepts_multiple_values: bool,
    /// Creation time.
    pub date_created: Micros,
}

/// Field types the simulator accepts on custom fields.
pub const CUSTOM_FIELD_TYPES: &[&str] = &[
    "text",
    "textarea",
    "number",
    "date",
    "datetime",
    "choices",
    "hidden",
    "user",
    "contact",
    "custom_object",
];

/// One organization with its users, keys, statuses and custom fields.
#[derive(Debug, Clone)]
pub struct Org {
    /// `orga_…` id.
    pub id: String,
    /// Organization name.
    pub name: String,
    /// API keys of the organization.
    pub api_keys: Vec<ApiKey>,
    /// The user that `ui_*` changes are attributed to.
    pub ui_user: User,
    /// Lead statuses; the first one is the default.
    pub statuses: Vec<Status>,
    /// Lead custom fields.
    pub lead_fields: Vec<CustomField>,
    /// Contact custom fields.
    pub contact_fields: Vec<CustomField>,
}

impl Org {
    /// Finds a lead status by id.
    pub fn status_by_id(&self, id: &str) -> Option<&Status> {
        self.statuses.iter().find(|s| s.id == id)
    }

    /// Finds a lead status by label (case-insensitive).
    pub fn status_by_label(&self, label: &str) -> Option<&Status> {
        self.statuses
            .iter()
            .find(|s| s.label.eq_ignore_ascii_case(label))
    }

    /// The custom fields of an object type (`lead` or `contact`).
    pub fn fields(&self, object: ObjectKind) -> &[CustomField] {
        match object {
            ObjectKind::Lead => &self.lead_fields,
            ObjectKind::Contact => &self.contact_fields,
        }
    }

    /// The custom fields of an object type, mutable.
    pub fn fields_mut(&mut self, object: ObjectKind) -> &mut Vec<CustomField> {
        match object {
            ObjectKind::Lead => &mut self.lead_fields,
            ObjectKind::Contact => &mut self.contact_fields,
        }
    }

    /// Resolves `key` (a field id, or the deprecated field name) to a field.
    pub fn custom_field(&self, object: ObjectKind, key: &str) -> Option<&CustomField> {
        let fields = self.fields(object);
        fields
            .iter()
            .find(|f| f.id == key)
            .or_else(|| fields.iter().find(|f| f.name == key))
    }

    /// Full name of a user of this organization (API key owners and the UI user).
    pub fn user_name(&self, user_id: &str) -> Option<String> {
        if self.ui_user.id == user_id {
            return Some(self.ui_user.full_name());
        }
        self.api_keys
            .iter()
            .find(|k| k.user.id == user_id)
            .map(|k| k.user.full_name())
    }
}

/// The two object kinds the simulator stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A lead.
    Lead,
    /// A contact.
    Contact,
}

impl ObjectKind {
    /// `lead` or `contact`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Lead => "lead",
            ObjectKind::Contact => "contact",
        }
    }

    /// Parses `lead` / `contact`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "lead" => Some(ObjectKind::Lead),
            "contact" => Some(ObjectKind::Contact),
            _ => None,
        }
    }
}

/// A stored lead.
#[derive(Debug, Clone)]
pub struct Lead {
    /// Insertion order (stable listing order).
    pub seq: u64,
    /// `lead_…` id.
    pub id: String,
    /// Index of the owning organization.
    pub org: usize,
    /// Name ("" when unset).
    pub name: String,
    /// URL, `null` when unset.
    pub url: Option<String>,
    /// Description.
    pub description: String,
    /// Status id.
    pub status_id: String,
    /// Normalised addresses.
    pub addresses: Vec<Value>,
    /// Opportunities (read-only through the API; seeded).
    pub opportunities: Vec<Value>,
    /// Custom field values by field id.
    pub custom: BTreeMap<String, Value>,
    /// Contacts in creation order.
    pub contact_ids: Vec<String>,
    /// Creating user.
    pub created_by: String,
    /// Last updating user.
    pub updated_by: String,
    /// Creation time.
    pub date_created: Micros,
    /// Last update time.
    pub date_updated: Micros,
}

/// A stored contact.
#[derive(Debug, Clone)]
pub struct Contact {
    /// Insertion order (stable listing order).
    pub seq: u64,
    /// `cont_…` id.
    pub id: String,
    /// Index of the owning organization.
    pub org: usize,
    /// Lead the contact belongs to.
    pub lead_id: String,
    /// Name.
    pub name: String,
    /// Title.
    pub title: String,
    /// `{email, type, is_unsubscribed}` objects.
    pub emails: Vec<Value>,
    /// `{phone, phone_formatted, type, country}` objects.
    pub phones: Vec<Value>,
    /// `{url, type}` objects.
    pub urls: Vec<Value>,
    /// Custom field values by field id.
    pub custom: BTreeMap<String, Value>,
    /// Creating user.
    pub created_by: String,
    /// Last updating user.
    pub updated_by: String,
    /// Creation time.
    pub date_created: Micros,
    /// Last update time.
    pub date_updated: Micros,
}

impl Contact {
    /// Email addresses of the contact.
    pub fn email_addresses(&self) -> impl Iterator<Item = &str> {
        self.emails
            .iter()
            .filter_map(|e| e.get("email").and_then(Value::as_str))
    }
}

/// Renders a contact as the API returns it.
pub fn render_contact(org: &Org, c: &Contact) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(c.id));
    m.insert("lead_id".into(), json!(c.lead_id));
    m.insert("organization_id".into(), json!(org.id));
    m.insert("name".into(), json!(c.name));
    m.insert("display_name".into(), json!(c.name));
    m.insert("title".into(), json!(c.title));
    m.insert("emails".into(), Value::Array(c.emails.clone()));
    m.insert("phones".into(), Value::Array(c.phones.clone()));
    m.insert("urls".into(), Value::Array(c.urls.clone()));
    m.insert("integration_links".into(), json!([]));
    m.insert("created_by".into(), json!(c.created_by));
    m.insert("updated_by".into(), json!(c.updated_by));
    m.insert(
        "date_created".into(),
        json!(time::format_object(c.date_created)),
    );
    m.insert(
        "date_updated".into(),
        json!(time::format_object(c.date_updated)),
    );
    for (k, v) in &c.custom {
        m.insert(format!("custom.{k}"), v.clone());
    }
    Value::Object(m)
}

/// Renders a lead; `contacts` are the rendered contacts to nest (`None` leaves the key out,
/// as in event payloads).
pub fn render_lead(org: &Org, l: &Lead, contacts: Option<Vec<Value>>) -> Value {
    let status_label = org
        .status_by_id(&l.status_id)
        .map(|s| s.label.clone())
        .unwrap_or_default();
    let display_name = if l.name.is_empty() {
        contacts
            .as_ref()
            .and_then(|cs| cs.first())
            .and_then(|c| c.get("name"))
            .cloned()
            .unwrap_or_else(|| json!(""))
    } else {
        json!(l.name)
    };
    let mut m = Map::new();
    m.insert("id".into(), json!(l.id));
    m.insert("name".into(), json!(l.name));
    m.insert("display_name".into(), display_name);
    m.insert("url".into(), json!(l.url));
    m.insert("description".into(), json!(l.description));
    m.insert("status_id".into(), json!(l.status_id));
    m.insert("status_label".into(), json!(status_label));
    m.insert("organization_id".into(), json!(org.id));
    m.insert(
        "html_url".into(),
        json!(format!("https://app.close.com/lead/{}/", l.id)),
    );
    if let Some(contacts) = contacts {
        m.insert("contacts".into(), Value::Array(contacts));
    }
    m.insert("contact_ids".into(), json!(l.contact_ids));
    m.insert("addresses".into(), Value::Array(l.addresses.clone()));
    m.insert(
        "opportunities".into(),
        Value::Array(l.opportunities.clone()),
    );
    m.insert("tasks".into(), json!([]));
    m.insert("integration_links".into(), json!([]));
    m.insert("created_by".into(), json!(l.created_by));
    m.insert("updated_by".into(), json!(l.updated_by));
    m.insert(
        "created_by_name".into(),
        json!(org.user_name(&l.created_by)),
    );
    m.insert(
        "updated_by_name".into(),
        json!(org.user_name(&l.updated_by)),
    );
    m.insert(
        "date_created".into(),
        json!(time::format_object(l.date_created)),
    );
    m.insert(
        "date_updated".into(),
        json!(time::format_object(l.date_updated)),
    );
    for (k, v) in &l.custom {
        m.insert(format!("custom.{k}"), v.clone());
    }
    Value::Object(m)
}

/// Keeps only the `_fields` of a rendered object (`custom` selects every `custom.*` key).
pub fn select_fields(value: Value, fields: Option<&[String]>) -> Value {
    let (Some(fields), Value::Object(map)) = (fields, &value) else {
        return value;
    };
    let mut out = Map::new();
    for (k, v) in map {
        let wanted = fields
            .iter()
            .any(|f| f == k || (f == "custom" && k.starts_with("custom.")));
        if wanted {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// Parses a `_fields=a,b,c` parameter.
pub fn parse_fields(param: Option<&str>) -> Option<Vec<String>> {
    param.map(|p| {
        p.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// Reads an optional string field: absent → `Ok(None)`, null → `Ok(Some(None))`.
pub fn opt_string(body: &Map<String, Value>, key: &str) -> ApiResult<Option<Option<String>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::field(key, "Not a valid string.")),
    }
}

/// Validates and normalises a custom field value for `field`.
pub fn custom_value(field: &CustomField, key: &str, value: &Value) -> ApiResult<Value> {
    if field.accepts_multiple_values {
        let items: Vec<Value> = match value {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            out.push(single_custom_value(field, key, item)?);
        }
        return Ok(Value::Array(out));
    }
    single_custom_value(field, key, value)
}

fn single_custom_value(field: &CustomField, key: &str, value: &Value) -> ApiResult<Value> {
    let invalid = |msg: &str| ApiError::field(key, msg.to_string());
    match field.field_type.as_str() {
        "number" => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(s) => {
                let trimmed = s.trim();
                if let Ok(i) = trimmed.parse::<i64>() {
                    Ok(json!(i))
                } else {
                    trimmed
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| invalid("Enter a number."))
                }
            }
            _ => Err(invalid("Enter a number.")),
        },
        "date" => value
            .as_str()
            .and_then(time::parse)
            .map(|t| json!(time::format_date(t)))
            .ok_or_else(|| invalid("Enter a valid date.")),
        "datetime" => value
            .as_str()
            .and_then(time::parse)
            .map(|t| json!(time::format_object(t)))
            .ok_or_else(|| invalid("Enter a valid date/time.")),
        "choices" => {
            let text = value
                .as_str()
                .ok_or_else(|| invalid("Not a valid choice."))?;
            field
                .choices
                .iter()
                .find(|c| c.as_str() == text)
                .map(|c| json!(c))
                .ok_or_else(|| invalid(&format!("\"{text}\" is not a valid choice.")))
        }
        _ => match value {
            Value::String(_) => Ok(value.clone()),
            Value::Number(n) => Ok(json!(n.to_string())),
            Value::Bool(b) => Ok(json!(b.to_string())),
            _ => Err(invalid("Not a valid string.")),
        },
    }
}

/// Applies the `custom.*` keys (and the deprecated `custom` dict keyed by name) of a write body
/// to `custom`. `null` clears; `.add`/`.remove` edit multi-value fields.
pub fn apply_custom(
    org: &Org,
    kind: ObjectKind,
    body: &Map<String, Value>,
    custom: &mut BTreeMap<String, Value>,
) -> ApiResult<()> {
    let mut writes: Vec<(String, Value)> = body
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("custom.")
                .map(|r| (r.to_string(), v.clone()))
        })
        .collect();
    match body.get("custom") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            writes.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Some(_) => return Err(ApiError::field("custom", "Not a valid mapping.")),
    }
    for (rest, value) in writes {
        let key = format!("custom.{rest}");
        let (field, op) = if let Some(f) = org.custom_field(kind, &rest) {
            (f, None)
        } else if let Some(f) = rest
            .strip_suffix(".add")
            .and_then(|r| org.custom_field(kind, r))
        {
            (f, Some(true))
        } else if let Some(f) = rest
            .strip_suffix(".remove")
            .and_then(|r| org.custom_field(kind, r))
        {
            (f, Some(false))
        } else {
            return Err(ApiError::field(
                &key,
                format!("Custom field does not exist: {rest}"),
            ));
        };
        match (op, &value) {
            (None, Value::Null) => {
                custom.remove(&field.id);
            }
            (None, _) => {
                let v = custom_value(field, &key, &value)?;
                let empty = matches!(&v, Value::Array(a) if a.is_empty())
                    || matches!(&v, Value::String(s) if s.is_empty());
                if empty {
                    custom.remove(&field.id);
                } else {
                    custom.insert(field.id.clone(), v);
                }
            }
            (Some(add), _) => {
                if !field.accepts_multiple_values {
                    return Err(ApiError::field(
                        &key,
                        "This custom field does not accept multiple values.",
                    ));
                }
                let Value::Array(items) = custom_value(field, &key, &value)? else {
                    continue;
                };
                let mut current = match custom.remove(&field.id) {
                    Some(Value::Array(a)) => a,
                    Some(other) => vec![other],
                    None => Vec::new(),
                };
                for item in items {
                    if add {
                        if !current.contains(&item) {
                            current.push(item);
                        }
                    } else {
                        current.retain(|c| c != &item);
                    }
                }
                if !current.is_empty() {
                    custom.insert(field.id.clone(), Value::Array(current));
                }
            }
        }
    }
    Ok(())
}

/// Normalises a phone number to E.164 with the organization's default country (US).
/// Returns `(e164, formatted, country)`, or `None` for garbage.
pub fn normalize_phone(raw: &str) -> Option<(String, String, &'static str)> {
    let trimmed = raw.trim();
    let plus = trimmed.starts_with('+');
    let body = if plus { &trimmed[1..] } else { trimmed };
    let mut digits = String::new();
    for ch in body.chars() {
        match ch {
            '0'..='9' => digits.push(ch),
            ' ' | '-' | '.' | '(' | ')' | '/' => {}
            _ => return None,
        }
    }
    if digits.len() < 3 || digits.len() > 15 {
        return None;
    }
    let e164 = if plus || (digits.len() == 11 && digits.starts_with('1')) {
        format!("+{digits}")
    } else {
        format!("+1{digits}")
    };
    let national = &e164[1..];
    if national.len() == 11 && national.starts_with('1') {
        let d = &national[1..];
        let formatted = format!("+1 {}-{}-{}", &d[..3], &d[3..6], &d[6..]);
        Some((e164, formatted, "US"))
    } else {
        let formatted = format!(
            "+{} {}",
            &national[..2.min(national.len())],
            &national[2.min(national.len())..]
        );
        Some((e164, formatted.trim_end().to_string(), ""))
    }
}

fn typed_list<F>(body: &Map<String, Value>, key: &str, mut item: F) -> ApiResult<Option<Vec<Value>>>
where
    F: FnMut(&Map<String, Value>) -> ApiResult<Value>,
{
    let items = match body.get(key) {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(Vec::new())),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::field(key, "Not a valid list.")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let obj = v
            .as_object()
            .ok_or_else(|| nested(key, i, &ApiError::field("__all__", "Not a valid mapping.")))?;
        out.push(item(obj).map_err(|e| nested(key, i, &e))?);
    }
    Ok(Some(out))
}

fn item_type(obj: &Map<String, Value>, default: &str) -> ApiResult<String> {
    match obj.get("type") {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(ApiError::field("type", "Not a valid string.")),
    }
}

/// Applies the contact fields of a write body (create or patch) to `c`.
pub fn apply_contact_fields(
    org: &Org,
    body: &Map<String, Value>,
    c: &mut Contact,
) -> ApiResult<()> {
    if let Some(name) = opt_string(body, "name")? {
        c.name = name.unwrap_or_default();
    }
    if let Some(title) = opt_string(body, "title")? {
        c.title = title.unwrap_or_default();
    }
    if let Some(emails) = typed_list(body, "emails", |o| {
        let email = o
            .get("email")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|e| e.contains('@') && !e.starts_with('@') && !e.ends_with('@'))
            .ok_or_else(|| ApiError::field("email", "Invalid email address."))?;
        Ok(json!({"email": email, "type": item_type(o, "office")?, "is_unsubscribed": false}))
    })? {
        c.emails = emails;
    }
    if let Some(phones) = typed_list(body, "phones", |o| {
        let raw = o
            .get("phone")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::field("phone", "Invalid phone number."))?;
        let (phone, formatted, country) = normalize_phone(raw)
            .ok_or_else(|| ApiError::field("phone", "Invalid phone number."))?;
        Ok(
            json!({"phone": phone, "phone_formatted": formatted, "type": item_type(o, "office")?, "country": country}),
        )
    })? {
        c.phones = phones;
    }
    if let Some(urls) = typed_list(body, "urls", |o| {
        let url = o
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ApiError::field("url", "Enter a valid URL."))?;
        Ok(json!({"url": url.trim(), "type": item_type(o, "url")?}))
    })? {
        c.urls = urls;
    }
    apply_custom(org, ObjectKind::Contact, body, &mut c.custom)
}

const ADDRESS_KEYS: &[&str] = &[
    "label",
    "address_1",
    "address_2",
    "city",
    "state",
    "zipcode",
    "country",
];

/// Applies the lead fields of a write body (create or patch) to `l`, except status and
/// contacts, which the caller handles.
pub fn apply_lead_fields(org: &Org, body: &Map<String, Value>, l: &mut Lead) -> ApiResult<()> {
    if let Some(name) = opt_string(body, "name")? {
        l.name = name.unwrap_or_default();
    }
    if let Some(url) = opt_string(body, "url")? {
        l.url = url.filter(|u| !u.is_empty());
    }
    if let Some(description) = opt_string(body, "description")? {
        l.description = description.unwrap_or_default();
    }
    if let Some(addresses) = typed_list(body, "addresses", |o| {
        let mut a = Map::new();
        for key in ADDRESS_KEYS {
            let v = match o.get(*key) {
                None | Some(Value::Null) => Value::String(String::new()),
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(_) => return Err(ApiError::field(key, "Not a valid string.")),
            };
            a.insert((*key).to_string(), v);
        }
        a.insert("tz_ids".into(), json!([]));
        Ok(Value::Object(a))
    })? {
        l.addresses = addresses;
    }
    apply_custom(org, ObjectKind::Lead, body, &mut l.custom)
}

/// Resolves the `status` / `status_id` of a lead write. `None` when neither is given.
pub fn resolve_status(org: &Org, body: &Map<String, Value>) -> ApiResult<Option<String>> {
    let label = body.get("status").filter(|v| !v.is_null());
    let id = body.get("status_id").filter(|v| !v.is_null());
    match (label, id) {
        (Some(_), Some(_)) => Err(ApiError::field(
            "status",
            "Specify either status or status_id, not both.",
        )),
        (Some(label), None) => {
            let label = label
                .as_str()
                .ok_or_else(|| ApiError::field("status", "Not a valid string."))?;
            org.status_by_label(label)
                .map(|s| Some(s.id.clone()))
                .ok_or_else(|| ApiError::field("status", status_error(label)))
        }
        (None, Some(id)) => {
            let id = id
                .as_str()
                .ok_or_else(|| ApiError::field("status_id", "Not a valid string."))?;
            org.status_by_id(id)
                .map(|s| Some(s.id.clone()))
                .ok_or_else(|| ApiError::field("status", status_error(id)))
        }
        (None, None) => Ok(None),
    }
}

fn status_error(value: &str) -> String {
    format!("Not a valid choice. Please go to Customizations > Statuses & Pipelines and add \"{value}\" to the list of lead statuses.")
}

/// Renders a custom field definition.
pub fn render_custom_field(org: &Org, f: &CustomField) -> Value {
    json!({
        "id": f.id,
        "name": f.name,
        "type": f.field_type,
        "choices": f.choices,
        "accepts_multiple_values": f.accepts_multiple_values,
        "description": "",
        "editable_with_roles": [],
        "is_shared": false,
        "organization_id": org.id,
        "created_by": org.ui_user.id,
        "updated_by": org.ui_user.id,
        "date_created": time::format_object(f.date_created),
        "date_updated": time::format_object(f.date_created),
    })
}

/// Renders a lead status.
pub fn render_status(org: &Org, s: &Status) -> Value {
    json!({"id": s.id, "label": s.label, "type": "active", "organization_id": org.id})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_to_e164() {
        assert_eq!(
            normalize_phone("(415) 555-0100").map(|p| p.0),
            Some("+14155550100".to_string())
        );
        assert_eq!(
            normalize_phone("(415) 555-0100").map(|p| p.1),
            Some("+1 415-555-0100".to_string())
        );
        assert_eq!(
            normalize_phone("+44 20 7946 0958").map(|p| p.0),
            Some("+442079460958".to_string())
        );
        assert!(normalize_phone("call me maybe").is_none());
        assert!(normalize_phone("12").is_none());
    }
}
