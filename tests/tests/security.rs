//! The trust boundary, exercised over real HTTP against a running ingest: forged, expired and
//! replayed tokens; key-URL tricks and redirects; organization tricks; squatting; SSRF targets
//! on loopback; oversize and deeply nested bodies; huge extracts; slow clients; a batch with
//! one bad message; backpressure. Each test asserts the answer, that nothing was enqueued or
//! recorded when it must not be, and a memory bound where memory is the point.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{any, get};
use axum::Router;
use harness::{EnvOptions, TestEnv, CONNECTOR_ID, CONNECTOR_SECRET, SYNC_SEGMENT};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::jobs::QueueKind;

const HULL_PRIVATE_KEY: &str = include_str!("../../sandbox/src/hull/keys/private.pem");

// ---------------------------------------------------------------- helpers

fn account(id: &str, domain: &str) -> Value {
    json!({"account": {"id": id, "domain": domain, "name": domain},
           "account_segments": [{"id": SYNC_SEGMENT, "name": "Sync"}], "changes": {}})
}

fn notification(env: &TestEnv, channel: &str, messages: Value) -> Value {
    json!({
        "notification_id": uuid::Uuid::new_v4().to_string(),
        "configuration": {"id": CONNECTOR_ID, "organization": env.hull.organization(), "secret": CONNECTOR_SECRET},
        "connector": {"id": CONNECTOR_ID, "private_settings": harness::default_settings()},
        "channel": channel,
        "messages": messages,
        "segments": [], "accounts_segments": [],
    })
}

fn token(claims: Value) -> String {
    let key = EncodingKey::from_rsa_pem(HULL_PRIVATE_KEY.as_bytes()).expect("key");
    encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign")
}

fn good_token(body: &Value, env: &TestEnv) -> String {
    let now = chrono::Utc::now().timestamp();
    token(
        json!({"jti": body["notification_id"], "iat": now, "exp": now + 300, "iss": env.hull.organization()}),
    )
}

/// POSTs raw bytes to `/smart-notifier` with the given token and key URL.
async fn post_raw(
    env: &TestEnv,
    body: Vec<u8>,
    token: Option<&str>,
    key_url: &str,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/smart-notifier", env.ingest_url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req
            .header("x-hull-smart-notifier", "true")
            .header("x-hull-smart-notifier-signature-version", "v1")
            .header("x-hull-smart-notifier-signature", t)
            .header("x-hull-smart-notifier-signature-public-key-url", key_url);
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post_signed(env: &TestEnv, body: &Value) -> (u16, Value) {
    let t = good_token(body, env);
    post_raw(
        env,
        serde_json::to_vec(body).expect("json"),
        Some(&t),
        &env.hull.public_key_url(),
    )
    .await
}

/// Messages in the outgoing queue: a notification's jobs travel in one message (a bundle).
async fn outgoing(env: &TestEnv) -> u32 {
    env.depth(QueueKind::Outgoing).await.expect("depth")
}

async fn connectors(env: &TestEnv) -> i64 {
    let store = env.store().expect("store");
    let c = store.pool().get().await.expect("conn");
    c.query_one("SELECT count(*) FROM connectors", &[])
        .await
        .expect("count")
        .get(0)
}

/// A loopback HTTP server counting the requests it gets; `router` answers them.
async fn counting_server(router: Router) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { next.run(req).await }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, hits)
}

/// Peak resident memory of this test process (each test runs in its own process).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn start_with(vars: &[(&str, &str)]) -> TestEnv {
    TestEnv::start(EnvOptions {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..EnvOptions::default()
    })
    .await
    .expect("env")
}

// ---------------------------------------------------------------- signatures

#[tokio::test]
async fn expired_unbounded_and_mismatched_tokens_are_refused_and_nothing_is_enqueued() {
    let env = start_with(&[]).await;
    let body = notification(&env, "account:update", json!([account("a1", "acme.com")]));
    let now = chrono::Utc::now().timestamp();
    let nid = body["notification_id"].clone();
    let org = env.hull.organization();
    let cases = [
        (
            "expired",
            json!({"jti": nid, "iat": now - 7200, "exp": now - 3600}),
        ),
        ("no exp", json!({"jti": nid, "iat": now})),
        ("no jti", json!({"iat": now, "exp": now + 300})),
        (
            "other notification",
            json!({"jti": "another", "exp": now + 300}),
        ),
        (
            "other organization",
            json!({"jti": nid, "exp": now + 300, "iss": "evil.example.com"}),
        ),
    ];
    for (what, claims) in cases {
        let (status, answer) = post_raw(
            &env,
            serde_json::to_vec(&body).expect("json"),
            Some(&token(claims)),
            &env.hull.public_key_url(),
        )
        .await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(
            answer["error"]["code"], "INVALID_SIGNATURE",
            "{what}: {answer}"
        );
        assert_eq!(answer["flow_control"]["type"], "retry", "{what}");
    }
    // Within the leeway and from the right organization: accepted.
    let ok = token(json!({"jti": nid, "exp": now - 10, "iss": org}));
    let (status, answer) = post_raw(
        &env,
        serde_json::to_vec(&body).expect("json"),
        Some(&ok),
        &env.hull.public_key_url(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outgoing(&env).await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn a_replayed_notification_is_a_no_op_answered_200() {
    let env = start_with(&[]).await;
    let body = notification(
        &env,
        "account:update",
        json!([account("a1", "acme.com"), account("a2", "beta.com")]),
    );
    let (status, answer) = post_signed(&env, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outgoing(&env).await, 1, "two jobs in one message");
    for _ in 0..3 {
        let (status, answer) = post_signed(&env, &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["flow_control"]["type"], "next");
    }
    assert_eq!(
        outgoing(&env).await,
        1,
        "Hull's retries must not enqueue twice"
    );
    assert_eq!(env.drain().await.expect("drain"), 2, "the two jobs, once");
    env.cleanup().await;
}

#[tokio::test]
async fn key_urls_that_redirect_or_tokens_that_are_malformed_cause_no_key_fetch() {
    // A key host that is allow-listed but redirects to the real key.
    let target = Arc::new(std::sync::Mutex::new(String::new()));
    let to = target.clone();
    let (redirector2, hits) = counting_server(Router::new().route(
        "/key",
        any(move || {
            let to = to.lock().map(|t| t.clone()).unwrap_or_default();
            async move { axum::response::Redirect::temporary(&to) }
        }),
    ))
    .await;
    let env = start_with(&[("HULL_KEY_HOSTS", &redirector2.to_string())]).await;
    if let Ok(mut t) = target.lock() {
        *t = env.hull.public_key_url();
    }
    let body = notification(&env, "account:update", json!([account("a1", "acme.com")]));
    let t = good_token(&body, &env);
    let key_url = format!("http://{redirector2}/key");
    let (status, answer) = post_raw(
        &env,
        serde_json::to_vec(&body).expect("json"),
        Some(&t),
        &key_url,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["code"], "INVALID_CERTIFICATE",
        "a redirect is not followed: {answer}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A malformed token never reaches the key host.
    for bad in [
        "not-a-jwt",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        &"x".repeat(20_000),
    ] {
        let (status, answer) = post_raw(
            &env,
            serde_json::to_vec(&body).expect("json"),
            Some(bad),
            &key_url,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "INVALID_SIGNATURE");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no key fetch for a malformed token"
    );
    assert_eq!(outgoing(&env).await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn an_unsigned_body_is_not_read_and_a_huge_signed_one_stays_bounded() {
    let env = start_with(&[("NOTIFICATION_MAX_MESSAGES", "10000")]).await;
    let before = peak_rss_mb();
    // 19 MB arrays of tiny values: the shape that took the old ingest to 1.2 GB each.
    let huge = |nid: &str| {
        let mut s = format!(
            "{{\"notification_id\":\"{nid}\",\"channel\":\"account:update\",\"configuration\":{{\"id\":\"{CONNECTOR_ID}\",\"organization\":\"{}\",\"secret\":\"{CONNECTOR_SECRET}\"}},\"messages\":[",
            env.hull.organization()
        );
        s.reserve(19 << 20);
        while s.len() < 19 << 20 {
            s.push_str("1,");
        }
        s.push_str("1]}");
        s.into_bytes()
    };
    let unsigned =
        futures::future::join_all((0..3).map(|i| post_raw(&env, huge(&format!("u{i}")), None, "")))
            .await;
    for (status, answer) in unsigned {
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "MISSING_FLAG_HEADER");
    }
    let now = chrono::Utc::now().timestamp();
    let signed = futures::future::join_all((0..3).map(|i| {
        let nid = format!("s{i}");
        let t = token(json!({"jti": nid, "exp": now + 300}));
        let body = huge(&nid);
        let url = env.hull.public_key_url();
        let env = &env;
        async move { post_raw(env, body, Some(&t), &url).await }
    }))
    .await;
    for (status, answer) in signed {
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("more than 10000 messages"),
            "{answer}"
        );
    }
    // Deep nesting is refused by the parser's depth limit, not by a stack overflow.
    let nid = "deep";
    let deep = format!(
        "{{\"notification_id\":\"{nid}\",\"channel\":\"account:update\",\"configuration\":{{\"id\":\"{CONNECTOR_ID}\",\"organization\":\"{}\",\"secret\":\"{CONNECTOR_SECRET}\"}},\"messages\":[{}{}]}}",
        env.hull.organization(),
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let (status, _) = post_raw(
        &env,
        deep.into_bytes(),
        Some(&token(json!({"jti": nid, "exp": now + 300}))),
        &env.hull.public_key_url(),
    )
    .await;
    assert_eq!(status, 400);
    let grown = peak_rss_mb() - before;
    eprintln!("six 19 MB notifications (3 unsigned, 3 signed): peak RSS +{grown:.0} MB");
    // The test client itself holds the six 19 MB bodies it sends (~115 MB).
    assert!(grown < 250.0, "peak RSS grew by {grown:.0} MB");
    assert_eq!(outgoing(&env).await, 0);
    assert_eq!(connectors(&env).await, 0, "nothing recorded");
    env.cleanup().await;
}

// ---------------------------------------------------------------- organizations and squatting

#[tokio::test]
async fn organization_tricks_and_outside_hosts_never_register_a_connector() {
    // A server that would happily confirm any credentials.
    let (attacker, attacker_hits) = counting_server(Router::new().route(
        "/api/v1/app",
        get(|| async { axum::Json(json!({"id": CONNECTOR_ID, "private_settings": {}})) }),
    ))
    .await;
    let env = start_with(&[]).await;
    let hull = env.hull.organization();
    let client = reqwest::Client::new();
    let ask = |org: String, secret: &str| {
        let url = format!("{}/leadstatuses", env.ingest_url());
        client
            .get(url)
            .query(&[
                ("organization", org.as_str()),
                ("ship", CONNECTOR_ID),
                ("secret", secret),
            ])
            .send()
    };
    let mut answers = Vec::new();
    for org in [
        attacker.to_string(),
        format!("{hull}/some/path#"),
        format!("{hull}?x=1"),
        format!("user:pw@{hull}"),
        format!("http://{hull}"),
        "127.0.0.1:5432".into(),
        "127.0.0.1:1".into(),
    ] {
        let res = ask(org.clone(), CONNECTOR_SECRET).await.expect("send");
        let status = res.status().as_u16();
        answers.push((org, status, res.text().await.unwrap_or_default()));
    }
    // The genuine organization with a wrong secret: Hull refuses; its answer is not reflected.
    let res = ask(hull.clone(), "wrong").await.expect("send");
    answers.push((
        "hull, wrong secret".into(),
        res.status().as_u16(),
        res.text().await.unwrap_or_default(),
    ));
    let first = answers[0].2.clone();
    for (org, status, text) in &answers {
        assert_eq!(*status, 401, "{org}: {text}");
        assert_eq!(text, &first, "{org}: every refusal must read the same");
        assert!(text.contains(ingest::auth::DENIED));
    }
    assert_eq!(
        attacker_hits.load(Ordering::SeqCst),
        0,
        "nothing outside HULL_ORGANIZATIONS is contacted"
    );
    assert_eq!(connectors(&env).await, 0, "nothing recorded");
    env.cleanup().await;
}

#[tokio::test]
async fn outside_local_mode_only_listed_organizations_are_served() {
    let env = start_with(&[("HULL_ORGANIZATIONS", "*.hullapp.io")]).await;
    // The simulator's organization is not on the list: its signed notification is refused.
    let body = notification(&env, "account:update", json!([account("a1", "acme.com")]));
    let (status, answer) = post_signed(&env, &body).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "ORGANIZATION_NOT_ALLOWED");
    assert_eq!(outgoing(&env).await, 0);
    assert_eq!(connectors(&env).await, 0);
    env.cleanup().await;

    let mut vars = std::collections::HashMap::new();
    for (k, v) in [
        ("LOCAL_MODE", "false"),
        (
            "ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
    ] {
        vars.insert(k.to_string(), v.to_string());
    }
    let err = ingest::IngestConfig::from_source(&vars).expect_err("fail closed");
    assert_eq!(err.var, "HULL_ORGANIZATIONS");
    vars.insert("HULL_ORGANIZATIONS".into(), "*.hullapp.io".into());
    vars.insert("SKIP_SIGNATURE_VERIFICATION".into(), "true".into());
    assert_eq!(
        ingest::IngestConfig::from_source(&vars)
            .expect_err("skip needs local mode")
            .var,
        "SKIP_SIGNATURE_VERIFICATION"
    );
}

#[tokio::test]
async fn a_squatted_connector_is_taken_back_by_hulls_signed_notification() {
    let env = start_with(&[]).await;
    let store = env.store().expect("store");
    // Someone recorded the connector first, with a secret of their own.
    store
        .record_confirmed_connector(
            CONNECTOR_ID,
            &env.hull.organization(),
            "squatter-secret",
            &json!({}),
        )
        .await
        .expect("record");
    assert_eq!(
        store
            .registered_by(CONNECTOR_ID)
            .await
            .expect("db")
            .as_deref(),
        Some("query")
    );
    let body = notification(&env, "account:update", json!([account("a1", "acme.com")]));
    let (status, answer) = post_signed(&env, &body).await;
    assert_eq!(status, 200, "Hull's genuine notification wins: {answer}");
    assert_eq!(outgoing(&env).await, 1);
    assert_eq!(
        store
            .check_secret(CONNECTOR_ID, CONNECTOR_SECRET)
            .await
            .expect("db"),
        Some(true)
    );
    assert_eq!(
        store
            .check_secret(CONNECTOR_ID, "squatter-secret")
            .await
            .expect("db"),
        Some(false)
    );
    assert_eq!(
        store
            .registered_by(CONNECTOR_ID)
            .await
            .expect("db")
            .as_deref(),
        Some("notification")
    );
    let c = store
        .connector(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("connector");
    assert_eq!(
        c.private_settings["synchronized_account_segments"],
        json!([SYNC_SEGMENT])
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_signed_notification_cannot_move_or_rekey_another_connector() {
    // Hull's token signs the notification id, not the body: a token from another connector or
    // organization must not rewrite this one.
    // Local mode with HULL_ORGANIZATIONS empty: every organization is served, so only the
    // binding of the connector to its organization can refuse the other one.
    let env = start_with(&[("HULL_ORGANIZATIONS", "")]).await;
    assert_eq!(
        post_signed(&env, &notification(&env, "account:update", json!([])))
            .await
            .0,
        200
    );
    let store = env.store().expect("store");
    // Another organization claiming the same connector id.
    let mut other_org = notification(&env, "account:update", json!([account("a1", "acme.com")]));
    other_org["configuration"]["organization"] = json!("attacker.example.com");
    other_org["connector"]["private_settings"]["api_key"] = json!("attacker-key");
    let now = chrono::Utc::now().timestamp();
    let t = token(
        json!({"jti": other_org["notification_id"], "exp": now + 300, "iss": "attacker.example.com"}),
    );
    let (status, answer) = post_raw(
        &env,
        serde_json::to_vec(&other_org).expect("json"),
        Some(&t),
        &env.hull.public_key_url(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "ORGANIZATION_MISMATCH");
    // The right organization, but a secret Hull does not confirm.
    let mut rekey = notification(&env, "account:update", json!([account("a1", "acme.com")]));
    rekey["configuration"]["secret"] = json!("attacker-secret");
    rekey["connector"]["private_settings"]["api_key"] = json!("attacker-key");
    let (status, answer) = post_signed(&env, &rekey).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "INVALID_CREDENTIALS");
    let c = store
        .connector(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("connector");
    assert_eq!(c.organization, env.hull.organization());
    assert_eq!(c.secret, CONNECTOR_SECRET);
    assert_eq!(c.api_key.as_deref(), Some(harness::API_KEY));
    assert_eq!(outgoing(&env).await, 0);
    // A replay of an accepted notification with another body changes nothing either.
    let first = notification(&env, "account:update", json!([]));
    assert_eq!(post_signed(&env, &first).await.0, 200);
    let mut replay = first.clone();
    replay["connector"]["private_settings"]["api_key"] = json!("attacker-key");
    replay["messages"] = json!([account("a9", "evil.com")]);
    assert_eq!(post_signed(&env, &replay).await.0, 200);
    assert_eq!(
        store
            .connector(CONNECTOR_ID)
            .await
            .expect("db")
            .expect("c")
            .api_key
            .as_deref(),
        Some(harness::API_KEY)
    );
    assert_eq!(outgoing(&env).await, 0);
    // A token that outlives the replay window is refused.
    let long = notification(&env, "account:update", json!([]));
    let t = token(
        json!({"jti": long["notification_id"], "exp": now + 200_000, "iss": env.hull.organization()}),
    );
    let (status, _) = post_raw(
        &env,
        serde_json::to_vec(&long).expect("json"),
        Some(&t),
        &env.hull.public_key_url(),
    )
    .await;
    assert_eq!(status, 400);
    env.cleanup().await;
}

// ---------------------------------------------------------------- one bad message

#[tokio::test]
async fn one_bad_message_is_dead_lettered_and_the_others_sync() {
    let env = start_with(&[]).await;
    let body = notification(
        &env,
        "account:update",
        json!([
            account("a1", "acme.com"),
            {"account": {"name": "no id and no claims"}, "account_segments": [{"id": SYNC_SEGMENT}]},
            {"account": {"domain": "claims-only.com", "name": "Claims Only"}, "account_segments": [{"id": SYNC_SEGMENT}], "changes": {}},
        ]),
    );
    let (status, answer) = post_signed(&env, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["flow_control"]["type"], "next");
    assert_eq!(outgoing(&env).await, 1, "the two good jobs in one message");
    let store = env.store().expect("store");
    let dead = store
        .dead_letters(Some(CONNECTOR_ID), None, None, false, 10)
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]
            .last_error
            .contains("messages[1].account.id is missing"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(
        dead[0].envelope["job"]["message"]["account"]["name"], "no id and no claims",
        "the raw message is kept"
    );
    // The valid ones, including the account known only by its domain, reach Close.
    env.drain().await.expect("drain");
    assert_eq!(env.leads_with_url("acme.com").len(), 1);
    assert_eq!(env.leads_with_url("claims-only.com").len(), 1);
    // A user whose account has no id but carries closeio/id syncs under that lead.
    let lead = env.leads_with_url("acme.com")[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let users = notification(
        &env,
        "user:update",
        json!([{"user": {"id": "u1", "email": "jo@acme.com", "name": "Jo"},
                "account": {"closeio/id": lead, "name": "Acme"},
                "segments": [], "account_segments": [{"id": SYNC_SEGMENT}], "changes": {}}]),
    );
    let (status, answer) = post_signed(&env, &users).await;
    assert_eq!(status, 200, "{answer}");
    env.drain().await.expect("drain");
    let contacts: Vec<Value> = env
        .close
        .contacts()
        .into_iter()
        .filter(|c| c["lead_id"] == json!(lead))
        .collect();
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    env.cleanup().await;
}

// ---------------------------------------------------------------- /batch downloads

async fn post_batch(env: &TestEnv, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/{path}?{}", env.ingest_url(), env.creds_query()))
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn batch_urls_outside_the_extract_hosts_are_never_fetched() {
    let (inside, inside_hits) = counting_server(Router::new()).await;
    let target = format!("http://{inside}/secret");
    let (redirector, redirector_hits) = counting_server(Router::new().route(
        "/extract",
        get(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        }),
    ))
    .await;
    let env = start_with(&[("HULL_EXTRACT_HOSTS", &redirector.to_string())]).await;
    // Register the connector through Hull's genuine notification first.
    assert_eq!(
        post_signed(&env, &notification(&env, "account:update", json!([])))
            .await
            .0,
        200
    );
    for url in [
        format!("http://{inside}/extract.json"),
        "http://127.0.0.1:5432/".into(),
        "file:///etc/passwd".into(),
        format!("ftp://{redirector}/x"),
        format!("http://user:pw@{redirector}/extract"),
    ] {
        let (status, answer) =
            post_batch(&env, "batch", json!({"url": url, "format": "json"})).await;
        assert_eq!(status, 400, "{url}: {answer}");
    }
    // An allowed host that redirects elsewhere: the redirect is not followed.
    let (status, answer) = post_batch(
        &env,
        "batch",
        json!({"url": format!("http://{redirector}/extract")}),
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(redirector_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        inside_hits.load(Ordering::SeqCst),
        0,
        "nothing outside the allow-list was contacted"
    );
    assert_eq!(outgoing(&env).await, 0);
    env.cleanup().await;
}

/// Serves `GET /extract` as the given stream of chunks.
async fn extract_server(
    chunks: impl Fn() -> Vec<bytes::Bytes> + Send + Sync + Clone + 'static,
) -> SocketAddr {
    let (addr, _) = counting_server(Router::new().route(
        "/extract",
        get(move || {
            let chunks = chunks.clone();
            async move {
                let stream =
                    futures::stream::iter(chunks().into_iter().map(Ok::<_, std::io::Error>));
                axum::body::Body::from_stream(stream)
            }
        }),
    ))
    .await;
    addr
}

#[tokio::test]
async fn a_huge_extract_streams_in_flat_memory_and_bad_lines_are_reported() {
    // 256 MiB of blank padding around three real lines, one of them broken.
    let pad = bytes::Bytes::from(
        vec![b' '; 1 << 20]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>(),
    );
    let good = |id: &str, domain: &str| {
        bytes::Bytes::from(format!(
            "{{\"id\":\"{id}\",\"domain\":\"{domain}\",\"name\":\"{domain}\"}}\n"
        ))
    };
    let chunks = move || {
        let mut v = vec![
            good("x1", "one.com"),
            bytes::Bytes::from_static(b"{not json}\n"),
        ];
        v.extend(std::iter::repeat_n(pad.clone(), 256));
        v.push(good("x2", "two.com"));
        v
    };
    let addr = extract_server(chunks).await;
    let env = start_with(&[("HULL_EXTRACT_HOSTS", &addr.to_string())]).await;
    assert_eq!(
        post_signed(&env, &notification(&env, "account:update", json!([])))
            .await
            .0,
        200
    );
    let before = peak_rss_mb();
    let (status, answer) = post_batch(
        &env,
        "batch-accounts",
        json!({"url": format!("http://{addr}/extract"), "format": "json"}),
    )
    .await;
    let grown = peak_rss_mb() - before;
    eprintln!("a 256 MiB extract: peak RSS +{grown:.0} MB");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["jobs"], 2, "{answer}");
    assert_eq!(answer["refused_count"], 1);
    assert_eq!(answer["refused"][0]["line"], 2);
    assert!(
        grown < 64.0,
        "a 256 MiB extract grew the peak RSS by {grown:.0} MB"
    );
    let dead = env
        .store()
        .expect("store")
        .dead_letters(Some(CONNECTOR_ID), None, None, false, 10)
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].last_error.starts_with("line 2:"),
        "{}",
        dead[0].last_error
    );
    env.drain().await.expect("drain");
    assert_eq!(env.leads_with_url("one.com").len(), 1);
    assert_eq!(env.leads_with_url("two.com").len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn extract_size_and_line_caps_stop_the_download() {
    let line = bytes::Bytes::from_static(b"{\"id\":\"a1\",\"domain\":\"a.com\"}\n");
    let long = bytes::Bytes::from(vec![b'x'; 3 << 20]);
    let chunks = move || {
        let mut v = vec![line.clone(), long.clone(), bytes::Bytes::from_static(b"\n")];
        v.extend(std::iter::repeat_n(line.clone(), 4));
        v.extend(std::iter::repeat_n(
            bytes::Bytes::from(vec![b' '; 1 << 20]),
            16,
        ));
        v
    };
    let addr = extract_server(chunks).await;
    let env = start_with(&[
        ("HULL_EXTRACT_HOSTS", &addr.to_string()),
        ("EXTRACT_MAX_LINE_BYTES", "1048576"),
        ("EXTRACT_MAX_BYTES", "8388608"),
    ])
    .await;
    assert_eq!(
        post_signed(&env, &notification(&env, "account:update", json!([])))
            .await
            .0,
        200
    );
    let (status, answer) = post_batch(
        &env,
        "batch-accounts",
        json!({"url": format!("http://{addr}/extract")}),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["refused"][0]["line"], 2, "{answer}");
    assert!(answer["refused"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("EXTRACT_MAX_LINE_BYTES"));
    assert_eq!(
        answer["jobs"], 5,
        "the lines before the cap were enqueued: {answer}"
    );
    env.cleanup().await;
}

// ---------------------------------------------------------------- connections and backpressure

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_and_hull_still_gets_in() {
    let env = start_with(&[
        ("INGEST_HEADER_TIMEOUT_SECS", "1"),
        ("INGEST_MAX_CONNECTIONS", "20"),
    ])
    .await;
    let mut slow = Vec::new();
    for i in 0..60 {
        let mut s = tokio::net::TcpStream::connect(env.ingest_addr)
            .await
            .expect("connect");
        if i % 2 == 0 {
            // Half a request, never finished.
            s.write_all(b"POST /smart-notifier HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
        }
        slow.push(s);
    }
    // Hull's genuine notification gets through once the slow ones are cut off.
    let body = notification(&env, "account:update", json!([account("a1", "acme.com")]));
    let t = good_token(&body, &env);
    let res = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
        .post(format!("{}/smart-notifier", env.ingest_url()))
        .header("x-hull-smart-notifier", "true")
        .header("x-hull-smart-notifier-signature-version", "v1")
        .header("x-hull-smart-notifier-signature", t)
        .header(
            "x-hull-smart-notifier-signature-public-key-url",
            env.hull.public_key_url(),
        )
        .json(&body)
        .send()
        .await
        .expect("the genuine notification must not time out");
    assert_eq!(res.status().as_u16(), 200);
    // Every slow connection has been closed by ingest.
    for mut s in slow {
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(closed, "a slow connection stayed open");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn flow_control_slows_hull_down_and_refuses_above_the_hard_limit() {
    let env = start_with(&[
        ("FLOW_CONTROL_HIGH_WATER", "2"),
        ("FLOW_CONTROL_HARD_LIMIT", "4"),
        ("FLOW_CONTROL_DEPTH_TTL_MS", "0"),
        ("FLOW_CONTROL_BUSY_IN_MS", "7000"),
    ])
    .await;
    let send = |ids: [&str; 2]| {
        notification(
            &env,
            "account:update",
            json!([account(ids[0], "a.com"), account(ids[1], "b.com")]),
        )
    };
    let (status, answer) = post_signed(&env, &send(["a1", "a2"])).await;
    assert_eq!(
        (status, answer["flow_control"]["in"].clone()),
        (200, json!(1)),
        "{answer}"
    );
    let (status, answer) = post_signed(&env, &send(["a3", "a4"])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["flow_control"]["type"], "next");
    assert_eq!(
        answer["flow_control"]["in"], 7000,
        "above the high-water mark Hull is slowed down: {answer}"
    );
    let (status, answer) = post_signed(&env, &send(["a5", "a6"])).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["flow_control"]["type"], "retry");
    assert_eq!(
        outgoing(&env).await,
        2,
        "nothing enqueued above the hard limit: two messages of two jobs each"
    );
    assert_eq!(env.drain().await.expect("drain"), 4, "four jobs");
    let (status, _) = post_signed(&env, &send(["a5", "a6"])).await;
    assert_eq!(status, 200, "accepted again once the queue drained");
    env.cleanup().await;
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn a_key_that_cannot_open_the_stored_secrets_stops_ingest_at_start() {
    let env = start_with(&[]).await;
    assert_eq!(
        post_signed(&env, &notification(&env, "account:update", json!([])))
            .await
            .0,
        200
    );
    let mut vars = env.vars.clone();
    vars.insert(
        "ENCRYPTION_KEY".into(),
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
    );
    let cfg = ingest::IngestConfig::from_source(&vars).expect("config");
    let err = ingest::start(cfg, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("wrong key");
    assert!(err.to_string().contains("ENCRYPTION_KEY"), "{err}");
    // The previous key during a rotation still opens them.
    vars.insert(
        "ENCRYPTION_KEY_PREVIOUS".into(),
        common::config::DEV_ENCRYPTION_KEY.into(),
    );
    let cfg = ingest::IngestConfig::from_source(&vars).expect("config");
    let stop = tokio_util::sync::CancellationToken::new();
    let (_, task) = ingest::start(cfg, stop.clone()).await.expect("rotation");
    stop.cancel();
    let _ = task.await;
    env.cleanup().await;
}
