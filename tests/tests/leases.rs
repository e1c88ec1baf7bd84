//! Entity leases (`entity_leases`): one holder at a time, a lease that expired cannot commit,
//! and a released or expired lease can be claimed again at once. Each "worker" is its own
//! `Store` on one fresh database.

use std::time::Duration;

use common::crypto::SecretBox;
use common::jobs::EntityKind;
use common::store::{self, ConnectorVersion, Store, StoreError, SyncState};
use harness::TestDb;

fn worker_store(db: &TestDb) -> Store {
    Store::connect(&db.url, 2, SecretBox::new([7u8; 32], None)).expect("store")
}

async fn connector(db: &TestDb) {
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c.batch_execute(
        "INSERT INTO connectors (id, organization, secret_enc) VALUES ('c1', 'org.example', '\\x00'::bytea)",
    )
    .await
    .unwrap_or_else(|e| panic!("insert connector: {e}"));
}

/// Runs `sql` on the store's database.
async fn exec(s: &Store, sql: &str) {
    let c = s.pool().get().await.expect("conn");
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn state(close_id: &str) -> SyncState {
    SyncState {
        close_id: Some(close_id.into()),
        lead_id: None,
        body_hash: Some("h".into()),
        failures: 0,
    }
}

async fn close_id_of(s: &Store) -> Option<String> {
    let c = s.pool().get().await.expect("conn");
    store::load_state(&c, "c1", EntityKind::Account, "acc_1")
        .await
        .expect("state")
        .close_id
}

/// A's 30-second lease on an entity that nobody holds.
async fn hold(s: &Store, kind: EntityKind, id: &str) -> store::EntityLease {
    s.claim_entity("c1", kind, id, Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("free")
}

/// Records `recorded` as the entity's state, as a job's fenced commit does.
async fn synced(s: &Store, kind: EntityKind, id: &str, recorded: &SyncState) {
    let lease = hold(s, kind, id).await;
    s.commit_entity(&lease, recorded).await.expect("commit");
}

#[tokio::test]
async fn one_holder_at_a_time_and_an_expired_lease_cannot_commit() {
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let (a, b) = (worker_store(&db), worker_store(&db));
    let ttl = Duration::from_millis(300);
    let first = a
        .claim_entity("c1", EntityKind::Account, "acc_1", ttl)
        .await
        .expect("claim")
        .expect("free");
    assert!(
        b.claim_entity("c1", EntityKind::Account, "acc_1", ttl)
            .await
            .expect("claim")
            .is_none(),
        "held by A"
    );
    // Another entity is not held.
    assert!(b
        .claim_entity("c1", EntityKind::User, "acc_1", ttl)
        .await
        .expect("claim")
        .is_some());

    // A stalls past its lease; B takes the entity over and commits.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let second = b
        .claim_entity("c1", EntityKind::Account, "acc_1", ttl)
        .await
        .expect("claim")
        .expect("expired, so free");
    assert!(second.fence > first.fence);
    assert!(
        !a.renew_entity(&first, ttl).await.expect("renew"),
        "A cannot renew a lease it lost"
    );
    let late = a.commit_entity(&first, &state("lead_from_a")).await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    assert_eq!(close_id_of(&a).await, None, "A's late commit wrote nothing");
    b.commit_entity(&second, &state("lead_from_b"))
        .await
        .expect("B commits");
    assert_eq!(close_id_of(&a).await.as_deref(), Some("lead_from_b"));

    // The commit gave the lease up: it can be claimed at once.
    assert!(a
        .claim_entity("c1", EntityKind::Account, "acc_1", ttl)
        .await
        .expect("claim")
        .is_some());
    db.drop_db().await;
}

#[tokio::test]
async fn an_expired_lease_cannot_commit_even_before_anyone_else_claims_it() {
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let a = worker_store(&db);
    let ttl = Duration::from_millis(200);
    let lease = a
        .claim_entity("c1", EntityKind::Account, "acc_1", ttl)
        .await
        .expect("claim")
        .expect("free");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(matches!(
        a.commit_entity(&lease, &state("lead_late")).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(close_id_of(&a).await, None);
    db.drop_db().await;
}

#[tokio::test]
async fn a_released_lease_is_free_at_once_and_renewal_keeps_it() {
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let (a, b) = (worker_store(&db), worker_store(&db));
    let ttl = Duration::from_millis(300);
    let lease = a
        .claim_entity("c1", EntityKind::Account, "acc_1", ttl)
        .await
        .expect("claim")
        .expect("free");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(a.renew_entity(&lease, ttl).await.expect("renew"));
    }
    assert!(
        b.claim_entity("c1", EntityKind::Account, "acc_1", ttl)
            .await
            .expect("claim")
            .is_none(),
        "renewed past its first expiry, still A's"
    );
    a.release_entity(&lease).await.expect("release");
    assert!(b
        .claim_entity("c1", EntityKind::Account, "acc_1", ttl)
        .await
        .expect("claim")
        .is_some());
    db.drop_db().await;
}

/// The state is read without a lease only while nobody holds one: a job whose body matches it
/// has nothing to write; while another job writes, it waits for the lease instead.
#[tokio::test]
async fn the_state_is_read_without_a_lease_only_while_none_is_held() {
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let (a, b) = (worker_store(&db), worker_store(&db));
    let ttl = Duration::from_millis(300);
    let unleased = |s: &Store| {
        let s = s.clone();
        async move {
            s.state_unless_leased("c1", EntityKind::Account, "acc_1")
                .await
                .expect("read")
        }
    };
    // Never synced, not held: an empty state.
    assert_eq!(unleased(&b).await, Some(SyncState::default()));
    let lease = a
        .claim_entity("c1", EntityKind::Account, "acc_1", ttl)
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(unleased(&b).await, None, "held by A");
    // A's commit gives the lease up and records the state together.
    a.commit_entity(&lease, &state("lead_1"))
        .await
        .expect("commit");
    assert_eq!(unleased(&b).await, Some(state("lead_1")));
    // A lease left by a job that died stops counting when it expires.
    let _abandoned = a
        .claim_entity("c1", EntityKind::Account, "acc_1", ttl)
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(unleased(&b).await, None);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(unleased(&b).await, Some(state("lead_1")));
    db.drop_db().await;
}

/// A user's first read gives its account's lead and its contact's state together, the
/// contact's only while nobody holds its lease.
#[tokio::test]
async fn a_users_first_read_gives_its_accounts_lead_and_its_unleased_contact() {
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let (a, b) = (worker_store(&db), worker_store(&db));
    let read = |s: &Store| {
        let s = s.clone();
        async move {
            s.contact_state_and_lead("c1", "usr_1", "acc_1")
                .await
                .expect("read")
        }
    };
    // Nothing recorded: no lead, an empty contact state.
    assert_eq!(read(&b).await, (Some(SyncState::default()), None));
    synced(&a, EntityKind::Account, "acc_1", &state("lead_1")).await;
    let contact = hold(&a, EntityKind::User, "usr_1").await;
    assert_eq!(
        read(&b).await,
        (None, Some("lead_1".into())),
        "the contact is held by A; the account's lead is known"
    );
    let mut recorded = state("cont_1");
    recorded.lead_id = Some("lead_1".into());
    a.commit_entity(&contact, &recorded).await.expect("commit");
    assert_eq!(read(&b).await, (Some(recorded), Some("lead_1".into())));
    // Another account's lead is not this user's.
    assert_eq!(
        b.contact_state_and_lead("c1", "usr_1", "acc_2")
            .await
            .expect("read")
            .1,
        None
    );
    db.drop_db().await;
}

/// A lookup made while a new lead gathers serves the next claim once; it is never recorded on
/// a gathering that was claimed (its claimer may have sent the create and died).
#[tokio::test]
async fn an_early_lookup_serves_one_claim_and_never_a_claimed_lead() {
    use common::store::Claim;
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let s = worker_store(&db);
    let fresh = Duration::from_secs(300);
    let value = serde_json::json!("acme.com");
    s.gather_lead("c1", "acc_1", Duration::ZERO)
        .await
        .expect("gather")
        .expect("gathering");
    let at = chrono::Utc::now();
    let note = |at| common::store::LeadLookupNote {
        account_key: "acc_1",
        at,
        value: &value,
    };
    s.note_lead_lookups("c1", &[note(at)]).await.expect("note");
    match s
        .claim_pending_lead("c1", "acc_1", fresh)
        .await
        .expect("claim")
    {
        Claim::Claimed(Some((_, v))) => assert_eq!(v, value),
        other => panic!("the first claim gets the lookup: {other:?}"),
    }
    // Claimed (its create may have been sent): a later lookup is not recorded, and the next
    // claim (a job taking the lead over) must look again.
    s.note_lead_lookups("c1", &[note(chrono::Utc::now())])
        .await
        .expect("note");
    match s
        .claim_pending_lead("c1", "acc_1", fresh)
        .await
        .expect("claim")
    {
        Claim::Claimed(None) => {}
        other => panic!("a claimed lead's next claim looks again: {other:?}"),
    }
    db.drop_db().await;
}

/// A lease claimed together with the reads under it (`claim_entity_reading`, two statements
/// in one round trip): the reads and the gathering's claim happen only for the job that got
/// the lease, and see what was committed before it.
#[tokio::test]
async fn the_reads_pipelined_with_a_lease_claim_act_only_for_its_holder() {
    use common::store::Claim;
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let (a, b) = (worker_store(&db), worker_store(&db));
    let ttl = Duration::from_secs(30);
    let fresh = Some(Duration::from_secs(300));
    synced(&a, EntityKind::User, "u1", &state("cont_1")).await;
    // A user: its state, read under the lease.
    let (lease, read, claim) = a
        .claim_entity_reading("c1", EntityKind::User, "u1", ttl, None)
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(read, state("cont_1"));
    assert!(claim.is_none());
    assert!(
        b.claim_entity_reading("c1", EntityKind::User, "u1", ttl, None)
            .await
            .expect("claim")
            .is_none(),
        "held by A"
    );
    // A's fence is the one the read checked: A can commit.
    a.commit_entity(&lease, &state("cont_2"))
        .await
        .expect("commit");
    let (_, read, _) = b
        .claim_entity_reading("c1", EntityKind::User, "u1", ttl, None)
        .await
        .expect("claim")
        .expect("released by the commit");
    assert_eq!(read, state("cont_2"), "the commit before the claim is seen");
    // A new account whose gathering is due: B holds its lease, so A's claim neither gets the
    // lease nor claims the gathering.
    a.gather_lead("c1", "acc_1", Duration::ZERO)
        .await
        .expect("gather")
        .expect("gathering");
    let held = hold(&b, EntityKind::Account, "acc_1").await;
    assert!(a
        .claim_entity_reading("c1", EntityKind::Account, "acc_1", ttl, fresh)
        .await
        .expect("claim")
        .is_none());
    let g = a
        .gather_lead("c1", "acc_1", Duration::ZERO)
        .await
        .expect("gather")
        .expect("still gathering");
    assert!(!g.claimed, "nobody without the lease claims the gathering");
    b.release_entity(&held).await.expect("release");
    let (_, read, claim) = a
        .claim_entity_reading("c1", EntityKind::Account, "acc_1", ttl, fresh)
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(read, SyncState::default());
    assert!(matches!(claim, Some(Claim::Claimed(None))), "{claim:?}");
    // An account with no gathering: its state and no claim.
    let (_, read, claim) = a
        .claim_entity_reading("c1", EntityKind::Account, "acc_2", ttl, fresh)
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(read, SyncState::default());
    assert!(matches!(claim, Some(Claim::None)), "{claim:?}");
    db.drop_db().await;
}

/// A claimed gathering still takes contacts until its creator seals it (just before it sends
/// the create); the seal returns every contact that joined, and nothing joins after it. A
/// creator deferred after sealing (its re-send found the budget busy) opens it again.
#[tokio::test]
async fn contacts_join_a_claimed_lead_until_it_is_sealed() {
    use common::store::{Claim, PendingContact};
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let (creator, user) = (worker_store(&db), worker_store(&db));
    let contact = |id: &str| PendingContact {
        user_id: id.into(),
        body: serde_json::json!({"name": id})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        claims: serde_json::Map::new(),
        job_id: None,
    };
    let join = |id: &'static str| {
        let (s, c) = (user.clone(), contact(id));
        async move {
            s.join_gathering("c1", "acc_1", Duration::ZERO, &c)
                .await
                .expect("join")
                .is_some_and(|j| j.joined)
        }
    };
    creator
        .gather_lead("c1", "acc_1", Duration::ZERO)
        .await
        .expect("gather")
        .expect("gathering");
    assert!(join("usr_1").await);
    assert!(matches!(
        creator
            .claim_pending_lead("c1", "acc_1", Duration::from_secs(300))
            .await
            .expect("claim"),
        Claim::Claimed(_)
    ));
    // The creator waits for its slot: a user arriving now still joins.
    assert!(join("usr_2").await, "a claimed gathering takes contacts");
    let sealed = creator
        .seal_pending_lead("c1", "acc_1")
        .await
        .expect("seal");
    let ids: Vec<&str> = sealed.iter().map(|c| c.user_id.as_str()).collect();
    assert_eq!(ids, ["usr_1", "usr_2"]);
    assert!(!join("usr_3").await, "nothing joins a sealed gathering");
    // Deferred after the seal: it is open again, with the contacts it had.
    creator
        .unclaim_pending_lead("c1", "acc_1", Duration::from_secs(1), None)
        .await
        .expect("unclaim");
    assert!(join("usr_3").await);
    assert_eq!(
        creator
            .seal_pending_lead("c1", "acc_1")
            .await
            .expect("seal")
            .len(),
        3
    );
    // No gathering: nothing to seal.
    assert!(creator
        .seal_pending_lead("c1", "acc_2")
        .await
        .expect("seal")
        .is_empty());
    db.drop_db().await;
}

/// A user's job that joined its lead's gathering is deferred until the lead exists; the commit
/// that records the lead with the user's contact nested also deletes that job's scheduled
/// return (its work is done), in the same statement and only when the lease still holds. A
/// return already republished (it may be running) is left to finish by itself, and so is the
/// job of a user whose contact was recorded otherwise meanwhile (its state is not
/// overwritten, so its job still has work). The creating job's own row goes with the commit.
#[tokio::test]
async fn a_gathered_users_job_is_finished_by_its_leads_commit() {
    use common::jobs::{Envelope, Job, OutgoingMessage};
    use common::store::{Claim, NestedContact, PendingContact};
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let s = worker_store(&db);
    let job = |user: &str| {
        Envelope::new(
            "c1",
            Job::OutgoingUser(OutgoingMessage {
                notification_id: "n1".into(),
                is_export: false,
                message: serde_json::json!({"user": {"id": user}, "account": {"id": "acc_1"}}),
            }),
        )
    };
    let users = ["usr_1", "usr_2", "usr_3"];
    let jobs: Vec<Envelope> = users.iter().map(|u| job(u)).collect();
    for (user, env) in users.iter().zip(&jobs) {
        let joined = s
            .join_gathering(
                "c1",
                "acc_1",
                Duration::ZERO,
                &PendingContact {
                    user_id: (*user).into(),
                    body: serde_json::Map::new(),
                    claims: serde_json::Map::new(),
                    job_id: Some(env.id),
                },
            )
            .await
            .expect("join")
            .expect("a gathering");
        assert!(joined.joined);
        s.defer(
            env,
            "waits for its lead",
            chrono::Utc::now() + chrono::Duration::seconds(60),
        )
        .await
        .expect("defer");
    }
    let sql = |q: &'static str| {
        let s = s.clone();
        async move {
            let c = s.pool().get().await.expect("conn");
            c.batch_execute(q).await.expect("sql");
        }
    };
    // The account's own job is back from its deferral (its row queued): its commit clears it.
    let account_job = Envelope::new(
        "c1",
        Job::OutgoingAccount(OutgoingMessage {
            notification_id: "n1".into(),
            is_export: false,
            message: serde_json::json!({"account": {"id": "acc_1"}}),
        }),
    );
    s.defer(&account_job, "waits for its slot", chrono::Utc::now())
        .await
        .expect("defer");
    sql("UPDATE retries SET state = 'queued' WHERE entity_key = 'account:acc_1'").await;
    // usr_2's return was republished already; usr_3 got a contact of its own meanwhile.
    sql("UPDATE retries SET state = 'queued' WHERE entity_key = 'user:usr_2'").await;
    sql("INSERT INTO sync_state (connector_id, kind, hull_id, close_id) VALUES ('c1', 'user', 'usr_3', 'cont_own')").await;

    let lease = s
        .claim_entity("c1", EntityKind::Account, "acc_1", Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("free");
    assert!(matches!(
        s.claim_pending_lead("c1", "acc_1", Duration::from_secs(300))
            .await
            .expect("claim"),
        Claim::Claimed(_)
    ));
    let sealed = s.seal_pending_lead("c1", "acc_1").await.expect("seal");
    let nested: Vec<NestedContact> = sealed
        .iter()
        .map(|p| NestedContact {
            user_id: p.user_id.clone(),
            state: SyncState {
                close_id: Some(format!("cont_{}", p.user_id)),
                lead_id: Some("lead_1".into()),
                body_hash: Some("h".into()),
                failures: 0,
            },
            job_id: p.job_id,
        })
        .collect();
    assert_eq!(nested.len(), 3);
    let remaining = |s: Store| async move {
        let mut keys: Vec<String> = s
            .retries(Some("c1"), 10)
            .await
            .expect("retries")
            .into_iter()
            .filter_map(|r| r.entity_key)
            .collect();
        keys.sort();
        keys
    };

    // A lease that is not this job's commits nothing, and finishes nothing.
    let stale = common::store::EntityLease {
        fence: lease.fence + 1000,
        ..lease.clone()
    };
    assert!(matches!(
        s.commit_lead_with_contacts(&stale, &state("lead_1"), &nested, Some(account_job.id))
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(remaining(s.clone()).await.len(), 4);

    let finished = s
        .commit_lead_with_contacts(&lease, &state("lead_1"), &nested, Some(account_job.id))
        .await
        .expect("commit");
    assert_eq!(finished, 1, "only usr_1's scheduled return is finished");
    assert_eq!(
        remaining(s.clone()).await,
        ["user:usr_2", "user:usr_3"],
        "the account's own row is cleared with its commit"
    );
    assert_eq!(close_id_of(&s).await.as_deref(), Some("lead_1"));
    let c = s.pool().get().await.expect("conn");
    let contact = |u: &'static str| {
        let c = &c;
        async move {
            store::load_state(c, "c1", EntityKind::User, u)
                .await
                .expect("state")
                .close_id
        }
    };
    assert_eq!(contact("usr_1").await.as_deref(), Some("cont_usr_1"));
    assert_eq!(contact("usr_2").await.as_deref(), Some("cont_usr_2"));
    assert_eq!(contact("usr_3").await.as_deref(), Some("cont_own"));
    // The gathering is over.
    assert!(s
        .seal_pending_lead("c1", "acc_1")
        .await
        .expect("seal")
        .is_empty());
    drop(c);
    db.drop_db().await;
}

/// The first reads of several jobs answered by one statement: each gets its own entity's
/// answer, in the order asked, whatever the others hold (a leased entity, one never synced, a
/// user whose account has a lead, one whose account has none).
#[tokio::test]
async fn first_reads_of_several_jobs_are_each_answered_in_one_statement() {
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let (a, b) = (worker_store(&db), worker_store(&db));
    synced(&a, EntityKind::Account, "acc_1", &state("lead_1")).await;
    let mut recorded = state("cont_1");
    recorded.lead_id = Some("lead_1".into());
    synced(&a, EntityKind::User, "usr_1", &recorded).await;
    let _held = hold(&a, EntityKind::User, "usr_2").await;
    let read = |kind, id: &str, account: Option<&str>| store::FirstRead {
        connector_id: "c1".into(),
        kind,
        hull_id: id.into(),
        account_key: account.map(str::to_string),
    };
    let answers = b
        .first_reads(&[
            read(EntityKind::User, "usr_1", Some("acc_1")),
            read(EntityKind::Account, "acc_2", None),
            read(EntityKind::User, "usr_2", Some("acc_1")),
            read(EntityKind::Account, "acc_1", None),
            read(EntityKind::User, "usr_3", Some("acc_2")),
        ])
        .await
        .expect("reads");
    let answer = |state, lead: Option<&str>| store::FirstAnswer {
        state,
        account_lead: lead.map(str::to_string),
    };
    assert_eq!(
        answers,
        vec![
            answer(Some(recorded), Some("lead_1")),
            answer(Some(SyncState::default()), None),
            answer(None, Some("lead_1")),
            answer(Some(state("lead_1")), None),
            answer(Some(SyncState::default()), None),
        ]
    );
    assert_eq!(b.first_reads(&[]).await.expect("none"), vec![]);
    db.drop_db().await;
}

/// The worker's shared first reads: jobs that read at the same time each get their own
/// entity's answer, whether their reads shared a statement or not.
#[tokio::test]
async fn concurrent_jobs_sharing_first_reads_each_get_their_own_answer() {
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let s = worker_store(&db);
    for i in 0..20 {
        let lead = state(&format!("lead_{i}"));
        synced(&s, EntityKind::Account, &format!("acc_{i}"), &lead).await;
    }
    let reads = worker::first_reads::spawn(s.clone());
    let answers = futures::future::join_all((0..40).map(|i| {
        let reads = reads.clone();
        async move {
            let user =
                store::FirstRead::user_and_lead("c1", &format!("usr_{i}"), &format!("acc_{i}"));
            let user = reads.read(user).await.expect("read");
            let account = store::FirstRead::entity("c1", EntityKind::Account, &format!("acc_{i}"));
            let account = reads.read(account).await.expect("read");
            (i, user.state, user.account_lead, account.state)
        }
    }))
    .await;
    for (i, contact, lead, account) in answers {
        assert_eq!(contact, Some(SyncState::default()), "usr_{i}");
        if i < 20 {
            assert_eq!(lead, Some(format!("lead_{i}")), "usr_{i}");
            assert_eq!(account, Some(state(&format!("lead_{i}"))), "acc_{i}");
        } else {
            assert_eq!(lead, None, "usr_{i}");
            assert_eq!(account, Some(SyncState::default()), "acc_{i}");
        }
    }
    db.drop_db().await;
}

/// The connector versions of several jobs' checks, read in one statement: each id gets its own
/// connector's version, in order, an unknown one none.
#[tokio::test]
async fn connector_versions_answer_each_id_in_order() {
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let s = worker_store(&db);
    exec(
        &s,
        "UPDATE connectors SET settings_version = 3 WHERE id = 'c1';
         INSERT INTO connectors (id, organization, secret_enc, settings_version, parked_reason)
         VALUES ('c2', 'org.example', '\\x00'::bytea, 7, 'invalid settings')",
    )
    .await;
    let version = |settings_version: i64, parked: Option<&str>| ConnectorVersion {
        settings_version,
        metadata_fetched_at: None,
        parked_reason: parked.map(str::to_owned),
    };
    let (c1, c2) = (version(3, None), version(7, Some("invalid settings")));
    let ids = ["c2", "nobody", "c1", "c2"].map(str::to_owned);
    let versions = s.connector_versions(&ids).await.expect("read");
    assert_eq!(
        versions,
        vec![Some(c2.clone()), None, Some(c1.clone()), Some(c2)]
    );
    assert_eq!(s.connector_version("c1").await.expect("read"), Some(c1));
    assert_eq!(s.connector_version("nobody").await.expect("read"), None);
    assert!(s.connector_versions(&[]).await.expect("read").is_empty());
    db.drop_db().await;
}

/// The statements of a bundle's first pass do for several accounts what one job's do for
/// one: the gatherings start once each (an account whose lead is known has none), the
/// creators' returns are noted, and the deferrals are recorded with their times and reasons.
#[tokio::test]
async fn a_bundles_first_pass_statements_do_what_one_jobs_do() {
    use common::jobs::{Envelope, Job, OutgoingMessage};
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let s = worker_store(&db);
    exec(
        &s,
        "INSERT INTO sync_state (connector_id, kind, hull_id, close_id) VALUES ('c1', 'account', 'acc_known', 'lead_known')",
    )
    .await;
    let gather = Duration::from_secs(5);
    // acc_2 has a gathering already, started by a user's job a moment ago.
    s.gather_lead("c1", "acc_2", gather).await.expect("gather");
    let together = s
        .gather_leads("c1", &["acc_1", "acc_2", "acc_1", "acc_known"], gather)
        .await
        .expect("gather together");
    assert_eq!(together.len(), 2, "{together:?}");
    assert!(!together.contains_key("acc_known"), "its lead is known");
    for key in ["acc_1", "acc_2"] {
        let g = together[key];
        assert!(!g.claimed && g.creator_back_in.is_none(), "{key}: {g:?}");
        assert!(
            g.due_in > Duration::from_secs(4) && g.due_in <= gather,
            "{key}: due in {:?}",
            g.due_in
        );
        // The same gathering a job alone finds.
        let alone = s
            .gather_lead("c1", key, gather)
            .await
            .expect("gather")
            .expect("a gathering");
        assert!(alone.due_in <= g.due_in, "{key}: {alone:?} after {g:?}");
    }
    s.note_creators_back("c1", &[("acc_1", Duration::from_secs(20))])
        .await
        .expect("note");
    let g1 = s
        .gather_lead("c1", "acc_1", gather)
        .await
        .expect("gather")
        .expect("a gathering");
    let back = g1.creator_back_in.expect("acc_1's creator is back later");
    assert!(back > Duration::from_secs(19) && back <= Duration::from_secs(20));
    let g2 = s
        .gather_lead("c1", "acc_2", gather)
        .await
        .expect("gather")
        .expect("a gathering");
    assert_eq!(g2.creator_back_in, None, "acc_2 has no creator booked");

    let job = |key: &str| {
        Envelope::new(
            "c1",
            Job::OutgoingAccount(OutgoingMessage {
                notification_id: "n1".into(),
                is_export: false,
                message: serde_json::json!({"account": {"id": key}}),
            }),
        )
    };
    let now = chrono::Utc::now();
    let records = vec![
        (
            job("acc_1"),
            now + chrono::Duration::seconds(20),
            "deferred: the connector's Close budget is busy".to_owned(),
        ),
        (
            job("acc_2"),
            now + chrono::Duration::seconds(5),
            "deferred: a new lead gathers its contacts".to_owned(),
        ),
    ];
    s.defer_all(&records).await.expect("defer");
    // Recording them again (a job back from its deferral is deferred again) moves them.
    let mut again = records.clone();
    again[1].1 = now + chrono::Duration::seconds(8);
    s.defer_all(&again).await.expect("defer again");
    let rows = s.retries(Some("c1"), 10).await.expect("retries");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = |key: &str| {
        rows.iter()
            .find(|r| r.entity_key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("{key} deferred: {rows:?}"))
    };
    let (r1, r2) = (row("account:acc_1"), row("account:acc_2"));
    assert_eq!(r1.last_error, records[0].2);
    assert_eq!(r2.last_error, records[1].2);
    assert_eq!((r1.attempts, r1.state.as_str()), (0, "scheduled"));
    // Postgres keeps microseconds: the times, to the millisecond.
    let secs = |r: &store::RetryRow| {
        ((r.next_attempt_at - now).num_microseconds().unwrap_or(0) as f64 / 1000.0).round() as i64
    };
    assert_eq!((secs(r1), secs(r2)), (20_000, 8_000));
    assert_eq!(r1.job_name, "outgoing_account");
    db.drop_db().await;
}

/// A bundle's new users join their gatherings in one statement, as each would alone: a user
/// whose account's lead is known, or whose contact is recorded, joins nothing; a gathering
/// sealed by its creator takes no one more.
#[tokio::test]
async fn a_bundles_users_join_their_gatherings_together() {
    use common::store::{Claim, PendingContact};
    let db = TestDb::create().await.expect("db");
    connector(&db).await;
    let s = worker_store(&db);
    exec(
        &s,
        "INSERT INTO sync_state (connector_id, kind, hull_id, close_id) VALUES
           ('c1', 'account', 'acc_known', 'lead_known'),
           ('c1', 'user', 'usr_known', 'cont_known')",
    )
    .await;
    let contact = |user: &str| PendingContact {
        user_id: user.into(),
        body: serde_json::json!({"name": user})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        claims: serde_json::Map::new(),
        job_id: Some(uuid::Uuid::new_v4()),
    };
    let (u1, u2, u3, u4, known) = (
        contact("usr_1"),
        contact("usr_2"),
        contact("usr_3"),
        contact("usr_4"),
        contact("usr_known"),
    );
    let joined = s
        .join_gatherings(
            "c1",
            Duration::ZERO,
            &[
                ("acc_1", &u1),
                ("acc_1", &u2),
                ("acc_2", &u3),
                ("acc_known", &u4),
                ("acc_1", &known),
            ],
        )
        .await
        .expect("join");
    let mut who: Vec<&str> = joined.keys().map(String::as_str).collect();
    who.sort();
    assert_eq!(who, ["usr_1", "usr_2", "usr_3"], "{joined:?}");
    assert!(joined.values().all(|j| j.joined && !j.gathering.claimed));
    // acc_1's creator claims and seals its gathering: it takes usr_1 and usr_2.
    assert!(matches!(
        s.claim_pending_lead("c1", "acc_1", Duration::from_secs(300))
            .await
            .expect("claim"),
        Claim::Claimed(_)
    ));
    let sealed = s.seal_pending_lead("c1", "acc_1").await.expect("seal");
    let mut nested: Vec<&str> = sealed.iter().map(|p| p.user_id.as_str()).collect();
    nested.sort();
    assert_eq!(nested, ["usr_1", "usr_2"]);
    assert!(
        sealed.iter().all(|p| p.job_id.is_some()),
        "each with its job"
    );
    // A user that comes after the seal is not nested: it writes its contact on its own.
    let u5 = contact("usr_5");
    let late = s
        .join_gatherings("c1", Duration::ZERO, &[("acc_1", &u5), ("acc_2", &u4)])
        .await
        .expect("join");
    assert!(!late["usr_5"].joined, "sealed: {late:?}");
    assert!(late["usr_5"].gathering.claimed);
    assert!(late["usr_4"].joined, "acc_2 still gathers");
    db.drop_db().await;
}
