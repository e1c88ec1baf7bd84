//! Notifications: signatures, message shapes, flow control, exports and the /batch flow.

mod hull_support;

use hull_support::*;
use sandbox::hull::{GenerateSpec, HullConfig, HullSim};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn sim_with_receiver(cfg: HullConfig, answers: Vec<(u16, Value)>) -> (HullSim, Receiver) {
    let sim = start(cfg).await;
    let receiver = Receiver::start(answers).await;
    sim.set_connector_url(CONNECTOR_ID, &receiver.url);
    (sim, receiver)
}

fn seeded() -> HullConfig {
    let mut cfg = config();
    cfg.accounts = vec![
        json!({"domain": "bluth.com", "name": "Bluth Company", "closeio/id": "lead_1", "segment_ids": ["5c0000000000000000000201"]}),
    ];
    cfg.users = vec![
        json!({"email": "gob@bluth.com", "name": "Gob", "closeio/title": "Magician", "coconut": "23",
                            "account_domain": "bluth.com", "segment_ids": ["5c0000000000000000000101"]}),
    ];
    cfg
}

#[tokio::test]
async fn notification_is_signed_and_shaped_like_hull() {
    let (sim, receiver) = sim_with_receiver(seeded(), vec![]).await;
    let user = sim.find_user("email", "gob@bluth.com").expect("user");
    let account = sim.find_account("domain", "bluth.com").expect("account");
    let report = sim
        .notify(CONNECTOR_ID, "user:update", std::slice::from_ref(&user.id))
        .await
        .expect("notify");
    assert_eq!(
        (report.http_calls, report.messages_delivered, report.failed),
        (1, 1, false)
    );
    assert_eq!(report.statuses, vec![200]);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].signature_ok, Ok(()));
    let body = &got[0].body;
    assert_eq!(body["channel"], "user:update");
    assert_eq!(
        body["configuration"],
        json!({"id": CONNECTOR_ID, "organization": sim.organization(), "secret": SECRET})
    );
    assert_eq!(
        body["connector"]["private_settings"],
        json!({"api_key": "key"})
    );
    assert_eq!(body["is_export"], false);
    assert_eq!(body["kraken"]["retries"], 0);
    assert_eq!(body["segments"].as_array().expect("segments").len(), 2);
    assert_eq!(
        body["accounts_segments"]
            .as_array()
            .expect("segments")
            .len(),
        2
    );
    let m = &body["messages"][0];
    assert!(m["message_id"].is_string());
    assert_eq!(m["user"]["id"], user.id);
    assert_eq!(m["user"]["email"], "gob@bluth.com");
    assert_eq!(m["user"]["traits_closeio/title"], "Magician");
    assert_eq!(m["user"]["traits_coconut"], "23");
    assert_eq!(m["user"]["domain"], "bluth.com");
    assert_eq!(m["account"]["id"], account.id);
    assert_eq!(m["account"]["closeio/id"], "lead_1");
    assert_eq!(m["segments"][0]["name"], "Active users");
    assert_eq!(m["account_segments"][0]["name"], "Target accounts");
    assert_eq!(m["changes"]["is_new"], true);
    assert_eq!(
        m["changes"]["user"]["traits_closeio/title"],
        json!([null, "Magician"])
    );
    assert_eq!(
        m["changes"]["segments"]["entered"][0]["id"],
        "5c0000000000000000000101"
    );
    assert_eq!(m["events"], json!([]));

    // The key endpoint answers GET too, with the same PEM.
    let pem = reqwest::get(sim.public_key_url())
        .await
        .expect("key")
        .text()
        .await
        .expect("pem");
    assert_eq!(pem, sim.public_key_pem());

    // Delivered changes are cleared; a later change shows as [old, new], segments left.
    sim.upsert_user(json!({"id": user.id, "closeio/title": "CEO"}));
    sim.set_user_segments(&user.id, &[]);
    sim.notify(CONNECTOR_ID, "user:update", std::slice::from_ref(&user.id))
        .await
        .expect("notify");
    let m = &receiver.received()[1].body["messages"][0];
    assert_eq!(m["changes"]["is_new"], false);
    assert_eq!(
        m["changes"]["user"],
        json!({"traits_closeio/title": ["Magician", "CEO"]})
    );
    assert_eq!(
        m["changes"]["segments"]["left"][0]["id"],
        "5c0000000000000000000101"
    );
    assert_eq!(sim.notification_log().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn account_update_and_notify_changed() {
    let (sim, receiver) = sim_with_receiver(seeded(), vec![]).await;
    let report = sim.notify_changed(CONNECTOR_ID).await.expect("notify");
    assert_eq!((report.http_calls, report.messages_delivered), (2, 2));
    let got = receiver.received();
    assert_eq!(got[0].body["channel"], "account:update");
    let m = &got[0].body["messages"][0];
    assert_eq!(m["account"]["domain"], "bluth.com");
    assert_eq!(m["account"]["closeio/id"], "lead_1");
    assert!(m["account"].get("traits_closeio/id").is_none());
    assert_eq!(
        m["changes"]["account"]["name"],
        json!([null, "Bluth Company"])
    );
    assert_eq!(got[1].body["channel"], "user:update");
    // Nothing changed since: no calls.
    let again = sim.notify_changed(CONNECTOR_ID).await.expect("notify");
    assert_eq!(again.http_calls, 0);
    // A firehose write marks the account changed with Hull's change format.
    firehose(
        &sim,
        vec![entry(
            "traits",
            account_claims(json!({"domain": "bluth.com"})),
            json!({"closeio/name": "Bluth Co"}),
        )],
    )
    .await;
    let report = sim.notify_changed(CONNECTOR_ID).await.expect("notify");
    assert_eq!(report.messages_delivered, 1);
    let last = receiver.received().pop().expect("last");
    assert_eq!(
        last.body["messages"][0]["changes"]["account"],
        json!({"closeio/name": [null, "Bluth Co"]})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn flow_control_next_size_splits_batches() {
    let cfg = HullConfig {
        generate: Some(GenerateSpec {
            seed: 7,
            n_accounts: 7,
            users_per_account: 0,
            segment_probability: 0.5,
        }),
        ..config()
    };
    let next = |size: u64| {
        (
            200,
            json!({"flow_control": {"type": "next", "size": size, "in": 1}}),
        )
    };
    let (sim, receiver) = sim_with_receiver(cfg, vec![next(2), next(3), next(3)]).await;
    let ids: Vec<String> = sim.accounts().into_iter().map(|a| a.id).collect();
    let report = sim
        .notify(CONNECTOR_ID, "account:update", &ids)
        .await
        .expect("notify");
    let sizes: Vec<usize> = receiver
        .received()
        .iter()
        .map(|r| r.body["messages"].as_array().expect("m").len())
        .collect();
    assert_eq!(sizes, vec![7], "first call uses the default size 50");
    assert_eq!(report.messages_delivered, 7);
    // The connector asked for 2: the next run starts with 2, then follows 3.
    let report = sim
        .notify(CONNECTOR_ID, "account:update", &ids)
        .await
        .expect("notify");
    let sizes: Vec<usize> = receiver.received()[1..]
        .iter()
        .map(|r| r.body["messages"].as_array().expect("m").len())
        .collect();
    assert_eq!(sizes, vec![2, 3, 2]);
    assert_eq!(
        (report.http_calls, report.messages_delivered, report.retries),
        (3, 7, 0)
    );
    assert_eq!(report.final_flow_control.expect("fc")["type"], "next");
    let delivered: Vec<Value> = receiver.received()[1..]
        .iter()
        .flat_map(|r| r.body["messages"].as_array().expect("m").clone())
        .map(|m| m["account"]["id"].clone())
        .collect();
    assert_eq!(delivered, ids.iter().map(|i| json!(i)).collect::<Vec<_>>());
    sim.shutdown().await;
}

#[tokio::test]
async fn retry_and_errors_redeliver_the_same_batch() {
    let answers = vec![
        (200, json!({"flow_control": {"type": "retry", "in": 5}})),
        (
            500,
            json!({"flow_control": {"type": "retry", "in": 5}, "error": "boom"}),
        ),
        (503, json!("unavailable")),
    ];
    let (sim, receiver) = sim_with_receiver(seeded(), answers).await;
    let account = sim.find_account("domain", "bluth.com").expect("account").id;
    let report = sim
        .notify(
            CONNECTOR_ID,
            "account:update",
            std::slice::from_ref(&account),
        )
        .await
        .expect("notify");
    assert_eq!(report.statuses, vec![200, 500, 503, 200]);
    assert_eq!(
        (report.retries, report.messages_delivered, report.failed),
        (3, 1, false)
    );
    let got = receiver.received();
    let ids: Vec<&Value> = got.iter().map(|r| &r.body["notification_id"]).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "same batch re-delivered"
    );
    let retries: Vec<u64> = got
        .iter()
        .map(|r| r.body["kraken"]["retries"].as_u64().expect("n"))
        .collect();
    assert_eq!(retries, vec![0, 1, 2, 3]);
    assert!(got.iter().all(|r| r.signature_ok.is_ok()));
    let log = sim.notification_log();
    assert_eq!(log.len(), 4);
    assert_eq!(log[1].status, Some(500));
    assert_eq!(log[1].response["error"], "boom");
    sim.shutdown().await;
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let always_500 = (500, json!({"flow_control": {"type": "retry", "in": 1}}));
    let sim = start(seeded()).await;
    let receiver = Receiver::start_scripted(vec![], always_500).await;
    sim.set_connector_url(CONNECTOR_ID, &receiver.url);
    let account = sim.accounts()[0].id.clone();
    let report = sim
        .notify(CONNECTOR_ID, "account:update", &[account])
        .await
        .expect("report");
    assert!(report.failed);
    assert!(report.error.is_some());
    assert_eq!(
        (report.http_calls, report.retries, report.messages_delivered),
        (11, 11, 0)
    );
    assert_eq!(receiver.received().len(), 11);
    sim.shutdown().await;
}

/// A connector whose first connection is dropped without an answer, then answers 200.
async fn flaky_connector() -> String {
    let listener = tokio::net::TcpListener::bind(local()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                if request_complete(&request) {
                    break;
                }
            }
            if std::mem::take(&mut first) {
                continue; // dropping the connection is a transport error for the sender
            }
            let body = r#"{"flow_control":{"type":"next","size":10,"in":1}}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

/// True once the headers and `content-length` bytes of body have arrived.
fn request_complete(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    body.len() >= length
}

#[tokio::test]
async fn transport_error_redelivers_the_batch() {
    let sim = start(seeded()).await;
    sim.set_connector_url(CONNECTOR_ID, &flaky_connector().await);
    let account = sim.accounts()[0].id.clone();
    let report = sim
        .notify(CONNECTOR_ID, "account:update", &[account])
        .await
        .expect("report");
    assert_eq!(report.statuses, vec![0, 200]);
    assert_eq!(
        (report.retries, report.messages_delivered, report.failed),
        (1, 1, false)
    );
    let log = sim.notification_log();
    assert!(log[0].status.is_none() && log[0].error.is_some());
    assert_eq!(log[0].notification_id, log[1].notification_id);
    sim.shutdown().await;
}

#[tokio::test]
async fn export_notifications() {
    let (sim, receiver) = sim_with_receiver(seeded(), vec![]).await;
    let user = sim.users()[0].id.clone();
    let report = sim
        .notify_export(CONNECTOR_ID, "user:update", std::slice::from_ref(&user))
        .await
        .expect("export");
    assert_eq!(report.messages_delivered, 1);
    let body = &receiver.received()[0].body;
    assert_eq!(body["is_export"], true);
    let m = &body["messages"][0];
    assert!(m.get("changes").is_none() && m.get("events").is_none());
    assert!(m["update_id"].is_string());
    assert_eq!(m["user"]["id"], user);
    // Exports do not clear pending changes.
    let report = sim.notify_changed(CONNECTOR_ID).await.expect("notify");
    assert_eq!(report.messages_delivered, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_extract_is_served_as_ndjson() {
    let (sim, receiver) = sim_with_receiver(seeded(), vec![]).await;
    let status = sim
        .send_batch(CONNECTOR_ID, "user_report", &[])
        .await
        .expect("batch");
    assert_eq!(status, 200);
    let (query, body) = receiver.batches.lock()[0].clone();
    assert!(query.contains(&format!("ship={CONNECTOR_ID}")));
    assert!(query.contains(&format!("secret={SECRET}")));
    assert!(query.contains("organization=127.0.0.1"));
    assert_eq!(body["format"], "json");
    assert_eq!(body["object_type"], "user_report");
    assert_eq!(body["channel"], "user:extract");
    let url = body["url"].as_str().expect("url");
    let get = reqwest::get(url)
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let post = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("text");
    assert_eq!(get, post);
    let lines: Vec<Value> = get
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["email"], "gob@bluth.com");
    assert_eq!(lines[0]["traits_closeio/title"], "Magician");
    assert_eq!(lines[0]["account"]["domain"], "bluth.com");
    assert_eq!(lines[0]["segment_ids"], json!(["5c0000000000000000000101"]));

    // Accounts, through the control API.
    let report: Value = reqwest::Client::new()
        .post(format!("{}/_sandbox/batch", sim.base_url()))
        .json(&json!({"connector_id": CONNECTOR_ID, "object_type": "account_report", "ids": []}))
        .send()
        .await
        .expect("batch")
        .json()
        .await
        .expect("json");
    assert_eq!(report["status"], 200);
    let (_, body) = receiver.batches.lock()[1].clone();
    let text = reqwest::get(body["url"].as_str().expect("url"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let account: Value = serde_json::from_str(text.trim()).expect("line");
    assert_eq!(account["segment_ids"], json!(["5c0000000000000000000201"]));
    assert_eq!(sim.notification_log().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn control_api_notify() {
    let (sim, receiver) = sim_with_receiver(seeded(), vec![]).await;
    let client = reqwest::Client::new();
    let id: Value = client
        .post(format!("{}/_sandbox/accounts", sim.base_url()))
        .json(&json!({"domain": "new.com", "name": "New"}))
        .send()
        .await
        .expect("upsert")
        .json()
        .await
        .expect("json");
    let report: Value = client
        .post(format!("{}/_sandbox/notify", sim.base_url()))
        .json(
            &json!({"connector_id": CONNECTOR_ID, "channel": "account:update", "ids": [id["id"]]}),
        )
        .send()
        .await
        .expect("notify")
        .json()
        .await
        .expect("json");
    assert_eq!(report["messages_delivered"], 1);
    assert_eq!(
        receiver.received()[0].body["messages"][0]["account"]["domain"],
        "new.com"
    );
    let report: Value = client
        .post(format!("{}/_sandbox/notify-changed", sim.base_url()))
        .json(&json!({"connector_id": CONNECTOR_ID}))
        .send()
        .await
        .expect("notify")
        .json()
        .await
        .expect("json");
    assert_eq!(report["messages_delivered"], 2);
    let log: Value = reqwest::get(format!("{}/_sandbox/notifications", sim.base_url()))
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    assert_eq!(log.as_array().expect("log").len(), 3);
    // Bad requests
    let bad = client
        .post(format!("{}/_sandbox/notify", sim.base_url()))
        .json(&json!({"connector_id": CONNECTOR_ID, "channel": "nope", "ids": []}))
        .send()
        .await
        .expect("notify");
    assert_eq!(bad.status(), 400);
    let unknown = client
        .post(format!("{}/_sandbox/notify", sim.base_url()))
        .json(&json!({"connector_id": CONNECTOR_ID, "channel": "user:update", "ids": ["ffffffffffffffffffffffff"]}))
        .send()
        .await
        .expect("notify");
    assert_eq!(unknown.status(), 404);
    sim.shutdown().await;
}
