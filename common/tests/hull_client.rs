//! Hull client over real HTTP (the Hull simulator from `sandbox`, and small stub servers), and
//! notification verification with a locally generated RS256 key pair (`tests/fixtures/`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use common::error::{Classify, ErrorClass};
use common::hull::{
    FirehoseEntry, HullClient, HullClientConfig, HullCredentials, HullError, NotificationVerifier,
    VerifierConfig, VerifyError,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Map, Value};

const PRIVATE_PEM: &str = include_str!("fixtures/notification_private.pem");
const PUBLIC_PEM: &str = include_str!("fixtures/notification_public.pem");
const OTHER_PRIVATE_PEM: &str = include_str!("fixtures/other_private.pem");

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

const CONNECTOR_ID: &str = "5c0fd7b1e1a2b3c4d5e6f701";
const CONNECTOR_SECRET: &str = "sim-secret-1";

async fn hull_sim() -> sandbox::hull::HullSim {
    sandbox::hull::HullSim::start(
        "127.0.0.1:0".parse().expect("addr"),
        sandbox::hull::HullConfig {
            connectors: vec![sandbox::hull::ConnectorSeed {
                id: CONNECTOR_ID.into(),
                secret: CONNECTOR_SECRET.into(),
                private_settings: json!({"api_key": "x"}),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await
    .expect("hull sim")
}

fn sim_client(sim: &sandbox::hull::HullSim, flush_at: usize) -> (HullClient, HullCredentials) {
    let client = HullClient::new(HullClientConfig {
        protocol: "http".into(),
        firehose_url: Some(sim.firehose_url()),
        flush_at,
        ..HullClientConfig::default()
    })
    .expect("client");
    let creds = HullCredentials {
        id: CONNECTOR_ID.into(),
        secret: CONNECTOR_SECRET.into(),
        organization: sim.organization(),
    };
    (client, creds)
}

#[tokio::test]
async fn firehose_entries_are_verified_and_applied_by_the_simulator() {
    let sim = hull_sim().await;
    let (client, creds) = sim_client(&sim, 2);
    let entries = vec![
        FirehoseEntry::traits_account(
            obj(json!({"domain": "acme.com", "anonymous_id": "closeio:lead_1"})),
            obj(json!({"closeio/name": "Acme"})),
        )
        .expect("account"),
        FirehoseEntry::traits_user(
            obj(json!({"email": "gob@acme.com", "anonymous_id": "closeio:cont_1"})),
            obj(json!({"closeio/title": "VP"})),
        )
        .expect("user"),
        FirehoseEntry::link_user_to_account(
            obj(json!({"email": "gob@acme.com"})),
            obj(json!({"domain": "acme.com"})),
        )
        .expect("link"),
    ];
    client
        .send_firehose(&creds, entries)
        .await
        .expect("firehose");

    let log = sim.firehose_log();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.accepted), "{log:?}");
    let account = sim
        .find_account("domain", "acme.com")
        .expect("account created");
    assert_eq!(account.attributes.get("closeio/name"), Some(&json!("Acme")));
    let user = sim
        .find_user("email", "gob@acme.com")
        .expect("user created");
    assert_eq!(user.account_id.as_deref(), Some(account.id.as_str()));
}

#[tokio::test]
async fn firehose_failures_are_errors() {
    let sim = hull_sim().await;
    let (client, creds) = sim_client(&sim, 50);
    let entry = || {
        FirehoseEntry::traits_account(obj(json!({"domain": "acme.com"})), Map::new())
            .expect("entry")
    };

    sim.set_firehose_fault(sandbox::hull::FirehoseFault {
        outage: true,
        ..Default::default()
    });
    let err = client
        .send_firehose(&creds, vec![entry()])
        .await
        .expect_err("outage");
    assert!(
        matches!(err, HullError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable { after: None });
    sim.set_firehose_fault(sandbox::hull::FirehoseFault::default());

    let wrong = HullCredentials {
        secret: "not-the-secret".into(),
        ..creds.clone()
    };
    let err = client
        .send_firehose(&wrong, vec![entry()])
        .await
        .expect_err("bad secret");
    assert!(matches!(err, HullError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Configuration);
    assert!(sim.firehose_log().iter().all(|r| !r.accepted));
}

#[tokio::test]
async fn rest_calls_against_the_simulator() {
    let sim = hull_sim().await;
    let (client, creds) = sim_client(&sim, 50);
    let app = client.get_app(&creds).await.expect("app");
    assert_eq!(app["id"], json!(CONNECTOR_ID));

    let mut settings = obj(app["private_settings"].clone());
    settings.insert("token_valid".into(), json!(true));
    client
        .put_settings(&creds, &settings)
        .await
        .expect("settings");
    let connector = sim.connector(CONNECTOR_ID).expect("connector");
    assert_eq!(connector.private_settings["token_valid"], json!(true));
    assert_eq!(connector.private_settings["api_key"], json!("x"));

    client
        .put_status(&creds, "warning", &["no API key".to_owned()])
        .await
        .expect("status");
    let last = sim.status_log().last().cloned().expect("status logged");
    assert_eq!(last["status"], json!("warning"));
    assert_eq!(last["messages"], json!(["no API key"]));

    assert!(!client
        .users_segments(&creds)
        .await
        .expect("users segments")
        .is_empty());
    assert!(!client
        .accounts_segments(&creds)
        .await
        .expect("accounts segments")
        .is_empty());
}

/// A firehose stub that records every batch it receives.
async fn firehose_stub() -> (String, Arc<Mutex<Vec<(HeaderMap, Value)>>>) {
    let received: Arc<Mutex<Vec<(HeaderMap, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                sink.lock().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/"), received)
}

#[tokio::test]
async fn firehose_is_split_into_batches_of_flush_at() {
    let (url, received) = firehose_stub().await;
    let client = HullClient::new(HullClientConfig {
        protocol: "http".into(),
        firehose_url: Some(url),
        flush_at: 2,
        ..HullClientConfig::default()
    })
    .expect("client");
    let creds = HullCredentials {
        id: "conn1".into(),
        secret: "s1".into(),
        organization: "org.hullapp.io".into(),
    };
    let entries = (0..5)
        .map(|i| {
            FirehoseEntry::traits_user(
                obj(json!({"email": format!("u{i}@x.com")})),
                obj(json!({"n": i})),
            )
            .expect("entry")
        })
        .collect();
    client.send_firehose(&creds, entries).await.expect("sent");
    let received = received.lock().clone();
    let sizes: Vec<usize> = received
        .iter()
        .map(|(_, b)| b["batch"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let (headers, body) = &received[0];
    assert_eq!(headers["hull-app-id"], "conn1");
    assert_eq!(headers["hull-access-token"], "s1");
    assert_eq!(headers["hull-organization"], "org.hullapp.io");
    assert!(body["timestamp"].is_string() && body["sentAt"].is_string());
    assert_eq!(body["batch"][1]["body"], json!({"n": 1}));
}

// ---------------------------------------------------------------------------------------------
// Notification verification.

/// A public-key server: answers every POST with `reply`, counting calls and recording bodies.
async fn key_server(reply: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let calls: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = calls.clone();
    let app = Router::new().route(
        "/api/v1/public_key",
        post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().push(body);
                reply
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("127.0.0.1:{}", addr.port()), calls)
}

fn sign(pem: &str, jti: &str) -> String {
    let claims = json!({
        "jti": jti,
        "iat": chrono::Utc::now().timestamp(),
        "exp": chrono::Utc::now().timestamp() + 600,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).expect("private key"),
    )
    .expect("sign")
}

fn notification_headers(signature: &str, key_url: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-hull-smart-notifier", HeaderValue::from_static("true"));
    h.insert(
        "x-hull-smart-notifier-signature-version",
        HeaderValue::from_static("v1"),
    );
    h.insert(
        "x-hull-smart-notifier-signature",
        HeaderValue::from_str(signature).expect("header"),
    );
    h.insert(
        "x-hull-smart-notifier-signature-public-key-url",
        HeaderValue::from_str(key_url).expect("header"),
    );
    h
}

fn notification_body(id: &str) -> Value {
    json!({
        "notification_id": id,
        "configuration": {"id": CONNECTOR_ID, "secret": CONNECTOR_SECRET, "organization": "x.hullapp.io"},
        "messages": [],
    })
}

fn verifier(allowed: &[&str]) -> NotificationVerifier {
    NotificationVerifier::new(VerifierConfig {
        allowed_key_hosts: common::allowlist::HostAllowList::parse(
            "HULL_KEY_HOSTS",
            &allowed.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .expect("allow-list"),
        ..VerifierConfig::default()
    })
    .expect("verifier")
}

#[tokio::test]
async fn good_signature_is_accepted_and_the_key_cached() {
    let (host, calls) = key_server(PUBLIC_PEM).await;
    let key_url = format!("http://{host}/api/v1/public_key");
    let v = verifier(&[&host]);
    let signature = sign(PRIVATE_PEM, "notif-1");
    let headers = notification_headers(&signature, &key_url);
    v.verify(&headers, &notification_body("notif-1"))
        .await
        .expect("valid notification");
    // The signature itself is POSTed to the key URL.
    assert_eq!(calls.lock().clone(), vec![signature]);

    let second = sign(PRIVATE_PEM, "notif-2");
    v.verify(
        &notification_headers(&second, &key_url),
        &notification_body("notif-2"),
    )
    .await
    .expect("second notification");
    assert_eq!(calls.lock().len(), 1, "the key is cached per URL");
}

#[tokio::test]
async fn outside_local_mode_a_clear_text_key_url_is_never_fetched() {
    let (host, calls) = key_server(PUBLIC_PEM).await;
    let v = NotificationVerifier::new(VerifierConfig {
        allowed_key_hosts: common::allowlist::HostAllowList::parse(
            "HULL_KEY_HOSTS",
            std::slice::from_ref(&host),
        )
        .expect("list"),
        require_https: true,
        ..VerifierConfig::default()
    })
    .expect("verifier");
    let signature = sign(PRIVATE_PEM, "n1");
    let err = v
        .verify(
            &notification_headers(&signature, &format!("http://{host}/api/v1/public_key")),
            &notification_body("n1"),
        )
        .await
        .expect_err("http refused");
    assert_eq!(err.code(), "INVALID_CERTIFICATE");
    assert!(calls.lock().is_empty());
}

#[tokio::test]
async fn pinned_key_is_used_without_fetching() {
    let v = NotificationVerifier::new(VerifierConfig {
        pinned_pem: Some(PUBLIC_PEM.into()),
        ..VerifierConfig::default()
    })
    .expect("verifier");
    let signature = sign(PRIVATE_PEM, "n1");
    // The URL is never contacted (nothing listens there and its host is not allow-listed).
    v.verify(
        &notification_headers(&signature, "http://127.0.0.1:9/key"),
        &notification_body("n1"),
    )
    .await
    .expect("pinned key verifies");
}

#[tokio::test]
async fn wrong_jti_or_wrong_key_is_an_invalid_signature() {
    let (host, _) = key_server(PUBLIC_PEM).await;
    let key_url = format!("http://{host}/api/v1/public_key");
    let v = verifier(&[&host]);

    let signature = sign(PRIVATE_PEM, "other-notification");
    let err = v
        .verify(
            &notification_headers(&signature, &key_url),
            &notification_body("n1"),
        )
        .await
        .expect_err("jti mismatch");
    assert_eq!(err.code(), "INVALID_SIGNATURE");

    let forged = sign(OTHER_PRIVATE_PEM, "n1");
    let err = v
        .verify(
            &notification_headers(&forged, &key_url),
            &notification_body("n1"),
        )
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), "INVALID_SIGNATURE");

    let err = v
        .verify(
            &notification_headers("not.a.jwt", &key_url),
            &notification_body("n1"),
        )
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), "INVALID_SIGNATURE");
}

#[tokio::test]
async fn key_url_on_a_disallowed_host_is_refused_without_fetching() {
    let (host, calls) = key_server(PUBLIC_PEM).await;
    let v = verifier(&["127.0.0.1:1", "*.hullapp.io"]);
    let signature = sign(PRIVATE_PEM, "n1");
    let err = v
        .verify(
            &notification_headers(&signature, &format!("http://{host}/api/v1/public_key")),
            &notification_body("n1"),
        )
        .await
        .expect_err("host not allowed");
    assert!(matches!(err, VerifyError::KeyHostNotAllowed(_)), "{err:?}");
    assert_eq!(err.code(), "INVALID_CERTIFICATE");
    assert!(err.message().contains("not allowed"));
    assert!(calls.lock().is_empty());
}

#[tokio::test]
async fn key_server_without_a_pem_is_an_invalid_certificate() {
    let (host, _) = key_server("no key here").await;
    let v = verifier(&[&host]);
    let signature = sign(PRIVATE_PEM, "n1");
    let err = v
        .verify(
            &notification_headers(&signature, &format!("http://{host}/api/v1/public_key")),
            &notification_body("n1"),
        )
        .await
        .expect_err("no pem");
    assert_eq!(err.code(), "INVALID_CERTIFICATE");
}

#[tokio::test]
async fn missing_headers_and_configuration_are_reported() {
    let v = verifier(&["127.0.0.1"]);
    let signature = sign(PRIVATE_PEM, "n1");
    let full = notification_headers(&signature, "http://127.0.0.1:9/key");
    let body = notification_body("n1");

    let mut h = full.clone();
    h.remove("x-hull-smart-notifier");
    assert_eq!(
        v.verify(&h, &body).await.expect_err("flag").code(),
        "MISSING_FLAG_HEADER"
    );

    let mut h = full.clone();
    h.insert(
        "x-hull-smart-notifier-signature-version",
        HeaderValue::from_static("v2"),
    );
    assert_eq!(
        v.verify(&h, &body).await.expect_err("version").code(),
        "UNSUPPORTED_SIGNATURE_VERSION"
    );

    let mut h = full.clone();
    h.remove("x-hull-smart-notifier-signature");
    assert_eq!(
        v.verify(&h, &body).await.expect_err("signature").code(),
        "MISSING_SIGNATURE_HEADERS"
    );

    let mut h = full.clone();
    h.remove("x-hull-smart-notifier-signature-public-key-url");
    assert_eq!(
        v.verify(&h, &body).await.expect_err("key url").code(),
        "MISSING_SIGNATURE_HEADERS"
    );

    assert_eq!(
        v.verify(&full, &json!({"notification_id": "n1"}))
            .await
            .expect_err("configuration")
            .code(),
        "MISSING_CONFIGURATION"
    );

    let skip = NotificationVerifier::new(VerifierConfig {
        skip_verification: true,
        ..VerifierConfig::default()
    })
    .expect("verifier");
    skip.verify(&HeaderMap::new(), &json!({}))
        .await
        .expect("skip accepts everything");
}

#[tokio::test]
async fn firehose_timeout_is_retryable() {
    // A server that accepts the connection but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<tokio::net::TcpStream>();
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            let _ = hold_tx.send(stream);
        }
    });
    let client = HullClient::new(HullClientConfig {
        protocol: "http".into(),
        firehose_url: Some(format!("http://{addr}/")),
        timeout: Duration::from_millis(200),
        ..HullClientConfig::default()
    })
    .expect("client");
    let creds = HullCredentials {
        id: "c".into(),
        secret: "s".into(),
        organization: "o.hullapp.io".into(),
    };
    let entry =
        FirehoseEntry::traits_account(obj(json!({"domain": "a.com"})), Map::new()).expect("entry");
    let err = client
        .send_firehose(&creds, vec![entry])
        .await
        .expect_err("timeout");
    assert!(matches!(err, HullError::Timeout), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Retryable { after: None });
    drop(hold_rx);
}
