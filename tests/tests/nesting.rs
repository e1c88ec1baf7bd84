//! New leads gather the contacts of their users (`NEW_LEAD_GATHER_SECS`) so that one
//! `POST /lead/` creates a new account's lead with its users' contacts nested: fewer Close
//! requests, and still no duplicate whatever the order of arrival or a lost response.

use std::time::Duration;

use harness::sandbox::close::{CloseConfig, Faults};
use harness::{EnvOptions, TestEnv, CONNECTOR_ID, SYNC_SEGMENT};
use serde_json::{json, Value};

const USERS: [&str; 3] = ["ann@acme.com", "bob@acme.com", "cid@acme.com"];

async fn env(close: CloseConfig) -> TestEnv {
    let users = USERS
        .iter()
        .map(|e| json!({"email": e, "name": e.split('@').next(), "account_domain": "acme.com"}))
        .collect();
    TestEnv::start(EnvOptions {
        accounts: vec![
            json!({"domain": "acme.com", "name": "Acme", "segment_ids": [SYNC_SEGMENT]}),
        ],
        users,
        close,
        vars: vec![("NEW_LEAD_GATHER_SECS".into(), "1".into())],
        ..EnvOptions::default()
    })
    .await
    .expect("test env")
}

async fn notify(env: &TestEnv, channel: &str, ids: &[String]) {
    let r = env
        .hull
        .notify(CONNECTOR_ID, channel, ids)
        .await
        .expect("notify");
    assert!(!r.failed, "{r:?}");
}

fn account_id(env: &TestEnv) -> String {
    env.hull
        .find_account("domain", "acme.com")
        .expect("account")
        .id
}

fn user_ids(env: &TestEnv, emails: &[&str]) -> Vec<String> {
    emails
        .iter()
        .map(|e| env.hull.find_user("email", e).expect("user").id)
        .collect()
}

fn count(env: &TestEnv, method: &str, path: &str) -> usize {
    env.close
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == format!("/api/v1{path}"))
        .count()
}

/// Every user has its contact once, under the one lead, and Hull has its `closeio/id`.
fn assert_synced(env: &TestEnv) {
    let leads = env.leads_with_url("acme.com");
    assert_eq!(leads.len(), 1, "one lead");
    let lead_id = leads[0]["id"].clone();
    let contacts = env.close.contacts();
    assert_eq!(
        contacts.len(),
        USERS.len(),
        "one contact per user: {contacts:?}"
    );
    for email in USERS {
        let mine: Vec<&Value> = contacts
            .iter()
            .filter(|c| c["emails"][0]["email"] == json!(email))
            .collect();
        assert_eq!(mine.len(), 1, "{email} once");
        assert_eq!(mine[0]["lead_id"], lead_id);
        let user = env.hull.find_user("email", email).expect("user");
        assert_eq!(
            user.attributes["closeio/id"], mine[0]["id"],
            "{email} written back"
        );
        assert_eq!(user.attributes["closeio/lead_id"], lead_id);
    }
    assert_eq!(
        env.hull
            .find_account("domain", "acme.com")
            .expect("account")
            .attributes["closeio/id"],
        lead_id
    );
}

#[tokio::test]
async fn a_new_account_and_its_users_are_one_lead_create_with_nested_contacts() {
    let env = env(CloseConfig::default()).await;
    notify(&env, "account:update", &[account_id(&env)]).await;
    notify(&env, "user:update", &user_ids(&env, &USERS)).await;
    let runs = env
        .drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    assert_synced(&env);
    // The account's job ran twice (deferred while its lead gathered, then the create); each
    // user's once: the lead's commit finished the users' deferred jobs.
    assert_eq!(runs, 5, "job runs: the account's two, one per user");
    assert_eq!(count(&env, "POST", "/lead/"), 1);
    let create = env
        .close
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/lead/"))
        .expect("create");
    assert_eq!(
        create.body.as_ref().expect("body")["contacts"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "the contacts are nested in the lead's create"
    );
    assert_eq!(
        count(&env, "POST", "/contact/"),
        0,
        "no contact created on its own"
    );
    assert_eq!(
        count(&env, "GET", "/contact/"),
        0,
        "no contact lookup: {:?}",
        env.close
            .requests()
            .iter()
            .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
            .collect::<Vec<_>>()
    );
    let searches = count(&env, "POST", "/data/search/");
    assert_eq!(searches, 1, "one lookup of the new lead");

    // Sent again unchanged: nothing to do.
    env.close.clear_requests();
    notify(&env, "account:update", &[account_id(&env)]).await;
    notify(&env, "user:update", &user_ids(&env, &USERS)).await;
    env.drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    assert_eq!(env.close.requests().len(), 0, "unchanged: no Close call");
    env.cleanup().await;
}

#[tokio::test]
async fn users_that_come_before_their_account_are_nested_too() {
    let env = env(CloseConfig::default()).await;
    notify(&env, "user:update", &user_ids(&env, &USERS)).await;
    notify(&env, "account:update", &[account_id(&env)]).await;
    env.drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    assert_synced(&env);
    assert_eq!(count(&env, "POST", "/lead/"), 1);
    assert_eq!(count(&env, "POST", "/contact/"), 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_user_that_finds_the_gathering_over_creates_the_lead_with_its_own_contact_nested() {
    let env = env(CloseConfig::default()).await;
    // The account's job starts the gathering and is deferred to its end (it stays in
    // `retries`: nothing republishes it here).
    notify(&env, "account:update", &[account_id(&env)]).await;
    env.drain().await.expect("drain");
    assert_eq!(count(&env, "POST", "/lead/"), 0, "the lead gathers first");
    // The gathering is over, and nobody is booked to create the lead.
    let store = env.store().expect("store");
    let db = store.pool().get().await.expect("connection");
    let ended = db
        .execute(
            "UPDATE pending_leads SET due_at = now() - interval '1 second'",
            &[],
        )
        .await
        .expect("end the gathering");
    assert_eq!(ended, 1);
    drop(db);
    // A user comes now: it creates the lead itself, its own contact nested in the create.
    notify(&env, "user:update", &user_ids(&env, &USERS[..1])).await;
    env.drain().await.expect("drain");
    let creates: Vec<_> = env
        .close
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/lead/"))
        .collect();
    assert_eq!(creates.len(), 1, "one lead create");
    let nested = creates[0].body.as_ref().expect("body")["contacts"].clone();
    assert_eq!(
        nested.as_array().map(Vec::len),
        Some(1),
        "the user's contact is nested: {nested}"
    );
    assert_eq!(nested[0]["emails"][0]["email"], json!(USERS[0]));
    assert_eq!(
        count(&env, "POST", "/contact/"),
        0,
        "no contact created on its own"
    );
    let user = env.hull.find_user("email", USERS[0]).expect("user");
    let contacts = env.close.contacts();
    assert_eq!(contacts.len(), 1);
    assert_eq!(
        user.attributes["closeio/id"], contacts[0]["id"],
        "written back"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_user_after_the_lead_was_created_gets_its_own_contact() {
    let env = env(CloseConfig::default()).await;
    notify(&env, "account:update", &[account_id(&env)]).await;
    notify(&env, "user:update", &user_ids(&env, &USERS[..2])).await;
    env.drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    notify(&env, "user:update", &user_ids(&env, &USERS[2..])).await;
    env.drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    assert_synced(&env);
    assert_eq!(count(&env, "POST", "/lead/"), 1);
    assert_eq!(
        count(&env, "POST", "/contact/"),
        1,
        "the late user's contact alone"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_lost_answer_to_a_create_with_nested_contacts_leaves_no_duplicate() {
    // Every lead create is applied but answered 503: the job cannot know it worked.
    let env = env(CloseConfig {
        faults: Faults {
            routes: Some(vec!["POST /lead/".into()]),
            lost_response_rate: 1.0,
            ..Faults::default()
        },
        ..CloseConfig::default()
    })
    .await;
    notify(&env, "account:update", &[account_id(&env)]).await;
    notify(&env, "user:update", &user_ids(&env, &USERS)).await;
    // The first create is applied; later attempts find the lead by lookup and adopt it, and
    // the users find their contacts in it by email.
    env.drain_with_retries(Duration::from_secs(60))
        .await
        .expect("drain");
    assert_synced(&env);
    assert_eq!(
        count(&env, "POST", "/lead/"),
        1,
        "the create is never re-sent"
    );
    assert_eq!(
        count(&env, "POST", "/contact/"),
        0,
        "the nested contacts are adopted"
    );
    env.cleanup().await;
}

fn accounts(domains: &[&str]) -> Vec<Value> {
    domains
        .iter()
        .map(|d| json!({"domain": d, "name": d, "segment_ids": [SYNC_SEGMENT]}))
        .collect()
}

/// A test environment whose Close allows 2 requests per second and group (so that a burst's
/// creates wait for their turn), with new leads gathering for 1 s.
async fn slow_close_env(accounts: Vec<Value>, users: Vec<Value>) -> TestEnv {
    TestEnv::start(EnvOptions {
        accounts,
        users,
        close: CloseConfig {
            rate_limit_rps: Some(2.0),
            ..CloseConfig::default()
        },
        vars: vec![("NEW_LEAD_GATHER_SECS".into(), "1".into())],
        ..EnvOptions::default()
    })
    .await
    .expect("test env")
}

/// Close already holds leads for `in_close` (created in Close's UI); every account of
/// `domains` is sent and the queue drained: each domain then has exactly one lead, and Close's
/// own leads were adopted, never created again.
async fn sync_accounts_some_in_close(env: &TestEnv, domains: &[&str], in_close: &[&str]) {
    let existing: Vec<Value> = in_close
        .iter()
        .map(|d| {
            env.close
                .ui_create_lead(
                    harness::API_KEY,
                    json!({"name": format!("{d} (Close)"), "url": d}),
                )
                .expect("lead")
        })
        .collect();
    let ids: Vec<String> = domains
        .iter()
        .map(|d| env.hull.find_account("domain", d).expect("account").id)
        .collect();
    notify(env, "account:update", &ids).await;
    env.drain_with_retries(Duration::from_secs(90))
        .await
        .expect("drain");
    for d in domains {
        assert_eq!(env.leads_with_url(d).len(), 1, "{d}: exactly one lead");
    }
    for lead in &existing {
        let url = lead["url"].as_str().expect("url");
        assert_eq!(
            env.leads_with_url(url)[0]["id"],
            lead["id"],
            "{url}: Close's lead adopted"
        );
    }
}

/// New accounts that reach the lookup together share one search; the leads Close already
/// holds are adopted (never created again), the others created.
#[tokio::test]
async fn concurrent_lookups_share_a_search_and_adopt_what_close_holds() {
    let domains = ["a1.com", "a2.com", "a3.com", "a4.com"];
    let env = TestEnv::start(EnvOptions {
        accounts: accounts(&domains),
        vars: vec![("NEW_LEAD_GATHER_SECS".into(), "1".into())],
        ..EnvOptions::default()
    })
    .await
    .expect("test env");
    // Close already holds the leads of two of them.
    sync_accounts_some_in_close(&env, &domains, &["a2.com", "a4.com"]).await;
    assert_eq!(
        count(&env, "POST", "/lead/"),
        2,
        "only the missing leads are created"
    );
    let searches = count(&env, "POST", "/data/search/");
    assert!(
        searches < domains.len(),
        "the lookups of jobs running together share searches: {searches}"
    );
    env.cleanup().await;
}

/// A burst of new accounts whose creates wait for their turn in a slow Close budget: their
/// lookups are made together while the leads gather (searches shared by the burst), not one
/// by one as each create's turn comes; the leads Close already holds are still adopted.
#[tokio::test]
async fn a_burst_of_new_accounts_is_looked_up_together_while_their_leads_gather() {
    let domains: Vec<String> = (1..=12).map(|i| format!("b{i}.com")).collect();
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let env = slow_close_env(accounts(&names), Vec::new()).await;
    sync_accounts_some_in_close(&env, &names, &["b3.com", "b7.com"]).await;
    // Requests Close served (one answered 429 while the workers learn its limit is sent again).
    let served = |path: &str| {
        env.close
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == format!("/api/v1{path}") && r.status != 429)
            .count()
    };
    assert_eq!(served("/lead/"), 10, "only the missing leads are created");
    // One lookup per create (each creator alone, as its turn came) would be 10 or more, and
    // without the lookups made while the leads gather it is 8. Usually 3–4; a loaded machine
    // splits the burst's lookups over a search or two more.
    let searches = served("/data/search/");
    assert!(
        searches <= 6,
        "the burst's lookups share searches while the leads gather: {searches}"
    );
    env.cleanup().await;
}

/// Close refuses a create whose nested contact is invalid (nothing is written): the lead is
/// created alone, the good users' contacts on their own, and only the bad user fails.
#[tokio::test]
async fn a_refused_nested_contact_fails_only_its_own_user() {
    let users = vec![
        json!({"email": "ann@acme.com", "name": "ann", "account_domain": "acme.com"}),
        json!({"email": "broken", "name": "broken", "account_domain": "acme.com"}),
    ];
    let env = TestEnv::start(EnvOptions {
        accounts: accounts(&["acme.com"]),
        users,
        vars: vec![("NEW_LEAD_GATHER_SECS".into(), "1".into())],
        ..EnvOptions::default()
    })
    .await
    .expect("test env");
    notify(&env, "account:update", &[account_id(&env)]).await;
    notify(
        &env,
        "user:update",
        &user_ids(&env, &["ann@acme.com", "broken"]),
    )
    .await;
    env.drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    assert_eq!(env.leads_with_url("acme.com").len(), 1, "the lead exists");
    let contacts = env.close.contacts();
    assert_eq!(contacts.len(), 1, "ann's contact only: {contacts:?}");
    assert_eq!(contacts[0]["emails"][0]["email"], json!("ann@acme.com"));
    let dead = env
        .store()
        .expect("store")
        .dead_letters(None, None, None, true, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "the bad user alone: {dead:?}");
    assert_eq!(dead[0].job_name, "outgoing_user");
    env.cleanup().await;
}

/// A user that has a contact already and moves to a new account is not nested in the new lead
/// (that would leave it two contacts in Close).
#[tokio::test]
async fn a_user_moving_to_a_new_account_keeps_its_one_contact() {
    let env = env(CloseConfig::default()).await;
    notify(&env, "account:update", &[account_id(&env)]).await;
    notify(&env, "user:update", &user_ids(&env, &USERS[..1])).await;
    env.drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    let before = env.close.contacts();
    assert_eq!(before.len(), 1);
    // The user moves to a new account.
    let new_account = env.hull.upsert_account(
        json!({"domain": "newco.com", "name": "NewCo", "segment_ids": [SYNC_SEGMENT]}),
    );
    env.hull
        .upsert_user(json!({"email": USERS[0], "account_domain": "newco.com"}));
    notify(&env, "account:update", &[new_account]).await;
    notify(&env, "user:update", &user_ids(&env, &USERS[..1])).await;
    env.drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    let contacts = env.close.contacts();
    assert_eq!(contacts.len(), 1, "still one contact: {contacts:?}");
    assert_eq!(contacts[0]["id"], before[0]["id"], "the same contact");
    assert_eq!(
        env.leads_with_url("newco.com").len(),
        1,
        "one new lead: {:?}",
        env.close.leads()
    );
    env.cleanup().await;
}

/// The new accounts of one notification travel in one bundle and take their first pass
/// together (one statement for their gatherings, one for their places on the lead writes'
/// lane, ...): each is deferred while its lead gathers and, on a slow budget, booked a place
/// of its own on the lane. The users of the next notification join their gathering together. An account the connector does not sync and one whose lead Hull
/// knows take the way of a job alone. Every lead is still created once, the users' contacts
/// nested in it.
#[tokio::test]
async fn the_new_entities_of_a_bundle_take_their_first_pass_together() {
    let domains: Vec<String> = (1..=10).map(|i| format!("n{i}.com")).collect();
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let mut all = accounts(&names);
    all.extend(accounts(&["known.com"]));
    all.push(json!({"domain": "skip.com", "name": "skip.com"}));
    let users = ["ann@n1.com", "bob@n1.com"]
        .iter()
        .map(|e| json!({"email": e, "name": e.split('@').next(), "account_domain": "n1.com"}))
        .collect();
    let env = slow_close_env(all, users).await;
    let id = |d: &str| env.hull.find_account("domain", d).expect("account").id;
    // known.com is synced first: Hull then knows its lead, and the workers Close's limit.
    notify(&env, "account:update", &[id("known.com")]).await;
    env.drain_with_retries(Duration::from_secs(30))
        .await
        .expect("drain");
    assert_eq!(env.leads_with_url("known.com").len(), 1);

    let mut ids: Vec<String> = names.iter().map(|d| id(d)).collect();
    ids.push(id("skip.com"));
    ids.push(id("known.com"));
    notify(&env, "account:update", &ids).await;
    let users: Vec<String> = ["ann@n1.com", "bob@n1.com"]
        .iter()
        .map(|e| env.hull.find_user("email", e).expect("user").id)
        .collect();
    notify(&env, "user:update", &users).await;
    // The first pass: every new account deferred; the users wait for n1.com.
    env.drain().await.expect("drain");
    let store = env.store().expect("store");
    let waiting = store.retries(None, 100).await.expect("retries");
    let accounts_waiting: Vec<_> = waiting
        .iter()
        .filter(|r| r.job_name == "outgoing_account")
        .collect();
    assert_eq!(accounts_waiting.len(), 10, "{waiting:?}");
    for r in &accounts_waiting {
        assert!(r.last_error.starts_with("deferred:"), "{r:?}");
        assert_eq!(r.attempts, 0, "a deferral burns no attempt: {r:?}");
    }
    // The users joined n1.com's gathering and wait for its lead.
    let users_waiting: Vec<_> = waiting
        .iter()
        .filter(|r| r.job_name == "outgoing_user")
        .collect();
    assert_eq!(users_waiting.len(), 2, "{waiting:?}");
    assert!(users_waiting
        .iter()
        .all(|r| r.last_error == "deferred: a new lead gathers its contacts"));
    // The creates booked on the lane (beyond the gathering) come back one place apart.
    let mut booked: Vec<_> = accounts_waiting
        .iter()
        .filter(|r| r.last_error.contains("budget is busy"))
        .map(|r| r.next_attempt_at)
        .collect();
    booked.sort();
    assert!(booked.len() >= 3, "a slow budget books places: {waiting:?}");
    for pair in booked.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 400, "one place apart (0.5 s): {booked:?}");
    }

    env.drain_with_retries(Duration::from_secs(60))
        .await
        .expect("drain");
    for d in names.iter().chain(["known.com"].iter()) {
        assert_eq!(env.leads_with_url(d).len(), 1, "{d}: exactly one lead");
    }
    assert!(env.leads_with_url("skip.com").is_empty(), "not synced");
    let creates: Vec<_> = env
        .close
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/lead/") && r.status < 300)
        .collect();
    assert_eq!(creates.len(), 11, "each lead created once");
    let n1 = creates
        .iter()
        .find(|r| r.body.as_ref().is_some_and(|b| b["url"] == json!("n1.com")))
        .expect("n1.com created");
    assert_eq!(
        n1.body.as_ref().expect("body")["contacts"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "the users' contacts nested"
    );
    assert_eq!(env.close.contacts().len(), 2);
    env.cleanup().await;
}
