//! Rate limits and fault injection.

mod close_support;

use std::time::{Duration, Instant};

use close_support::start;
use reqwest::{Method, StatusCode};
use sandbox::close::{CloseConfig, Faults};
use serde_json::{json, Value};

fn limited(keys: &[&str]) -> CloseConfig {
    // 0.2 rps over a 30 s window: 6 requests per key and group, 18 per organization.
    CloseConfig {
        organizations: vec![keys.iter().map(|k| (*k).to_string()).collect()],
        rate_limit_rps: Some(0.2),
        rate_window_secs: 30.0,
        ..Default::default()
    }
}

#[tokio::test]
async fn key_limit_headers_and_429() {
    let h = start(limited(&["api_rl_a"])).await;
    for i in 0..6u64 {
        let resp = h
            .client
            .get(h.url("/lead/"))
            .basic_auth("api_rl_a", Some(""))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let header = resp.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(
            header.starts_with(&format!("limit=6, remaining={}, reset=", 5 - i)),
            "{header}"
        );
    }
    let resp = h
        .client
        .get(h.url("/lead/"))
        .basic_auth("api_rl_a", Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after));
    assert!(resp.headers().contains_key("ratelimit"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "API call count exceeded for this period"
    );
    assert_eq!(body["error"]["rate_limit_type"], "key");
    assert_eq!(body["error"]["rate_limit"], 6);
    assert!(body["error"]["rate_reset"].as_f64().unwrap() > 0.0);

    let (status, _) = h.post("/lead/", json!({"name": "other group"})).await;
    assert_eq!(status, StatusCode::OK, "write group has its own budget");
    let (status, _) = h.post("/lead/", json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.sim.leads().len(), 2);

    let counters: Value = h
        .client
        .get(format!("http://{}/_sandbox/counters", h.sim.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["GET /lead/"]["200"], 6);
    assert_eq!(counters["GET /lead/"]["429"], 1);
}

#[tokio::test]
async fn organization_limit_spans_keys() {
    let keys = ["api_o1", "api_o2", "api_o3", "api_o4"];
    let h = start(limited(&keys)).await;
    for key in &keys[..3] {
        for _ in 0..6 {
            let (status, _) = h.call_as(key, Method::GET, "/me/", None).await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    let resp = h
        .client
        .get(h.url("/me/"))
        .basic_auth(keys[3], Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "fresh key, exhausted organization"
    );
    assert!(resp.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("limit=18, remaining=0"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["rate_limit_type"], "org");
}

#[tokio::test]
async fn no_rate_header_when_limits_are_off() {
    let h = start(CloseConfig::default()).await;
    let resp = h
        .client
        .get(h.url("/me/"))
        .basic_auth(&h.key, Some(""))
        .send()
        .await
        .unwrap();
    assert!(!resp.headers().contains_key("ratelimit"));
}

#[tokio::test]
async fn error_rate_and_route_filter() {
    let h = start(CloseConfig {
        faults: Faults {
            error_rate: 1.0,
            routes: Some(vec!["POST /lead/".into()]),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (status, _) = h.post("/lead/", json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.sim.leads().is_empty(), "an injected error is not applied");
    let (status, _) = h.get("/lead/").await;
    assert_eq!(status, StatusCode::OK);
    // Change faults at run time through the control API.
    let resp = h
        .client
        .put(format!("http://{}/_sandbox/faults", h.sim.addr()))
        .json(&json!({"error_rate": 1.0, "error_statuses": [502]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, _) = h.get("/lead/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    h.sim.set_faults(Faults::default());
    let (status, _) = h.get("/lead/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn latency_is_added() {
    let h = start(CloseConfig {
        faults: Faults {
            latency_ms: 150,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let t = Instant::now();
    let (status, _) = h.get("/me/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn dropped_connection_is_a_client_error() {
    let h = start(CloseConfig {
        faults: Faults {
            drop_connection_rate: 1.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let result = h
        .client
        .post(h.url("/lead/"))
        .basic_auth(&h.key, Some(""))
        .json(&json!({"name": "x"}))
        .send()
        .await;
    assert!(result.is_err(), "no response: {result:?}");
    assert!(h.sim.leads().is_empty());
    assert_eq!(h.sim.requests()[0].status, 0);
}

#[tokio::test]
async fn lost_response_applies_the_write() {
    let h = start(CloseConfig {
        faults: Faults {
            lost_response_rate: 1.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (status, _) = h.post("/lead/", json!({"name": "Ghost"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let leads = h.sim.leads();
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["name"], "Ghost");
    let (status, _) = h.get("/lead/").await;
    assert_eq!(status, StatusCode::OK, "reads are not affected");
}

#[tokio::test]
async fn request_log_records_calls() {
    let h = start(CloseConfig::default()).await;
    h.post("/lead/?_fields=id", json!({"name": "Logged"})).await;
    let log = h.sim.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/api/v1/lead/");
    assert_eq!(log[0].query, "_fields=id");
    assert_eq!(log[0].body, Some(json!({"name": "Logged"})));
    assert_eq!(log[0].status, 200);
    assert_eq!(log[0].api_key.as_deref(), Some(h.key.as_str()));
    h.sim.clear_requests();
    assert!(h.sim.requests().is_empty());
}
