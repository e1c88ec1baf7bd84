//! `POST /data/search/` (Advanced Filtering) over leads and contacts.

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::model::{render_contact, render_lead, select_fields, Contact, Lead, ObjectKind};
use super::store::Store;
use super::time::{self, Micros};

const DAY_MICROS: Micros = 86_400_000_000;

/// Limits of the search endpoint.
#[derive(Debug, Clone, Copy)]
pub struct SearchLimits {
    /// Maximum `_limit` (above → 400).
    pub max_limit: usize,
    /// Maximum objects returned by one pagination sequence (then the cursor is null).
    pub max_results: usize,
}

#[derive(Debug, Clone)]
enum FieldRef {
    Regular(ObjectKind, String),
    Custom(String),
}

#[derive(Debug, Clone)]
enum Cond {
    Term(Vec<Value>),
    Text(String),
    Exists,
    Moment {
        on_or_after: Option<Micros>,
        before: Option<Micros>,
    },
    Number {
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    },
    Boolean(bool),
}

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    ObjectType(ObjectKind),
    Id(Vec<String>),
    Text(String),
    Field(FieldRef, Cond),
    MatchAll,
}

#[derive(Clone, Copy)]
enum Obj<'a> {
    Lead(&'a Lead),
    Contact(&'a Contact),
}

impl Obj<'_> {
    fn kind(&self) -> ObjectKind {
        match self {
            Obj::Lead(_) => ObjectKind::Lead,
            Obj::Contact(_) => ObjectKind::Contact,
        }
    }
    fn id(&self) -> &str {
        match self {
            Obj::Lead(l) => &l.id,
            Obj::Contact(c) => &c.id,
        }
    }
    fn org(&self) -> usize {
        match self {
            Obj::Lead(l) => l.org,
            Obj::Contact(c) => c.org,
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn str_field<'a>(node: &'a Map<String, Value>, key: &str) -> ApiResult<&'a str> {
    node.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("Invalid query: \"{key}\" must be a string.")))
}

const LEAD_FIELDS: &[&str] = &[
    "id",
    "name",
    "display_name",
    "url",
    "description",
    "status_id",
    "status_label",
    "date_created",
    "date_updated",
    "created_by",
    "updated_by",
    "organization_id",
];
const CONTACT_FIELDS: &[&str] = &[
    "id",
    "name",
    "display_name",
    "title",
    "lead_id",
    "date_created",
    "date_updated",
    "created_by",
    "updated_by",
    "organization_id",
    "emails",
    "email",
    "email_address",
    "phones",
    "phone",
    "phone_number",
    "urls",
    "url",
];

fn parse_moment(v: Option<&Value>) -> ApiResult<Option<Micros>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let (kind, value, which) = match v {
        Value::String(s) => ("fixed_utc", s.as_str(), "start"),
        Value::Object(m) => (
            m.get("type").and_then(Value::as_str).unwrap_or("fixed_utc"),
            m.get("value").and_then(Value::as_str).unwrap_or(""),
            m.get("which").and_then(Value::as_str).unwrap_or("start"),
        ),
        _ => return Err(bad("Invalid query: invalid moment.")),
    };
    if !matches!(
        kind,
        "fixed_utc" | "fixed_local_date" | "fixed_local_datetime"
    ) {
        return Err(bad(format!(
            "Invalid query: unsupported moment type \"{kind}\"."
        )));
    }
    let t = time::parse(value)
        .ok_or_else(|| bad(format!("Invalid query: invalid date \"{value}\".")))?;
    Ok(Some(if kind == "fixed_local_date" && which == "end" {
        t + DAY_MICROS
    } else {
        t
    }))
}

fn num(m: &Map<String, Value>, key: &str) -> ApiResult<Option<f64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(format!("Invalid query: \"{key}\" must be a number."))),
    }
}

fn parse_cond(m: &Map<String, Value>) -> ApiResult<Cond> {
    Ok(match str_field(m, "type")? {
        "term" => Cond::Term(
            m.get("values")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| bad("Invalid query: term condition needs \"values\"."))?,
        ),
        "text" => Cond::Text(str_field(m, "value")?.to_lowercase()),
        "exists" => Cond::Exists,
        "moment_range" => {
            let on_or_after = match parse_moment(m.get("on_or_after"))? {
                Some(t) => Some(t),
                None => parse_moment(m.get("after"))?.map(|t| t + 1),
            };
            let before = match parse_moment(m.get("before"))? {
                Some(t) => Some(t),
                None => parse_moment(m.get("on_or_before"))?.map(|t| t + 1),
            };
            Cond::Moment {
                on_or_after,
                before,
            }
        }
        "number_range" => Cond::Number {
            gt: num(m, "gt")?,
            gte: num(m, "gte")?,
            lt: num(m, "lt")?,
            lte: num(m, "lte")?,
        },
        "boolean" => Cond::Boolean(
            m.get("value")
                .and_then(Value::as_bool)
                .ok_or_else(|| bad("Invalid query: boolean condition needs \"value\"."))?,
        ),
        other => {
            return Err(bad(format!(
                "Invalid query: unsupported condition type \"{other}\"."
            )))
        }
    })
}

fn parse_field(store: &Store, org: usize, m: &Map<String, Value>) -> ApiResult<FieldRef> {
    match str_field(m, "type")? {
        "regular_field" => {
            let kind = ObjectKind::parse(str_field(m, "object_type")?)
                .ok_or_else(|| bad("Invalid query: unsupported object_type."))?;
            let name = str_field(m, "field_name")?;
            let known = match kind {
                ObjectKind::Lead => LEAD_FIELDS,
                ObjectKind::Contact => CONTACT_FIELDS,
            };
            if !known.contains(&name) {
                return Err(bad(format!("Invalid query: unknown field \"{name}\".")));
            }
            Ok(FieldRef::Regular(kind, name.to_string()))
        }
        "custom_field" => {
            let id = str_field(m, "custom_field_id")?;
            let o = &store.orgs[org];
            if o.lead_fields
                .iter()
                .chain(&o.contact_fields)
                .all(|f| f.id != id)
            {
                return Err(bad(format!(
                    "Invalid query: unknown custom field \"{id}\"."
                )));
            }
            Ok(FieldRef::Custom(id.to_string()))
        }
        other => Err(bad(format!(
            "Invalid query: unsupported field type \"{other}\"."
        ))),
    }
}

fn parse_node(store: &Store, org: usize, v: &Value) -> ApiResult<Node> {
    let m = v
        .as_object()
        .ok_or_else(|| bad("Invalid query: a query must be an object."))?;
    let children = |m: &Map<String, Value>| -> ApiResult<Vec<Node>> {
        m.get("queries")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("Invalid query: \"queries\" must be a list."))?
            .iter()
            .map(|q| parse_node(store, org, q))
            .collect()
    };
    let node = match str_field(m, "type")? {
        "and" => Node::And(children(m)?),
        "or" => Node::Or(children(m)?),
        "match_all" => Node::MatchAll,
        "object_type" => Node::ObjectType(
            ObjectKind::parse(str_field(m, "object_type")?)
                .ok_or_else(|| bad("Invalid query: unsupported object_type."))?,
        ),
        "id" => Node::Id(match m.get("value") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => return Err(bad("Invalid query: id needs \"value\".")),
        }),
        "text" => Node::Text(str_field(m, "value")?.to_lowercase()),
        "field_condition" => {
            let field = m
                .get("field")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("Invalid query: field_condition needs \"field\"."))?;
            let cond = m
                .get("condition")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("Invalid query: field_condition needs \"condition\"."))?;
            Node::Field(parse_field(store, org, field)?, parse_cond(cond)?)
        }
        other => {
            return Err(bad(format!(
                "Invalid query: unsupported query type \"{other}\"."
            )))
        }
    };
    Ok(if m.get("negate").and_then(Value::as_bool) == Some(true) {
        Node::Not(Box::new(node))
    } else {
        node
    })
}

fn list(items: &[Value], key: &str) -> Vec<Value> {
    items.iter().filter_map(|i| i.get(key).cloned()).collect()
}

fn opt(v: Option<Value>) -> Vec<Value> {
    v.into_iter().filter(|v| !v.is_null()).collect()
}

fn field_values(store: &Store, obj: Obj<'_>, field: &FieldRef) -> Vec<Value> {
    match (field, obj) {
        (FieldRef::Custom(id), Obj::Lead(l)) => opt(l.custom.get(id).cloned()),
        (FieldRef::Custom(id), Obj::Contact(c)) => opt(c.custom.get(id).cloned()),
        (FieldRef::Regular(kind, _), o) if *kind != o.kind() => Vec::new(),
        (FieldRef::Regular(_, name), Obj::Lead(l)) => {
            let org = &store.orgs[l.org];
            match name.as_str() {
                "name" => vec![json!(l.name)],
                "display_name" => vec![json!(l.name)],
                "url" => opt(l.url.clone().map(Value::String)),
                "description" => vec![json!(l.description)],
                "status_id" => vec![json!(l.status_id)],
                "status_label" => opt(org.status_by_id(&l.status_id).map(|s| json!(s.label))),
                "date_created" => vec![json!(time::format_object(l.date_created))],
                "date_updated" => vec![json!(time::format_object(l.date_updated))],
                "created_by" => vec![json!(l.created_by)],
                "updated_by" => vec![json!(l.updated_by)],
                "organization_id" => vec![json!(org.id)],
                _ => vec![json!(l.id)],
            }
        }
        (FieldRef::Regular(_, name), Obj::Contact(c)) => match name.as_str() {
            "name" | "display_name" => vec![json!(c.name)],
            "title" => vec![json!(c.title)],
            "lead_id" => vec![json!(c.lead_id)],
            "date_created" => vec![json!(time::format_object(c.date_created))],
            "date_updated" => vec![json!(time::format_object(c.date_updated))],
            "created_by" => vec![json!(c.created_by)],
            "updated_by" => vec![json!(c.updated_by)],
            "organization_id" => vec![json!(store.orgs[c.org].id)],
            "emails" | "email" | "email_address" => list(&c.emails, "email"),
            "phones" | "phone" | "phone_number" => list(&c.phones, "phone"),
            "urls" | "url" => list(&c.urls, "url"),
            _ => vec![json!(c.id)],
        },
    }
}

fn flatten(values: Vec<Value>) -> Vec<Value> {
    values
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(a) => a,
            other => vec![other],
        })
        .collect()
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cond_matches(values: Vec<Value>, cond: &Cond) -> bool {
    let values = flatten(values);
    match cond {
        Cond::Exists => values
            .iter()
            .any(|v| !(v.is_null() || v.as_str().is_some_and(str::is_empty))),
        Cond::Term(wanted) => values
            .iter()
            .any(|v| wanted.iter().any(|w| w == v || as_text(w) == as_text(v))),
        Cond::Text(needle) => values
            .iter()
            .any(|v| as_text(v).to_lowercase().contains(needle)),
        Cond::Moment {
            on_or_after,
            before,
        } => values.iter().any(|v| {
            v.as_str()
                .and_then(time::parse)
                .is_some_and(|t| on_or_after.is_none_or(|a| t >= a) && before.is_none_or(|b| t < b))
        }),
        Cond::Number { gt, gte, lt, lte } => values.iter().any(|v| {
            let n = v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            n.is_some_and(|n| {
                gt.is_none_or(|x| n > x)
                    && gte.is_none_or(|x| n >= x)
                    && lt.is_none_or(|x| n < x)
                    && lte.is_none_or(|x| n <= x)
            })
        }),
        Cond::Boolean(b) => values.iter().any(|v| v.as_bool() == Some(*b)),
    }
}

fn text_matches(store: &Store, obj: Obj<'_>, needle: &str) -> bool {
    let hit = |s: &str| s.to_lowercase().contains(needle);
    match obj {
        Obj::Lead(l) => {
            hit(&l.name)
                || l.url.as_deref().is_some_and(hit)
                || hit(&l.description)
                || l.contact_ids
                    .iter()
                    .filter_map(|c| store.contacts.get(c))
                    .any(|c| hit(&c.name) || c.email_addresses().any(hit))
        }
        Obj::Contact(c) => hit(&c.name) || hit(&c.title) || c.email_addresses().any(hit),
    }
}

fn eval(store: &Store, obj: Obj<'_>, node: &Node) -> bool {
    match node {
        Node::And(qs) => qs.iter().all(|q| eval(store, obj, q)),
        Node::Or(qs) => qs.iter().any(|q| eval(store, obj, q)),
        Node::Not(q) => !eval(store, obj, q),
        Node::MatchAll => true,
        Node::ObjectType(k) => obj.kind() == *k,
        Node::Id(ids) => ids.iter().any(|i| i == obj.id()),
        Node::Text(t) => text_matches(store, obj, t),
        Node::Field(f, c) => cond_matches(field_values(store, obj, f), c),
    }
}

fn fingerprint(body: &Map<String, Value>) -> u64 {
    let mut m = body.clone();
    m.remove("cursor");
    m.remove("_limit");
    let text = Value::Object(m).to_string();
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn decode_cursor(cursor: &str, fp: u64) -> ApiResult<usize> {
    let invalid = || bad("Invalid cursor.");
    let bytes = hex::decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (offset, hash) = text.split_once(':').ok_or_else(invalid)?;
    if hash.parse::<u64>().ok() != Some(fp) {
        return Err(bad("Invalid cursor: the query changed."));
    }
    offset.parse().map_err(|_| invalid())
}

fn sort_key(store: &Store, obj: Obj<'_>, field: &FieldRef) -> Option<Value> {
    flatten(field_values(store, obj, field)).into_iter().next()
}

fn cmp_values(a: &Option<Value>, b: &Option<Value>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
            _ => as_text(x).to_lowercase().cmp(&as_text(y).to_lowercase()),
        },
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Runs a search for organization `org`.
pub fn search(
    store: &Store,
    org: usize,
    body: &Map<String, Value>,
    limits: SearchLimits,
) -> ApiResult<Value> {
    let query = body
        .get("query")
        .ok_or_else(|| ApiError::field("query", "This field is required."))?;
    let root = parse_node(store, org, query)?;
    let limit = match body.get("_limit") {
        None | Some(Value::Null) => 100,
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ApiError::field("_limit", "Not a valid integer."))?,
    };
    if limit > limits.max_limit {
        return Err(ApiError::field(
            "_limit",
            format!(
                "Ensure this value is less than or equal to {}.",
                limits.max_limit
            ),
        ));
    }
    let results_limit = match body.get("results_limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| ApiError::field("results_limit", "Not a valid integer."))?,
        ),
    };
    let mut sorts = Vec::new();
    if let Some(sort) = body.get("sort").filter(|v| !v.is_null()) {
        let items = sort
            .as_array()
            .ok_or_else(|| ApiError::field("sort", "Not a valid list."))?;
        for item in items {
            let m = item
                .as_object()
                .ok_or_else(|| ApiError::field("sort", "Not a valid mapping."))?;
            let desc = match m.get("direction").and_then(Value::as_str).unwrap_or("asc") {
                "asc" => false,
                "desc" => true,
                _ => return Err(ApiError::field("sort", "direction must be asc or desc.")),
            };
            let field = m
                .get("field")
                .and_then(Value::as_object)
                .ok_or_else(|| ApiError::field("sort", "field is required."))?;
            sorts.push((parse_field(store, org, field)?, desc));
        }
    }
    let fields: Option<&Map<String, Value>> = match body.get("_fields") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(ApiError::field("_fields", "Not a valid mapping.")),
    };
    let fp = fingerprint(body);
    let offset = match body.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => decode_cursor(c, fp)?,
        Some(_) => return Err(ApiError::field("cursor", "Not a valid string.")),
    };

    let leads = store
        .lead_order
        .values()
        .filter_map(|id| store.leads.get(id))
        .map(Obj::Lead);
    let contacts = store
        .contact_order
        .values()
        .filter_map(|id| store.contacts.get(id))
        .map(Obj::Contact);
    let mut matched: Vec<Obj<'_>> = leads
        .chain(contacts)
        .filter(|o| o.org() == org && eval(store, *o, &root))
        .collect();
    let total = matched.len();
    if !sorts.is_empty() {
        let mut keyed: Vec<(Vec<Option<Value>>, Obj<'_>)> = matched
            .into_iter()
            .map(|o| {
                (
                    sorts.iter().map(|(f, _)| sort_key(store, o, f)).collect(),
                    o,
                )
            })
            .collect();
        keyed.sort_by(|(a, _), (b, _)| {
            for (i, (_, desc)) in sorts.iter().enumerate() {
                let ord = cmp_values(&a[i], &b[i]);
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
        matched = keyed.into_iter().map(|(_, o)| o).collect();
    }
    let cap = results_limit.unwrap_or(usize::MAX).min(limits.max_results);
    matched.truncate(cap);
    let limited = matched.len();
    let end = offset.saturating_add(limit).min(limited);
    let page = matched.get(offset.min(limited)..end).unwrap_or_default();
    let data: Vec<Value> = page
        .iter()
        .map(|o| render_result(store, *o, fields))
        .collect();
    let cursor = if end < limited && limit > 0 {
        json!(hex::encode(format!("{end}:{fp}")))
    } else {
        Value::Null
    };
    let mut out = json!({ "data": data, "cursor": cursor });
    if body.get("include_counts").and_then(Value::as_bool) == Some(true) {
        out["count"] = json!({ "total": total, "limited": limited });
    }
    Ok(out)
}

fn render_result(store: &Store, obj: Obj<'_>, fields: Option<&Map<String, Value>>) -> Value {
    let kind = obj.kind().as_str();
    let wanted: Option<Vec<String>> = fields
        .and_then(|f| f.get(kind))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        });
    let mut out = Map::new();
    out.insert("__object_type".into(), json!(kind));
    out.insert("id".into(), json!(obj.id()));
    if let Some(wanted) = wanted {
        let full = match obj {
            Obj::Lead(l) if wanted.iter().any(|w| w == "contacts") => store.lead_json(l),
            Obj::Lead(l) => render_lead(&store.orgs[l.org], l, None),
            Obj::Contact(c) => render_contact(&store.orgs[c.org], c),
        };
        if let Value::Object(m) = select_fields(full, Some(&wanted)) {
            out.extend(m);
        }
    }
    if let Obj::Contact(c) = obj {
        out.insert("lead_id".into(), json!(c.lead_id));
    }
    Value::Object(out)
}
