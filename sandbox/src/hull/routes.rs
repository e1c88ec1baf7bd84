//! HTTP surface: platform REST API, firehose, public key, extracts and the `/_sandbox/`
//! control API.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::store::{now, user_message_key, Kind};
use super::{firehose, notify, seed, FirehoseFault, Inner, PUBLIC_KEY_PEM};

type AppState = State<Arc<Inner>>;
type ApiResult = Result<Response, ApiError>;

/// Registers `path` and `path/` with the same handlers.
fn both(
    router: Router<Arc<Inner>>,
    path: &str,
    method_router: MethodRouter<Arc<Inner>>,
) -> Router<Arc<Inner>> {
    router
        .route(path, method_router.clone())
        .route(&format!("{path}/"), method_router)
}

/// The simulator's router.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let mut r = Router::new();
    for (path, mr) in [
        ("/api/v1/app", get(get_app).put(put_app)),
        ("/api/v1/{id}", get(get_object).put(put_connector)),
        ("/api/v1/{id}/status", put(put_status)),
        ("/api/v1/users_segments", get(users_segments)),
        ("/api/v1/segments", get(users_segments)),
        ("/api/v1/accounts_segments", get(accounts_segments)),
        ("/api/v1/search/user_reports/bootstrap", get(user_bootstrap)),
        (
            "/api/v1/search/account_reports/bootstrap",
            get(account_bootstrap),
        ),
        ("/api/v1/firehose", post(firehose_call)),
        ("/firehose", post(firehose_call)),
        ("/api/v1/public_key", get(public_key).post(public_key)),
        ("/_sandbox/state", get(state)),
        ("/_sandbox/firehose", get(firehose_log)),
        ("/_sandbox/notifications", get(notification_log)),
        ("/_sandbox/status", get(status_log)),
        ("/_sandbox/notify", post(control_notify)),
        ("/_sandbox/notify-changed", post(control_notify_changed)),
        ("/_sandbox/batch", post(control_batch)),
        ("/_sandbox/connectors/{id}", put(control_connector)),
        ("/_sandbox/accounts", post(control_account)),
        ("/_sandbox/users", post(control_user)),
        ("/_sandbox/firehose-fault", put(control_fault)),
        ("/_sandbox/reset", post(control_reset)),
        ("/_sandbox/extracts/{id}", get(extract).post(extract)),
    ] {
        r = both(r, path, mr);
    }
    r.fallback(not_found).with_state(inner)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}

/// Reads a body up to the configured limit (413 beyond).
async fn read_bytes(inner: &Inner, body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, inner.max_body_bytes)
        .await
        .map_err(|_| ApiError::TooLarge(inner.max_body_bytes))
}

/// Reads and deserializes a JSON body (400 on malformed JSON or wrong types).
async fn read_json<T: DeserializeOwned>(inner: &Inner, body: Body) -> Result<T, ApiError> {
    let bytes = read_bytes(inner, body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn json_response(value: Value) -> ApiResult {
    Ok(Json(value).into_response())
}

// ---------------------------------------------------------------- platform REST

/// Authenticates a REST call; returns the connector id.
///
/// Credentials: `Hull-App-Id` + `Hull-Access-Token` (the secret or an HS256 JWT signed with
/// it), optional `Hull-Organization`; or `?app_id=&access_token=`.
fn authenticate(
    inner: &Inner,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let pick = |header_name: &str, query_name: &str| {
        headers
            .get(header_name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .or_else(|| query.get(query_name).cloned())
    };
    let (Some(app_id), Some(token)) = (
        pick("hull-app-id", "app_id"),
        pick("hull-access-token", "access_token"),
    ) else {
        return Err(ApiError::Unauthorized(
            "missing Hull-App-Id / Hull-Access-Token".into(),
        ));
    };
    if let Some(org) = pick("hull-organization", "organization") {
        if org != inner.org {
            return Err(ApiError::NotFound(format!("organization {org} not found")));
        }
    }
    let store = inner.store.lock();
    let connector = store
        .connector(&app_id)
        .filter(|c| token == c.secret || firehose::verify_token(&token, &c.secret).is_ok())
        .ok_or_else(|| ApiError::NotFound("connector not found or invalid credentials".into()))?;
    Ok(connector.id.clone())
}

fn connector_response(inner: &Inner, id: &str) -> ApiResult {
    let store = inner.store.lock();
    let connector = store
        .connector(id)
        .ok_or_else(|| ApiError::NotFound(format!("connector {id} not found")))?;
    json_response(notify::connector_json(connector))
}

async fn get_app(
    State(inner): AppState,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = authenticate(&inner, &headers, &q)?;
    connector_response(&inner, &id)
}

async fn put_app(
    State(inner): AppState,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> ApiResult {
    let id = authenticate(&inner, &headers, &q)?;
    update_settings(&inner, &id, body).await
}

/// `GET /api/v1/{id}`: the calling connector, or a segment by id.
async fn get_object(
    State(inner): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let caller = authenticate(&inner, &headers, &q)?;
    if caller == id {
        return connector_response(&inner, &id);
    }
    let store = inner.store.lock();
    store
        .users_segments
        .iter()
        .chain(store.accounts_segments.iter())
        .find(|s| s.get("id").and_then(Value::as_str) == Some(id.as_str()))
        .cloned()
        .map(|s| Json(s).into_response())
        .ok_or_else(|| ApiError::NotFound(format!("{id} not found")))
}

async fn put_connector(
    State(inner): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> ApiResult {
    let caller = authenticate(&inner, &headers, &q)?;
    if caller != id {
        return Err(ApiError::NotFound(format!("connector {id} not found")));
    }
    update_settings(&inner, &id, body).await
}

/// Settings update body: each given object replaces the stored one.
#[derive(Deserialize)]
struct SettingsUpdate {
    private_settings: Option<Map<String, Value>>,
    settings: Option<Map<String, Value>>,
}

async fn update_settings(inner: &Inner, id: &str, body: Body) -> ApiResult {
    let update: SettingsUpdate = read_json(inner, body).await?;
    inner.store.lock().update_connector(
        id,
        None,
        update.private_settings.map(Value::Object),
        update.settings.map(Value::Object),
    );
    connector_response(inner, id)
}

/// `PUT /api/v1/{id}/status` body.
#[derive(Deserialize)]
struct StatusBody {
    status: String,
    #[serde(default)]
    messages: Vec<String>,
}

async fn put_status(
    State(inner): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> ApiResult {
    let caller = authenticate(&inner, &headers, &q)?;
    if caller != id {
        return Err(ApiError::NotFound(format!("connector {id} not found")));
    }
    let status: StatusBody = read_json(&inner, body).await?;
    let record = json!({ "status": status.status, "messages": status.messages });
    let mut store = inner.store.lock();
    let mut logged = record.clone();
    if let Value::Object(obj) = &mut logged {
        obj.insert("connector_id".into(), json!(id));
        obj.insert("updated_at".into(), json!(now()));
    }
    store.status_log.push(logged);
    if let Some(c) = store.connectors.iter_mut().find(|c| c.id == id) {
        c.status = record.clone();
    }
    json_response(record)
}

async fn users_segments(
    State(inner): AppState,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    authenticate(&inner, &headers, &q)?;
    let list = inner.store.lock().users_segments.clone();
    json_response(Value::Array(list))
}

async fn accounts_segments(
    State(inner): AppState,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    authenticate(&inner, &headers, &q)?;
    let list = inner.store.lock().accounts_segments.clone();
    json_response(Value::Array(list))
}

/// Attribute type as the bootstrap tree names it.
fn attribute_type(key: &str, value: &Value) -> &'static str {
    if key.ends_with("_at") || key.ends_with("_date") {
        return "date";
    }
    match value {
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Array(_) => "array",
        Value::Object(_) => "json",
        _ => "string",
    }
}

/// `{tree: [{text, children: [{id, text, type}]}]}` built from the attributes present.
fn bootstrap(inner: &Inner, kind: Kind) -> Value {
    let store = inner.store.lock();
    let root = match kind {
        Kind::User => "User",
        Kind::Account => "Account",
    };
    let mut groups: BTreeMap<String, BTreeMap<String, &'static str>> = BTreeMap::new();
    let top = groups.entry(root.to_string()).or_default();
    top.insert("id".into(), "string");
    top.insert("anonymous_ids".into(), "array");
    top.insert("created_at".into(), "date");
    for stored in store.table(kind).values() {
        for (key, value) in &stored.profile.attributes {
            let (group, id) = match (key.split_once('/'), kind) {
                (Some((group, _)), Kind::User) => (group.to_string(), user_message_key(key)),
                (Some((group, _)), Kind::Account) => (group.to_string(), key.clone()),
                (None, Kind::User) => (root.to_string(), user_message_key(key)),
                (None, Kind::Account) => (root.to_string(), key.clone()),
            };
            groups
                .entry(group)
                .or_default()
                .entry(id)
                .or_insert(attribute_type(key, value));
        }
    }
    let tree: Vec<Value> = groups
        .into_iter()
        .map(|(group, attrs)| {
            let children: Vec<Value> = attrs
                .into_iter()
                .map(|(id, ty)| {
                    let text = id.rsplit('/').next().unwrap_or(&id).to_string();
                    json!({ "id": id, "text": text, "type": ty })
                })
                .collect();
            json!({ "text": group, "children": children })
        })
        .collect();
    json!({ "tree": tree })
}

async fn user_bootstrap(
    State(inner): AppState,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    authenticate(&inner, &headers, &q)?;
    json_response(bootstrap(&inner, Kind::User))
}

async fn account_bootstrap(
    State(inner): AppState,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    authenticate(&inner, &headers, &q)?;
    json_response(bootstrap(&inner, Kind::Account))
}

async fn firehose_call(State(inner): AppState, headers: HeaderMap, body: Body) -> ApiResult {
    let bytes = read_bytes(&inner, body).await?;
    let answer = firehose::handle(&inner, &headers, &bytes).await?;
    Ok(answer.into_response())
}

/// The public key, for GET and for POST (whose body, the signature, is ignored).
async fn public_key() -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        PUBLIC_KEY_PEM,
    )
        .into_response()
}

async fn extract(State(inner): AppState, Path(id): Path<String>) -> ApiResult {
    let ndjson = inner
        .store
        .lock()
        .extracts
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("extract {id} not found")))?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], ndjson).into_response())
}

// ---------------------------------------------------------------- control API

async fn state(State(inner): AppState) -> ApiResult {
    let state = inner.store.lock().state_json();
    json_response(state)
}

async fn firehose_log(State(inner): AppState) -> ApiResult {
    let log = inner.store.lock().firehose_log.clone();
    json_response(json!(log))
}

async fn notification_log(State(inner): AppState) -> ApiResult {
    let log = inner.store.lock().notification_log.clone();
    json_response(json!(log))
}

async fn status_log(State(inner): AppState) -> ApiResult {
    let log = inner.store.lock().status_log.clone();
    json_response(Value::Array(log))
}

/// `POST /_sandbox/notify` body.
#[derive(Deserialize)]
struct NotifyRequest {
    connector_id: String,
    channel: String,
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    is_export: bool,
}

async fn control_notify(State(inner): AppState, body: Body) -> ApiResult {
    let req: NotifyRequest = read_json(&inner, body).await?;
    let report = notify::notify(
        &inner,
        &req.connector_id,
        &req.channel,
        &req.ids,
        req.is_export,
    )
    .await?;
    json_response(json!(report))
}

/// `POST /_sandbox/notify-changed` body.
#[derive(Deserialize)]
struct NotifyChangedRequest {
    connector_id: String,
}

async fn control_notify_changed(State(inner): AppState, body: Body) -> ApiResult {
    let req: NotifyChangedRequest = read_json(&inner, body).await?;
    let report = notify::notify_changed(&inner, &req.connector_id).await?;
    json_response(json!(report))
}

/// `POST /_sandbox/batch` body.
#[derive(Deserialize)]
struct BatchRequest {
    connector_id: String,
    object_type: String,
    #[serde(default)]
    ids: Vec<String>,
}

async fn control_batch(State(inner): AppState, body: Body) -> ApiResult {
    let req: BatchRequest = read_json(&inner, body).await?;
    let status = notify::send_batch(&inner, &req.connector_id, &req.object_type, &req.ids).await?;
    json_response(json!({ "status": status }))
}

/// `PUT /_sandbox/connectors/{id}` body.
#[derive(Deserialize)]
struct ConnectorUpdate {
    url: Option<String>,
    private_settings: Option<Map<String, Value>>,
    settings: Option<Map<String, Value>>,
}

async fn control_connector(
    State(inner): AppState,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let update: ConnectorUpdate = read_json(&inner, body).await?;
    let found = inner.store.lock().update_connector(
        &id,
        update.url.as_deref(),
        update.private_settings.map(Value::Object),
        update.settings.map(Value::Object),
    );
    if !found {
        return Err(ApiError::NotFound(format!("connector {id} not found")));
    }
    connector_response(&inner, &id)
}

async fn upsert(inner: &Inner, kind: Kind, body: Body) -> ApiResult {
    let attrs: Map<String, Value> = read_json(inner, body).await?;
    let id = inner.store.lock().upsert(kind, &Value::Object(attrs));
    json_response(json!({ "id": id }))
}

async fn control_account(State(inner): AppState, body: Body) -> ApiResult {
    upsert(&inner, Kind::Account, body).await
}

async fn control_user(State(inner): AppState, body: Body) -> ApiResult {
    upsert(&inner, Kind::User, body).await
}

async fn control_fault(State(inner): AppState, body: Body) -> ApiResult {
    let fault: FirehoseFault = read_json(&inner, body).await?;
    if !(0.0..=1.0).contains(&fault.error_rate) {
        return Err(ApiError::BadRequest(
            "error_rate must be within 0..=1".into(),
        ));
    }
    *inner.fault.lock() = fault.clone();
    json_response(json!(fault))
}

/// Restores the seeded profiles and segments and clears every log; connectors (their URLs,
/// settings and status) are kept.
async fn control_reset(State(inner): AppState) -> ApiResult {
    let fresh = seed::build_store(&inner.config, &inner.org);
    {
        let mut store = inner.store.lock();
        let connectors = std::mem::take(&mut store.connectors);
        *store = fresh;
        store.connectors = connectors;
    }
    *inner.fault.lock() = FirehoseFault::default();
    Ok(StatusCode::NO_CONTENT.into_response())
}
