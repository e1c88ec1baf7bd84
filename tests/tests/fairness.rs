//! Fairness across tenants: each connector has its own Close key and budget. A tenant whose
//! budget is booked far ahead has its outgoing jobs deferred (recorded for later, same attempt,
//! acknowledged) instead of holding the worker's places, so another tenant's update behind its
//! backlog in the queue reaches Close at once; the deferred jobs all complete later, once each.

use std::time::{Duration, Instant};

use harness::sandbox::close::CloseConfig;
use harness::sandbox::hull::ConnectorSeed;
use harness::{EnvOptions, TestEnv, CONNECTOR_ID, SYNC_SEGMENT};
use serde_json::{json, Value};

const B_ID: &str = "5c092905c36af496c700b00b";
const B_SECRET: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const B_KEY: &str = "api_test_key_tenant_b";

fn account(domain: &str) -> Value {
    json!({"domain": domain, "name": domain, "segment_ids": [SYNC_SEGMENT]})
}

/// The options of a tenant (and possibly more) with `accounts` on a Close key limited to 8
/// requests per second and group, whose jobs defer after 0.3 s.
fn limited(accounts: Vec<Value>) -> EnvOptions {
    EnvOptions {
        accounts,
        close: CloseConfig {
            rate_limit_rps: Some(8.0),
            rate_window_secs: 1.0,
            ..CloseConfig::default()
        },
        vars: vec![
            ("CLOSE_RATE_LIMIT_RPS".into(), "8".into()),
            ("WORKER_DEFER_AFTER_SECS".into(), "0.3".into()),
        ],
        ..EnvOptions::default()
    }
}

/// The Hull ids of the accounts `{prefix}{i}.com` for `i` below `n`.
fn account_ids(env: &TestEnv, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            env.hull
                .find_account("domain", &format!("{prefix}{i}.com"))
                .expect("account")
                .id
        })
        .collect()
}

#[tokio::test]
async fn a_tenant_with_a_backlog_does_not_hold_up_another_tenants_update() {
    const BACKLOG: usize = 30;
    let mut accounts: Vec<Value> = (0..BACKLOG)
        .map(|i| account(&format!("a{i}.com")))
        .collect();
    accounts.push(account("tenant-b.com"));
    let mut b_settings = harness::default_settings();
    b_settings["api_key"] = json!(B_KEY);
    let mut opts = limited(accounts);
    opts.close.api_keys = vec![B_KEY.into()];
    opts.more_connectors = vec![ConnectorSeed {
        id: B_ID.into(),
        secret: B_SECRET.into(),
        private_settings: b_settings,
        settings: json!({}),
        url: None,
    }];
    let env = TestEnv::start(opts).await.expect("test env");
    let a_ids = account_ids(&env, "a", BACKLOG);
    let b_id = env
        .hull
        .find_account("domain", "tenant-b.com")
        .expect("account")
        .id;
    // Tenant A's backlog first, then tenant B's one update, behind it in the queue.
    for (connector, ids) in [(CONNECTOR_ID, a_ids), (B_ID, vec![b_id])] {
        let r = env
            .hull
            .notify(connector, "account:update", &ids)
            .await
            .expect("notify");
        assert!(!r.failed, "{r:?}");
    }

    // One pass over the queue: B's update is written; most of A's backlog is deferred.
    let started = Instant::now();
    env.drain().await.expect("drain");
    assert_eq!(
        env.leads_with_url("tenant-b.com").len(),
        1,
        "B reached Close"
    );
    let a_leads = env.close.leads().len() - 1;
    assert!(
        a_leads < BACKLOG / 2,
        "A's backlog waits for A's budget ({a_leads} of {BACKLOG} written in the first pass of {:?})",
        started.elapsed()
    );
    let store = env.store().expect("store");
    let deferred = store
        .retries(Some(CONNECTOR_ID), 1000)
        .await
        .expect("retries");
    assert_eq!(
        deferred.len(),
        BACKLOG - a_leads,
        "every other job of A is deferred"
    );
    assert!(
        deferred
            .iter()
            .all(|r| r.attempts == 0 && r.state == "scheduled"),
        "a deferral burns no attempt: {deferred:?}"
    );
    assert!(
        store
            .retries(Some(B_ID), 10)
            .await
            .expect("retries")
            .is_empty(),
        "B was never deferred"
    );

    // The scheduler brings A's deferred jobs back as A's budget frees up; all complete.
    let sched = env.scheduler().expect("scheduler");
    let deadline = Instant::now() + Duration::from_secs(90);
    while env.close.leads().len() < BACKLOG + 1 {
        assert!(Instant::now() < deadline, "A's backlog did not complete");
        sched.tick().await;
        env.drain().await.expect("drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..BACKLOG {
        assert_eq!(
            env.leads_with_url(&format!("a{i}.com")).len(),
            1,
            "a{i}.com once"
        );
    }
    assert!(store.retries(None, 10).await.expect("retries").is_empty());
    assert!(store
        .dead_letters(None, None, None, true, 10)
        .await
        .expect("dead letters")
        .is_empty());
    env.cleanup().await;
}

/// A deferred job comes back a little before its booked slot. When it finds that slot further
/// away than it may wait (other workers took the slots, or Close paused the group), it is
/// deferred again, after the slots already taken, instead of waiting in a worker's place — a
/// place that waits for seconds holds up every tenant queued behind it. It still completes,
/// once.
#[tokio::test]
async fn a_job_whose_booked_slot_moved_away_is_deferred_again_instead_of_waiting() {
    const BACKLOG: usize = 12;
    let accounts: Vec<Value> = (0..BACKLOG)
        .map(|i| account(&format!("m{i}.com")))
        .collect();
    let env = TestEnv::start(limited(accounts)).await.expect("test env");
    let ids = account_ids(&env, "m", BACKLOG);
    let r = env
        .hull
        .notify(CONNECTOR_ID, "account:update", &ids)
        .await
        .expect("notify");
    assert!(!r.failed, "{r:?}");
    env.drain().await.expect("drain");
    let written = env.close.leads().len();
    let store = env.store().expect("store");
    let deferred = store
        .retries(Some(CONNECTOR_ID), 1000)
        .await
        .expect("retries");
    assert!(
        !deferred.is_empty(),
        "the backlog is deferred on its budget ({written} of {BACKLOG} written)"
    );

    // Every slot of the key's lead writes and searches is taken for the next 30 s (by other
    // workers, say), and the deferred jobs, whose slots in both were booked, come back now.
    // (Metadata reads are always waited for; they keep their slots.)
    let db = store.pool().get().await.expect("connection");
    db.batch_execute(
        "UPDATE close_budgets SET tat = now() + interval '30 seconds' WHERE grp <> 'meta';
         UPDATE retries SET next_attempt_at = now(),
             envelope = jsonb_set(envelope, '{booked_groups}', '[\"search\", \"lead-write\"]');",
    )
    .await
    .expect("move the slots away");
    let slots_free_at = chrono::Utc::now() + chrono::Duration::seconds(30);
    let sched = env.scheduler().expect("scheduler");
    sched.republish_due_retries().await;
    env.drain().await.expect("drain");
    assert_eq!(
        env.close.leads().len(),
        written,
        "nothing was sent before its slot"
    );
    let again = store
        .retries(Some(CONNECTOR_ID), 1000)
        .await
        .expect("retries");
    assert_eq!(again.len(), deferred.len(), "every job is deferred again");
    let soonest = slots_free_at - chrono::Duration::seconds(2);
    assert!(
        again
            .iter()
            .all(|r| r.attempts == 0 && r.state == "scheduled" && r.next_attempt_at > soonest),
        "deferred again until after the slots taken, without burning an attempt: {again:?}"
    );

    // The slots come back: every job completes, once.
    db.batch_execute(
        "UPDATE close_budgets SET tat = now();
         UPDATE retries SET next_attempt_at = now();",
    )
    .await
    .expect("free the slots");
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.close.leads().len() < BACKLOG {
        assert!(Instant::now() < deadline, "the backlog did not complete");
        sched.republish_due_retries().await;
        env.drain().await.expect("drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..BACKLOG {
        assert_eq!(
            env.leads_with_url(&format!("m{i}.com")).len(),
            1,
            "m{i}.com once"
        );
    }
    assert!(store.retries(None, 10).await.expect("retries").is_empty());
    env.cleanup().await;
}
