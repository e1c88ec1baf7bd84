//! The HTTP front: request log, auth, rate limits, faults, body limits, dispatch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::api::{self, Limits};
use super::error::ApiError;
use super::faults::FaultState;
use super::ratelimit::{Decision, RateLimiter};
use super::routes::Route;
use super::store::{Actor, Store};
use super::webhooks::{self, DeliveryRecord, RetryPolicy};
use super::{control, CloseConfig};

/// One request as seen by the simulator.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    /// Request body: JSON when it parsed, else the raw text; `None` when empty.
    pub body: Option<Value>,
    /// Answered status; `0` when the connection was dropped without an answer.
    pub status: u16,
    /// API key from the Authorization header.
    pub api_key: Option<String>,
    /// The rate-limit endpoint group of the route (`lead-write`, `search`…; "" when unmatched).
    pub group: &'static str,
    /// When it arrived, in µs since the Unix epoch.
    pub at_us: u64,
}

/// Returned by the service to make the connection close without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub struct DroppedConnection;

/// Shared state of a running simulator.
pub struct Inner {
    /// Configuration it was started with.
    pub config: CloseConfig,
    /// The data.
    pub store: Mutex<Store>,
    /// Rate limiter.
    pub limiter: Mutex<RateLimiter>,
    /// Fault injection.
    pub faults: Mutex<FaultState>,
    /// Request log.
    pub requests: Mutex<Vec<RequestRecord>>,
    /// Counters per "METHOD /template/" and status.
    pub counters: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    /// Webhook delivery records.
    pub deliveries: Arc<Mutex<Vec<DeliveryRecord>>>,
    /// Client for webhook deliveries.
    pub http: reqwest::Client,
    /// Cancelled at shutdown.
    pub cancel: CancellationToken,
    /// Runtime that runs deliveries (also for calls from synchronous `ui_*` methods).
    pub runtime: tokio::runtime::Handle,
    /// Pagination caps.
    pub limits: Limits,
    /// Webhook retry policy.
    pub retry: RetryPolicy,
}

impl Inner {
    /// Spawns the webhook deliveries queued in the store.
    pub fn flush_outbox(&self, store: &mut Store) {
        for pending in store.outbox.drain(..) {
            self.runtime.spawn(webhooks::deliver(
                self.http.clone(),
                self.deliveries.clone(),
                pending,
                self.retry,
                self.cancel.clone(),
            ));
        }
    }

    fn record(&self, record: RequestRecord, counter_key: String) {
        *self
            .counters
            .lock()
            .entry(counter_key)
            .or_default()
            .entry(record.status)
            .or_insert(0) += 1;
        self.requests.lock().push(record);
    }

    /// The actor for an API key.
    fn actor(&self, key: &str, method: &Method, path: &str) -> Option<Actor> {
        let mut store = self.store.lock();
        let (org, ki) = *store.key_index.get(key)?;
        let k = store.orgs[org].api_keys.get(ki)?.clone();
        let request_id = store.id("req_", 22);
        Some(Actor {
            org,
            user_id: k.user.id,
            api_key_id: Some(k.id),
            request_id,
            method: method.to_string(),
            path: path.to_string(),
        })
    }
}

/// Builds a JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn api_key(req: &Request<hyper::body::Incoming>) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _password) = text.split_once(':').unwrap_or((text.as_str(), ""));
    Some(user.to_string())
}

/// Parses a query string into a map (the last value of a repeated key wins).
pub fn parse_query(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn with_rate_header(mut resp: Response<Body>, decision: Option<&Decision>) -> Response<Body> {
    if let Some(d) = decision {
        if let Ok(v) = HeaderValue::from_str(&d.header()) {
            resp.headers_mut().insert("ratelimit", v);
        }
    }
    resp
}

async fn read_body(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(Body::new(body), limit)
        .await
        .map_err(|_| ApiError::too_large(limit))
}

/// Serves one request.
pub async fn serve(
    inner: Arc<Inner>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, DroppedConnection> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    if path == "/_sandbox" || path.starts_with("/_sandbox/") {
        let body = match read_body(req.into_body(), inner.limits_body()).await {
            Ok(b) => b,
            Err(e) => return Ok(json_response(e.status, &e.body)),
        };
        return Ok(control::handle(&inner, &method, &path, &body).await);
    }
    let key = api_key(&req);
    let route = Route::parse(&path);
    let counter_key = match &route {
        Ok(r) => format!("{method} {}", r.template()),
        Err(_) => format!("{method} (unmatched)"),
    };
    let mut record = RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: None,
        status: 0,
        api_key: key.clone(),
        group: route.as_ref().map_or("", |r| r.group(&method)),
        at_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
    };
    let limit = inner.limits_body();
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = if declared.is_some_and(|n| n > limit) {
        Err(ApiError::too_large(limit))
    } else {
        read_body(req.into_body(), limit).await
    };
    let raw = match body {
        Ok(b) => b,
        Err(e) => {
            record.status = e.status.as_u16();
            inner.record(record, counter_key);
            return Ok(json_response(e.status, &e.body));
        }
    };
    let parsed: Option<Result<Value, serde_json::Error>> =
        (!raw.iter().all(u8::is_ascii_whitespace)).then(|| serde_json::from_slice(&raw));
    record.body = match &parsed {
        Some(Ok(v)) => Some(v.clone()),
        Some(Err(_)) => Some(Value::String(String::from_utf8_lossy(&raw).into_owned())),
        None => None,
    };
    let (status, resp) = answer(&inner, &method, &path, &query, key, route, parsed).await;
    match resp {
        Some(resp) => {
            record.status = status;
            inner.record(record, counter_key);
            Ok(resp)
        }
        None => {
            inner.record(record, counter_key);
            Err(DroppedConnection)
        }
    }
}

impl Inner {
    fn limits_body(&self) -> usize {
        if self.config.max_body_bytes == 0 {
            1024 * 1024
        } else {
            self.config.max_body_bytes
        }
    }
}

/// Produces the answer for an API request; `None` response = drop the connection.
async fn answer(
    inner: &Arc<Inner>,
    method: &Method,
    path: &str,
    query: &str,
    key: Option<String>,
    route: Result<Route, ApiError>,
    parsed: Option<Result<Value, serde_json::Error>>,
) -> (u16, Option<Response<Body>>) {
    let err = |e: ApiError, d: Option<&Decision>| {
        (
            e.status.as_u16(),
            Some(with_rate_header(json_response(e.status, &e.body), d)),
        )
    };
    let route = match route {
        Ok(r) => r,
        Err(e) => return err(e, None),
    };
    if !route.methods().contains(method) {
        return err(ApiError::method_not_allowed(), None);
    }
    let Some(actor) = key.as_deref().and_then(|k| inner.actor(k, method, path)) else {
        return err(ApiError::unauthorized(), None);
    };
    let group = route.group(method);
    let decision = inner.limiter.lock().check(
        key.as_deref().unwrap_or_default(),
        actor.org,
        group,
        Instant::now(),
    );
    if let Some(d) = decision.as_ref().filter(|d| !d.allowed) {
        let mut resp = with_rate_header(
            json_response(StatusCode::TOO_MANY_REQUESTS, &d.body()),
            Some(d),
        );
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(d.retry_after()));
        return (429, Some(resp));
    }
    let template = route.template();
    let plan = inner.faults.lock().plan(method.as_str(), &template);
    if plan.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(plan.latency_ms)).await;
    }
    if plan.drop_connection {
        return (0, None);
    }
    if let Some(status) = plan.error_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let reason = status.canonical_reason().unwrap_or("Error");
        return err(ApiError::message(status, reason), decision.as_ref());
    }
    let body = match parsed {
        None => Value::Object(serde_json::Map::new()),
        Some(Ok(v)) => v,
        Some(Err(_)) if *method == Method::GET || *method == Method::DELETE => {
            Value::Object(serde_json::Map::new())
        }
        Some(Err(e)) => {
            return err(
                ApiError::bad_request(format!("Invalid JSON: {e}")),
                decision.as_ref(),
            );
        }
    };
    let params = parse_query(query);
    let result = {
        let mut store = inner.store.lock();
        let result = api::handle(
            &mut store,
            &inner.limits,
            &api::Request {
                route: &route,
                method,
                actor: &actor,
                params: &params,
                body: &body,
            },
        );
        inner.flush_outbox(&mut store);
        result
    };
    if plan.lose_response {
        return err(
            ApiError::message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
            decision.as_ref(),
        );
    }
    match result {
        Ok((status, v)) => (
            status.as_u16(),
            Some(with_rate_header(
                json_response(status, &v),
                decision.as_ref(),
            )),
        ),
        Err(e) => err(e, decision.as_ref()),
    }
}
