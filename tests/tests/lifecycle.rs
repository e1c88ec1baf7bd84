//! What becomes of a job that cannot simply succeed: parking (its reason, its race with a
//! settings fix), the failure columns of the sync state, unreadable messages, and the broker's
//! own dead letters. Each test failed before the fix it pins.

use harness::{EnvOptions, TestEnv, CONNECTOR_ID, SYNC_SEGMENT};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Value};

use common::jobs::{Envelope, Job, OutgoingMessage, QueueKind};
use common::queue::Queue;
use common::store::Parking;

fn account_job(id: &str, domain: &str) -> Envelope {
    Envelope::new(
        CONNECTOR_ID.to_string(),
        Job::OutgoingAccount(OutgoingMessage {
            notification_id: "n".into(),
            is_export: false,
            message: json!({"account": {"id": id, "domain": domain, "name": domain},
                            "account_segments": [{"id": SYNC_SEGMENT}], "changes": {}}),
        }),
    )
}

/// Publishes raw bytes to one of this test's queues, as another producer (or the broker) would.
async fn publish_raw(env: &TestEnv, queue: &str, payload: &[u8], headers: FieldTable) {
    let conn =
        lapin::Connection::connect(&harness::amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        payload,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let _ = conn.close(200, "done".into()).await;
    let _ = env;
}

/// The dead letters recorded for jobs that could not be read.
async fn unreadable_dead_letters(env: &TestEnv) -> Vec<common::store::DeadLetter> {
    env.store()
        .expect("store")
        .dead_letters(None, Some("unreadable"), None, false, 10)
        .await
        .expect("dlq")
}

#[tokio::test]
async fn a_parked_connector_keeps_its_first_reason_and_failures_are_recorded() {
    let mut settings = harness::default_settings();
    settings["api_key"] = json!("api_revoked_key");
    let env = TestEnv::start(EnvOptions {
        settings,
        accounts: (0..3)
            .map(|i| json!({"domain": format!("d{i}.example.com"), "name": "D", "segment_ids": [SYNC_SEGMENT]}))
            .collect(),
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            env.hull
                .find_account("domain", &format!("d{i}.example.com"))
                .expect("account")
                .id
        })
        .collect();
    // One at a time: the first job parks the connector, the next ones find it parked.
    for id in &ids {
        env.hull
            .notify(CONNECTOR_ID, "account:update", std::slice::from_ref(id))
            .await
            .expect("notify");
        env.drain().await.expect("drain");
    }
    let store = env.store().expect("store");
    let c = store
        .connector(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("connector");
    let reason = c.parked_reason.expect("parked");
    assert!(
        !reason.contains("connector is parked"),
        "the reason must not nest: {reason}"
    );
    assert!(
        reason.contains("401") || reason.to_lowercase().contains("unauthorized"),
        "{reason}"
    );
    let retries = store.retries(None, 10).await.expect("retries");
    assert_eq!(retries.len(), 3);
    assert!(retries.iter().all(|r| r.state == "parked"), "{retries:?}");
    // The failure columns of the sync state say what happened to each account.
    let client = store.pool().get().await.expect("conn");
    let rows = client
        .query("SELECT failures, last_error FROM sync_state WHERE connector_id = $1 AND kind = 'account'", &[&CONNECTOR_ID])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r.get::<_, i32>(0), 1);
        assert!(r.get::<_, Option<String>>(1).is_some_and(|e| !e.is_empty()));
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_settings_fix_that_races_a_failing_job_leaves_the_connector_unparked() {
    let env = TestEnv::start(EnvOptions::default()).await.expect("env");
    let store = env.store().expect("store");
    let org = env.hull.organization();
    let mut bad = harness::default_settings();
    bad["api_key"] = json!("api_revoked_key");
    store
        .upsert_connector(CONNECTOR_ID, &org, harness::CONNECTOR_SECRET, &bad)
        .await
        .expect("record");
    // The job reads the settings (version `seen`) and fails with them ...
    let seen = store
        .connector(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("c")
        .settings_version;
    // ... the operator fixes the key meanwhile ...
    store
        .upsert_connector(
            CONNECTOR_ID,
            &org,
            harness::CONNECTOR_SECRET,
            &harness::default_settings(),
        )
        .await
        .expect("fix");
    // ... then the job's failure is recorded: it must not park the fixed connector.
    let job = account_job("a1", "acme.com");
    assert_eq!(
        store
            .park(&job, "Close rejected the key", Some(seen))
            .await
            .expect("park"),
        Parking::Rescheduled
    );
    let c = store.connector(CONNECTOR_ID).await.expect("db").expect("c");
    assert!(c.parked_reason.is_none(), "{:?}", c.parked_reason);
    let retries = store.retries(None, 10).await.expect("retries");
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].state, "scheduled");
    // Without a fix in between, the same failure parks it.
    let current = c.settings_version;
    let other = account_job("a2", "beta.com");
    assert_eq!(
        store
            .park(&other, "Close rejected the key", Some(current))
            .await
            .expect("park"),
        Parking::Parked
    );
    assert_eq!(
        store
            .connector(CONNECTOR_ID)
            .await
            .expect("db")
            .expect("c")
            .parked_reason
            .as_deref(),
        Some("Close rejected the key")
    );
    env.cleanup().await;
}

#[tokio::test]
async fn an_unreadable_job_is_recorded_as_a_dead_letter() {
    let env = TestEnv::start(EnvOptions::default()).await.expect("env");
    let q = Queue::lazy(&harness::amqp_url(), &env.prefix);
    let outgoing = q.topology().queue(QueueKind::Outgoing);
    publish_raw(
        &env,
        &outgoing,
        br#"{"connector_id":"5c092905c36af496c700012e","job":{"type":"from_the_future"}}"#,
        FieldTable::default(),
    )
    .await;
    assert_eq!(env.drain().await.expect("drain"), 1);
    assert_eq!(env.depth(QueueKind::Outgoing).await.expect("depth"), 0);
    let dead = unreadable_dead_letters(&env).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].connector_id, CONNECTOR_ID);
    assert!(dead[0].envelope["raw"]
        .as_str()
        .unwrap_or_default()
        .contains("from_the_future"));
    // "Replay all" leaves it in place instead of failing on it.
    let admin = admin::Admin::new(env.store().expect("store"), q);
    assert_eq!(
        admin
            .replay(admin::ReplayTarget::All { connector: None })
            .await
            .expect("replay"),
        0
    );
    env.cleanup().await;
}

/// Records the test's connector with its default settings, as its first notification would.
async fn record_connector(env: &TestEnv) {
    env.store()
        .expect("store")
        .upsert_connector(
            CONNECTOR_ID,
            &env.hull.organization(),
            harness::CONNECTOR_SECRET,
            &harness::default_settings(),
        )
        .await
        .expect("record");
}

#[tokio::test]
async fn an_unreadable_job_in_a_bundle_is_a_dead_letter_and_the_others_run() {
    let env = TestEnv::start(EnvOptions::default()).await.expect("env");
    record_connector(&env).await;
    let q = Queue::lazy(&harness::amqp_url(), &env.prefix);
    let outgoing = q.topology().queue(QueueKind::Outgoing);
    let (a, b) = (account_job("a1", "acme.com"), account_job("a2", "beta.com"));
    let bundle = format!(
        r#"[{},{{"connector_id":"{CONNECTOR_ID}","job":{{"type":"from_the_future"}}}},{}]"#,
        String::from_utf8(a.to_bytes()).expect("utf-8"),
        String::from_utf8(b.to_bytes()).expect("utf-8"),
    );
    publish_raw(&env, &outgoing, bundle.as_bytes(), FieldTable::default()).await;
    // An empty bundle (no producer of ours sends one) holds nothing and is acknowledged.
    publish_raw(&env, &outgoing, b"[]", FieldTable::default()).await;
    assert_eq!(env.drain().await.expect("drain"), 3);
    assert_eq!(env.depth(QueueKind::Outgoing).await.expect("depth"), 0);
    let mut names: Vec<String> = env
        .close
        .leads()
        .iter()
        .filter_map(|l| l["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(names, ["acme.com", "beta.com"], "both readable jobs ran");
    let dead = unreadable_dead_letters(&env).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].envelope["raw"]
        .as_str()
        .unwrap_or_default()
        .contains("from_the_future"));
    env.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_bundle_is_split_into_messages_of_one_job() {
    let env = TestEnv::start(EnvOptions::default()).await.expect("env");
    record_connector(&env).await;
    let q = Queue::lazy(&harness::amqp_url(), &env.prefix);
    let jobs = [account_job("a1", "acme.com"), account_job("a2", "beta.com")];
    q.publish_all(&jobs).await.expect("publish");
    assert_eq!(
        env.depth(QueueKind::Outgoing).await.expect("depth"),
        1,
        "the two jobs travel in one message"
    );
    // A worker takes the bundle and dies before acknowledging it: the broker redelivers it.
    let conn = q.open_connection().await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let taken = q
        .get(&ch, QueueKind::Outgoing)
        .await
        .expect("get")
        .expect("the bundle");
    assert!(!taken.redelivered);
    let _ = conn.close(200, "a worker died".into()).await;
    // The bundle is split (its two jobs counted once for the split, once when each runs on
    // its own), and each job syncs its account once.
    assert_eq!(env.drain().await.expect("drain"), 4);
    assert_eq!(env.depth(QueueKind::Outgoing).await.expect("depth"), 0);
    assert_eq!(env.close.leads().len(), 2);
    env.cleanup().await;
}

#[tokio::test]
async fn the_brokers_dead_letters_are_imported_with_their_queued_retry_rows() {
    let env = TestEnv::start(EnvOptions {
        vars: vec![("BROKER_DEAD_LETTER_IMPORT_SECS".into(), "0".into())],
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    record_connector(&env).await;
    let store = env.store().expect("store");
    // A retry the scheduler republished (its row is `queued`), which then crashed workers until
    // the queue's delivery limit sent it to the dead-letter queue.
    let job = account_job("a1", "acme.com");
    store
        .schedule_retry(&job, "timeout", chrono::Utc::now(), false)
        .await
        .expect("retry");
    let c = store.pool().get().await.expect("conn");
    c.execute(
        "UPDATE retries SET state = 'queued' WHERE id = $1",
        &[&job.id],
    )
    .await
    .expect("queued");
    let q = Queue::lazy(&harness::amqp_url(), &env.prefix);
    let mut headers = FieldTable::default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(10));
    publish_raw(&env, &q.topology().dead_queue(), &job.to_bytes(), headers).await;
    let report = env.scheduler().expect("scheduler").tick().await;
    assert_eq!(report.broker_dead_letters_imported, 1);
    let dead = store
        .dead_letters(Some(CONNECTOR_ID), None, None, false, 10)
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope["id"], Value::String(job.id.to_string()));
    assert!(
        store.retries(None, 10).await.expect("retries").is_empty(),
        "the queued row went with it"
    );
    env.cleanup().await;
}
