//! Webhook subscriptions (`/webhook/`) and signed, retried deliveries.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use rand::RngCore;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ApiResult};
use super::store::{PendingDelivery, Store, Subscription};
use super::time;

/// Subscriptions allowed per organization.
pub const MAX_SUBSCRIPTIONS: usize = 40;

/// `close-sig-hash`: lowercase hex HMAC-SHA256 keyed with the hex-decoded `signature_key`
/// over the timestamp string followed directly by the raw body. `None` for a non-hex key.
pub fn signature(signature_key: &str, timestamp: &str, body: &[u8]) -> Option<String> {
    let key = hex::decode(signature_key).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(body);
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Retry policy of deliveries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per delivery, including the first.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    pub base_delay: Duration,
}

/// One delivery as reported by `GET /_sandbox/webhook-deliveries`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    /// Subscription id.
    pub subscription_id: String,
    /// Event id.
    pub event_id: String,
    /// `object_type` of the event.
    pub object_type: String,
    /// `action` of the event.
    pub action: String,
    /// Receiver URL.
    pub url: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Status of the last attempt (`None` on a connection error).
    pub last_status: Option<u16>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// A 2xx was received.
    pub delivered: bool,
    /// No more attempts will be made.
    pub finished: bool,
}

/// Sends one delivery, retrying with exponential backoff, and keeps its record up to date.
pub async fn deliver(
    client: reqwest::Client,
    records: Arc<Mutex<Vec<DeliveryRecord>>>,
    pending: PendingDelivery,
    policy: RetryPolicy,
    cancel: CancellationToken,
) {
    let str_of = |k: &str| {
        pending
            .event
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let index = {
        let mut r = records.lock();
        r.push(DeliveryRecord {
            subscription_id: pending.subscription_id.clone(),
            event_id: str_of("id"),
            object_type: str_of("object_type"),
            action: str_of("action"),
            url: pending.url.clone(),
            attempts: 0,
            last_status: None,
            last_error: None,
            delivered: false,
            finished: false,
        });
        r.len() - 1
    };
    let body =
        json!({"event": pending.event, "subscription_id": pending.subscription_id}).to_string();
    let mut delay = policy.base_delay;
    for attempt in 1..=policy.max_attempts.max(1) {
        let ts = (time::now_micros() / 1_000_000).to_string();
        let sig = signature(&pending.signature_key, &ts, body.as_bytes()).unwrap_or_default();
        let result = client
            .post(&pending.url)
            .header("content-type", "application/json")
            .header("close-sig-hash", sig)
            .header("close-sig-timestamp", &ts)
            .body(body.clone())
            .send()
            .await;
        let (status, error) = match result {
            Ok(resp) => (Some(resp.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let last = attempt >= policy.max_attempts.max(1);
        if let Some(rec) = records.lock().get_mut(index) {
            rec.attempts = attempt;
            rec.last_status = status;
            rec.last_error = error;
            rec.delivered = delivered;
            rec.finished = delivered || last;
        }
        if delivered || last {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = delay.saturating_mul(2);
    }
}

fn render(store: &Store, sub: &Subscription, with_key: bool) -> Value {
    let mut v = json!({
        "id": sub.id,
        "url": sub.url,
        "events": sub.events,
        "status": sub.status,
        "verify_ssl": sub.verify_ssl,
        "organization_id": store.orgs[sub.org].id,
        "created_by": sub.created_by,
        "date_created": time::format_object(sub.date_created),
        "date_updated": time::format_object(sub.date_updated),
    });
    if with_key {
        v["signature_key"] = json!(sub.signature_key);
    }
    v
}

fn parse_url(v: &Value) -> ApiResult<String> {
    let url = v
        .as_str()
        .ok_or_else(|| ApiError::field("url", "Not a valid string."))?;
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(url.to_string()),
        _ => Err(ApiError::field("url", "Enter a valid URL.")),
    }
}

fn parse_events(v: &Value) -> ApiResult<Vec<Value>> {
    let items = v
        .as_array()
        .ok_or_else(|| ApiError::field("events", "Not a valid list."))?;
    items
        .iter()
        .map(|e| {
            let ot = e.get("object_type").and_then(Value::as_str);
            let action = e.get("action").and_then(Value::as_str);
            match (ot, action) {
                (Some(ot), Some(action)) => Ok(json!({
                    "object_type": ot,
                    "action": action,
                    "extra_filter": e.get("extra_filter").cloned().unwrap_or(Value::Null),
                })),
                _ => Err(ApiError::field(
                    "events",
                    "Each event needs object_type and action.",
                )),
            }
        })
        .collect()
}

fn parse_status(v: &Value) -> ApiResult<String> {
    match v.as_str() {
        Some(s @ ("active" | "paused")) => Ok(s.to_string()),
        _ => Err(ApiError::field("status", "Must be active or paused.")),
    }
}

/// `POST /webhook/`.
pub fn create(
    store: &mut Store,
    org: usize,
    user_id: &str,
    body: &Map<String, Value>,
) -> ApiResult<Value> {
    let url = parse_url(
        body.get("url")
            .ok_or_else(|| ApiError::field("url", "This field is required."))?,
    )?;
    let events = parse_events(
        body.get("events")
            .ok_or_else(|| ApiError::field("events", "This field is required."))?,
    )?;
    let verify_ssl = match body.get("verify_ssl") {
        None | Some(Value::Null) => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::field("verify_ssl", "Not a valid boolean."))?,
    };
    if store.webhooks.iter().filter(|s| s.org == org).count() >= MAX_SUBSCRIPTIONS {
        return Err(ApiError::bad_request(format!(
            "Organizations are limited to {MAX_SUBSCRIPTIONS} webhook subscriptions."
        )));
    }
    let mut key = [0u8; 32];
    store.rng.fill_bytes(&mut key);
    let ts = store.next_ts();
    let sub = Subscription {
        id: store.id("whsub_", 22),
        org,
        url,
        events,
        status: "active".into(),
        verify_ssl,
        signature_key: hex::encode(key),
        created_by: user_id.to_string(),
        date_created: ts,
        date_updated: ts,
    };
    let out = render(store, &sub, true);
    store.webhooks.push(sub);
    Ok(out)
}

fn find(store: &Store, org: usize, id: &str) -> ApiResult<usize> {
    store
        .webhooks
        .iter()
        .position(|s| s.org == org && s.id == id)
        .ok_or_else(|| ApiError::not_found("WebhookSubscription"))
}

/// `GET /webhook/` page.
pub fn list(store: &Store, org: usize, skip: usize, limit: usize) -> Value {
    let all: Vec<&Subscription> = store.webhooks.iter().filter(|s| s.org == org).collect();
    let page: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(limit)
        .map(|s| render(store, s, false))
        .collect();
    json!({"data": page, "has_more": skip.saturating_add(limit) < all.len()})
}

/// `GET /webhook/{id}/`.
pub fn get(store: &Store, org: usize, id: &str) -> ApiResult<Value> {
    let i = find(store, org, id)?;
    Ok(render(store, &store.webhooks[i], false))
}

/// `PUT /webhook/{id}/`: `url`, `events`, `status`, `verify_ssl`.
pub fn update(
    store: &mut Store,
    org: usize,
    id: &str,
    body: &Map<String, Value>,
) -> ApiResult<Value> {
    let i = find(store, org, id)?;
    let mut sub = store.webhooks[i].clone();
    if let Some(v) = body.get("url") {
        sub.url = parse_url(v)?;
    }
    if let Some(v) = body.get("events") {
        sub.events = parse_events(v)?;
    }
    if let Some(v) = body.get("status") {
        sub.status = parse_status(v)?;
    }
    if let Some(v) = body.get("verify_ssl") {
        sub.verify_ssl = v
            .as_bool()
            .ok_or_else(|| ApiError::field("verify_ssl", "Not a valid boolean."))?;
    }
    sub.date_updated = store.next_ts();
    let out = render(store, &sub, false);
    store.webhooks[i] = sub;
    Ok(out)
}

/// `DELETE /webhook/{id}/`.
pub fn delete(store: &mut Store, org: usize, id: &str) -> ApiResult<()> {
    let i = find(store, org, id)?;
    store.webhooks.remove(i);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_documented_vector() {
        let key = "b9260244ef33625f9b4b26a27db08758cdd39478b852c73f2d33ab042eb8abb4";
        let body = r#"{"event": {"id": "ev_4YUAT9G7PQNYEX0V7HpiZa", "date_created": "2019-01-01T13:33:00.842000", "data": {"object_type": "activity.note", "action": "created", "note": "test content"}}, "subscription_id": "whsub_mBTylJxRXaBOXcuQmgUdmL"}"#;
        assert_eq!(
            signature(key, "1557751596", body.as_bytes()).as_deref(),
            Some("e6cf27a55de463dc46d8b5c16d2afe74d766e8f0c9892422c93573521cd377ed")
        );
        assert!(signature("not hex", "1", b"").is_none());
    }
}
