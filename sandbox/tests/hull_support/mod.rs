//! Shared helpers of the Hull simulator tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use sandbox::hull::{ConnectorSeed, HullConfig, HullSim};
use serde_json::{json, Value};

pub const CONNECTOR_ID: &str = "5c092905c36af496c700012e";
pub const SECRET: &str = "20a512cc2cd99de69be65313e2f35d45";

pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A config with one known connector.
pub fn config() -> HullConfig {
    HullConfig {
        connectors: vec![ConnectorSeed {
            id: CONNECTOR_ID.into(),
            secret: SECRET.into(),
            private_settings: json!({"api_key": "key"}),
            settings: json!({}),
            url: None,
        }],
        ..HullConfig::default()
    }
}

pub async fn start(config: HullConfig) -> HullSim {
    HullSim::start(local(), config).await.expect("start sim")
}

/// HS256 entry token as hull-client builds it.
pub fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

pub fn user_claims(as_user: Value) -> Value {
    json!({"iss": CONNECTOR_ID, "iat": 1_700_000_000, "io.hull.asUser": as_user, "io.hull.subjectType": "user"})
}

pub fn account_claims(as_account: Value) -> Value {
    json!({"iss": CONNECTOR_ID, "iat": 1_700_000_000, "io.hull.asAccount": as_account, "io.hull.subjectType": "account"})
}

pub fn entry(kind: &str, claims: Value, body: Value) -> Value {
    json!({
        "type": kind,
        "body": body,
        "headers": {"Hull-Access-Token": token(SECRET, claims)},
        "timestamp": "2024-01-01T00:00:00Z",
    })
}

/// Posts a firehose batch with correct outer headers.
pub async fn firehose(sim: &HullSim, entries: Vec<Value>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(sim.firehose_url())
        .header("Hull-App-Id", CONNECTOR_ID)
        .header("Hull-Access-Token", SECRET)
        .header("Hull-Organization", sim.organization())
        .json(&json!({"batch": entries, "timestamp": "2024-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("firehose call");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A REST call with connector credentials.
pub fn rest(sim: &HullSim, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}/api/v1/{path}", sim.base_url()))
        .header("Hull-App-Id", CONNECTOR_ID)
        .header("Hull-Access-Token", SECRET)
        .header("Hull-Organization", sim.organization())
}

/// One notification a [`Receiver`] got.
#[derive(Clone, Debug)]
pub struct Received {
    pub body: Value,
    pub signature_ok: Result<(), String>,
}

/// Scripted answers of a [`Receiver`]; when empty it answers `default`.
pub struct Script {
    pub answers: Vec<(u16, Value)>,
    pub default: (u16, Value),
}

/// A tiny connector: verifies each smart-notifier signature like the SDKs do (POST to the
/// public-key URL, RS256, `jti` == `notification_id`) and answers scripted flow control.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    pub batches: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    pub async fn start(answers: Vec<(u16, Value)>) -> Receiver {
        let default = (
            200,
            json!({"flow_control": {"type": "next", "size": 50, "in": 1}}),
        );
        Receiver::start_scripted(answers, default).await
    }

    /// Answers `answers` in order, then `default` forever.
    pub async fn start_scripted(answers: Vec<(u16, Value)>, default: (u16, Value)) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script { answers, default }));
        let (r, s, b) = (received.clone(), script.clone(), batches.clone());
        // `/batch` (users) and `/batch-accounts` (accounts) are recorded alike.
        let batch = move |axum::extract::RawQuery(q): axum::extract::RawQuery,
                          Json(body): Json<Value>| {
            let b = b.clone();
            async move {
                b.lock().push((q.unwrap_or_default(), body));
                "ok"
            }
        };
        let app = Router::new()
            .route(
                "/smart-notifier",
                post(move |headers: HeaderMap, Json(body): Json<Value>| {
                    let (r, s) = (r.clone(), s.clone());
                    async move {
                        let signature_ok = verify(&headers, &body).await;
                        r.lock().push(Received { body, signature_ok });
                        let (status, answer) = {
                            let mut script = s.lock();
                            if script.answers.is_empty() {
                                script.default.clone()
                            } else {
                                script.answers.remove(0)
                            }
                        };
                        (StatusCode::from_u16(status).expect("status"), Json(answer))
                    }
                }),
            )
            .route("/batch", post(batch.clone()))
            .route("/batch-accounts", post(batch));
        let listener = tokio::net::TcpListener::bind(local())
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve receiver");
        });
        Receiver {
            url: format!("http://{addr}"),
            received,
            script,
            batches,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }
}

/// The SDK verification algorithm.
async fn verify(headers: &HeaderMap, body: &Value) -> Result<(), String> {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    h("x-hull-smart-notifier").ok_or("missing flag header")?;
    if h("x-hull-smart-notifier-signature-version").as_deref() != Some("v1") {
        return Err("unsupported signature version".into());
    }
    let signature = h("x-hull-smart-notifier-signature").ok_or("missing signature")?;
    let key_url = h("x-hull-smart-notifier-signature-public-key-url").ok_or("missing key url")?;
    let pem = reqwest::Client::new()
        .post(&key_url)
        .body(signature.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    if !pem.contains("-----BEGIN PUBLIC KEY-----") {
        return Err("invalid certificate".into());
    }
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    let data =
        jsonwebtoken::decode::<Value>(&signature, &key, &validation).map_err(|e| e.to_string())?;
    if data.claims.get("jti") != body.get("notification_id") {
        return Err("jti does not match notification_id".into());
    }
    body.get("configuration").ok_or("missing configuration")?;
    Ok(())
}
