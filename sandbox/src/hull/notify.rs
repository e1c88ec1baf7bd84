//! The notifier: signed smart-notifier notifications with flow control, `is_export`
//! notifications and the legacy `/batch` extract flow.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Map, Value};

use super::error::NotifyError;
use super::store::{now, user_message_key, Kind, Store, Stored};
use super::{Connector, Inner, NotificationRecord, NotifyReport};

/// Per-request deadline, the connector SDKs' own limit.
pub(crate) const CONNECTOR_TIMEOUT: Duration = Duration::from_secs(25);
/// Batch size before the connector asked for one.
const DEFAULT_BATCH_SIZE: usize = 50;
/// Longest wait the simulator honours between calls.
const MAX_WAIT_MS: u64 = 2_000;
/// Wait before a re-delivery when the connector gave none.
const DEFAULT_RETRY_IN_MS: u64 = 1_000;
/// Re-deliveries of one batch before the run is reported as failed.
const MAX_RETRIES: usize = 10;
/// Lifetime of a notification signature.
const SIGNATURE_TTL_SECS: i64 = 300;

/// Which profile a message is about, and its version when the message was built.
struct Meta {
    kind: Kind,
    id: String,
    version: u64,
}

/// The connector object as the platform returns it (`GET /api/v1/app`, notification body).
pub(crate) fn connector_json(connector: &Connector) -> Value {
    let source_url = connector.url.as_ref().map(|u| format!("{u}/"));
    json!({
        "id": connector.id,
        "name": connector.name,
        "type": "ship",
        "secret": connector.secret,
        "settings": connector.settings,
        "private_settings": connector.private_settings,
        "source_url": source_url,
        "manifest_url": connector.url.as_ref().map(|u| format!("{u}/manifest.json")),
        "manifest": {
            "name": "Hull-Closeio",
            "source": "closeio",
            "tags": ["outgoing", "batch", "oneColumn", "smart-notifier"],
            "subscriptions": [{ "url": "/smart-notifier" }]
        },
        "status": connector.status,
        "accept_incoming_webhooks": true,
        "created_at": connector.created_at,
        "updated_at": connector.updated_at,
    })
}

/// The flat user object of notifications and extracts.
fn user_object(stored: &Stored) -> Value {
    let p = &stored.profile;
    let mut obj = Map::new();
    obj.insert("id".into(), json!(p.id));
    for (key, value) in &p.attributes {
        obj.insert(user_message_key(key), value.clone());
    }
    if !obj.contains_key("domain") {
        if let Some(domain) = p
            .attributes
            .get("email")
            .and_then(Value::as_str)
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
        {
            obj.insert("domain".into(), json!(domain));
        }
    }
    obj.insert("anonymous_ids".into(), json!(p.anonymous_ids));
    obj.insert("segment_ids".into(), json!(p.segment_ids));
    obj.insert("created_at".into(), json!(stored.created_at));
    obj.insert("indexed_at".into(), json!(stored.updated_at));
    Value::Object(obj)
}

/// The flat account object (no `traits_` prefix).
fn account_object(stored: &Stored) -> Value {
    let p = &stored.profile;
    let mut obj = Map::new();
    obj.insert("id".into(), json!(p.id));
    for (key, value) in &p.attributes {
        obj.insert(key.clone(), value.clone());
    }
    obj.insert("anonymous_ids".into(), json!(p.anonymous_ids));
    obj.insert("created_at".into(), json!(stored.created_at));
    obj.insert("updated_at".into(), json!(stored.updated_at));
    Value::Object(obj)
}

/// `{entered, left}` since the last delivered notification, `{}` when nothing moved.
fn segment_changes(store: &Store, kind: Kind, stored: &Stored) -> Value {
    let current = &stored.profile.segment_ids;
    let before = &stored.notified_segments;
    let entered: Vec<String> = current
        .iter()
        .filter(|s| !before.contains(s))
        .cloned()
        .collect();
    let left: Vec<String> = before
        .iter()
        .filter(|s| !current.contains(s))
        .cloned()
        .collect();
    if entered.is_empty() && left.is_empty() {
        return json!({});
    }
    json!({
        "entered": store.segment_objects(kind, &entered),
        "left": store.segment_objects(kind, &left),
    })
}

/// A 40-hex message id.
fn message_id() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{}", &b[..8])
}

fn user_message(store: &Store, id: &str, is_export: bool) -> Option<(Value, Meta)> {
    let stored = store.users.get(id)?;
    let account = stored
        .profile
        .account_id
        .as_ref()
        .and_then(|a| store.accounts.get(a));
    let account_json = account.map_or_else(|| json!({}), account_object);
    let account_segments = account
        .map(|a| store.segment_objects(Kind::Account, &a.profile.segment_ids))
        .unwrap_or_default();
    let mut message = json!({
        "message_id": message_id(),
        "user": user_object(stored),
        "account": account_json,
        "segments": store.segment_objects(Kind::User, &stored.profile.segment_ids),
        "account_segments": account_segments,
    });
    if let Value::Object(obj) = &mut message {
        if is_export {
            obj.insert("update_id".into(), json!(uuid::Uuid::new_v4().to_string()));
        } else {
            let user_changes: Map<String, Value> = stored
                .changes
                .iter()
                .map(|(k, v)| (user_message_key(k), v.clone()))
                .collect();
            let (account_changes, account_segment_changes) = match account {
                Some(a) => (
                    Value::Object(a.changes.clone()),
                    segment_changes(store, Kind::Account, a),
                ),
                None => (json!({}), json!({})),
            };
            obj.insert(
                "changes".into(),
                json!({
                    "is_new": stored.is_new,
                    "user": user_changes,
                    "account": account_changes,
                    "segments": segment_changes(store, Kind::User, stored),
                    "account_segments": account_segment_changes,
                }),
            );
            obj.insert("events".into(), json!([]));
        }
    }
    let meta = Meta {
        kind: Kind::User,
        id: id.to_string(),
        version: stored.version,
    };
    Some((message, meta))
}

fn account_message(store: &Store, id: &str, is_export: bool) -> Option<(Value, Meta)> {
    let stored = store.accounts.get(id)?;
    let mut message = json!({
        "message_id": message_id(),
        "account": account_object(stored),
        "account_segments": store.segment_objects(Kind::Account, &stored.profile.segment_ids),
    });
    if let Value::Object(obj) = &mut message {
        if is_export {
            obj.insert("update_id".into(), json!(uuid::Uuid::new_v4().to_string()));
        } else {
            obj.insert(
                "changes".into(),
                json!({
                    "is_new": stored.is_new,
                    "account": stored.changes,
                    "account_segments": segment_changes(store, Kind::Account, stored),
                }),
            );
        }
    }
    let meta = Meta {
        kind: Kind::Account,
        id: id.to_string(),
        version: stored.version,
    };
    Some((message, meta))
}

fn channel_kind(channel: &str) -> Result<Kind, NotifyError> {
    match channel {
        "user:update" => Ok(Kind::User),
        "account:update" => Ok(Kind::Account),
        other => Err(NotifyError::UnknownChannel(other.to_string())),
    }
}

/// Builds the messages for `ids` of `kind`; fails if any id is unknown.
fn build_messages(
    store: &Store,
    kind: Kind,
    ids: &[String],
    is_export: bool,
) -> Result<(Vec<Value>, Vec<Meta>), NotifyError> {
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !store.table(kind).contains_key(id.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(NotifyError::UnknownProfiles {
            kind: kind.name(),
            ids: missing,
        });
    }
    Ok(ids
        .iter()
        .filter_map(|id| match kind {
            Kind::User => user_message(store, id, is_export),
            Kind::Account => account_message(store, id, is_export),
        })
        .unzip())
}

/// Checks that the connector exists and has a URL; returns that URL.
fn connector_url(inner: &Inner, connector_id: &str) -> Result<String, NotifyError> {
    let store = inner.store.lock();
    let connector = store
        .connector(connector_id)
        .ok_or_else(|| NotifyError::UnknownConnector(connector_id.to_string()))?;
    connector
        .url
        .clone()
        .ok_or_else(|| NotifyError::NoUrl(connector_id.to_string()))
}

/// `notify` / `notify_export`: messages for explicit ids.
pub(crate) async fn notify(
    inner: &Inner,
    connector_id: &str,
    channel: &str,
    ids: &[String],
    is_export: bool,
) -> Result<NotifyReport, NotifyError> {
    let kind = channel_kind(channel)?;
    connector_url(inner, connector_id)?;
    let (messages, metas) = build_messages(&inner.store.lock(), kind, ids, is_export)?;
    deliver(inner, connector_id, channel, messages, metas, is_export).await
}

/// Every changed profile: accounts first (so leads exist before contacts), then users.
pub(crate) async fn notify_changed(
    inner: &Inner,
    connector_id: &str,
) -> Result<NotifyReport, NotifyError> {
    connector_url(inner, connector_id)?;
    let changed = |store: &Store, kind: Kind| -> Vec<String> {
        store
            .table(kind)
            .values()
            .filter(|s| s.changed)
            .map(|s| s.profile.id.clone())
            .collect()
    };
    let mut total = NotifyReport::default();
    for (kind, channel) in [
        (Kind::Account, "account:update"),
        (Kind::User, "user:update"),
    ] {
        let (messages, metas) = {
            let store = inner.store.lock();
            let ids = changed(&store, kind);
            build_messages(&store, kind, &ids, false)?
        };
        if messages.is_empty() {
            continue;
        }
        let report = deliver(inner, connector_id, channel, messages, metas, false).await?;
        total.http_calls += report.http_calls;
        total.messages_delivered += report.messages_delivered;
        total.messages_total += report.messages_total;
        total.retries += report.retries;
        total.statuses.extend(report.statuses);
        total.final_flow_control = report.final_flow_control.or(total.final_flow_control);
        if report.failed {
            total.failed = true;
            total.error = report.error;
            break;
        }
    }
    Ok(total)
}

/// The `flow_control` object of an answer.
struct FlowControl {
    retry: bool,
    size: Option<usize>,
    in_ms: Option<u64>,
}

fn parse_flow_control(answer: &Value) -> Option<FlowControl> {
    let fc = answer.get("flow_control")?;
    let number = |key: &str| match fc.get(key) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    Some(FlowControl {
        retry: fc.get("type").and_then(Value::as_str) == Some("retry"),
        size: number("size").filter(|s| *s >= 1.0).map(|s| s as usize),
        in_ms: number("in").filter(|s| *s >= 0.0).map(|s| s as u64),
    })
}

/// Result of one HTTP call to the connector.
struct CallOutcome {
    status: Option<u16>,
    answer: Value,
    error: Option<String>,
}

/// Parses an answer body: JSON if possible, else the text.
fn answer_value(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// RS256 signature with `jti` = notification id.
fn sign(inner: &Inner, notification_id: &str) -> Result<String, NotifyError> {
    let iat = chrono::Utc::now().timestamp();
    let claims = json!({
        "jti": notification_id,
        "iat": iat,
        "exp": iat + SIGNATURE_TTL_SECS,
        "iss": inner.org,
    });
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &inner.signing_key,
    )?)
}

async fn post_notification(inner: &Inner, url: &str, body: &Value, signature: &str) -> CallOutcome {
    let sent = inner
        .http
        .post(url)
        .header("x-hull-smart-notifier", "true")
        .header("x-hull-smart-notifier-signature", signature)
        .header("x-hull-smart-notifier-signature-version", "v1")
        .header(
            "x-hull-smart-notifier-signature-public-key-url",
            inner.public_key_url(),
        )
        .json(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Ok(text) => CallOutcome {
                    status: Some(status),
                    answer: answer_value(text),
                    error: None,
                },
                Err(err) => CallOutcome {
                    status: Some(status),
                    answer: Value::Null,
                    error: Some(err.to_string()),
                },
            }
        }
        Err(err) => CallOutcome {
            status: None,
            answer: Value::Null,
            error: Some(err.to_string()),
        },
    }
}

async fn wait_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms.min(MAX_WAIT_MS))).await;
    }
}

/// Delivers messages in flow-controlled batches.
async fn deliver(
    inner: &Inner,
    connector_id: &str,
    channel: &str,
    messages: Vec<Value>,
    metas: Vec<Meta>,
    is_export: bool,
) -> Result<NotifyReport, NotifyError> {
    let mut report = NotifyReport {
        messages_total: messages.len(),
        ..NotifyReport::default()
    };
    let mut size = inner
        .store
        .lock()
        .flow_size
        .get(connector_id)
        .copied()
        .unwrap_or(DEFAULT_BATCH_SIZE)
        .max(1);
    let mut pos = 0;
    while pos < messages.len() {
        let end = (pos + size).min(messages.len());
        let chunk = &messages[pos..end];
        let notification_id = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0;
        loop {
            let (connector, users_segments, accounts_segments) = {
                let store = inner.store.lock();
                let connector = store
                    .connector(connector_id)
                    .cloned()
                    .ok_or_else(|| NotifyError::UnknownConnector(connector_id.to_string()))?;
                (
                    connector,
                    store.users_segments.clone(),
                    store.accounts_segments.clone(),
                )
            };
            let url = connector
                .url
                .clone()
                .ok_or_else(|| NotifyError::NoUrl(connector_id.to_string()))?;
            let url = format!("{url}/smart-notifier");
            let body = json!({
                "notification_id": notification_id,
                "configuration": {
                    "id": connector.id,
                    "organization": inner.org,
                    "secret": connector.secret,
                },
                "connector": connector_json(&connector),
                "channel": channel,
                "messages": chunk,
                "segments": users_segments,
                "accounts_segments": accounts_segments,
                "kraken": { "retries": attempt },
                "is_export": is_export,
            });
            let signature = sign(inner, &notification_id)?;
            let outcome = post_notification(inner, &url, &body, &signature).await;
            report.http_calls += 1;
            report.statuses.push(outcome.status.unwrap_or(0));
            let flow = parse_flow_control(&outcome.answer);
            if let Some(fc) = outcome.answer.get("flow_control") {
                report.final_flow_control = Some(fc.clone());
            }
            let success = outcome.status.is_some_and(|s| (200..300).contains(&s))
                && !flow.as_ref().is_some_and(|f| f.retry);
            inner
                .store
                .lock()
                .notification_log
                .push(NotificationRecord {
                    sent_at: now(),
                    connector_id: connector_id.to_string(),
                    url,
                    channel: channel.to_string(),
                    notification_id: notification_id.clone(),
                    message_count: chunk.len(),
                    is_export,
                    retries: attempt,
                    status: outcome.status,
                    response: outcome.answer.clone(),
                    error: outcome.error.clone(),
                });
            if let Some(asked) = flow.as_ref().and_then(|f| f.size) {
                size = asked;
                inner
                    .store
                    .lock()
                    .flow_size
                    .insert(connector_id.to_string(), asked);
            }
            let wait = flow.as_ref().and_then(|f| f.in_ms);
            if success {
                report.messages_delivered += chunk.len();
                if !is_export {
                    let mut store = inner.store.lock();
                    for meta in &metas[pos..end] {
                        store.mark_delivered(meta.kind, &meta.id, meta.version);
                    }
                }
                pos = end;
                if pos < messages.len() {
                    wait_ms(wait.unwrap_or(0)).await;
                }
                break;
            }
            attempt += 1;
            report.retries += 1;
            if attempt > MAX_RETRIES {
                report.failed = true;
                report.error = Some(format!(
                    "batch of {} messages not accepted after {MAX_RETRIES} retries (last status {:?}, error {:?})",
                    chunk.len(),
                    outcome.status,
                    outcome.error
                ));
                return Ok(report);
            }
            wait_ms(wait.unwrap_or(DEFAULT_RETRY_IN_MS)).await;
        }
    }
    Ok(report)
}

/// Legacy extract: one NDJSON line per profile, as Hull extracts look.
fn extract_lines(store: &Store, kind: Kind, ids: &[String]) -> Result<String, NotifyError> {
    let ids: Vec<String> = if ids.is_empty() {
        store.table(kind).keys().cloned().collect()
    } else {
        ids.to_vec()
    };
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !store.table(kind).contains_key(id.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(NotifyError::UnknownProfiles {
            kind: kind.name(),
            ids: missing,
        });
    }
    let mut out = String::new();
    for id in &ids {
        let Some(stored) = store.table(kind).get(id) else {
            continue;
        };
        let line = match kind {
            Kind::User => {
                let mut user = user_object(stored);
                let account = stored
                    .profile
                    .account_id
                    .as_ref()
                    .and_then(|a| store.accounts.get(a))
                    .map_or_else(|| json!({}), account_object);
                if let Value::Object(obj) = &mut user {
                    obj.insert("account".into(), account);
                }
                user
            }
            Kind::Account => {
                let mut account = account_object(stored);
                if let Value::Object(obj) = &mut account {
                    obj.insert("segment_ids".into(), json!(stored.profile.segment_ids));
                }
                account
            }
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    Ok(out)
}

/// `POST <url>/batch?ship=&organization=&secret=` (users) or `<url>/batch-accounts?…`
/// (accounts, the manifest's `batch-accounts` tag), pointing at an extract served by the sim.
pub(crate) async fn send_batch(
    inner: &Inner,
    connector_id: &str,
    object_type: &str,
    ids: &[String],
) -> Result<u16, NotifyError> {
    let (kind, object_type, channel, path) = match object_type {
        "user_report" | "user" => (Kind::User, "user_report", "user:extract", "batch"),
        "account_report" | "account" => (
            Kind::Account,
            "account_report",
            "account:extract",
            "batch-accounts",
        ),
        other => return Err(NotifyError::UnknownObjectType(other.to_string())),
    };
    let base = connector_url(inner, connector_id)?;
    let extract_id = uuid::Uuid::new_v4().simple().to_string();
    let (connector, body, count) = {
        let mut store = inner.store.lock();
        let ndjson = extract_lines(&store, kind, ids)?;
        let count = ndjson.lines().count();
        store.extracts.insert(extract_id.clone(), ndjson);
        let connector = store
            .connector(connector_id)
            .cloned()
            .ok_or_else(|| NotifyError::UnknownConnector(connector_id.to_string()))?;
        let body = json!({
            "url": format!("{}/_sandbox/extracts/{extract_id}", inner.base_url),
            "format": "json",
            "object_type": object_type,
            "channel": channel,
            "notification_id": format!("{channel}:{}", &extract_id[..24]),
            "segments": store.users_segments,
            "account_segments": store.accounts_segments,
        });
        (connector, body, count)
    };
    let mut url = url::Url::parse(&format!("{base}/{path}"))
        .map_err(|_| NotifyError::BadUrl(base.clone()))?;
    url.query_pairs_mut()
        .append_pair("ship", &connector.id)
        .append_pair("organization", &inner.org)
        .append_pair("secret", &connector.secret);
    let sent = inner.http.post(url.clone()).json(&body).send().await;
    let (status, answer, error) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (Some(status), answer_value(text), None)
        }
        Err(err) => (None, Value::Null, Some(err)),
    };
    inner
        .store
        .lock()
        .notification_log
        .push(NotificationRecord {
            sent_at: now(),
            connector_id: connector_id.to_string(),
            url: format!("{base}/{path}"),
            channel: channel.to_string(),
            notification_id: body["notification_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            message_count: count,
            is_export: false,
            retries: 0,
            status,
            response: answer,
            error: error.as_ref().map(ToString::to_string),
        });
    match (status, error) {
        (Some(status), _) => Ok(status),
        (None, Some(err)) => Err(NotifyError::Transport(err)),
        (None, None) => Ok(0),
    }
}
