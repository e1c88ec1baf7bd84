//! The Close request budget shared by worker processes (`close_budgets` in Postgres): several
//! workers together never exceed a group's spacing, a pause (429) recorded by one holds the
//! others, and a worker that dies holds no quota. Each "worker" is its own `Store` (its own
//! connection pool) on one fresh database.

use std::sync::Arc;
use std::time::Duration;

use common::clients::SharedBudget;
use common::closeio::{ApiKey, CloseClient, CloseClientConfig, CloseError};
use common::crypto::SecretBox;
use common::store::Store;
use harness::TestDb;

fn worker_store(db: &TestDb) -> Store {
    Store::connect(&db.url, 2, SecretBox::new([7u8; 32], None)).expect("store")
}

#[tokio::test]
async fn reservations_of_several_workers_never_exceed_the_spacing() {
    let db = TestDb::create().await.expect("db");
    let spacing = Duration::from_millis(5);
    let workers: Vec<Store> = (0..3).map(|_| worker_store(&db)).collect();
    let mut tasks = Vec::new();
    for store in &workers {
        for _ in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .budget_reserve("key_a", "search", spacing, 1, None)
                    .await
                    .expect("reserve")
            }));
        }
    }
    let mut slots = Vec::new();
    for t in tasks {
        let common::store::Reservation::Reserved { slot_us, .. } = t.await.expect("join") else {
            panic!("no max wait: always reserved");
        };
        slots.push(slot_us);
    }
    slots.sort_unstable();
    for pair in slots.windows(2) {
        assert!(
            pair[1] - pair[0] >= 5_000,
            "two slots {} µs apart, closer than the spacing",
            pair[1] - pair[0]
        );
    }
    // Another key, or another group of the same key, has a budget of its own.
    let other = workers[0]
        .budget_reserve("key_a", "lead-write", spacing, 1, None)
        .await
        .expect("reserve");
    assert_eq!(other.wait(), Some(Duration::ZERO));
    db.drop_db().await;
}

#[tokio::test]
async fn a_learned_spacing_applies_to_every_worker() {
    let db = TestDb::create().await.expect("db");
    let (a, b) = (worker_store(&db), worker_store(&db));
    a.budget_reserve("key_a", "search", Duration::from_millis(1), 1, None)
        .await
        .expect("reserve");
    a.budget_set_spacing("key_a", "search", Duration::from_millis(400))
        .await
        .expect("learn");
    b.budget_reserve("key_a", "search", Duration::from_millis(1), 1, None)
        .await
        .expect("reserve");
    let third = b
        .budget_reserve("key_a", "search", Duration::from_millis(1), 1, None)
        .await
        .expect("reserve");
    assert!(
        third.wait().unwrap_or_default() > Duration::from_millis(300),
        "B spaces by A's learned spacing: {:?}",
        third.wait()
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_pause_recorded_by_one_worker_holds_the_others_even_with_a_burst() {
    let db = TestDb::create().await.expect("db");
    let (a, b) = (worker_store(&db), worker_store(&db));
    a.budget_pause("key_a", "lead-write", Duration::from_secs(2))
        .await
        .expect("pause");
    let r = b
        .budget_reserve("key_a", "lead-write", Duration::from_millis(1), 100, None)
        .await
        .expect("reserve");
    assert!(
        r.wait().unwrap_or_default() > Duration::from_millis(1900),
        "{r:?}"
    );
    let other_group = b
        .budget_reserve("key_a", "lead-read", Duration::from_millis(1), 1, None)
        .await
        .expect("reserve");
    assert_eq!(other_group.wait(), Some(Duration::ZERO));
    db.drop_db().await;
}

/// A job that will not wait long (a deferrable job) reserves nothing when the key's group is
/// booked further ahead, in Postgres as in memory: the slots of other workers are unchanged.
#[tokio::test]
async fn a_busy_group_is_not_reserved_by_a_caller_that_will_not_wait() {
    let db = TestDb::create().await.expect("db");
    let (a, b) = (worker_store(&db), worker_store(&db));
    let spacing = Duration::from_millis(100);
    for _ in 0..30 {
        a.budget_reserve("key_a", "lead-write", spacing, 1, None)
            .await
            .expect("reserve");
    }
    let busy = b
        .budget_reserve(
            "key_a",
            "lead-write",
            spacing,
            1,
            Some(Duration::from_secs(1)),
        )
        .await
        .expect("reserve");
    let common::store::Reservation::Busy { after, spacing: s } = busy else {
        panic!("30 slots of 100 ms are booked: expected busy, got {busy:?}");
    };
    assert!(after > Duration::from_millis(2500), "{after:?}");
    assert_eq!(s, spacing);
    // Nothing was booked by the refused caller: the next one that waits gets the 31st slot.
    let next = a
        .budget_reserve("key_a", "lead-write", spacing, 1, None)
        .await
        .expect("reserve")
        .wait()
        .expect("reserved");
    assert!(next < Duration::from_millis(3050), "{next:?}");
    // A pause counts too.
    a.budget_pause("key_a", "search", Duration::from_secs(5))
        .await
        .expect("pause");
    assert!(matches!(
        b.budget_reserve("key_a", "search", spacing, 1, Some(Duration::from_secs(1)))
            .await
            .expect("reserve"),
        common::store::Reservation::Busy { after, .. } if after > Duration::from_secs(4)
    ));
    // Another key is free.
    assert_eq!(
        b.budget_reserve(
            "key_b",
            "lead-write",
            spacing,
            1,
            Some(Duration::from_secs(1))
        )
        .await
        .expect("reserve")
        .wait(),
        Some(Duration::ZERO)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_dead_worker_holds_no_quota() {
    let db = TestDb::create().await.expect("db");
    let spacing = Duration::from_millis(50);
    {
        // A reserves five slots and dies before using them.
        let a = worker_store(&db);
        for _ in 0..5 {
            a.budget_reserve("key_a", "search", spacing, 1, None)
                .await
                .expect("reserve");
        }
    }
    let b = worker_store(&db);
    let first = b
        .budget_reserve("key_a", "search", spacing, 1, None)
        .await
        .expect("reserve");
    let first = first.wait().expect("reserved");
    assert!(
        first <= spacing * 5,
        "what a dead worker reserved passes by itself: {first:?}"
    );
    tokio::time::sleep(first + spacing).await;
    let later = b
        .budget_reserve("key_a", "search", spacing, 1, None)
        .await
        .expect("reserve");
    assert_eq!(
        later.wait(),
        Some(Duration::ZERO),
        "the full rate is B's again"
    );
    db.drop_db().await;
}

/// Two workers with their own Close clients and pools, one API key, a simulator allowing one
/// request per window per group: the window is already full when the first worker's request
/// comes, which is answered 429; the second worker's request is then held until the window
/// resets instead of being refused as well.
#[tokio::test]
async fn a_429_seen_by_one_worker_pauses_the_others() {
    let db = TestDb::create().await.expect("db");
    let sim = sandbox::close::CloseSim::start(
        "127.0.0.1:0".parse().expect("addr"),
        sandbox::close::CloseConfig {
            // One request per 3 s window: the outside request and A's share a window even
            // when a loaded machine spaces them by a second.
            rate_limit_rps: Some(1.0 / 3.0),
            rate_window_secs: 3.0,
            ..sandbox::close::CloseConfig::default()
        },
    )
    .await
    .expect("close sim");
    let client = |store: Store| {
        CloseClient::with_budget(
            CloseClientConfig {
                base_url: sim.base_url(),
                rate_limit_rps: Some(1000.0),
                burst: 10,
                max_read_attempts: 1,
                ..CloseClientConfig::default()
            },
            Arc::new(SharedBudget(store)),
        )
        .expect("client")
    };
    let (a, b) = (client(worker_store(&db)), client(worker_store(&db)));
    let key = ApiKey::new(sandbox::close::DEFAULT_API_KEY);
    // Someone else with the key (another installation, say) takes the window's one request.
    let outside = reqwest::Client::new()
        .get(format!("{}/me/", sim.base_url().trim_end_matches('/')))
        .basic_auth(sandbox::close::DEFAULT_API_KEY, Some(""))
        .send()
        .await
        .expect("outside request");
    assert!(outside.status().is_success(), "{outside:?}");
    // Worker A, which has not learned the limit yet, is answered 429.
    let first = a.me(&key).await;
    assert!(
        matches!(first, Err(CloseError::RateLimited { .. })),
        "the window is full: {first:?}"
    );
    // Worker B, a moment later: held until the reset, then answered.
    b.me(&key).await.expect("B is held, not refused");
    let refused_total = sim.requests().iter().filter(|r| r.status == 429).count();
    assert_eq!(refused_total, 1, "only A's request was refused");
    db.drop_db().await;
}

/// The deferral lane of a group no request has used yet starts with the fastest spacing
/// learned for the key's other groups, so that a burst of new work is spread from its first
/// deferral; with nothing learned for the key, nothing is booked.
#[tokio::test]
async fn a_new_groups_lane_starts_with_the_keys_fastest_learned_spacing() {
    let db = TestDb::create().await.expect("db");
    let s = worker_store(&db);
    assert_eq!(
        s.budget_defer("key_a", "lead-write").await.expect("defer"),
        Duration::ZERO,
        "nothing learned for the key: nothing booked"
    );
    assert_eq!(
        s.budget_defer("key_a", "lead-write").await.expect("defer"),
        Duration::ZERO,
        "still nothing"
    );
    for (group, spacing) in [("search", 300), ("meta", 100)] {
        s.budget_reserve("key_a", group, Duration::from_millis(1), 1, None)
            .await
            .expect("reserve");
        s.budget_set_spacing("key_a", group, Duration::from_millis(spacing))
            .await
            .expect("learn");
    }
    let waits: Vec<Duration> = {
        let mut w = Vec::new();
        for _ in 0..3 {
            w.push(s.budget_defer("key_a", "lead-write").await.expect("defer"));
        }
        w
    };
    assert_eq!(
        waits[0],
        Duration::ZERO,
        "the first deferred job is served first"
    );
    for (i, w) in waits.iter().enumerate().skip(1) {
        let expected = Duration::from_millis(100) * u32::try_from(i).unwrap_or(0);
        assert!(
            *w > expected - Duration::from_millis(30) && *w <= expected,
            "deferral {i} comes back after {w:?}, about {expected:?}"
        );
    }
    // Another key learned nothing: its lane books nothing.
    assert_eq!(
        s.budget_defer("key_b", "lead-write").await.expect("defer"),
        Duration::ZERO
    );
    db.drop_db().await;
}

/// A bundle's new accounts book their places on the lane in one statement: as many places,
/// one spacing apart, as one booking each would get; the next deferred job comes after them.
#[tokio::test]
async fn places_booked_together_follow_each_other_on_the_lane() {
    let db = TestDb::create().await.expect("db");
    let s = worker_store(&db);
    s.budget_reserve("key_a", "lead-write", Duration::from_millis(1), 1, None)
        .await
        .expect("reserve");
    s.budget_set_spacing("key_a", "lead-write", Duration::from_millis(200))
        .await
        .expect("learn");
    let first = s.budget_defer("key_a", "lead-write").await.expect("defer");
    let (together, spacing) = s
        .budget_defer_places("key_a", "lead-write", 5)
        .await
        .expect("defer five");
    assert_eq!(spacing, Duration::from_millis(200));
    let after_first = together.saturating_sub(first);
    assert!(
        after_first > Duration::from_millis(150) && after_first <= Duration::from_millis(200),
        "the five come one spacing after the job booked before: {first:?}, {together:?}"
    );
    let next = s.budget_defer("key_a", "lead-write").await.expect("defer");
    // The five places end 5 spacings after the first of them.
    let after_five = next.saturating_sub(together);
    assert!(
        after_five > Duration::from_millis(950) && after_five <= Duration::from_millis(1000),
        "the next job comes after the five places: {together:?}, {next:?}"
    );
    db.drop_db().await;
}
