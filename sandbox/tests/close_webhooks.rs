//! Webhook subscriptions and signed, retried deliveries to a real HTTP receiver.

mod close_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::routing::post;
use axum::Router;
use close_support::{local, start, Harness};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sandbox::close::{CloseConfig, DeliveryRecord};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver that fails the first `failures` deliveries with 500.
async fn receiver(failures: usize) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let count = count.clone();
            async move {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(Received { headers, body });
                if n < failures {
                    AxStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxStatus::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(local()).await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("delivery arrives")
        .expect("receiver open")
}

async fn subscribe(h: &Harness, url: &str) -> Value {
    let (status, sub) = h
        .post(
            "/webhook/",
            json!({"url": url, "events": [
            {"object_type": "lead", "action": "created"},
            {"object_type": "lead", "action": "updated"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    sub
}

/// Waits until the simulator has recorded the outcome of the delivery of `event_id`.
async fn finished(h: &Harness, event_id: &str) -> DeliveryRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = h
            .sim
            .webhook_deliveries()
            .into_iter()
            .find(|d| d.event_id == event_id && d.finished)
        {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "delivery finishes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn subscription_crud() {
    let h = start(CloseConfig::default()).await;
    let sub = subscribe(&h, "http://127.0.0.1:9/hook").await;
    let id = sub["id"].as_str().unwrap();
    assert!(id.starts_with("whsub_"));
    let key = sub["signature_key"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["verify_ssl"], true);
    let (_, list) = h.get("/webhook/").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["has_more"], false);
    let (status, paused) = h
        .put(&format!("/webhook/{id}/"), json!({"status": "paused"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["url"], "http://127.0.0.1:9/hook");
    let (status, _) = h
        .put(&format!("/webhook/{id}/"), json!({"status": "sleeping"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.delete(&format!("/webhook/{id}/")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.get(&format!("/webhook/{id}/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .post("/webhook/", json!({"url": "not a url", "events": []}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn deliveries_are_signed() {
    let h = start(CloseConfig::default()).await;
    let (url, mut rx) = receiver(0).await;
    let sub = subscribe(&h, &url).await;
    let lead = h.lead(json!({"name": "Hooked"})).await;
    let got = next(&mut rx).await;
    let ts = got.headers["close-sig-timestamp"].to_str().unwrap();
    let sig = got.headers["close-sig-hash"].to_str().unwrap();
    let key = hex::decode(sub["signature_key"].as_str().unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(ts.as_bytes());
    mac.update(&got.body);
    assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
    let payload: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(payload["subscription_id"], sub["id"]);
    assert_eq!(payload["event"]["object_type"], "lead");
    assert_eq!(payload["event"]["action"], "created");
    assert_eq!(payload["event"]["object_id"], lead["id"]);
    // Contact events are not subscribed: the UI update is the next delivery.
    h.sim
        .ui_update_lead(
            lead["id"].as_str().unwrap(),
            json!({"name": "Changed in UI"}),
        )
        .unwrap();
    let got = next(&mut rx).await;
    let payload: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(payload["event"]["action"], "updated");
    assert_eq!(payload["event"]["data"]["name"], "Changed in UI");
}

#[tokio::test]
async fn failing_receiver_is_retried() {
    let h = start(CloseConfig {
        webhook_retry_base_ms: 10,
        webhook_max_attempts: 4,
        ..Default::default()
    })
    .await;
    let (url, mut rx) = receiver(2).await;
    subscribe(&h, &url).await;
    h.lead(json!({"name": "Retry me"})).await;
    let first = next(&mut rx).await;
    next(&mut rx).await;
    next(&mut rx).await;
    let payload: Value = serde_json::from_slice(&first.body).unwrap();
    let event_id = payload["event"]["id"].as_str().unwrap().to_string();
    let d = finished(&h, &event_id).await;
    assert!(d.delivered);
    assert_eq!(d.attempts, 3);
    assert_eq!(d.last_status, Some(200));
    let resp = h
        .client
        .get(format!(
            "http://{}/_sandbox/webhook-deliveries",
            h.sim.addr()
        ))
        .send()
        .await
        .unwrap();
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list[0]["attempts"], 3);
}

#[tokio::test]
async fn attempts_are_capped() {
    let h = start(CloseConfig {
        webhook_retry_base_ms: 1,
        webhook_max_attempts: 2,
        ..Default::default()
    })
    .await;
    let (url, mut rx) = receiver(usize::MAX).await;
    subscribe(&h, &url).await;
    h.lead(json!({"name": "Never delivered"})).await;
    let first = next(&mut rx).await;
    let payload: Value = serde_json::from_slice(&first.body).unwrap();
    let d = finished(&h, payload["event"]["id"].as_str().unwrap()).await;
    assert!(!d.delivered);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_status, Some(500));
}
