//! `GET /event/` and `GET /event/{id}/`: the event log, newest first, cursor-paginated.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::store::{Event, Store};
use super::time::{self, Micros};

/// Default and maximum `_limit` of the event log.
pub const MAX_EVENT_LIMIT: usize = 50;

const FILTER_KEYS: &[&str] = &[
    "object_type",
    "object_id",
    "action",
    "lead_id",
    "user_id",
    "request_id",
];

/// Filter combinations Close allows (date filters may be added to any of them).
const ALLOWED: &[&[&str]] = &[
    &[],
    &["object_type", "object_id"],
    &["object_type", "action"],
    &["object_id", "action"],
    &["lead_id", "object_type"],
    &["lead_id", "object_type", "action"],
    &["lead_id", "user_id", "object_type"],
    &["lead_id", "user_id", "object_type", "action"],
    &["lead_id", "user_id"],
    &["user_id", "object_id"],
    &["user_id", "object_id", "action"],
    &["user_id", "object_type"],
    &["user_id", "object_type", "action"],
    &["lead_id"],
    &["user_id"],
    &["request_id"],
];

enum Cursor {
    Older(u64),
    Newer(u64),
}

fn decode_cursor(text: &str) -> ApiResult<Cursor> {
    let invalid = || ApiError::bad_request("Invalid cursor.");
    let raw =
        String::from_utf8(hex::decode(text).map_err(|_| invalid())?).map_err(|_| invalid())?;
    let (dir, seq) = raw.split_once(':').ok_or_else(invalid)?;
    let seq = seq.parse().map_err(|_| invalid())?;
    match dir {
        "older" => Ok(Cursor::Older(seq)),
        "newer" => Ok(Cursor::Newer(seq)),
        _ => Err(invalid()),
    }
}

fn encode_cursor(dir: &str, seq: u64) -> String {
    hex::encode(format!("{dir}:{seq}"))
}

fn date_bound(params: &HashMap<String, String>, key: &str) -> ApiResult<Option<Micros>> {
    params
        .get(key)
        .map(|v| time::parse(v).ok_or_else(|| ApiError::field(key, format!("Invalid date: {v}"))))
        .transpose()
}

/// Lists events of organization `org` per the query parameters.
pub fn list(store: &Store, org: usize, params: &HashMap<String, String>) -> ApiResult<Value> {
    if params.contains_key("_skip") {
        return Err(ApiError::bad_request(
            "_skip is not supported on the event log; use _cursor.",
        ));
    }
    let limit = match params.get("_limit") {
        None => MAX_EVENT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::field("_limit", "Not a valid integer."))?,
    };
    if limit > MAX_EVENT_LIMIT {
        return Err(ApiError::field(
            "_limit",
            format!("Ensure this value is less than or equal to {MAX_EVENT_LIMIT}."),
        ));
    }
    let mut present: Vec<&str> = FILTER_KEYS
        .iter()
        .copied()
        .filter(|k| params.contains_key(*k))
        .collect();
    present.sort_unstable();
    let allowed = ALLOWED.iter().any(|combo| {
        let mut c = combo.to_vec();
        c.sort_unstable();
        c == present
    });
    if !allowed {
        return Err(ApiError::bad_request(format!(
            "This combination of filters is not supported: {}.",
            present.join(", ")
        )));
    }
    let gt = date_bound(params, "date_updated__gt")?;
    let gte = date_bound(params, "date_updated__gte")?;
    let lt = date_bound(params, "date_updated__lt")?;
    let lte = date_bound(params, "date_updated__lte")?;
    let cursor = params
        .get("_cursor")
        .map(|c| decode_cursor(c))
        .transpose()?;
    let matches = |e: &Event| -> bool {
        let eq = |key: &str, v: Option<&str>| {
            params.get(key).is_none_or(|want| Some(want.as_str()) == v)
        };
        e.org == org
            && eq("object_type", Some(&e.object_type))
            && eq("object_id", Some(&e.object_id))
            && eq("action", Some(&e.action))
            && eq("lead_id", e.lead_id.as_deref())
            && eq("user_id", e.user_id.as_deref())
            && eq("request_id", Some(&e.request_id))
            && gt.is_none_or(|t| e.date_updated > t)
            && gte.is_none_or(|t| e.date_updated >= t)
            && lt.is_none_or(|t| e.date_updated < t)
            && lte.is_none_or(|t| e.date_updated <= t)
    };
    // Events are stored oldest first and `seq` increases with `date_updated`, so cursor
    // positions are found by binary search.
    let events = &store.events;
    let page: Vec<&Event> = match cursor {
        None => events
            .iter()
            .rev()
            .filter(|e| matches(e))
            .take(limit)
            .collect(),
        Some(Cursor::Older(seq)) => {
            let end = events.partition_point(|e| e.seq < seq);
            events[..end]
                .iter()
                .rev()
                .filter(|e| matches(e))
                .take(limit)
                .collect()
        }
        Some(Cursor::Newer(seq)) => {
            let start = events.partition_point(|e| e.seq <= seq);
            let mut newer: Vec<&Event> = events[start..]
                .iter()
                .filter(|e| matches(e))
                .take(limit)
                .collect();
            newer.reverse();
            newer
        }
    };
    let cursor_next = page.last().and_then(|oldest| {
        let end = events.partition_point(|e| e.seq < oldest.seq);
        events[..end]
            .iter()
            .rev()
            .any(matches)
            .then(|| encode_cursor("older", oldest.seq))
    });
    let cursor_previous = match (page.first(), &cursor) {
        (Some(newest), _) => Some(encode_cursor("newer", newest.seq)),
        (None, Some(Cursor::Newer(seq))) => Some(encode_cursor("newer", *seq)),
        (None, _) => store.events.last().map(|e| encode_cursor("newer", e.seq)),
    };
    Ok(json!({
        "data": page.iter().map(|e| e.json.clone()).collect::<Vec<_>>(),
        "cursor_next": cursor_next,
        "cursor_previous": cursor_previous,
    }))
}

/// One event of organization `org`.
pub fn get(store: &Store, org: usize, id: &str) -> ApiResult<Value> {
    store
        .events
        .iter()
        .find(|e| e.org == org && e.id == id)
        .map(|e| e.json.clone())
        .ok_or_else(|| ApiError::not_found("Event"))
}
