//! ingest's HTTP surface: notification verification and validation (nothing is enqueued for a
//! rejected request), the settings option sources, `/status`, `/manifest.json` and `/admin`.

use harness::{EnvOptions, TestEnv, API_KEY, CONNECTOR_ID, CONNECTOR_SECRET, SYNC_SEGMENT};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use common::jobs::QueueKind;

/// The Hull simulator's signing key (a fixed test key), to build notifications by hand.
const HULL_PRIVATE_KEY: &str = include_str!("../../sandbox/src/hull/keys/private.pem");

fn notification(env: &TestEnv, secret: &str, messages: Value) -> Value {
    json!({
        "notification_id": uuid::Uuid::new_v4().to_string(),
        "configuration": {"id": CONNECTOR_ID, "organization": env.hull.organization(), "secret": secret},
        "connector": {"id": CONNECTOR_ID, "private_settings": harness::default_settings()},
        "channel": "account:update",
        "messages": messages,
        "segments": [],
        "accounts_segments": [],
    })
}

fn account_message(id: &str) -> Value {
    json!({"message_id": "m1", "account": {"id": id, "domain": "acme.com", "name": "Acme"},
           "account_segments": [{"id": SYNC_SEGMENT, "name": "Sync"}], "changes": {}})
}

fn sign(key_pem: &str, jti: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".into());
    let claims = json!({"jti": jti, "iat": chrono::Utc::now().timestamp(), "exp": chrono::Utc::now().timestamp() + 300});
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn post_signed(
    env: &TestEnv,
    body: &Value,
    signature: Option<String>,
    key_url: Option<String>,
) -> (u16, Value) {
    let jti = body["notification_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut req = reqwest::Client::new()
        .post(format!("{}/smart-notifier", env.ingest_url()))
        .json(body);
    req = req
        .header("x-hull-smart-notifier", "true")
        .header("x-hull-smart-notifier-signature-version", "v1")
        .header(
            "x-hull-smart-notifier-signature",
            signature.unwrap_or_else(|| sign(HULL_PRIVATE_KEY, &jti)),
        )
        .header(
            "x-hull-smart-notifier-signature-public-key-url",
            key_url.unwrap_or_else(|| env.hull.public_key_url()),
        );
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn start() -> TestEnv {
    TestEnv::start(EnvOptions::default()).await.expect("env")
}

#[tokio::test]
async fn a_correctly_signed_notification_is_accepted_and_enqueued() {
    let env = start().await;
    let body = notification(
        &env,
        CONNECTOR_SECRET,
        json!([account_message("a1"), account_message("a2")]),
    );
    let (status, answer) = post_signed(&env, &body, None, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["flow_control"]["type"], "next");
    assert_eq!(
        env.depth(QueueKind::Outgoing).await.unwrap(),
        1,
        "a notification's jobs travel in one message"
    );
    assert_eq!(env.drain().await.unwrap(), 2, "two jobs");
    env.cleanup().await;
}

#[tokio::test]
async fn forged_signatures_are_rejected_and_nothing_is_enqueued() {
    let env = start().await;
    let body = notification(&env, CONNECTOR_SECRET, json!([account_message("a1")]));
    let jti = body["notification_id"].as_str().unwrap().to_string();
    // Signed with another key.
    let other_key = include_str!("../../common/tests/fixtures/other_private.pem");
    let (status, answer) = post_signed(&env, &body, Some(sign(other_key, &jti)), None).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "INVALID_SIGNATURE", "{answer}");
    assert_eq!(answer["flow_control"]["type"], "retry");
    // A valid signature for another notification (jti mismatch).
    let (status, answer) = post_signed(
        &env,
        &body,
        Some(sign(HULL_PRIVATE_KEY, "another-id")),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "INVALID_SIGNATURE");
    // A key URL on a host that is not allow-listed: never fetched.
    let (status, answer) =
        post_signed(&env, &body, None, Some("http://127.0.0.2:1/key".into())).await;
    assert_eq!(status, 400, "{answer}");
    // No signature headers at all.
    let res = reqwest::Client::new()
        .post(format!("{}/smart-notifier", env.ingest_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(
        env.depth(QueueKind::Outgoing).await.unwrap(),
        0,
        "nothing enqueued"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_verified_notification_with_a_new_secret_updates_the_connector() {
    // Hull rotated the connector's secret: its signed notification is the authority.
    let env = start().await;
    let ok = notification(&env, CONNECTOR_SECRET, json!([]));
    assert_eq!(post_signed(&env, &ok, None, None).await.0, 200);
    env.hull
        .set_connector_secret(CONNECTOR_ID, "the-new-secret");
    let rotated = notification(&env, "the-new-secret", json!([account_message("a1")]));
    let (status, answer) = post_signed(&env, &rotated, None, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(env.depth(QueueKind::Outgoing).await.unwrap(), 1);
    let store = env.store().unwrap();
    assert_eq!(
        store
            .check_secret(CONNECTOR_ID, "the-new-secret")
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        store
            .check_secret(CONNECTOR_ID, CONNECTOR_SECRET)
            .await
            .unwrap(),
        Some(false)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn without_signatures_a_wrong_secret_for_a_known_connector_is_rejected() {
    let env = TestEnv::start(EnvOptions {
        skip_signature: true,
        ..EnvOptions::default()
    })
    .await
    .unwrap();
    let ok = notification(&env, CONNECTOR_SECRET, json!([]));
    assert_eq!(post_signed(&env, &ok, None, None).await.0, 200);
    let bad = notification(&env, "not-the-secret", json!([account_message("a1")]));
    let (status, answer) = post_signed(&env, &bad, None, None).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "INVALID_CREDENTIALS");
    assert_eq!(env.depth(QueueKind::Outgoing).await.unwrap(), 0);
    env.cleanup().await;
}

#[tokio::test]
async fn malformed_bodies_get_400s_naming_the_field_and_nothing_is_enqueued() {
    let env = start().await;
    // A bad message is dead-lettered on its own (see tests/tests/security.rs); only an
    // unreadable envelope refuses the whole notification.
    let cases: Vec<(Value, &str)> = vec![(json!("not a list"), "messages must be an array")];
    for (messages, expected) in cases {
        let body = notification(&env, CONNECTOR_SECRET, messages);
        let (status, answer) = post_signed(&env, &body, None, None).await;
        assert_eq!(status, 400, "{answer}");
        let msg = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expected), "{msg:?} should name {expected:?}");
    }
    let mut body = notification(&env, CONNECTOR_SECRET, json!([]));
    body["configuration"]
        .as_object_mut()
        .unwrap()
        .remove("secret");
    let (status, answer) = post_signed(&env, &body, None, None).await;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("configuration.secret"));
    // Not JSON at all.
    let res = reqwest::Client::new()
        .post(format!("{}/smart-notifier", env.ingest_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(env.depth(QueueKind::Outgoing).await.unwrap(), 0);
    env.cleanup().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let env = TestEnv::start(EnvOptions {
        skip_signature: true,
        ..EnvOptions::default()
    })
    .await
    .unwrap();
    let big = "x".repeat(21 * 1024 * 1024);
    let res = reqwest::Client::new()
        .post(format!("{}/smart-notifier", env.ingest_url()))
        .header("content-type", "application/json")
        .body(format!("{{\"pad\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    env.cleanup().await;
}

async fn get(env: &TestEnv, path: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .get(format!("{}{path}?{}", env.ingest_url(), env.creds_query()))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn values(v: &Value) -> Vec<String> {
    v["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn settings_option_sources_have_the_original_shapes() {
    let env = start().await;
    // The connector is unknown to ingest until now: it is looked up on Hull with the credentials.
    let (status, statuses) = get(&env, "/leadstatuses").await;
    assert_eq!(status, 200, "{statuses}");
    let v = values(&statuses);
    assert_eq!(v[0], "N/A");
    assert_eq!(statuses["options"][0]["label"], "(Use default)");
    assert_eq!(
        v.len(),
        5,
        "N/A + the 4 statuses of the organization: {statuses}"
    );
    assert!(v[1..].iter().all(|s| s.starts_with("stat_")));

    let (_, ident) = get(&env, "/fields-account-ident").await;
    assert_eq!(
        ident,
        json!({"options": [{"value": "domain", "label": "Domain"}, {"value": "external_id", "label": "External ID"}]})
    );

    let (_, out) = get(&env, "/fields-lead-out").await;
    let out_v = values(&out);
    assert_eq!(&out_v[..3], &["name", "url", "description"]);
    assert!(out_v[3..].iter().all(|f| f.starts_with("custom.")) && out_v.len() > 3);

    let (_, inn) = get(&env, "/fields-lead-in").await;
    let in_v = values(&inn);
    assert_eq!(
        &in_v[..5],
        &["name", "url", "description", "status_id", "addresses"]
    );
    assert_eq!(in_v.len(), out_v.len() + 2);

    let (_, cout) = get(&env, "/fields-contact-out").await;
    assert_eq!(values(&cout).len(), 12);
    assert_eq!(values(&cout)[2], "phones.mobile");
    let (_, cin) = get(&env, "/fields-contact-in").await;
    assert_eq!(
        values(&cin),
        vec!["name", "title", "phones", "emails", "urls"]
    );

    // Metadata is cached: a second call makes no Close request.
    env.close.clear_requests();
    get(&env, "/fields-lead-out").await;
    get(&env, "/leadstatuses").await;
    assert!(
        env.close.requests().is_empty(),
        "{:?}",
        env.close.requests()
    );

    // Wrong credentials.
    let res = reqwest::Client::new()
        .get(format!(
            "{}/leadstatuses?organization={}&ship={CONNECTOR_ID}&secret=wrong",
            env.ingest_url(),
            env.hull.organization()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    env.cleanup().await;
}

async fn status_of(env: &TestEnv) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}/status?{}", env.ingest_url(), env.creds_query()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn status_checks_the_key_with_close_and_never_downgrades_errors() {
    let env = start().await;
    let ok = status_of(&env).await;
    assert_eq!(ok, json!({"status": "ok", "messages": []}));
    assert!(
        env.close.requests().iter().any(|r| r.path.contains("/me")),
        "the key is checked with GET /me/"
    );
    let pushed = env.hull.status_log();
    assert_eq!(pushed.last().unwrap()["status"], "ok", "{pushed:?}");

    // A key Close refuses, and no segments: error (not downgraded to warning), both messages.
    let mut settings = harness::default_settings();
    settings["api_key"] = json!("api_unknown_key");
    settings["synchronized_account_segments"] = json!([]);
    let body = json!({
        "notification_id": "n-1", "configuration": {"id": CONNECTOR_ID, "organization": env.hull.organization(), "secret": CONNECTOR_SECRET},
        "connector": {"private_settings": settings}, "channel": "ship:update", "messages": []
    });
    assert_eq!(post_signed(&env, &body, None, None).await.0, 200);
    let bad = status_of(&env).await;
    assert_eq!(bad["status"], "error", "{bad}");
    let msgs: Vec<String> = serde_json::from_value(bad["messages"].clone()).unwrap();
    assert!(msgs.iter().any(|m| m.contains("401")), "{msgs:?}");
    assert!(
        msgs.contains(&common::status::NO_SEGMENTS.to_string()),
        "{msgs:?}"
    );

    // No key at all.
    let mut settings = harness::default_settings();
    settings.as_object_mut().unwrap().remove("api_key");
    let mut body = body.clone();
    body["connector"]["private_settings"] = settings;
    body["notification_id"] = json!("n-2");
    assert_eq!(post_signed(&env, &body, None, None).await.0, 200);
    let none = status_of(&env).await;
    assert_eq!(none["status"], "error");
    assert_eq!(none["messages"][0], common::status::NO_API_KEY);

    // Unknown connector.
    let res = reqwest::Client::new()
        .get(format!(
            "{}/status?organization=x&ship=000000000000000000000000&secret=y",
            env.ingest_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": 404, "messages": ["Request doesn't contain data about the connector"]})
    );
    env.cleanup().await;
}

#[tokio::test]
async fn the_api_key_is_encrypted_at_rest() {
    let env = start().await;
    get(&env, "/leadstatuses").await;
    let (client, conn) = tokio_postgres::connect(&env.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT private_settings::text, api_key_enc FROM connectors",
            &[],
        )
        .await
        .unwrap();
    let settings: String = row.get(0);
    let enc: Vec<u8> = row.get(1);
    assert!(!settings.contains(API_KEY));
    assert!(!String::from_utf8_lossy(&enc).contains(API_KEY));
    env.cleanup().await;
}

#[tokio::test]
async fn manifest_declares_every_setting_and_endpoint() {
    let env = start().await;
    let m: Value = reqwest::get(format!("{}/manifest.json", env.ingest_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["source"], "closeio");
    let names: Vec<&str> = m["private_settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for s in [
        "api_key",
        "synchronized_account_segments",
        "synchronized_user_segments",
        "lead_status",
        "lead_identifier_hull",
        "lead_identifier_service",
        "lead_attributes_outbound",
        "lead_attributes_inbound",
        "contact_attributes_outbound",
        "contact_attributes_inbound",
        "sync_opportunities",
    ] {
        assert!(names.contains(&s), "manifest lacks {s}");
    }
    let text = m.to_string();
    for endpoint in [
        "/leadstatuses",
        "/fields-account-ident",
        "/fields-lead-out",
        "/fields-lead-in",
        "/fields-contact-out",
        "/fields-contact-in",
        "/smart-notifier",
        "/status",
    ] {
        assert!(text.contains(endpoint), "manifest lacks {endpoint}");
    }
    assert!(m["tags"]
        .as_array()
        .unwrap()
        .contains(&json!("smart-notifier")));
    // And the admin page renders for the connector.
    let res = reqwest::get(format!("{}/admin?{}", env.ingest_url(), env.creds_query()))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("Close.io"));
    assert!(page.contains("Fetch Recently Updated Leads"));
    // The button posts to /fetch-recent-leads with the connector's credentials.
    let action = page
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        // The template escapes `&` in the attribute (as `&#38;`); a browser decodes it.
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(action.starts_with("/fetch-recent-leads?"), "{action}");
    let res = reqwest::Client::new()
        .post(format!("{}{action}", env.ingest_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["ok"], json!(true));
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served() {
    let env = start().await;
    let base = env.ingest_url();
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let body = notification(&env, CONNECTOR_SECRET, json!([account_message("a1")]));
    post_signed(&env, &body, None, None).await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ingest_requests_total"), "{metrics}");
    env.cleanup().await;
}
