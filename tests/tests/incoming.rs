//! End-to-end tests of the incoming sync (Close → Hull) over real Postgres, RabbitMQ and the
//! simulators: the scheduler starts fetch runs, workers read the Close simulator and write to
//! the Hull simulator's firehose, Close webhooks are delivered to the in-process ingest.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Map, Value};

use common::closeio::{ApiKey, CloseClient, CloseClientConfig, CustomFieldObject};
use common::jobs::QueueKind;
use common::mapping::{self, CloseMetadata, Settings};
use common::store::{FetchKind, FetchRunState, IncomingProgress, Store};
use harness::sandbox::close::{CloseConfig, Seed};
use harness::sandbox::hull::FirehoseFault;
use harness::{default_settings, EnvOptions, TestEnv, API_KEY, CONNECTOR_ID};

/// Starts an environment whose Close organization holds `leads` generated leads.
async fn env_with_leads(
    leads: usize,
    contacts_per_lead: usize,
    rate_limit_rps: Option<f64>,
) -> TestEnv {
    TestEnv::start(EnvOptions {
        close: CloseConfig {
            seed: Seed::Generated {
                seed: 42,
                leads,
                contacts_per_lead,
            },
            rate_limit_rps,
            ..CloseConfig::default()
        },
        ..EnvOptions::default()
    })
    .await
    .expect("test env")
}

/// Settings mapping every inbound field the original offers: name, url, description, status,
/// addresses and every lead custom field; contacts with name, title and all typed lists plus
/// their custom fields; opportunities on.
async fn rich_settings(env: &TestEnv) -> Value {
    let close = CloseClient::new(CloseClientConfig {
        base_url: env.close.base_url(),
        ..CloseClientConfig::default()
    })
    .expect("client");
    let key = ApiKey::new(API_KEY);
    let lead_fields = close
        .custom_fields(&key, CustomFieldObject::Lead)
        .await
        .expect("lead fields");
    let contact_fields = close
        .custom_fields(&key, CustomFieldObject::Contact)
        .await
        .expect("contact fields");
    assert!(
        !lead_fields.is_empty() && !contact_fields.is_empty(),
        "the seed has custom fields"
    );
    let mut lead_in = vec![
        json!("name"),
        json!("url"),
        json!("description"),
        json!("status_id"),
        json!("addresses"),
    ];
    lead_in.extend(
        lead_fields
            .iter()
            .map(|f| json!(format!("custom.{}", f.id))),
    );
    let mut contact_in = vec![
        json!("name"),
        json!("title"),
        json!("phones"),
        json!("emails"),
        json!("urls"),
    ];
    contact_in.extend(
        contact_fields
            .iter()
            .map(|f| json!(format!("custom.{}", f.id))),
    );
    let mut s = default_settings();
    s["lead_attributes_inbound"] = Value::Array(lead_in);
    s["contact_attributes_inbound"] = Value::Array(contact_in);
    s["sync_opportunities"] = json!(true);
    s
}

/// Records the connector in our database (as Hull's `/fetch` schedule does) and asks for a fetch.
async fn post_fetch(env: &TestEnv, path: &str) {
    let url = format!("{}{path}?{}", env.ingest_url(), env.creds_query());
    let r = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .expect("fetch call");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"ok": true}));
}

fn store(env: &TestEnv) -> Store {
    env.store().expect("store")
}

async fn progress(env: &TestEnv) -> IncomingProgress {
    store(env)
        .incoming_progress(CONNECTOR_ID)
        .await
        .expect("progress")
        .expect("connector known")
}

/// Ticks the scheduler and drains with every worker until no run is active and nothing is
/// left to do (retries included). Returns the connector's progress.
async fn settle(
    env: &TestEnv,
    sched: &scheduler::Scheduler,
    workers: &[worker::Worker],
) -> IncomingProgress {
    for _ in 0..600 {
        sched.tick().await;
        let handled: usize = join_all(workers.iter().map(|w| w.run_until_idle()))
            .await
            .into_iter()
            .map(|r| r.expect("drain"))
            .sum();
        let p = progress(env).await;
        let active = p.last_run.as_ref().is_some_and(|r| r.is_active());
        let pending = store(env)
            .retries(Some(CONNECTOR_ID), 10)
            .await
            .expect("retries");
        let waiting = pending.iter().any(|r| r.state != "parked");
        if !active && handled == 0 && !waiting {
            return p;
        }
        if handled == 0 {
            // Waiting for a retry to become due.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!(
        "the incoming sync did not settle: {:?}",
        progress(env).await
    );
}

fn workers(env: &TestEnv, n: usize) -> Vec<worker::Worker> {
    let mut all = vec![env.worker.clone()];
    for _ in 1..n {
        all.push(env.new_worker().expect("worker"));
    }
    all
}

async fn metadata(env: &TestEnv) -> CloseMetadata {
    let c = store(env)
        .connector(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("connector");
    serde_json::from_value(c.metadata.expect("metadata cached")).expect("metadata")
}

/// What Hull should hold for a set of traits and identity claims: every trait's value (the
/// profile is fresh, so `setIfNull` sets too) plus the `domain`/`email` claims.
fn expected_attributes(
    traits: &Map<String, Value>,
    claims: &Map<String, Value>,
    claim_keys: &[&str],
) -> Map<String, Value> {
    // A null value deletes the attribute in Hull.
    let mut out: Map<String, Value> = traits
        .iter()
        .filter_map(|(k, v)| {
            v.get("value")
                .filter(|v| !v.is_null())
                .map(|v| (k.clone(), v.clone()))
        })
        .collect();
    for k in claim_keys {
        if let Some(v) = claims.get(*k) {
            out.insert((*k).to_string(), v.clone());
        }
    }
    out
}

/// Compares every Close lead and contact with the Hull profile store.
fn assert_hull_matches_close(env: &TestEnv, s: &Settings, meta: &CloseMetadata) -> (usize, usize) {
    let leads = env.close.leads();
    let mut contacts = 0;
    for lead in &leads {
        let lead_id = lead["id"].as_str().expect("lead id");
        let account = env
            .hull
            .find_account("anonymous_id", &format!("closeio:{lead_id}"))
            .expect("account in Hull");
        let claims = mapping::account_claims(s, lead);
        let mut traits = mapping::lead_traits(s, meta, lead);
        traits.extend(mapping::opportunity_traits(lead));
        assert_eq!(
            account.attributes,
            expected_attributes(&traits, &claims, &["domain", "external_id"]),
            "lead {lead_id}"
        );
        for contact in lead["contacts"].as_array().expect("contacts") {
            contacts += 1;
            let contact_id = contact["id"].as_str().expect("contact id");
            let user = env
                .hull
                .find_user("anonymous_id", &format!("closeio:{contact_id}"))
                .expect("user in Hull");
            let traits = mapping::contact_traits(s, meta, contact);
            let claims = mapping::user_claims(contact);
            assert_eq!(
                user.attributes,
                expected_attributes(&traits, &claims, &["email"]),
                "contact {contact_id}"
            );
            assert_eq!(
                user.account_id.as_deref(),
                Some(account.id.as_str()),
                "contact {contact_id} linked to its account"
            );
        }
    }
    (leads.len(), contacts)
}

#[tokio::test]
async fn full_import_writes_exactly_the_expected_traits_and_links() {
    let env = env_with_leads(2000, 3, None).await;
    let settings_json = rich_settings(&env).await;
    env.hull
        .set_private_settings(CONNECTOR_ID, settings_json.clone());
    post_fetch(&env, "/fetch").await;
    let sched = env
        .scheduler_with(&[("FETCH_WINDOWS", "6")])
        .expect("scheduler");
    let p = settle(&env, &sched, &workers(&env, 3)).await;

    let run = p.last_run.expect("a run");
    assert_eq!(run.kind, FetchKind::Full);
    assert_eq!(run.state, FetchRunState::Completed);
    assert_eq!(run.leads_imported, 2000);
    assert_eq!(run.contacts_imported, 6000);
    assert!(
        p.windows.len() > 1,
        "the import was split into windows: {:?}",
        p.windows
    );
    assert!(p.windows.iter().all(|w| w.done));
    assert_eq!(
        p.cursor,
        Some(run.until),
        "the cursor is the end of the completed run"
    );
    assert!(p.full_import_completed_at.is_some());

    let s = Settings::from_private_settings(&settings_json).expect("settings");
    let meta = metadata(&env).await;
    let (leads, contacts) = assert_hull_matches_close(&env, &s, &meta);
    assert_eq!((leads, contacts), (2000, 6000));
    assert_eq!(env.hull.accounts().len(), 2000, "one account per lead");
    assert_eq!(env.hull.users().len(), 6000, "one user per contact");
    // Custom fields, addresses, typed lists and opportunities made it.
    let sample = env
        .hull
        .accounts()
        .into_iter()
        .find(|a| a.attributes.contains_key("closeio/address_business_city"));
    assert!(sample.is_some(), "addresses are mapped by label");
    assert!(env
        .hull
        .users()
        .iter()
        .any(|u| u.attributes.contains_key("closeio/phone_office")));
    assert!(env
        .hull
        .accounts()
        .iter()
        .all(|a| a.attributes.contains_key("closeio/opportunities_count")));

    // Nothing was left behind.
    assert_eq!(env.depth(QueueKind::Incoming).await.expect("depth"), 0);
    assert!(store(&env)
        .dead_letters(Some(CONNECTOR_ID), None, None, false, 10)
        .await
        .expect("dl")
        .is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn incremental_fetch_picks_up_updates_deletions_and_merges_from_the_event_log() {
    let env = env_with_leads(40, 2, None).await;
    post_fetch(&env, "/fetch").await;
    // No PUBLIC_URL: no webhooks, polling only.
    let sched = env
        .scheduler_with(&[("PUBLIC_URL", "")])
        .expect("scheduler");
    let p = settle(&env, &sched, &workers(&env, 2)).await;
    let full = p.last_run.expect("full run");
    assert_eq!(full.leads_imported, 40);
    let cursor = p.cursor.expect("cursor");

    let leads = env.close.leads();
    let lead_id = |i: usize| leads[i]["id"].as_str().expect("id").to_string();
    env.close
        .ui_update_lead(&lead_id(3), json!({"name": "Renamed Inc"}))
        .expect("update");
    env.close.ui_delete_lead(&lead_id(5)).expect("delete");
    let contact_id = leads[7]["contacts"][0]["id"]
        .as_str()
        .expect("contact")
        .to_string();
    env.close
        .ui_delete_contact(&contact_id)
        .expect("delete contact");
    env.close
        .ui_merge_leads(&lead_id(9), &lead_id(10))
        .expect("merge");

    post_fetch(&env, "/fetch-recent-leads").await;
    let p = settle(&env, &sched, &workers(&env, 2)).await;
    let run = p.last_run.expect("incremental run");
    assert_eq!(run.kind, FetchKind::Incremental);
    assert_eq!(
        run.since,
        Some(cursor - chrono::Duration::seconds(300)),
        "re-reads the overlap window"
    );
    assert!(
        run.leads_imported >= 2 && run.leads_imported < 40,
        "only the changed leads: {}",
        run.leads_imported
    );
    assert!(
        run.events_applied >= 3,
        "deletions and the merge from the event log: {}",
        run.events_applied
    );
    assert_eq!(p.cursor, Some(run.until));

    let renamed = env
        .hull
        .find_account("anonymous_id", &format!("closeio:{}", lead_id(3)))
        .expect("account");
    assert_eq!(renamed.attributes["closeio/name"], json!("Renamed Inc"));
    let deleted = env
        .hull
        .find_account("anonymous_id", &format!("closeio:{}", lead_id(5)))
        .expect("account");
    assert!(deleted.attributes.contains_key("closeio/deleted_at"));
    let user = env
        .hull
        .find_user("anonymous_id", &format!("closeio:{contact_id}"))
        .expect("user");
    assert!(user.attributes.contains_key("closeio/deleted_at"));
    let merged = env
        .hull
        .find_account("anonymous_id", &format!("closeio:{}", lead_id(9)))
        .expect("account");
    assert_eq!(merged.attributes["closeio/merged_into"], json!(lead_id(10)));
    env.cleanup().await;
}

/// Waits until the Close simulator has delivered (2xx) `n` webhooks.
async fn wait_deliveries(env: &TestEnv, n: usize) {
    for _ in 0..200 {
        let done = env
            .close
            .webhook_deliveries()
            .iter()
            .filter(|d| d.delivered)
            .count();
        if done >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "webhooks not delivered: {:?}",
        env.close.webhook_deliveries()
    );
}

/// Drains as webhook deliveries arrive until `done` holds.
async fn drain_until(env: &TestEnv, done: impl Fn() -> bool) {
    for _ in 0..200 {
        env.drain().await.expect("drain");
        if done() {
            // Deliveries of the same operation may still be in flight.
            wait_deliveries(env, env.close.webhook_deliveries().len()).await;
            env.drain().await.expect("drain");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "webhooks did not reach Hull: {:?}",
        env.close.webhook_deliveries()
    );
}

#[tokio::test]
async fn webhooks_bring_updates_deletions_and_merges_in_real_time() {
    let env = env_with_leads(20, 2, None).await;
    post_fetch(&env, "/fetch").await;
    let sched = env.scheduler().expect("scheduler");
    settle(&env, &sched, &workers(&env, 1)).await;
    let sub = store(&env)
        .webhook_subscription(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("subscribed");
    assert!(sub
        .url
        .ends_with(&format!("/webhooks/close/{CONNECTOR_ID}")));

    let leads = env.close.leads();
    let lead_id = |i: usize| leads[i]["id"].as_str().expect("id").to_string();
    env.close
        .ui_update_lead(&lead_id(1), json!({"name": "Realtime Ltd"}))
        .expect("update");
    wait_deliveries(&env, 1).await;
    env.drain().await.expect("drain");
    let account = env
        .hull
        .find_account("anonymous_id", &format!("closeio:{}", lead_id(1)))
        .expect("account");
    assert_eq!(account.attributes["closeio/name"], json!("Realtime Ltd"));

    env.close.ui_delete_lead(&lead_id(2)).expect("delete");
    env.close
        .ui_merge_leads(&lead_id(4), &lead_id(6))
        .expect("merge");
    let merged_source = format!("closeio:{}", lead_id(4));
    drain_until(&env, || {
        env.hull
            .find_account("anonymous_id", &merged_source)
            .is_some_and(|a| a.attributes.contains_key("closeio/merged_into"))
    })
    .await;
    let deleted = env
        .hull
        .find_account("anonymous_id", &format!("closeio:{}", lead_id(2)))
        .expect("account");
    assert!(deleted.attributes.contains_key("closeio/deleted_at"));
    let merged = env
        .hull
        .find_account("anonymous_id", &format!("closeio:{}", lead_id(4)))
        .expect("account");
    assert_eq!(merged.attributes["closeio/merged_into"], json!(lead_id(6)));
    // The destination got the source's contacts: they are linked to its account now.
    let destination = env
        .hull
        .find_account("anonymous_id", &format!("closeio:{}", lead_id(6)))
        .expect("account");
    let moved = leads[4]["contacts"][0]["id"].as_str().expect("contact");
    let user = env
        .hull
        .find_user("anonymous_id", &format!("closeio:{moved}"))
        .expect("user");
    assert_eq!(user.account_id.as_deref(), Some(destination.id.as_str()));
    env.cleanup().await;
}

async fn post_webhook(env: &TestEnv, body: &str, timestamp: &str, signature: &str) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "{}/webhooks/close/{CONNECTOR_ID}",
            env.ingest_url()
        ))
        .header("content-type", "application/json")
        .header("close-sig-hash", signature)
        .header("close-sig-timestamp", timestamp)
        .body(body.to_string())
        .send()
        .await
        .expect("webhook call")
        .status()
        .as_u16()
}

#[tokio::test]
async fn forged_and_replayed_webhooks_are_rejected() {
    let env = env_with_leads(3, 1, None).await;
    post_fetch(&env, "/fetch").await;
    let sched = env.scheduler().expect("scheduler");
    settle(&env, &sched, &workers(&env, 1)).await;
    let sub = store(&env)
        .webhook_subscription(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("subscribed");
    let lead_id = env.close.leads()[0]["id"].as_str().expect("id").to_string();
    let body = json!({
        "subscription_id": sub.subscription_id,
        "event": {"id": "ev_test_1", "object_type": "lead", "action": "updated", "object_id": lead_id,
                  "lead_id": lead_id, "date_updated": "2026-01-01T00:00:00.000000"}
    })
    .to_string();
    let now = chrono::Utc::now().timestamp().to_string();

    // Forged: signed with another key, or not signed at all, or tampered with.
    let other_key = "b9260244ef33625f9b4b26a27db08758cdd39478b852c73f2d33ab042eb8abb4";
    let forged = common::closeio::webhook::sign(other_key, &now, body.as_bytes()).expect("sign");
    assert_eq!(post_webhook(&env, &body, &now, &forged).await, 401);
    assert_eq!(post_webhook(&env, &body, &now, "").await, 401);
    let genuine =
        common::closeio::webhook::sign(&sub.signature_key, &now, body.as_bytes()).expect("sign");
    assert_eq!(
        post_webhook(&env, &body.replace("updated", "deleted"), &now, &genuine).await,
        401
    );
    // Replayed: a genuine signature over an old timestamp.
    let old = (chrono::Utc::now().timestamp() - 3600).to_string();
    let old_sig =
        common::closeio::webhook::sign(&sub.signature_key, &old, body.as_bytes()).expect("sign");
    assert_eq!(post_webhook(&env, &body, &old, &old_sig).await, 401);
    assert_eq!(
        env.depth(QueueKind::Incoming).await.expect("depth"),
        0,
        "nothing enqueued"
    );

    // Genuine: accepted once; the same delivery again is a duplicate.
    assert_eq!(post_webhook(&env, &body, &now, &genuine).await, 200);
    assert_eq!(post_webhook(&env, &body, &now, &genuine).await, 200);
    assert_eq!(
        env.depth(QueueKind::Incoming).await.expect("depth"),
        1,
        "one refresh enqueued"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn firehose_outage_does_not_advance_the_cursor_and_loses_nothing() {
    let env = env_with_leads(60, 2, None).await;
    post_fetch(&env, "/fetch").await;
    let sched = env
        .scheduler_with(&[
            ("PUBLIC_URL", ""),
            ("FETCH_PAGE_SIZE", "25"),
            ("FETCH_WINDOWS", "1"),
        ])
        .expect("scheduler");
    env.hull.set_firehose_fault(FirehoseFault {
        outage: true,
        ..FirehoseFault::default()
    });
    sched.tick().await;
    env.drain().await.expect("drain");
    let p = progress(&env).await;
    assert_eq!(
        p.cursor, None,
        "nothing accepted by Hull: the cursor did not move"
    );
    let run = p.last_run.expect("run");
    assert!(run.is_active(), "the run waits for its retried page");
    assert_eq!(run.leads_imported, 0);
    assert!(run.last_error.is_some());
    assert!(env.hull.accounts().is_empty());
    let retries = store(&env)
        .retries(Some(CONNECTOR_ID), 10)
        .await
        .expect("retries");
    assert_eq!(
        retries.len(),
        1,
        "the page job is scheduled for a retry: {retries:?}"
    );

    env.hull.set_firehose_fault(FirehoseFault::default());
    let p = settle(&env, &sched, &workers(&env, 1)).await;
    let run = p.last_run.expect("run");
    assert_eq!(run.state, FetchRunState::Completed);
    assert_eq!(run.leads_imported, 60);
    assert_eq!(p.cursor, Some(run.until));
    assert_eq!(env.hull.accounts().len(), 60);
    assert_eq!(env.hull.users().len(), 120);
    env.cleanup().await;
}

#[tokio::test]
async fn a_429_storm_slows_the_import_and_loses_nothing() {
    // One request per second per endpoint group against four windows read in parallel: the
    // windows' searches collide in the same second, so Close answers 429s whatever the speed of
    // the machine (the client's own pacing alone would otherwise avoid them).
    let env = env_with_leads(120, 1, Some(1.0)).await;
    post_fetch(&env, "/fetch").await;
    let sched = env
        .scheduler_with(&[
            ("PUBLIC_URL", ""),
            ("FETCH_PAGE_SIZE", "10"),
            ("FETCH_WINDOWS", "4"),
        ])
        .expect("scheduler");
    let p = settle(&env, &sched, &workers(&env, 2)).await;
    let run = p.last_run.expect("run");
    assert_eq!(run.state, FetchRunState::Completed);
    assert_eq!(run.leads_imported, 120);
    assert_eq!(env.hull.accounts().len(), 120);
    assert_eq!(env.hull.users().len(), 120);
    let statuses: HashMap<u16, usize> =
        env.close
            .requests()
            .iter()
            .fold(HashMap::new(), |mut m, r| {
                *m.entry(r.status).or_default() += 1;
                m
            });
    assert!(
        statuses.get(&429).copied().unwrap_or(0) > 0,
        "the storm happened: {statuses:?}"
    );
    assert!(store(&env)
        .dead_letters(Some(CONNECTOR_ID), None, None, false, 10)
        .await
        .expect("dl")
        .is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn a_bad_key_is_reported_by_status_and_not_retried_forever() {
    let mut settings = default_settings();
    settings["api_key"] = json!("not_a_close_key_000");
    let env = TestEnv::start(EnvOptions {
        settings,
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    post_fetch(&env, "/fetch").await;
    let sched = env.scheduler().expect("scheduler");
    sched.tick().await;
    env.drain().await.expect("drain");

    let c = store(&env)
        .connector(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("connector");
    assert!(c.parked_reason.is_some(), "the connector is parked");
    let p = progress(&env).await;
    let run = p.last_run.expect("run");
    assert_eq!(run.state, FetchRunState::Failed);
    // Later passes start nothing and nothing is retried.
    env.close.clear_requests();
    for _ in 0..3 {
        let report = sched.tick().await;
        assert_eq!(
            report.incoming.full_imports_started + report.incoming.incremental_started,
            0
        );
        assert_eq!(env.drain().await.expect("drain"), 0);
    }
    assert!(
        env.close
            .requests()
            .iter()
            .all(|r| !r.path.contains("/data/search")),
        "no more fetch attempts"
    );
    let status: Value = reqwest::Client::new()
        .get(format!("{}/status?{}", env.ingest_url(), env.creds_query()))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], json!("error"), "{status}");
    env.cleanup().await;
}

#[tokio::test]
async fn webhook_subscriptions_are_repaired() {
    let env = env_with_leads(2, 1, None).await;
    post_fetch(&env, "/fetch").await;
    let sched = env
        .scheduler_with(&[("WEBHOOK_CHECK_SECS", "0")])
        .expect("scheduler");
    settle(&env, &sched, &workers(&env, 1)).await;
    let ours = store(&env)
        .webhook_subscription(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("subscribed");

    // Someone paused ours, and a subscription of this connector points at an old URL.
    let close = CloseClient::new(CloseClientConfig {
        base_url: env.close.base_url(),
        ..CloseClientConfig::default()
    })
    .expect("client");
    let key = ApiKey::new(API_KEY);
    let mut patch = Map::new();
    patch.insert("status".into(), json!("paused"));
    close
        .update_webhook(&key, &ours.subscription_id, &patch)
        .await
        .expect("pause");
    let stale = close
        .create_webhook(
            &key,
            &format!("https://old.example.com/webhooks/close/{CONNECTOR_ID}"),
            &[("lead", "updated")],
        )
        .await
        .expect("stale");

    sched.tick().await;
    let subs = close.list_webhooks(&key).await.expect("list");
    assert!(
        subs.iter().all(|s| s.id != stale.id),
        "the stale subscription was deleted: {subs:?}"
    );
    let mine = subs
        .iter()
        .find(|s| s.id == ours.subscription_id)
        .expect("ours kept");
    assert_eq!(mine.status.as_deref(), Some("active"), "re-activated");
    assert_eq!(
        store(&env)
            .webhook_subscription(CONNECTOR_ID)
            .await
            .expect("db")
            .expect("sub")
            .subscription_id,
        ours.subscription_id
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_fetch_start_does_not_double_the_page_chain() {
    let env = env_with_leads(30, 0, None).await;
    post_fetch(&env, "/fetch").await;
    let sched = env
        .scheduler_with(&[("FETCH_PAGE_SIZE", "5"), ("FETCH_WINDOWS", "2")])
        .expect("scheduler");
    sched.tick().await;
    // The broker delivers the run's FetchStart twice (an ack lost, a worker killed).
    let run = progress(&env).await.last_run.expect("run");
    let again = common::jobs::Envelope::new(
        CONNECTOR_ID,
        common::jobs::Job::FetchStart { run_id: run.id },
    );
    let handled_first = env.drain().await.expect("drain");
    env.worker
        .ctx()
        .queue
        .publish(&again)
        .await
        .expect("publish");
    let handled_again = env.drain().await.expect("drain");
    let done = progress(&env).await.last_run.expect("run");
    assert_eq!(done.state, FetchRunState::Completed);
    // One FetchStart and one job per committed page; the redelivery published no page twice.
    assert_eq!(handled_first, 1 + done.pages_done as usize, "{done:?}");
    assert_eq!(
        handled_again, 1,
        "the second FetchStart found nothing to publish"
    );
    // And while the run is still going, a redelivered FetchStart adds nothing either.
    store(&env)
        .request_fetch(CONNECTOR_ID, true)
        .await
        .expect("request");
    sched.tick().await;
    let run = progress(&env).await.last_run.expect("run");
    assert_ne!(run.id, done.id);
    let again = common::jobs::Envelope::new(
        CONNECTOR_ID,
        common::jobs::Job::FetchStart { run_id: run.id },
    );
    env.worker
        .ctx()
        .queue
        .publish(&again)
        .await
        .expect("publish");
    let handled = env.drain().await.expect("drain");
    let second = progress(&env).await.last_run.expect("run");
    assert_eq!(second.state, FetchRunState::Completed);
    assert_eq!(handled, 2 + second.pages_done as usize, "{second:?}");
    env.cleanup().await;
}
