//! Which Hull entity a message is about, when its Hull id may be missing.

use serde_json::{Map, Value};

fn non_empty<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The key of an account in the sync state: its Hull `id`, or — for a message without one,
/// which Hull resolves by its identity claims as the original connector did — `external_id:<x>`
/// or `domain:<lower-case domain>`. `None` when the account has none of them.
pub fn account_key(account: &Map<String, Value>) -> Option<String> {
    if let Some(id) = non_empty(account, "id") {
        return Some(id.to_string());
    }
    if let Some(x) = non_empty(account, "external_id") {
        return Some(format!("external_id:{x}"));
    }
    non_empty(account, "domain").map(|d| format!("domain:{}", d.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys() {
        let cases = [
            (json!({"id": "a1", "domain": "acme.com"}), Some("a1")),
            (
                json!({"id": "", "external_id": "42", "domain": "acme.com"}),
                Some("external_id:42"),
            ),
            (json!({"domain": "ACME.com"}), Some("domain:acme.com")),
            (json!({"domain": "  "}), None),
            (json!({"name": "Acme"}), None),
            (json!({"id": 7, "domain": "x.io"}), Some("domain:x.io")),
        ];
        for (account, expected) in cases {
            let m = account.as_object().cloned().unwrap_or_default();
            assert_eq!(account_key(&m).as_deref(), expected, "{account}");
        }
    }
}
