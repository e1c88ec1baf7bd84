//! Echo-loop guards: skip messages caused only by this connector's own `closeio/*` writes,
//! and skip writes whose body equals the last one sent.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::inbound::{ANONYMOUS_ID_PREFIX, TRAIT_PREFIX};

/// Prefix of user trait keys as Hull sends them in `changes.user`.
const USER_TRAIT_PREFIX: &str = "traits_";

/// Whether a notification's `changes` consist only of attributes this connector writes.
///
/// True when `is_new` is not true, no segment was entered or left, at least one attribute
/// changed, and every changed attribute is a `closeio/*` attribute (user keys
/// `traits_closeio/…` or `closeio/…`, account keys `closeio/…`) or an added
/// `closeio:<id>` anonymous id (`anonymous_ids[n]`). Absent, malformed or empty `changes`
/// give false: the message is processed normally.
pub fn changes_only_closeio(changes: Option<&Value>) -> bool {
    let Some(changes) = changes.and_then(Value::as_object) else {
        return false;
    };
    if changes.get("is_new").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    if ["segments", "account_segments", "user_segments"]
        .iter()
        .any(|key| changes.get(*key).is_some_and(segment_changes_present))
    {
        return false;
    }
    let mut any = false;
    for (section, is_user) in [("user", true), ("account", false)] {
        let Some(attributes) = changes.get(section) else {
            continue;
        };
        let Some(attributes) = attributes.as_object() else {
            return false;
        };
        for (key, change) in attributes {
            if !is_own_attribute(key, change, is_user) {
                return false;
            }
            any = true;
        }
    }
    any
}

/// Whether a segment change section (`{entered: [...], left: [...]}`) holds anything.
fn segment_changes_present(section: &Value) -> bool {
    match section {
        Value::Null => false,
        Value::Object(map) => map.values().any(|v| match v {
            Value::Array(items) => !items.is_empty(),
            Value::Null => false,
            _ => true,
        }),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

fn is_own_attribute(key: &str, change: &Value, is_user: bool) -> bool {
    let bare = if is_user {
        key.strip_prefix(USER_TRAIT_PREFIX).unwrap_or(key)
    } else {
        key
    };
    if bare.starts_with(TRAIT_PREFIX) {
        return true;
    }
    // `anonymous_ids[1]: [null, "closeio:lead_…"]` after an incoming identity claim.
    key.starts_with("anonymous_ids")
        && change
            .as_array()
            .and_then(|pair| pair.get(1))
            .and_then(Value::as_str)
            .is_some_and(|new| new.starts_with(ANONYMOUS_ID_PREFIX))
}

/// Hex SHA-256 of a body serialised with object keys sorted at every depth, so that two
/// bodies with the same content hash the same whatever their key order.
pub fn body_hash(body: &Map<String, Value>) -> String {
    let mut canonical = String::new();
    write_canonical_object(&mut canonical, body);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => write_canonical_object(out, map),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_canonical_object(out: &mut String, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        write_canonical(out, value);
    }
    out.push('}');
}
