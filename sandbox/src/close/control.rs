//! The control API under `/_sandbox/` (no auth): request log, counters, state, faults,
//! rate limit, reset, webhook deliveries and changes "by a UI user".

use std::sync::Arc;

use axum::body::Body;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::faults::Faults;
use super::server::{json_response, Inner};

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))
}

fn done(result: Result<Value, ApiError>) -> Response<Body> {
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => json_response(e.status, &e.body),
    }
}

fn as_api(e: anyhow::Error) -> ApiError {
    match e.downcast::<ApiError>() {
        Ok(api) => api,
        Err(other) => ApiError::bad_request(other.to_string()),
    }
}

/// Handles one control request.
pub async fn handle(
    inner: &Arc<Inner>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Response<Body> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).skip(1).collect();
    let sim = inner;
    let result = match (method, segs.as_slice()) {
        (&Method::GET, ["requests"]) => serde_json::to_value(&*inner.requests.lock())
            .map_err(|e| ApiError::bad_request(e.to_string())),
        (&Method::DELETE, ["requests"]) => {
            sim.clear_requests();
            Ok(json!({}))
        }
        (&Method::GET, ["counters"]) => {
            let counters = inner.counters.lock();
            let out: Map<String, Value> = counters
                .iter()
                .map(|(route, by_status)| {
                    let m: Map<String, Value> = by_status
                        .iter()
                        .map(|(s, n)| (s.to_string(), json!(n)))
                        .collect();
                    (route.clone(), Value::Object(m))
                })
                .collect();
            Ok(Value::Object(out))
        }
        (&Method::GET, ["state"]) => Ok(inner.store.lock().state_json()),
        (&Method::GET, ["faults"]) => serde_json::to_value(&inner.faults.lock().faults)
            .map_err(|e| ApiError::bad_request(e.to_string())),
        (&Method::PUT, ["faults"]) => parse_body(body).and_then(|v| {
            let faults: Faults = serde_json::from_value(v)
                .map_err(|e| ApiError::bad_request(format!("Invalid faults: {e}")))?;
            sim.set_faults(faults.clone());
            serde_json::to_value(faults).map_err(|e| ApiError::bad_request(e.to_string()))
        }),
        (&Method::PUT, ["rate-limit"]) => parse_body(body).and_then(|v| {
            let rps = match v.get("rps") {
                None | Some(Value::Null) => None,
                Some(r) => Some(
                    r.as_f64()
                        .ok_or_else(|| ApiError::field("rps", "Not a number."))?,
                ),
            };
            sim.set_rate_limit(rps);
            Ok(json!({ "rps": rps }))
        }),
        (&Method::POST, ["reset"]) => sim.reset().map(|()| json!({})).map_err(as_api),
        (&Method::GET, ["webhook-deliveries"]) => serde_json::to_value(&*inner.deliveries.lock())
            .map_err(|e| ApiError::bad_request(e.to_string())),
        (&Method::POST, ["ui", "lead"]) => parse_body(body).and_then(|v| {
            let key = v
                .get("api_key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let lead = v.get("lead").cloned().unwrap_or_else(|| json!({}));
            sim.ui_create_lead(&key, lead).map_err(as_api)
        }),
        (&Method::POST | &Method::PUT, ["ui", "lead", id]) => {
            parse_body(body).and_then(|v| sim.ui_update_lead(id, v).map_err(as_api))
        }
        (&Method::DELETE, ["ui", "lead", id]) => {
            sim.ui_delete_lead(id).map(|()| json!({})).map_err(as_api)
        }
        (&Method::DELETE, ["ui", "contact", id]) => sim
            .ui_delete_contact(id)
            .map(|()| json!({}))
            .map_err(as_api),
        (&Method::POST, ["ui", "merge"]) => parse_body(body).and_then(|v| {
            let get = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            sim.ui_merge_leads(&get("source"), &get("destination"))
                .map(|()| json!({}))
                .map_err(as_api)
        }),
        _ => Err(ApiError::no_route()),
    };
    done(result)
}
