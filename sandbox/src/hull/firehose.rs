//! The firehose: `POST /api/v1/firehose` with `{batch: [...]}`, each entry carrying its own
//! HS256 identity token signed with the connector secret.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::store::{now, Claims, Kind, Store, TraitOp};
use super::{FirehoseRecord, Inner};

/// What an entry does once its subject is resolved.
#[derive(Debug)]
enum Action {
    Traits(Vec<(String, TraitOp)>),
    Track(Map<String, Value>),
    Alias(String),
    Unalias(String),
}

/// A structurally valid entry whose token has been verified.
#[derive(Debug)]
struct Entry {
    entry_type: String,
    body: Value,
    claims: Value,
    user: Option<Claims>,
    account: Option<Claims>,
    subject: Kind,
    create: bool,
    action: Action,
}

/// A raw entry before token verification.
struct RawEntry {
    entry_type: String,
    body: Value,
    token: String,
}

/// Case-insensitive header lookup.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Verifies an HS256 token signed with `secret` and returns its claims.
pub(crate) fn verify_token(token: &str, secret: &str) -> Result<Value, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    validation.validate_nbf = true;
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|err| format!("invalid token: {err}"))
}

/// Handles one firehose call.
pub(crate) async fn handle(
    inner: &Inner,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<&'static str, ApiError> {
    inner.store.lock().firehose_calls += 1;
    let fault = inner.fault.lock().clone();
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    let app_id = header(headers, "hull-app-id").map(str::to_string);
    let parsed: Result<Value, _> = serde_json::from_slice(bytes);
    let injected = if fault.outage {
        Some(StatusCode::SERVICE_UNAVAILABLE)
    } else if roll(inner, fault.error_rate) {
        Some(
            StatusCode::from_u16(fault.status)
                .ok()
                .filter(|s| !s.is_success())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        )
    } else {
        None
    };
    if let Some(status) = injected {
        let err = ApiError::Status {
            status,
            message: "firehose unavailable (injected fault)".into(),
        };
        log_rejected_raw(inner, app_id, parsed.as_ref().ok(), &err);
        return Err(err);
    }
    let result = process(inner, headers, app_id.as_deref(), parsed);
    if let Err((err, raw)) = result {
        log_rejected_raw(inner, app_id, raw.as_ref(), &err);
        return Err(err);
    }
    Ok("ok")
}

/// True with probability `rate` (values outside 0..=1, NaN included, are clamped).
fn roll(inner: &Inner, rate: f64) -> bool {
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    inner.fault_rng.lock().gen_bool(rate.min(1.0))
}

/// Records every entry of a rejected batch.
fn log_rejected_raw(inner: &Inner, app_id: Option<String>, body: Option<&Value>, err: &ApiError) {
    let entries: Vec<Value> = body
        .and_then(|b| b.get("batch"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![Value::Null]);
    let ts = now();
    let mut store = inner.store.lock();
    for entry in entries {
        store.firehose_log.push(FirehoseRecord {
            received_at: ts.clone(),
            connector_id: app_id.clone(),
            entry_type: entry
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            claims: Value::Null,
            body: entry.get("body").cloned().unwrap_or(Value::Null),
            accepted: false,
            reason: Some(err.to_string()),
            status: err.status().as_u16(),
        });
    }
}

type Rejection = (ApiError, Option<Value>);

/// Authenticates, validates and applies a batch. Nothing is applied unless the whole batch
/// is well-formed and every token verifies.
fn process(
    inner: &Inner,
    headers: &HeaderMap,
    app_id: Option<&str>,
    parsed: Result<Value, serde_json::Error>,
) -> Result<(), Rejection> {
    let body = parsed.map_err(|e| {
        (
            ApiError::BadRequest(format!("invalid JSON body: {e}")),
            None,
        )
    })?;
    let reject = |err: ApiError| (err, Some(body.clone()));
    let secret = authenticate(inner, headers, app_id).map_err(reject)?;
    let raw = parse_batch(&body).map_err(reject)?;
    let connector_id = app_id.unwrap_or_default();
    let mut entries = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let claims = verify_token(&entry.token, &secret)
            .and_then(|c| match c.get("iss").and_then(Value::as_str) {
                Some(iss) if iss != connector_id => Err(format!(
                    "token issuer {iss} is not connector {connector_id}"
                )),
                _ => Ok(c),
            })
            .map_err(|e| {
                reject(ApiError::Unauthorized(format!(
                    "batch[{i}]: Hull-Access-Token: {e}"
                )))
            })?;
        entries.push(
            decode_entry(entry, claims)
                .map_err(|e| reject(ApiError::BadRequest(format!("batch[{i}]: {e}"))))?,
        );
    }
    let ts = now();
    let mut store = inner.store.lock();
    for entry in entries {
        let outcome = apply(&mut store, &entry);
        store.firehose_log.push(FirehoseRecord {
            received_at: ts.clone(),
            connector_id: app_id.map(str::to_string),
            entry_type: entry.entry_type,
            claims: entry.claims,
            body: entry.body,
            accepted: outcome.is_ok(),
            reason: outcome.err(),
            status: 200,
        });
    }
    Ok(())
}

/// Checks the outer headers; returns the connector secret.
fn authenticate(
    inner: &Inner,
    headers: &HeaderMap,
    app_id: Option<&str>,
) -> Result<String, ApiError> {
    let app_id =
        app_id.ok_or_else(|| ApiError::Unauthorized("missing Hull-App-Id header".into()))?;
    let token = header(headers, "hull-access-token")
        .ok_or_else(|| ApiError::Unauthorized("missing Hull-Access-Token header".into()))?;
    let organization = header(headers, "hull-organization")
        .ok_or_else(|| ApiError::Unauthorized("missing Hull-Organization header".into()))?;
    if organization != inner.org {
        return Err(ApiError::Unauthorized(format!(
            "unknown organization {organization}"
        )));
    }
    let secret = inner
        .store
        .lock()
        .connector(app_id)
        .map(|c| c.secret.clone())
        .ok_or_else(|| ApiError::Unauthorized(format!("unknown connector {app_id}")))?;
    if token == secret || verify_token(token, &secret).is_ok() {
        Ok(secret)
    } else {
        Err(ApiError::Unauthorized("invalid Hull-Access-Token".into()))
    }
}

/// Structural validation of `{batch: [{type, body, headers}]}`.
fn parse_batch(body: &Value) -> Result<Vec<RawEntry>, ApiError> {
    let batch = body.get("batch").and_then(Value::as_array).ok_or_else(|| {
        ApiError::BadRequest("body must be an object with a \"batch\" array".into())
    })?;
    batch
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let bad = |m: &str| ApiError::BadRequest(format!("batch[{i}]: {m}"));
            let entry_type = entry
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("missing \"type\""))?;
            if !matches!(entry_type, "traits" | "track" | "alias" | "unalias") {
                return Err(bad(&format!("unsupported type {entry_type:?}")));
            }
            let body = entry.get("body").cloned().unwrap_or_else(|| json!({}));
            if !body.is_object() {
                return Err(bad("\"body\" must be an object"));
            }
            let headers = entry
                .get("headers")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("missing \"headers\" object"))?;
            let token = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("hull-access-token"))
                .and_then(|(_, v)| v.as_str())
                .ok_or_else(|| {
                    ApiError::Unauthorized(format!(
                        "batch[{i}]: missing headers[\"Hull-Access-Token\"]"
                    ))
                })?;
            Ok(RawEntry {
                entry_type: entry_type.to_string(),
                body,
                token: token.to_string(),
            })
        })
        .collect()
}

/// Turns a verified entry into its typed form (400 on wrong types).
fn decode_entry(raw: RawEntry, claims: Value) -> Result<Entry, String> {
    let user = claims
        .get("io.hull.asUser")
        .map(|c| Claims::parse(Kind::User, c))
        .transpose()?;
    let account = claims
        .get("io.hull.asAccount")
        .map(|c| Claims::parse(Kind::Account, c))
        .transpose()?;
    let subject = match claims.get("io.hull.subjectType") {
        Some(Value::String(s)) if s == "user" => Kind::User,
        Some(Value::String(s)) if s == "account" => Kind::Account,
        None | Some(Value::Null) if user.is_some() => Kind::User,
        None | Some(Value::Null) if account.is_some() => Kind::Account,
        None | Some(Value::Null) => {
            return Err("token has neither io.hull.asUser nor io.hull.asAccount".into())
        }
        Some(other) => {
            return Err(format!(
                "io.hull.subjectType must be \"user\" or \"account\", got {other}"
            ))
        }
    };
    match (subject, &user, &account) {
        (Kind::User, None, _) => return Err("subjectType user without io.hull.asUser".into()),
        (Kind::Account, _, None) => {
            return Err("subjectType account without io.hull.asAccount".into())
        }
        _ => {}
    }
    let create = match claims.get("io.hull.create") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("io.hull.create must be a boolean, got {other}")),
    };
    let obj = raw.body.as_object().cloned().unwrap_or_default();
    let action = match raw.entry_type.as_str() {
        "traits" => Action::Traits(
            obj.iter()
                .map(|(k, v)| TraitOp::parse(k, v).map(|op| (k.clone(), op)))
                .collect::<Result<_, _>>()?,
        ),
        "track" => {
            if subject != Kind::User {
                return Err("track entries need subjectType user".into());
            }
            if !obj.get("event").is_some_and(Value::is_string) {
                return Err("track body needs a string \"event\"".into());
            }
            Action::Track(obj)
        }
        kind => {
            let anon = obj
                .get("anonymous_id")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("{kind} body needs a string \"anonymous_id\""))?
                .to_string();
            if kind == "alias" {
                Action::Alias(anon)
            } else {
                Action::Unalias(anon)
            }
        }
    };
    Ok(Entry {
        entry_type: raw.entry_type,
        body: raw.body,
        claims,
        user,
        account,
        subject,
        create,
        action,
    })
}

/// Applies one entry to the store; `Err` carries the rejection reason.
fn apply(store: &mut Store, entry: &Entry) -> Result<(), String> {
    let (subject_claims, other) = match entry.subject {
        Kind::User => (
            entry.user.as_ref(),
            entry.account.as_ref().map(|c| (Kind::Account, c)),
        ),
        Kind::Account => (
            entry.account.as_ref(),
            entry.user.as_ref().map(|c| (Kind::User, c)),
        ),
    };
    let subject_claims = subject_claims.ok_or("missing subject claims")?;
    let subject_id = store.resolve(entry.subject, subject_claims, entry.create)?;
    if let Some((other_kind, other_claims)) = other {
        // Both claims present: the entry also links the user to the account.
        let other_id = store.resolve(other_kind, other_claims, entry.create)?;
        match entry.subject {
            Kind::User => store.link(&subject_id, &other_id)?,
            Kind::Account => store.link(&other_id, &subject_id)?,
        }
    }
    match &entry.action {
        Action::Traits(ops) => store.apply_traits(entry.subject, &subject_id, ops),
        Action::Alias(anon) => store.alias(entry.subject, &subject_id, anon, true),
        Action::Unalias(anon) => store.alias(entry.subject, &subject_id, anon, false),
        Action::Track(body) => {
            let event_id = body
                .get("event_id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            if store
                .events
                .iter()
                .any(|e| e.get("event_id").and_then(Value::as_str) == Some(event_id.as_str()))
            {
                return Err(format!("duplicate event_id {event_id}"));
            }
            let mut event = body.clone();
            event.insert("event_id".into(), json!(event_id));
            event.insert("user_id".into(), json!(subject_id));
            event.entry("created_at").or_insert_with(|| json!(now()));
            store.events.push(Value::Object(event));
            Ok(())
        }
    }
}
