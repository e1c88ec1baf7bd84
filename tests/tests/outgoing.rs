//! End-to-end tests of the outgoing sync (Hull → Close) over real Postgres, RabbitMQ and the
//! simulators: notifications are signed and sent by the Hull simulator to ingest over HTTP,
//! jobs travel through RabbitMQ, the worker calls the Close simulator and the Hull firehose.

use harness::sandbox::close::{CloseConfig, Faults};
use harness::{EnvOptions, TestEnv, CONNECTOR_ID, OTHER_SEGMENT, SYNC_SEGMENT};
use serde_json::{json, Value};

fn account(domain: &str, name: &str, segment: &str) -> Value {
    json!({"domain": domain, "name": name, "segment_ids": [segment]})
}

async fn env_with(accounts: Vec<Value>, users: Vec<Value>) -> TestEnv {
    TestEnv::start(EnvOptions {
        accounts,
        users,
        ..EnvOptions::default()
    })
    .await
    .expect("test env")
}

fn account_id(env: &TestEnv, domain: &str) -> String {
    env.hull
        .find_account("domain", domain)
        .expect("account in hull")
        .id
}

fn user_id(env: &TestEnv, email: &str) -> String {
    env.hull.find_user("email", email).expect("user in hull").id
}

async fn notify_accounts(env: &TestEnv, ids: &[String]) {
    let r = env
        .hull
        .notify(CONNECTOR_ID, "account:update", ids)
        .await
        .expect("notify");
    assert!(!r.failed, "notification failed: {r:?}");
    assert!(r.statuses.iter().all(|s| *s == 200), "{r:?}");
}

async fn notify_users(env: &TestEnv, ids: &[String]) {
    let r = env
        .hull
        .notify(CONNECTOR_ID, "user:update", ids)
        .await
        .expect("notify");
    assert!(!r.failed, "notification failed: {r:?}");
}

#[tokio::test]
async fn account_creates_lead_and_writes_back_closeio_id() {
    let env = env_with(vec![account("acme.com", "Acme", SYNC_SEGMENT)], vec![]).await;
    let id = account_id(&env, "acme.com");
    notify_accounts(&env, std::slice::from_ref(&id)).await;
    assert_eq!(env.drain().await.unwrap(), 1);

    let leads = env.leads_with_url("acme.com");
    assert_eq!(leads.len(), 1, "one lead for acme.com");
    assert_eq!(leads[0]["name"], "Acme");
    let lead_id = leads[0]["id"].as_str().unwrap().to_string();
    // status_id not sent for hull-default: Close applied its default (first) status.
    let create = env
        .close_writes()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("a POST");
    assert!(create.body.as_ref().unwrap().get("status_id").is_none());
    assert_eq!(create.body.as_ref().unwrap()["url"], "acme.com");

    let acc = env.hull.find_account("id", &id).unwrap();
    assert_eq!(acc.attributes["closeio/id"], json!(lead_id));
    assert_eq!(acc.attributes["closeio/name"], json!("Acme"));
    assert!(acc.attributes.contains_key("closeio/created_at"));
    assert!(acc.attributes.contains_key("closeio/updated_at"));
    assert_eq!(acc.attributes["closeio/url"], json!("acme.com"));
    env.cleanup().await;
}

#[tokio::test]
async fn update_is_one_put_and_unchanged_makes_no_close_call() {
    let env = env_with(vec![account("acme.com", "Acme", SYNC_SEGMENT)], vec![]).await;
    let id = account_id(&env, "acme.com");
    notify_accounts(&env, std::slice::from_ref(&id)).await;
    env.drain().await.unwrap();
    let lead_id = env.leads_with_url("acme.com")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Nothing changed: no Close request at all.
    env.close.clear_requests();
    notify_accounts(&env, std::slice::from_ref(&id)).await;
    env.drain().await.unwrap();
    assert_eq!(
        env.close.requests().len(),
        0,
        "unchanged entity must not call Close: {:?}",
        env.close.requests()
    );

    // A changed name: exactly one write, a PUT on the known lead.
    env.hull
        .upsert_account(json!({"id": id, "domain": "acme.com", "name": "Acme Corp"}));
    env.close.clear_requests();
    notify_accounts(&env, std::slice::from_ref(&id)).await;
    env.drain().await.unwrap();
    let reqs = env.close.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "PUT");
    assert!(reqs[0].path.contains(&lead_id));
    assert!(
        reqs[0].body.as_ref().unwrap().get("status_id").is_none(),
        "status only on create"
    );
    assert_eq!(env.leads_with_url("acme.com")[0]["name"], "Acme Corp");
    assert_eq!(env.close.leads().len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn skip_reasons_make_no_close_writes() {
    let env = env_with(
        vec![
            json!({"name": "No Domain", "segment_ids": [SYNC_SEGMENT]}),
            account("other.com", "Other", OTHER_SEGMENT),
        ],
        vec![],
    )
    .await;
    let ids: Vec<String> = env.hull.accounts().into_iter().map(|a| a.id).collect();
    notify_accounts(&env, &ids).await;
    assert_eq!(env.drain().await.unwrap(), 2);
    assert!(env.close_writes().is_empty(), "{:?}", env.close_writes());
    assert!(env.close.leads().is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn lead_status_is_sent_on_create_only() {
    // The simulator's default organization statuses: pick the second one.
    let env = env_with(vec![account("acme.com", "Acme", SYNC_SEGMENT)], vec![]).await;
    let key = harness::API_KEY;
    let statuses: Value = reqwest::Client::new()
        .get(format!("{}/status/lead/", env.close.base_url()))
        .basic_auth(key, Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chosen = statuses["data"][1]["id"].as_str().unwrap().to_string();
    let mut settings = harness::default_settings();
    settings["lead_status"] = json!(chosen);
    env.hull.set_private_settings(CONNECTOR_ID, settings);
    let id = account_id(&env, "acme.com");
    notify_accounts(&env, &[id]).await;
    env.drain().await.unwrap();
    let lead = &env.leads_with_url("acme.com")[0];
    assert_eq!(lead["status_id"], json!(chosen));
    env.cleanup().await;
}

#[tokio::test]
async fn user_whose_account_has_no_lead_gets_lead_then_contact() {
    let env = env_with(
        vec![account("acme.com", "Acme", SYNC_SEGMENT)],
        vec![json!({"email": "jane@acme.com", "name": "Jane Doe", "title": "CTO", "account_domain": "acme.com"})],
    )
    .await;
    let uid = user_id(&env, "jane@acme.com");
    notify_users(&env, std::slice::from_ref(&uid)).await;
    assert_eq!(env.drain().await.unwrap(), 1);

    let leads = env.leads_with_url("acme.com");
    assert_eq!(leads.len(), 1, "the lead was created first");
    let lead_id = leads[0]["id"].as_str().unwrap();
    let contacts: Vec<Value> = env
        .close
        .contacts()
        .into_iter()
        .filter(|c| c["lead_id"] == json!(lead_id))
        .collect();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["name"], "Jane Doe");
    assert_eq!(contacts[0]["emails"][0]["email"], "jane@acme.com");
    assert_eq!(contacts[0]["emails"][0]["type"], "office");

    let user = env.hull.find_user("id", &uid).unwrap();
    assert_eq!(user.attributes["closeio/id"], contacts[0]["id"]);
    assert_eq!(user.attributes["closeio/lead_id"], json!(lead_id));
    assert_eq!(
        user.attributes["closeio/email_office"],
        json!("jane@acme.com")
    );
    let acc = env.hull.find_account("domain", "acme.com").unwrap();
    assert_eq!(acc.attributes["closeio/id"], json!(lead_id));

    // The same user again: nothing to do.
    env.close.clear_requests();
    notify_users(&env, &[uid]).await;
    env.drain().await.unwrap();
    assert!(
        env.close.requests().is_empty(),
        "{:?}",
        env.close.requests()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn existing_contact_is_found_by_email_not_duplicated() {
    let env = env_with(
        vec![account("acme.com", "Acme", SYNC_SEGMENT)],
        vec![json!({"email": "Jane@Acme.com", "name": "Jane", "account_domain": "acme.com"})],
    )
    .await;
    // The lead and contact already exist in Close (created by someone else).
    let lead = env
        .close
        .ui_create_lead(
            harness::API_KEY,
            json!({"name": "Acme", "url": "acme.com", "contacts": [{"name": "Jane", "emails": [{"email": "jane@acme.com", "type": "office"}]}]}),
        )
        .unwrap();
    let uid = user_id(&env, "Jane@Acme.com");
    notify_users(&env, &[uid]).await;
    env.drain().await.unwrap();
    assert_eq!(env.close.leads().len(), 1, "lead adopted by url");
    let contacts = env.close.contacts();
    assert_eq!(contacts.len(), 1, "contact adopted by email: {contacts:?}");
    assert_eq!(contacts[0]["lead_id"], lead["id"]);
    assert!(
        env.close_writes().iter().all(|r| r.method != "POST"),
        "no create: {:?}",
        env.close_writes()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn echo_of_our_own_write_back_is_skipped() {
    let env = env_with(vec![account("acme.com", "Acme", SYNC_SEGMENT)], vec![]).await;
    let id = account_id(&env, "acme.com");
    notify_accounts(&env, &[id]).await;
    env.drain().await.unwrap();
    // The write-back changed closeio/* attributes: Hull notifies again with only those changes.
    let changed = env.hull.notify_changed(CONNECTOR_ID).await.unwrap();
    assert!(changed.messages_total >= 1, "{changed:?}");
    env.close.clear_requests();
    env.drain().await.unwrap();
    assert!(
        env.close.requests().is_empty(),
        "echo must not reach Close: {:?}",
        env.close.requests()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn lost_create_response_and_redelivery_leave_one_lead() {
    let close = CloseConfig {
        faults: Faults {
            lost_response_rate: 1.0,
            routes: Some(vec!["POST /lead/".into()]),
            ..Faults::default()
        },
        ..CloseConfig::default()
    };
    let env = TestEnv::start(EnvOptions {
        close,
        accounts: vec![account("acme.com", "Acme", SYNC_SEGMENT)],
        ..EnvOptions::default()
    })
    .await
    .unwrap();
    let id = account_id(&env, "acme.com");
    // Two notifications for the same account (a redelivery).
    notify_accounts(&env, std::slice::from_ref(&id)).await;
    notify_accounts(&env, std::slice::from_ref(&id)).await;
    env.drain().await.unwrap();
    let posts = env
        .close_writes()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "the create is never blindly re-sent");
    assert_eq!(env.leads_with_url("acme.com").len(), 1, "exactly one lead");
    let lead_id = env.leads_with_url("acme.com")[0]["id"].clone();
    assert_eq!(
        env.hull.find_account("id", &id).unwrap().attributes["closeio/id"],
        lead_id
    );
    env.cleanup().await;
}

#[tokio::test]
async fn two_workers_racing_on_one_account_create_one_lead() {
    let close = CloseConfig {
        faults: Faults {
            latency_ms: 150,
            ..Faults::default()
        },
        ..CloseConfig::default()
    };
    let env = TestEnv::start(EnvOptions {
        close,
        accounts: vec![account("acme.com", "Acme", SYNC_SEGMENT)],
        ..EnvOptions::default()
    })
    .await
    .unwrap();
    let id = account_id(&env, "acme.com");
    for _ in 0..4 {
        notify_accounts(&env, std::slice::from_ref(&id)).await;
    }
    let w2 = env.new_worker().unwrap();
    let (a, b) = tokio::join!(env.worker.run_until_idle(), w2.run_until_idle());
    assert_eq!(a.unwrap() + b.unwrap(), 4);
    assert_eq!(env.leads_with_url("acme.com").len(), 1);
    assert_eq!(
        env.close_writes()
            .into_iter()
            .filter(|r| r.method == "POST")
            .count(),
        1
    );
    env.cleanup().await;
}

#[tokio::test]
async fn rate_limit_429s_are_waited_out_not_failures() {
    let close = CloseConfig {
        rate_limit_rps: Some(3.0),
        ..CloseConfig::default()
    };
    let accounts: Vec<Value> = (0..8)
        .map(|i| account(&format!("c{i}.com"), &format!("C{i}"), SYNC_SEGMENT))
        .collect();
    let env = TestEnv::start(EnvOptions {
        close,
        accounts,
        ..EnvOptions::default()
    })
    .await
    .unwrap();
    let ids: Vec<String> = env.hull.accounts().into_iter().map(|a| a.id).collect();
    notify_accounts(&env, &ids).await;
    env.drain().await.unwrap();
    assert_eq!(env.close.leads().len(), 8, "every account synced");
    for i in 0..8 {
        assert_eq!(env.leads_with_url(&format!("c{i}.com")).len(), 1);
    }
    let store = env.store().unwrap();
    assert!(store
        .dead_letters(None, None, None, true, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(
        store.retries(None, 10).await.unwrap().is_empty(),
        "429s are waited out inline"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn user_segment_whitelist_filters_users() {
    let mut settings = harness::default_settings();
    settings["synchronized_user_segments"] = json!(["5bffc38f625718d58b000011"]);
    let env = TestEnv::start(EnvOptions {
        settings,
        accounts: vec![account("acme.com", "Acme", SYNC_SEGMENT)],
        users: vec![
            json!({"email": "in@acme.com", "name": "In", "account_domain": "acme.com", "segment_ids": ["5bffc38f625718d58b000011"]}),
            json!({"email": "out@acme.com", "name": "Out", "account_domain": "acme.com"}),
        ],
        ..EnvOptions::default()
    })
    .await
    .unwrap();
    let ids = vec![user_id(&env, "in@acme.com"), user_id(&env, "out@acme.com")];
    notify_users(&env, &ids).await;
    env.drain().await.unwrap();
    let names: Vec<Value> = env
        .close
        .contacts()
        .into_iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("In")]);
    env.cleanup().await;
}

#[tokio::test]
async fn batch_extract_syncs_accounts_and_users_without_segment_filter() {
    let env = env_with(
        vec![account("acme.com", "Acme", OTHER_SEGMENT)],
        vec![json!({"email": "bob@acme.com", "name": "Bob", "account_domain": "acme.com"})],
    )
    .await;
    let status = env
        .hull
        .send_batch(CONNECTOR_ID, "account_report", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    env.drain().await.unwrap();
    assert_eq!(
        env.leads_with_url("acme.com").len(),
        1,
        "exports bypass the segment filter"
    );
    let status = env
        .hull
        .send_batch(CONNECTOR_ID, "user_report", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    env.drain().await.unwrap();
    assert_eq!(env.close.contacts().len(), 1);
    assert_eq!(env.close.leads().len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn is_export_notifications_bypass_segments() {
    let env = env_with(vec![account("acme.com", "Acme", OTHER_SEGMENT)], vec![]).await;
    let id = account_id(&env, "acme.com");
    let r = env
        .hull
        .notify_export(CONNECTOR_ID, "account:update", &[id])
        .await
        .unwrap();
    assert!(!r.failed);
    env.drain().await.unwrap();
    assert_eq!(env.leads_with_url("acme.com").len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn invalid_close_data_is_dead_lettered_with_readable_field_error() {
    // A lead status that does not exist in Close: the create is refused with a 400.
    let mut settings = harness::default_settings();
    settings["lead_status"] = json!("stat_does_not_exist");
    let env = TestEnv::start(EnvOptions {
        settings,
        accounts: vec![account("acme.com", "Acme", SYNC_SEGMENT)],
        ..EnvOptions::default()
    })
    .await
    .unwrap();
    let id = account_id(&env, "acme.com");
    notify_accounts(&env, &[id]).await;
    env.drain().await.unwrap();
    assert!(env.close.leads().is_empty());
    let dead = env
        .store()
        .unwrap()
        .dead_letters(None, None, None, false, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].last_error.contains("status"),
        "{}",
        dead[0].last_error
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_lead_deleted_in_close_is_recreated_for_its_account_and_users() {
    let env = env_with(
        vec![account("acme.com", "Acme", SYNC_SEGMENT)],
        vec![json!({"email": "jane@acme.com", "name": "Jane", "account_domain": "acme.com"})],
    )
    .await;
    let aid = account_id(&env, "acme.com");
    notify_accounts(&env, std::slice::from_ref(&aid)).await;
    env.drain().await.unwrap();
    let old = env.leads_with_url("acme.com")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.close.ui_delete_lead(&old).unwrap();

    // A user of that account: the stale lead is detected, the account synced again, the contact
    // created under the new lead.
    let uid = user_id(&env, "jane@acme.com");
    notify_users(&env, std::slice::from_ref(&uid)).await;
    env.drain().await.unwrap();
    let leads = env.leads_with_url("acme.com");
    assert_eq!(leads.len(), 1);
    let new = leads[0]["id"].as_str().unwrap();
    assert_ne!(new, old);
    let contacts = env.close.contacts();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["lead_id"], json!(new));
    assert_eq!(
        env.hull.find_user("id", &uid).unwrap().attributes["closeio/lead_id"],
        json!(new)
    );
    assert!(env
        .store()
        .unwrap()
        .dead_letters(None, None, None, true, 10)
        .await
        .unwrap()
        .is_empty());

    // The account changes: PUT on the known lead works again.
    env.hull
        .upsert_account(json!({"id": aid, "domain": "acme.com", "name": "Acme 2"}));
    notify_accounts(&env, &[aid]).await;
    env.drain().await.unwrap();
    assert_eq!(env.leads_with_url("acme.com").len(), 1);
    assert_eq!(env.leads_with_url("acme.com")[0]["name"], "Acme 2");
    env.cleanup().await;
}

#[tokio::test]
async fn close_metadata_is_fetched_once_however_many_jobs_need_it_at_first_use() {
    let accounts: Vec<Value> = (0..8)
        .map(|i| account(&format!("meta{i}.com"), &format!("Meta {i}"), SYNC_SEGMENT))
        .collect();
    let env = env_with(accounts, vec![]).await;
    let ids: Vec<String> = (0..8)
        .map(|i| account_id(&env, &format!("meta{i}.com")))
        .collect();
    env.close.clear_requests();
    notify_accounts(&env, &ids).await;
    assert_eq!(env.drain().await.unwrap(), 8);
    let status_reads = env
        .close
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/status/lead"))
        .count();
    assert_eq!(
        status_reads, 1,
        "concurrent jobs share one metadata fetch per connector"
    );
    assert_eq!(env.close.leads().len(), 8);
    env.cleanup().await;
}
