//! Close client over real HTTP: against a scripted stub server (exact control over 429s, 5xx and
//! pagination) and against the Close simulator from `sandbox`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine as _;
use common::closeio::{
    ApiKey, CloseClient, CloseClientConfig, CloseError, CustomFieldObject, EventQuery,
};
use common::error::{Classify, ErrorClass};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

/// One request received by the stub.
#[derive(Clone, Debug)]
struct Hit {
    method: String,
    path: String,
    query: String,
    auth: Option<String>,
    body: Value,
    at: Instant,
}

/// What the stub answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// Decides the answer from the request and how many earlier requests had the same method+path.
type Responder = Arc<dyn Fn(&Hit, usize) -> Reply + Send + Sync>;

struct Stub {
    base_url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Stub {
    async fn start(responder: impl Fn(&Hit, usize) -> Reply + Send + Sync + 'static) -> Stub {
        let responder: Responder = Arc::new(responder);
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        let recorded = hits.clone();
        let app = Router::new().fallback(move |req: Request| {
            let responder = responder.clone();
            let recorded = recorded.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let hit = Hit {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    auth: parts
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    at: Instant::now(),
                };
                let n = {
                    let mut hits = recorded.lock();
                    let n = hits
                        .iter()
                        .filter(|h| h.method == hit.method && h.path == hit.path)
                        .count();
                    hits.push(hit.clone());
                    n
                };
                let reply = responder(&hit, n);
                let mut response = Response::new(Body::from(reply.body));
                *response.status_mut() =
                    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                for (name, value) in reply.headers {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        response
                            .headers_mut()
                            .insert(HeaderName::from_static(name), value);
                    }
                }
                response
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub {
            base_url: format!("http://{addr}/api/v1"),
            hits,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().clone()
    }

    fn client(&self) -> CloseClient {
        client_for(&self.base_url)
    }
}

fn client_for(base_url: &str) -> CloseClient {
    CloseClient::new(CloseClientConfig {
        base_url: base_url.to_owned(),
        rate_limit_rps: Some(1000.0),
        burst: 100,
        timeout: Duration::from_secs(10),
        retry_base_delay: Duration::from_millis(10),
        ..CloseClientConfig::default()
    })
    .expect("client")
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[tokio::test]
async fn rate_limited_get_waits_for_the_decimal_reset_then_succeeds() {
    let stub = Stub::start(|_, n| {
        if n == 0 {
            Reply::json(
                429,
                json!({"error": {"message": "slow down", "rate_reset": 9}}),
            )
            .header("ratelimit", "limit=1, remaining=0, reset=0.25")
            .header("retry-after", "1")
        } else {
            Reply::json(200, json!({"id": "user_1"}))
        }
    })
    .await;
    let key = ApiKey::new("api_key_one");
    let me = stub.client().me(&key).await.expect("me after 429");
    assert_eq!(me["id"], json!("user_1"));

    let hits = stub.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].path, "/api/v1/me/");
    assert!(
        hits[1].at.duration_since(hits[0].at) >= Duration::from_millis(250),
        "the retry must wait for the RateLimit reset"
    );
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("api_key_one:")
    );
    assert_eq!(hits[0].auth.as_deref(), Some(expected.as_str()));
}

#[tokio::test]
async fn a_429_pauses_that_endpoint_group_of_the_key_and_no_other() {
    let stub = Stub::start(|hit, n| {
        if hit.method == "POST" && n == 0 {
            Reply::json(429, json!({})).header("ratelimit", "limit=1, remaining=0, reset=0.4")
        } else {
            Reply::json(200, json!({"id": "lead_1"}))
        }
    })
    .await;
    let client = stub.client();
    let key = ApiKey::new("api_shared");
    // The POST answered 429 was not applied: the client sends it again after the reset.
    let create = {
        let (client, key) = (client.clone(), key.clone());
        tokio::spawn(async move {
            client
                .create_lead(&key, &obj(json!({"name": "Acme"})))
                .await
        })
    };
    while stub.hits().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Writes of leads (the group that was limited) wait for the reset; reads of leads (another
    // group, limited separately by Close) do not.
    let writes = (0..3).map(|_| {
        let client = client.clone();
        let key = key.clone();
        tokio::spawn(async move {
            client
                .update_lead(&key, "lead_1", &obj(json!({"name": "Acme 2"})))
                .await
        })
    });
    client.get_lead(&key, "lead_1").await.expect("read");
    for write in writes {
        write.await.expect("join").expect("write after the pause");
    }
    create
        .await
        .expect("join")
        .expect("created after the reset");
    let hits = stub.hits();
    let posts: Vec<&Hit> = hits.iter().filter(|h| h.method == "POST").collect();
    assert_eq!(posts.len(), 2, "the POST answered 429 is sent once more");
    let paused_from = posts[0].at;
    assert!(posts[1].at.duration_since(paused_from) >= Duration::from_millis(400));
    let puts: Vec<&Hit> = hits.iter().filter(|h| h.method == "PUT").collect();
    assert_eq!(puts.len(), 3);
    for put in puts {
        assert!(
            put.at.duration_since(paused_from) >= Duration::from_millis(400),
            "requests of the paused group wait for the reset"
        );
    }
    let get = hits.iter().find(|h| h.method == "GET").expect("the read");
    assert!(
        get.at.duration_since(paused_from) < Duration::from_millis(400),
        "another group is not held"
    );
}

#[tokio::test]
async fn remaining_zero_slows_the_next_request_down() {
    let stub = Stub::start(|_, _| {
        Reply::json(200, json!({"id": "user_1"}))
            .header("ratelimit", "limit=5, remaining=0, reset=0.3")
    })
    .await;
    let client = stub.client();
    let key = ApiKey::new("api_k");
    client.me(&key).await.expect("first");
    client.me(&key).await.expect("second");
    let hits = stub.hits();
    assert!(hits[1].at.duration_since(hits[0].at) >= Duration::from_millis(300));
}

#[tokio::test]
async fn unauthorized_is_a_configuration_error_and_not_retried() {
    let stub = Stub::start(|_, _| {
        Reply::json(
            401,
            json!({"error": "The server could not verify that you are authorized"}),
        )
    })
    .await;
    let err = stub
        .client()
        .me(&ApiKey::new("api_bad"))
        .await
        .expect_err("401");
    assert!(matches!(err, CloseError::Unauthorized));
    assert_eq!(err.class(), ErrorClass::Configuration);
    assert_eq!(stub.hits().len(), 1);
}

#[tokio::test]
async fn bad_request_field_errors_are_readable() {
    let stub = Stub::start(|_, _| {
        Reply::json(
            400,
            json!({"errors": [], "field-errors": {"contacts": {"errors": {"0": {"errors": [], "field-errors": {
                "phones": {"errors": {"0": {"errors": [], "field-errors": {"phone": "Invalid phone number."}}}}
            }}}}}}),
        )
    })
    .await;
    let err = stub
        .client()
        .create_lead(&ApiKey::new("api_k"), &obj(json!({"name": "Acme"})))
        .await
        .expect_err("400");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.is_ambiguous_write());
    assert!(
        err.to_string()
            .contains("contacts[0].phones[0].phone: Invalid phone number."),
        "{err}"
    );
}

#[tokio::test]
async fn post_is_not_retried_on_503() {
    let stub = Stub::start(|_, _| Reply::json(503, json!({"error": "unavailable"}))).await;
    let err = stub
        .client()
        .create_lead(&ApiKey::new("api_k"), &obj(json!({"name": "Acme"})))
        .await
        .expect_err("503");
    assert!(matches!(err, CloseError::Server { status: 503, .. }));
    assert!(err.is_ambiguous_write());
    assert_eq!(err.class(), ErrorClass::Retryable { after: None });
    let hits = stub.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, "/api/v1/lead/");
    assert_eq!(hits[0].body, json!({"name": "Acme"}));
}

#[tokio::test]
async fn get_is_retried_on_503_a_bounded_number_of_times() {
    let stub = Stub::start(|hit, n| {
        if hit.path.ends_with("/lead_ok/") && n >= 2 {
            Reply::json(200, json!({"id": "lead_ok"}))
        } else {
            Reply::json(503, json!({}))
        }
    })
    .await;
    let client = stub.client();
    let key = ApiKey::new("api_k");
    let lead = client
        .get_lead(&key, "lead_ok")
        .await
        .expect("third attempt");
    assert_eq!(lead["id"], json!("lead_ok"));
    let err = client
        .get_lead(&key, "lead_down")
        .await
        .expect_err("always 503");
    assert!(matches!(err, CloseError::Server { status: 503, .. }));
    let hits = stub.hits();
    assert_eq!(
        hits.iter()
            .filter(|h| h.path.ends_with("/lead_ok/"))
            .count(),
        3
    );
    assert_eq!(
        hits.iter()
            .filter(|h| h.path.ends_with("/lead_down/"))
            .count(),
        3
    );
}

fn page_of(hit: &Hit, total: usize, page: usize, item: impl Fn(usize) -> Value) -> Reply {
    let skip: usize = url::form_urlencoded::parse(hit.query.as_bytes())
        .find(|(k, _)| k == "_skip")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let end = (skip + page).min(total);
    let data: Vec<Value> = (skip..end).map(item).collect();
    Reply::json(200, json!({"data": data, "has_more": end < total}))
}

#[tokio::test]
async fn statuses_and_custom_fields_are_paginated() {
    let stub = Stub::start(|hit, _| {
        if hit.path.ends_with("/status/lead/") {
            page_of(
                hit,
                5,
                2,
                |i| json!({"id": format!("stat_{i}"), "label": format!("S{i}")}),
            )
        } else {
            page_of(
                hit,
                3,
                2,
                |i| json!({"id": format!("cf_{i}"), "name": format!("F{i}"), "type": "text"}),
            )
        }
    })
    .await;
    let client = stub.client();
    let key = ApiKey::new("api_k");
    let statuses = client.lead_statuses(&key).await.expect("statuses");
    assert_eq!(
        statuses.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["stat_0", "stat_1", "stat_2", "stat_3", "stat_4"]
    );
    let fields = client
        .custom_fields(&key, CustomFieldObject::Contact)
        .await
        .expect("fields");
    assert_eq!(fields.len(), 3);
    assert_eq!(fields[2].field_type, "text");
    let hits = stub.hits();
    let status_queries: Vec<&str> = hits
        .iter()
        .filter(|h| h.path == "/api/v1/status/lead/")
        .map(|h| h.query.as_str())
        .collect();
    assert_eq!(
        status_queries,
        vec![
            "_skip=0&_limit=100",
            "_skip=2&_limit=100",
            "_skip=4&_limit=100"
        ]
    );
    assert!(hits
        .iter()
        .any(|h| h.path == "/api/v1/custom_field/contact/"));
}

#[tokio::test]
async fn undecodable_success_body_is_a_decode_error() {
    let stub = Stub::start(|_, _| Reply {
        status: 200,
        headers: Vec::new(),
        body: "<html>".into(),
    })
    .await;
    let err = stub
        .client()
        .me(&ApiKey::new("api_k"))
        .await
        .expect_err("decode");
    assert!(matches!(err, CloseError::Decode(_)));
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn connection_refused_is_retryable_and_not_ambiguous() {
    // Bind then drop a listener to get a port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let client = client_for(&format!("http://{addr}/api/v1"));
    let err = client
        .create_lead(&ApiKey::new("api_k"), &obj(json!({"name": "x"})))
        .await
        .expect_err("refused");
    assert!(matches!(err, CloseError::Connect(_)), "{err:?}");
    assert!(!err.is_ambiguous_write());
    assert_eq!(err.class(), ErrorClass::Retryable { after: None });
}

// ---------------------------------------------------------------------------------------------
// Against the Close simulator.

async fn sim() -> sandbox::close::CloseSim {
    sandbox::close::CloseSim::start(
        "127.0.0.1:0".parse().expect("addr"),
        sandbox::close::CloseConfig::default(),
    )
    .await
    .expect("close sim")
}

#[tokio::test]
async fn simulator_leads_contacts_and_lookup() {
    let sim = sim().await;
    let client = client_for(&sim.base_url());
    let key = ApiKey::new(sandbox::close::DEFAULT_API_KEY);

    let me = client.me(&key).await.expect("me");
    assert!(me.get("id").is_some());
    let statuses = client.lead_statuses(&key).await.expect("statuses");
    assert!(!statuses.is_empty());

    // A custom field holding our external id.
    let http = reqwest::Client::new();
    let field: Value = http
        .post(format!("{}/custom_field/lead/", sim.base_url()))
        .basic_auth(sandbox::close::DEFAULT_API_KEY, Some(""))
        .json(&json!({"name": "Hull ID", "type": "text"}))
        .send()
        .await
        .expect("create field")
        .json()
        .await
        .expect("field json");
    let field_id = field["id"].as_str().expect("field id").to_owned();
    let fields = client
        .custom_fields(&key, CustomFieldObject::Lead)
        .await
        .expect("fields");
    assert!(fields
        .iter()
        .any(|f| f.id == field_id && f.field_type == "text"));

    let mut body = obj(json!({"name": "Acme", "url": "https://acme.com"}));
    body.insert(format!("custom.{field_id}"), json!("hull-acc-1"));
    let lead = client.create_lead(&key, &body).await.expect("create lead");
    let lead_id = lead["id"].as_str().expect("lead id").to_owned();
    client
        .create_lead(
            &key,
            &obj(json!({"name": "Other", "url": "https://other.com"})),
        )
        .await
        .expect("other lead");

    let by_url = client
        .find_leads(&key, "url", &json!("https://acme.com"))
        .await
        .expect("find by url");
    assert_eq!(by_url.len(), 1);
    assert_eq!(by_url[0]["id"], json!(lead_id));
    assert_eq!(by_url[0]["name"], json!("Acme"));
    let by_custom = client
        .find_leads(&key, &format!("custom.{field_id}"), &json!("hull-acc-1"))
        .await
        .expect("find by custom field");
    assert_eq!(by_custom.len(), 1);
    assert!(client
        .find_leads(&key, "url", &json!("https://nobody.com"))
        .await
        .expect("find none")
        .is_empty());

    let updated = client
        .update_lead(&key, &lead_id, &obj(json!({"description": "updated"})))
        .await
        .expect("update");
    assert_eq!(updated["description"], json!("updated"));

    let contact = client
        .create_contact(
            &key,
            &obj(json!({"lead_id": lead_id, "name": "Gob", "emails": [{"email": "gob@acme.com", "type": "office"}]})),
        )
        .await
        .expect("contact");
    let contact_id = contact["id"].as_str().expect("contact id").to_owned();
    let contacts = client
        .list_contacts(&key, &lead_id)
        .await
        .expect("contacts");
    assert_eq!(contacts.len(), 1);
    client
        .update_contact(&key, &contact_id, &obj(json!({"title": "VP"})))
        .await
        .expect("update contact");
    assert_eq!(
        client
            .get_contact(&key, &contact_id)
            .await
            .expect("get contact")["title"],
        json!("VP")
    );
    client
        .delete_contact(&key, &contact_id)
        .await
        .expect("delete contact");

    let since = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    let page = client
        .search_leads_updated(&key, since, None, None, 1)
        .await
        .expect("search page 1");
    assert_eq!(page.data.len(), 1);
    let cursor = page.cursor.clone().expect("more pages");
    let page2 = client
        .search_leads_updated(&key, since, None, Some(cursor), 1)
        .await
        .expect("search page 2");
    assert_eq!(page2.data.len(), 1);
    assert_ne!(page.data[0]["id"], page2.data[0]["id"]);

    let events = client
        .events(
            &key,
            EventQuery {
                object_type: Some("lead".into()),
                action: Some("created".into()),
                ..EventQuery::default()
            },
        )
        .await
        .expect("events");
    assert!(events.data.len() >= 2);

    client.delete_lead(&key, &lead_id).await.expect("delete");
    let err = client.get_lead(&key, &lead_id).await.expect_err("gone");
    assert!(matches!(err, CloseError::NotFound { .. }), "{err:?}");

    let err = client
        .me(&ApiKey::new("api_wrong"))
        .await
        .expect_err("unknown key");
    assert!(matches!(err, CloseError::Unauthorized));
}

#[tokio::test]
async fn simulator_webhooks() {
    let sim = sim().await;
    let client = client_for(&sim.base_url());
    let key = ApiKey::new(sandbox::close::DEFAULT_API_KEY);
    let sub = client
        .create_webhook(
            &key,
            "http://127.0.0.1:9/hook",
            &[("lead", "updated"), ("contact", "created")],
        )
        .await
        .expect("create webhook");
    assert!(sub.id.starts_with("whsub_"));
    assert_eq!(sub.signature_key.as_deref().map(str::len), Some(64));
    assert_eq!(sub.events.len(), 2);
    let listed = client.list_webhooks(&key).await.expect("list");
    assert!(listed.iter().any(|s| s.id == sub.id));
    let paused = client
        .update_webhook(&key, &sub.id, &obj(json!({"status": "paused"})))
        .await
        .expect("pause");
    assert_eq!(paused.status.as_deref(), Some("paused"));
    assert_eq!(
        client.get_webhook(&key, &sub.id).await.expect("get").url,
        "http://127.0.0.1:9/hook"
    );
    client.delete_webhook(&key, &sub.id).await.expect("delete");
    assert!(matches!(
        client.get_webhook(&key, &sub.id).await,
        Err(CloseError::NotFound { .. })
    ));
}

#[tokio::test]
async fn simulator_rate_limit_is_honoured_without_failures() {
    let sim = sandbox::close::CloseSim::start(
        "127.0.0.1:0".parse().expect("addr"),
        sandbox::close::CloseConfig {
            rate_limit_rps: Some(4.0),
            rate_window_secs: 0.5,
            ..sandbox::close::CloseConfig::default()
        },
    )
    .await
    .expect("close sim");
    let client = client_for(&sim.base_url());
    let key = ApiKey::new(sandbox::close::DEFAULT_API_KEY);
    let calls = (0..8).map(|_| {
        let client = client.clone();
        let key = key.clone();
        tokio::spawn(async move { client.me(&key).await })
    });
    for call in calls {
        call.await.expect("join").expect("me under the rate limit");
    }
    let ok = sim.requests().iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 8);
}
