//! The Close webhook receiver.
//!
//! - `POST /webhooks/close/{connector_id}`: a Close webhook delivery. The `close-sig-hash`
//!   header must be the HMAC-SHA256 (keyed with the hex-decoded `signature_key` of the
//!   connector's subscription) of `close-sig-timestamp` followed by the raw body, and the
//!   timestamp must be within `CLOSE_WEBHOOK_TOLERANCE_SECS` of now; anything else gets 401
//!   and nothing is enqueued. An accepted event is recorded (by id and version, so redeliveries
//!   and replays are dropped) in the same transaction that publishes its jobs: a refresh of
//!   the lead, or the deletion / merge marks.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use common::changes::{changes_from_event, event_key};
use common::closeio::webhook::{
    check_timestamp, verify_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use common::jobs::Envelope;
use common::store::EventAcceptance;

use crate::App;

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn rejected(connector_id: &str, status: StatusCode, reason: &str) -> Response {
    tracing::warn!(connector = connector_id, reason, "Close webhook rejected");
    metrics::counter!("ingest_webhooks_total", "outcome" => "rejected").increment(1);
    answer(status, json!({"error": reason}))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `POST /webhooks/close/{connector_id}`: verify, de-duplicate and enqueue a Close event.
pub async fn close_webhook(
    State(app): State<App>,
    Path(connector_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let subscription = match app.store.webhook_subscription(&connector_id).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return rejected(
                &connector_id,
                StatusCode::NOT_FOUND,
                "no webhook subscription for this connector",
            )
        }
        Err(e) => {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("database unavailable: {e}")}),
            )
        }
    };
    let (Some(signature), Some(timestamp)) = (
        header(&headers, SIGNATURE_HEADER),
        header(&headers, TIMESTAMP_HEADER),
    ) else {
        return rejected(
            &connector_id,
            StatusCode::UNAUTHORIZED,
            "missing close-sig-hash or close-sig-timestamp",
        );
    };
    if let Err(e) = check_timestamp(timestamp, Utc::now(), app.cfg.webhook_tolerance) {
        return rejected(&connector_id, StatusCode::UNAUTHORIZED, &e.to_string());
    }
    // Only now, with a subscription and fresh signature headers, is the body read: bounded
    // in size and time, a bounded number at once.
    let Some(_slot) = app.slots.webhook().await else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "ingest is busy; retry later"}),
        );
    };
    let body = match crate::read_body(&app, body, app.cfg.webhook_max_bytes).await {
        Ok(b) => b,
        Err(crate::BodyError::TooLarge) => {
            return rejected(
                &connector_id,
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body exceeds CLOSE_WEBHOOK_MAX_BYTES",
            )
        }
        Err(_) => {
            return rejected(
                &connector_id,
                StatusCode::BAD_REQUEST,
                "the body could not be read in time",
            )
        }
    };
    if !verify_signature(&subscription.signature_key, timestamp, &body, signature) {
        return rejected(
            &connector_id,
            StatusCode::UNAUTHORIZED,
            "invalid close-sig-hash",
        );
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("the body is not valid JSON: {e}")}),
            )
        }
    };
    let Some(event) = payload.get("event").filter(|e| e.is_object()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "the body has no event object"}),
        );
    };
    let Some(key) = event_key(event) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "the event has no id"}),
        );
    };
    let jobs: Vec<Envelope> = changes_from_event(event)
        .into_iter()
        .map(|c| Envelope::new(connector_id.clone(), c.into_job()))
        .collect();
    if jobs.is_empty() {
        metrics::counter!("ingest_webhooks_total", "outcome" => "ignored").increment(1);
        return answer(StatusCode::OK, json!({"ok": true, "ignored": true}));
    }
    let queue = app.queue.clone();
    match app
        .store
        .accept_webhook_event(&connector_id, &key, || async move {
            queue.publish_all(&jobs).await
        })
        .await
    {
        Ok(EventAcceptance::Accepted) => {
            tracing::info!(connector = %connector_id, event = %key,
                object_type = ?event.get("object_type"), action = ?event.get("action"), "Close webhook accepted");
            metrics::counter!("ingest_webhooks_total", "outcome" => "accepted").increment(1);
            answer(StatusCode::OK, json!({"ok": true}))
        }
        Ok(EventAcceptance::Duplicate) => {
            metrics::counter!("ingest_webhooks_total", "outcome" => "duplicate").increment(1);
            answer(StatusCode::OK, json!({"ok": true, "duplicate": true}))
        }
        Ok(EventAcceptance::PublishFailed(e)) => {
            tracing::warn!(connector = %connector_id, error = %e, "could not enqueue a Close webhook; Close will retry");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("broker unavailable: {e}")}),
            )
        }
        Err(e) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("database unavailable: {e}")}),
        ),
    }
}
