//! `POST /smart-notifier`: verify, validate, record the connector, split into one job per
//! entity, publish with confirms, answer with flow control.
//!
//! Order matters for what an outsider can cost us:
//! 1. the signature headers are verified before the body is read (a forged or unsigned
//!    request is refused without reading or parsing its body);
//! 2. the body is read up to `INGEST_MAX_BODY_BYTES` and parsed without building a tree of
//!    its messages: each message stays a slice of the body ([`RawValue`]) until it is
//!    validated on its own, and at most `NOTIFICATION_MAX_MESSAGES` are taken;
//! 3. the token is bound to the body (`jti == notification_id`, `iss` == organization) and
//!    the organization must be allow-listed (`HULL_ORGANIZATIONS`);
//! 4. a verified notification records the connector (Hull's word always wins: a changed
//!    secret or a connector first seen through query credentials is updated);
//! 5. each message is validated on its own: a bad one becomes a dead letter with its reason
//!    (logged as `outgoing.account.skip` / `outgoing.user.skip`), the others are enqueued;
//! 6. the notification id is recorded in the same step as the publish, so Hull's retry of a
//!    notification already accepted is a no-op answered 200.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use common::hull::{FlowControl, NotificationResponse};
use common::jobs::{Envelope, Job, OutgoingMessage};
use common::mapping::account_key;
use common::store::EventAcceptance;

use crate::backpressure::{self, Pressure};
use crate::App;

/// A notification whose envelope is valid; its messages are still unparsed slices.
#[derive(Debug)]
pub struct Notification<'a> {
    /// `notification_id`.
    pub notification_id: String,
    /// `configuration.id`.
    pub connector_id: String,
    /// `configuration.organization`.
    pub organization: String,
    /// `configuration.secret`.
    pub secret: String,
    /// `connector.private_settings`.
    pub private_settings: Option<Value>,
    /// `channel`.
    pub channel: String,
    /// `messages`, unparsed.
    pub messages: Vec<&'a RawValue>,
    /// `is_export`.
    pub is_export: bool,
}

/// The top level of a notification; every field stays raw until it is checked.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    notification_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    configuration: Option<&'a RawValue>,
    #[serde(borrow, default)]
    connector: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    is_export: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ConnectorWire {
    #[serde(default)]
    private_settings: Option<Value>,
}

/// A JSON array read as slices, refusing more than `max` elements.
struct CappedSeq {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for CappedSeq {
    type Value = Vec<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CappedSeq {
    type Value = Vec<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {} messages", self.max)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(m) = seq.next_element::<&'de RawValue>()? {
            if out.len() == self.max {
                return Err(serde::de::Error::custom(format!(
                    "more than {} messages",
                    self.max
                )));
            }
            out.push(m);
        }
        Ok(out)
    }
}

fn raw_str(raw: Option<&RawValue>, path: &str) -> Result<String, String> {
    let raw = raw.ok_or_else(|| format!("{path} is missing"))?;
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(format!("{path} must be a non-empty string")),
    }
}

fn obj_str(v: &Map<String, Value>, key: &str, path: &str) -> Result<String, String> {
    match v.get(key) {
        None => Err(format!("{path}.{key} is missing")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("{path}.{key} must be a non-empty string")),
    }
}

/// Validates the envelope of a notification (not its messages); the error names the field.
pub fn parse(body: &[u8], max_messages: usize) -> Result<Notification<'_>, String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err("the body must be a JSON object".into())
        }
        _ => return Err("the body is not valid JSON".into()),
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("the body must be a JSON object: {e}"),
        _ => format!("the body is not valid JSON: {e}"),
    })?;
    let channel = raw_str(wire.channel, "channel")?;
    let notification_id = raw_str(wire.notification_id, "notification_id")?;
    let configuration = match wire
        .configuration
        .map(|r| serde_json::from_str::<Value>(r.get()))
    {
        Some(Ok(Value::Object(m))) => m,
        Some(Ok(_)) => return Err("configuration must be an object".into()),
        Some(Err(e)) => return Err(format!("configuration: {e}")),
        None => return Err("configuration.id is missing".into()),
    };
    let private_settings = match wire
        .connector
        .map(|r| serde_json::from_str::<ConnectorWire>(r.get()))
    {
        None => None,
        Some(Ok(c)) => match c.private_settings {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => return Err("connector.private_settings must be an object".into()),
        },
        Some(Err(_)) if wire.connector.is_some_and(|r| r.get() == "null") => None,
        Some(Err(_)) => return Err("connector must be an object".into()),
    };
    let messages = match wire.messages {
        None => vec![],
        Some(r) if r.get() == "null" => vec![],
        Some(r) => {
            let mut de = serde_json::Deserializer::from_str(r.get());
            CappedSeq { max: max_messages }
                .deserialize(&mut de)
                .map_err(|e| {
                    if r.get().trim_start().starts_with('[') {
                        format!("messages: {e}")
                    } else {
                        "messages must be an array".into()
                    }
                })?
        }
    };
    let is_export = match wire.is_export.map(|r| r.get()) {
        None | Some("null") => false,
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err("is_export must be a boolean".into()),
    };
    Ok(Notification {
        notification_id,
        connector_id: obj_str(&configuration, "id", "configuration")?,
        organization: obj_str(&configuration, "organization", "configuration")?,
        secret: obj_str(&configuration, "secret", "configuration")?,
        private_settings,
        channel,
        messages,
        is_export,
    })
}

/// The entity a channel carries (`user` / `account`), if it has a handler.
fn entity_of(channel: &str) -> Option<&'static str> {
    match channel {
        "user:update" => Some("user"),
        "account:update" => Some("account"),
        _ => None,
    }
}

/// A validated message: its dedupe key, `indexed_at`, and the message.
struct Valid {
    key: String,
    indexed_at: String,
    message: Value,
}

/// Validates message `i` on its own; the error names the field.
fn validate(i: usize, entity: &str, message: Value) -> Result<Valid, (String, Value)> {
    let fail = |reason: String, message: Value| Err((reason, message));
    let Some(m) = message.as_object() else {
        return fail(format!("messages[{i}] must be an object"), message);
    };
    let Some(obj) = m.get(entity).and_then(Value::as_object) else {
        let reason = match m.get(entity) {
            None => format!("messages[{i}].{entity} is missing"),
            Some(_) => format!("messages[{i}].{entity} must be an object"),
        };
        return fail(reason, message);
    };
    let key = if entity == "user" {
        match obj.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None => return fail(format!("messages[{i}].user.id is missing"), message),
            Some(_) => {
                return fail(
                    format!("messages[{i}].user.id must be a non-empty string"),
                    message,
                )
            }
        }
    } else {
        match account_key(obj) {
            Some(k) => k,
            None => {
                return fail(format!("messages[{i}].account.id is missing (and the account has no external_id or domain)"), message)
            }
        }
    };
    if entity == "user" {
        if let Some(a) = m.get("account") {
            if !(a.is_object() || a.is_null()) {
                return fail(format!("messages[{i}].account must be an object"), message);
            }
        }
    }
    for list in ["segments", "account_segments"] {
        if let Some(s) = m.get(list) {
            if !(s.is_array() || s.is_null()) {
                return fail(format!("messages[{i}].{list} must be an array"), message);
            }
        }
    }
    let indexed_at = obj
        .get("indexed_at")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(Valid {
        key,
        indexed_at,
        message,
    })
}

/// What the messages of a notification become.
#[derive(Default)]
pub struct Split {
    /// One job per entity.
    pub jobs: Vec<Envelope>,
    /// Messages refused, with the reason (they become dead letters).
    pub refused: Vec<(Envelope, String)>,
}

/// One job per entity (when a notification holds several messages for one entity, the one
/// with the greatest `indexed_at` wins, as the original connector); invalid messages are set
/// aside with their reason. Linear in the number of messages.
pub fn split(n: &Notification) -> Split {
    let Some(entity) = entity_of(&n.channel) else {
        return Split::default();
    };
    let wrap = |message: Value| {
        let msg = OutgoingMessage {
            notification_id: n.notification_id.clone(),
            is_export: n.is_export,
            message,
        };
        let job = if entity == "user" {
            Job::OutgoingUser(msg)
        } else {
            Job::OutgoingAccount(msg)
        };
        Envelope::new(n.connector_id.clone(), job)
    };
    let mut out = Split::default();
    let mut latest: Vec<Valid> = Vec::with_capacity(n.messages.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(n.messages.len());
    for (i, raw) in n.messages.iter().enumerate() {
        let message = match serde_json::from_str::<Value>(raw.get()) {
            Ok(v) => v,
            Err(e) => {
                out.refused.push((
                    wrap(Value::String(raw.get().to_string())),
                    format!("messages[{i}]: {e}"),
                ));
                continue;
            }
        };
        match validate(i, entity, message) {
            Ok(v) => match index.get(&v.key) {
                Some(&slot) if v.indexed_at >= latest[slot].indexed_at => latest[slot] = v,
                Some(_) => {}
                None => {
                    index.insert(v.key.clone(), latest.len());
                    latest.push(v);
                }
            },
            Err((reason, message)) => out.refused.push((wrap(message), reason)),
        }
    }
    out.jobs = latest.into_iter().map(|v| wrap(v.message)).collect();
    out
}

fn respond(status: StatusCode, body: NotificationResponse) -> Response {
    (status, Json(body)).into_response()
}

fn refused(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let fc = if status.is_server_error() {
        FlowControl::retry(10, 5000)
    } else {
        FlowControl::retry(10, 1000)
    };
    respond(
        status,
        NotificationResponse::with_error(
            fc.with_in_time(10),
            message,
            "NotificationValidationError",
            code,
        ),
    )
}

fn unavailable(message: impl Into<String>) -> Response {
    let fc = FlowControl::retry(10, 5000).with_in_time(10);
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        NotificationResponse::with_error(fc, message, "TransientError", "SERVICE_UNAVAILABLE"),
    )
}

fn count(outcome: &'static str) {
    metrics::counter!("ingest_notifications_total", "outcome" => outcome).increment(1);
}

/// The handler.
pub async fn smart_notifier(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    // 1. The signature, before the body is read (and before a processing slot is taken).
    let token = match app.verifier.verify_token(&headers).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(code = e.code(), error = %e.message(), "connector.smartNotifierHandler.error");
            count("rejected");
            return respond(
                StatusCode::BAD_REQUEST,
                NotificationResponse::verification_failed(&e),
            );
        }
    };
    // A token that outlives the replay window could be replayed once its id is forgotten.
    let window = app.cfg.notification_replay_window.as_secs() as i64;
    if token
        .exp
        .is_some_and(|exp| exp > chrono::Utc::now().timestamp() + window)
    {
        count("rejected");
        let e = common::hull::VerifyError::InvalidSignature(
            "the token lives longer than NOTIFICATION_REPLAY_WINDOW_SECS".into(),
        );
        return respond(
            StatusCode::BAD_REQUEST,
            NotificationResponse::verification_failed(&e),
        );
    }
    let Some(_slot) = app.slots.notification().await else {
        count("busy");
        return unavailable("ingest is busy; retry later");
    };
    // 2. The body, bounded in size and time.
    let bytes = match crate::read_body(&app, body, app.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(crate::BodyError::TooLarge) => {
            count("invalid");
            let fc = FlowControl::retry(1, 1000).with_in_time(10);
            let msg = format!(
                "the body exceeds INGEST_MAX_BODY_BYTES ({} bytes)",
                app.cfg.max_body_bytes
            );
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                NotificationResponse::with_error(
                    fc,
                    msg,
                    "NotificationValidationError",
                    "ENTITY_TOO_LARGE",
                ),
            );
        }
        Err(e) => {
            count("invalid");
            let msg = if e == crate::BodyError::TimedOut {
                "the body was not sent within INGEST_BODY_TIMEOUT_SECS"
            } else {
                "could not read the body"
            };
            return refused(StatusCode::BAD_REQUEST, "INVALID_BODY", msg);
        }
    };
    let n = match parse(&bytes, app.cfg.notification_max_messages) {
        Ok(n) => n,
        Err(msg) => {
            count("invalid");
            return refused(StatusCode::BAD_REQUEST, "INVALID_BODY", msg);
        }
    };
    // 3. The token must be for this body, from an organization we serve.
    if let Err(e) = token.check_body(Some(&n.notification_id), Some(&n.organization)) {
        tracing::warn!(code = e.code(), error = %e.message(), "connector.smartNotifierHandler.error");
        count("rejected");
        return respond(
            StatusCode::BAD_REQUEST,
            NotificationResponse::verification_failed(&e),
        );
    }
    let organization = match app
        .cfg
        .common
        .hull_organizations
        .check_organization(&n.organization)
    {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(connector = %n.connector_id, error = %e, "connector.smartNotifierHandler.error");
            count("rejected");
            return refused(
                StatusCode::FORBIDDEN,
                "ORGANIZATION_NOT_ALLOWED",
                e.to_string(),
            );
        }
    };
    // 4. The connector. Hull's token signs the notification id, not the body: a replay
    // changes nothing, a connector never moves to another organization, and a secret that
    // differs from the recorded one is confirmed with Hull before it replaces it.
    if token.verified {
        match app.store.notification_seen(&n.notification_id).await {
            Ok(true) => {
                count("duplicate");
                let fc = FlowControl::next(app.cfg.flow_control_size, app.cfg.flow_control_in_ms);
                return respond(StatusCode::OK, NotificationResponse::new(fc));
            }
            Ok(false) => {}
            Err(e) => return unavailable(format!("database unavailable: {e}")),
        }
        match app.store.connector(&n.connector_id).await {
            Ok(None) if n.private_settings.is_none() => {
                count("invalid");
                return refused(StatusCode::BAD_REQUEST, "INVALID_BODY", "connector.private_settings is required for a connector seen for the first time");
            }
            Ok(Some(known)) if !known.organization.eq_ignore_ascii_case(&organization) => {
                tracing::warn!(connector = %n.connector_id, %organization, recorded = %known.organization, "notification for a connector of another organization refused");
                count("rejected");
                return refused(
                    StatusCode::FORBIDDEN,
                    "ORGANIZATION_MISMATCH",
                    "this connector belongs to another organization",
                );
            }
            Ok(Some(known)) if known.secret != n.secret => {
                let creds = common::hull::HullCredentials {
                    id: n.connector_id.clone(),
                    secret: n.secret.clone(),
                    organization: organization.clone(),
                };
                let confirmed = app.hull.get_app(&creds).await.is_ok_and(|remote| {
                    remote
                        .get("id")
                        .and_then(Value::as_str)
                        .is_none_or(|rid| rid == n.connector_id)
                });
                if !confirmed {
                    tracing::warn!(connector = %n.connector_id, "a notification with another secret was not confirmed by Hull");
                    count("rejected");
                    return refused(
                        StatusCode::UNAUTHORIZED,
                        "INVALID_CREDENTIALS",
                        "configuration.secret does not match this connector",
                    );
                }
                tracing::info!(connector = %n.connector_id, "connector secret changed in Hull (confirmed)");
            }
            Ok(_) => {}
            Err(e) => return unavailable(format!("database unavailable: {e}")),
        }
        if let Err(e) = app
            .store
            .record_verified_connector(
                &n.connector_id,
                &organization,
                &n.secret,
                n.private_settings.as_ref(),
            )
            .await
        {
            return unavailable(format!("database unavailable: {e}"));
        }
    } else {
        // Local mode without signatures: the stored secret is all there is to check.
        match app.store.check_secret(&n.connector_id, &n.secret).await {
            Ok(Some(false)) => {
                count("rejected");
                return refused(
                    StatusCode::UNAUTHORIZED,
                    "INVALID_CREDENTIALS",
                    "configuration.secret does not match this connector",
                );
            }
            Ok(None) if n.private_settings.is_none() => {
                count("invalid");
                return refused(StatusCode::BAD_REQUEST, "INVALID_BODY", "connector.private_settings is required for a connector seen for the first time");
            }
            Ok(_) => {}
            Err(e) => return unavailable(format!("database unavailable: {e}")),
        }
        if let Some(settings) = &n.private_settings {
            if let Err(e) = app
                .store
                .upsert_connector(&n.connector_id, &organization, &n.secret, settings)
                .await
            {
                return unavailable(format!("database unavailable: {e}"));
            }
        }
    }
    // 5. The messages, one by one.
    let Split { jobs, refused: bad } = split(&n);
    if entity_of(&n.channel).is_none() {
        tracing::debug!(channel = %n.channel, "channel without handler");
    }
    // Backpressure: refuse while the queue is above its hard limit.
    let fc = match backpressure::decide(
        &app.limits,
        app.gauge.depth().await,
        app.gauge.publish_is_slow(),
    ) {
        Pressure::Accept(fc) => fc,
        Pressure::Refuse(fc) => {
            count("throttled");
            let body = NotificationResponse::with_error(
                fc,
                "the outgoing queue is above FLOW_CONTROL_HARD_LIMIT; retry later",
                "TransientError",
                "QUEUE_FULL",
            );
            return respond(StatusCode::SERVICE_UNAVAILABLE, body);
        }
    };
    // 6. Publish once per notification id.
    let queue = app.queue.clone();
    let published = jobs.len();
    let started = Instant::now();
    let accepted = app
        .store
        .accept_notification(&n.connector_id, &n.notification_id, &bad, || async move {
            queue.publish_all(&jobs).await
        })
        .await;
    app.gauge.record_publish(started.elapsed());
    match accepted {
        Ok(EventAcceptance::Accepted) => {
            for (env, reason) in &bad {
                log_refused(env, reason);
            }
            count("accepted");
            metrics::counter!("ingest_jobs_published_total", "channel" => n.channel.clone())
                .increment(published as u64);
            if !bad.is_empty() {
                metrics::counter!("ingest_messages_refused_total").increment(bad.len() as u64);
            }
            tracing::debug!(notification_id = %n.notification_id, channel = %n.channel, jobs = published, refused = bad.len(), "notification accepted");
            respond(StatusCode::OK, NotificationResponse::new(fc))
        }
        Ok(EventAcceptance::Duplicate) => {
            count("duplicate");
            tracing::info!(notification_id = %n.notification_id, connector = %n.connector_id, "notification already accepted: nothing enqueued");
            respond(StatusCode::OK, NotificationResponse::new(fc))
        }
        Ok(EventAcceptance::PublishFailed(e)) => {
            tracing::warn!(error = %e, "could not enqueue; asking Hull to retry");
            count("unavailable");
            unavailable(format!("queue unavailable: {e}"))
        }
        Err(e) => {
            count("unavailable");
            unavailable(format!("database unavailable: {e}"))
        }
    }
}

/// Logs a refused message as the original's skip event.
pub fn log_refused(env: &Envelope, reason: &str) {
    let connector = env.connector_id.as_str();
    match &env.job {
        Job::OutgoingUser(_) => {
            tracing::warn!(connector, reason, dead_letter = %env.id, "outgoing.user.skip")
        }
        _ => tracing::warn!(connector, reason, dead_letter = %env.id, "outgoing.account.skip"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(messages: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "notification_id": "n1", "channel": "account:update",
            "configuration": {"id": "c1", "organization": "acme.hullapp.io", "secret": "s"},
            "connector": {"private_settings": {}}, "messages": messages
        }))
        .unwrap_or_default()
    }

    #[test]
    fn envelopes_name_the_bad_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "not valid JSON"),
            (b"[1,2]", "must be a JSON object"),
            (br#"{"channel":"account:update","notification_id":"n","configuration":{"id":"c","organization":"o"}}"#, "configuration.secret is missing"),
            (br#"{"channel":"account:update","notification_id":"n","configuration":{"id":"c","organization":"o","secret":"s"},"messages":"x"}"#, "messages must be an array"),
            (br#"{"channel":"account:update","notification_id":"n","configuration":{"id":"c","organization":"o","secret":"s"},"is_export":"yes"}"#, "is_export must be a boolean"),
            (br#"{"channel":"account:update","configuration":{}}"#, "notification_id is missing"),
            (br#"{"channel":"a","notification_id":"n","configuration":{"id":"c","organization":"o","secret":"s"},"connector":{"private_settings":[]}}"#, "private_settings must be an object"),
        ];
        for (raw, expected) in cases {
            let err = parse(raw, 10).expect_err(expected);
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        let too_many = body(json!([{}, {}, {}]));
        assert!(parse(&too_many, 2)
            .expect_err("cap")
            .contains("more than 2 messages"));
        assert_eq!(parse(&too_many, 3).expect("3 fit").messages.len(), 3);
        let deep = format!(
            "{{\"messages\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(
            parse(deep.as_bytes(), 10).is_err(),
            "nesting is bounded by the parser"
        );
    }

    #[test]
    fn one_bad_message_does_not_block_the_others() {
        let raw = body(json!([
            {"account": {"id": "a1", "domain": "a.com"}},
            {"account": {"name": "no id, no claims"}},
            {"account": {"domain": "claims-only.com"}},
            "not an object",
            {"account": {"id": "a2"}, "account_segments": "x"},
            {"account": {"id": "a3"}},
        ]));
        let n = parse(&raw, 100).expect("envelope");
        let s = split(&n);
        let keys: Vec<String> = s.jobs.iter().filter_map(|e| e.job.entity_key()).collect();
        assert_eq!(
            keys,
            vec!["account:a1", "account:domain:claims-only.com", "account:a3"]
        );
        let reasons: Vec<&str> = s.refused.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].starts_with("messages[1].account.id is missing"));
        assert_eq!(reasons[1], "messages[3] must be an object");
        assert_eq!(reasons[2], "messages[4].account_segments must be an array");
    }

    #[test]
    fn the_latest_message_per_entity_wins() {
        let raw = body(json!([
            {"account": {"id": "a1", "indexed_at": "2024-01-02", "name": "new"}},
            {"account": {"id": "a1", "indexed_at": "2024-01-01", "name": "old"}},
            {"account": {"id": "a2", "indexed_at": "2024-01-01"}},
            {"account": {"id": "a2", "indexed_at": "2024-01-03", "name": "newest"}},
        ]));
        let n = parse(&raw, 100).expect("envelope");
        let s = split(&n);
        let names: Vec<Value> = s
            .jobs
            .iter()
            .map(|e| match &e.job {
                Job::OutgoingAccount(m) => m.message["account"]["name"].clone(),
                _ => Value::Null,
            })
            .collect();
        assert_eq!(names, vec![json!("new"), json!("newest")]);
    }
}
