//! `POST /smart-notifier`: verify, validate, record the connector, split into one job per
//! entity, publish with confirms, answer with flow control.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use common::hull::{FlowControl, NotificationResponse};
use common::jobs::{Envelope, Job, OutgoingMessage};

use crate::App;

/// A validated notification.
#[derive(Debug)]
pub struct Notification {
    pub notification_id: String,
    pub connector_id: String,
    pub organization: String,
    pub secret: String,
    pub private_settings: Option<Value>,
    pub channel: String,
    pub messages: Vec<Value>,
    pub is_export: bool,
}

fn err_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let fc = if status.is_server_error() { FlowControl::retry(10, 5000) } else { FlowControl::retry(10, 1000) };
    let body = NotificationResponse::with_error(fc.with_in_time(10), message, "NotificationValidationError", code);
    (status, Json(body)).into_response()
}

fn unavailable(message: impl Into<String>) -> Response {
    let body = NotificationResponse::with_error(
        FlowControl::retry(10, 5000).with_in_time(10),
        message,
        "TransientError",
        "SERVICE_UNAVAILABLE",
    );
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

fn req_str(v: &Value, path: &str) -> Result<String, String> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part).ok_or_else(|| format!("{path} is missing"))?;
    }
    cur.as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("{path} must be a non-empty string"))
}

/// Validates the body; the error names the offending field.
pub fn parse(body: &Value) -> Result<Notification, String> {
    if !body.is_object() {
        return Err("the body must be a JSON object".into());
    }
    let channel = req_str(body, "channel")?;
    let private_settings = match body.get("connector").and_then(|c| c.get("private_settings")) {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err("connector.private_settings must be an object".into()),
    };
    let messages = match body.get("messages") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err("messages must be an array".into()),
    };
    let is_export = match body.get("is_export") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("is_export must be a boolean".into()),
    };
    let n = Notification {
        notification_id: req_str(body, "notification_id")?,
        connector_id: req_str(body, "configuration.id")?,
        organization: req_str(body, "configuration.organization")?,
        secret: req_str(body, "configuration.secret")?,
        private_settings,
        channel,
        messages,
        is_export,
    };
    let entity = match n.channel.as_str() {
        "user:update" => "user",
        "account:update" => "account",
        _ => return Ok(n),
    };
    for (i, m) in n.messages.iter().enumerate() {
        let obj = m.get(entity).ok_or_else(|| format!("messages[{i}].{entity} is missing"))?;
        if !obj.is_object() {
            return Err(format!("messages[{i}].{entity} must be an object"));
        }
        req_str(obj, "id").map_err(|e| format!("messages[{i}].{entity}.{e}"))?;
        if entity == "user" {
            if let Some(a) = m.get("account") {
                if !(a.is_object() || a.is_null()) {
                    return Err(format!("messages[{i}].account must be an object"));
                }
            }
        }
        for list in ["segments", "account_segments"] {
            if let Some(s) = m.get(list) {
                if !(s.is_array() || s.is_null()) {
                    return Err(format!("messages[{i}].{list} must be an array"));
                }
            }
        }
    }
    Ok(n)
}

/// One job per entity; when a notification holds several messages for one entity, the one
/// with the greatest `indexed_at` wins (as the original connector).
pub fn jobs(n: &Notification) -> Vec<Envelope> {
    let entity = match n.channel.as_str() {
        "user:update" => "user",
        "account:update" => "account",
        _ => return vec![],
    };
    let mut latest: Vec<(String, String, &Value)> = Vec::new();
    for m in &n.messages {
        let obj = m.get(entity).and_then(Value::as_object);
        let id = obj.and_then(|o| o.get("id")).and_then(Value::as_str).unwrap_or_default().to_string();
        let indexed = obj.and_then(|o| o.get("indexed_at")).and_then(Value::as_str).unwrap_or_default().to_string();
        match latest.iter_mut().find(|(i, _, _)| *i == id) {
            Some(slot) if indexed >= slot.1 => *slot = (id, indexed, m),
            Some(_) => {}
            None => latest.push((id, indexed, m)),
        }
    }
    latest
        .into_iter()
        .map(|(_, _, m)| {
            let msg = OutgoingMessage { notification_id: n.notification_id.clone(), is_export: n.is_export, message: m.clone() };
            let job = if entity == "user" { Job::OutgoingUser(msg) } else { Job::OutgoingAccount(msg) };
            Envelope::new(n.connector_id.clone(), job)
        })
        .collect()
}

/// The handler.
pub async fn smart_notifier(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return err_response(StatusCode::BAD_REQUEST, "INVALID_BODY", format!("the body is not valid JSON: {e}")),
    };
    if !app.cfg.skip_signature_verification {
        if let Err(e) = app.verifier.verify(&headers, &body).await {
            tracing::warn!(code = e.code(), error = %e.message(), "connector.smartNotifierHandler.error");
            metrics::counter!("ingest_notifications_total", "outcome" => "rejected").increment(1);
            return (StatusCode::BAD_REQUEST, Json(NotificationResponse::verification_failed(&e))).into_response();
        }
    }
    let n = match parse(&body) {
        Ok(n) => n,
        Err(msg) => {
            metrics::counter!("ingest_notifications_total", "outcome" => "invalid").increment(1);
            return err_response(StatusCode::BAD_REQUEST, "INVALID_BODY", msg);
        }
    };
    match app.store.check_secret(&n.connector_id, &n.secret).await {
        Ok(Some(false)) => {
            metrics::counter!("ingest_notifications_total", "outcome" => "rejected").increment(1);
            return err_response(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "configuration.secret does not match this connector");
        }
        Ok(Some(true)) => {}
        Ok(None) if n.private_settings.is_none() => {
            return err_response(
                StatusCode::BAD_REQUEST,
                "INVALID_BODY",
                "connector.private_settings is required for a connector seen for the first time",
            )
        }
        Ok(None) => {}
        Err(e) => return unavailable(format!("database unavailable: {e}")),
    }
    if let Some(settings) = &n.private_settings {
        if let Err(e) = app.store.upsert_connector(&n.connector_id, &n.organization, &n.secret, settings).await {
            return unavailable(format!("database unavailable: {e}"));
        }
    }
    let envelopes = jobs(&n);
    if n.channel != "user:update" && n.channel != "account:update" {
        tracing::debug!(channel = %n.channel, "channel without handler");
    }
    if let Err(e) = app.queue.publish_all(&envelopes).await {
        tracing::warn!(error = %e, jobs = envelopes.len(), "could not enqueue; asking Hull to retry");
        metrics::counter!("ingest_notifications_total", "outcome" => "unavailable").increment(1);
        return unavailable(format!("queue unavailable: {e}"));
    }
    metrics::counter!("ingest_notifications_total", "outcome" => "accepted").increment(1);
    metrics::counter!("ingest_jobs_published_total", "channel" => n.channel.clone()).increment(envelopes.len() as u64);
    tracing::debug!(notification_id = %n.notification_id, channel = %n.channel, jobs = envelopes.len(), "notification accepted");
    let fc = FlowControl::next(app.cfg.flow_control_size, app.cfg.flow_control_in_ms);
    (StatusCode::OK, Json(NotificationResponse::new(fc))).into_response()
}

/// Builds the job for one line of a Hull extract (`/batch`). Extracts are exports: the
/// segment filters do not apply.
pub fn job_from_extract(object_type: &str, line: Map<String, Value>, notification_id: &str) -> Result<Job, String> {
    let ids = |v: Option<&Value>| -> Value {
        Value::Array(
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(|id| serde_json::json!({ "id": id })).collect())
                .unwrap_or_default(),
        )
    };
    let wrap = |message: Value| OutgoingMessage { notification_id: notification_id.to_string(), is_export: true, message };
    match object_type {
        "user_report" | "user" => {
            let mut user = line;
            let account = user.remove("account").filter(|a| a.is_object()).unwrap_or(Value::Object(Map::new()));
            let account_segments = ids(user.get("account_segment_ids").or_else(|| account.get("segment_ids")));
            let segments = ids(user.get("segment_ids"));
            if user.get("id").and_then(Value::as_str).is_none() {
                return Err("a user has no id".into());
            }
            Ok(Job::OutgoingUser(wrap(serde_json::json!({
                "user": user, "account": account, "segments": segments, "account_segments": account_segments
            }))))
        }
        "account_report" | "account" => {
            let account_segments = ids(line.get("segment_ids"));
            if line.get("id").and_then(Value::as_str).is_none() {
                return Err("an account has no id".into());
            }
            Ok(Job::OutgoingAccount(wrap(serde_json::json!({"account": line, "account_segments": account_segments}))))
        }
        other => Err(format!("object_type must be user_report or account_report, got {other:?}")),
    }
}
