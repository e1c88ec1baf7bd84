//! `closeio-ctl` against a fresh database and a unique queue prefix: the binary is run as an
//! operator would, and its output is checked.

mod support;

use std::process::Output;

use common::jobs::{Envelope, QueueKind};
use support::*;

async fn ctl(f: &Fixture, key: &str, args: &[&str]) -> Output {
    ctl_with(f.env(key), args).await
}

async fn ctl_with(env: Vec<(String, String)>, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_closeio-ctl"))
        .args(args)
        .envs(env)
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("run closeio-ctl")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "closeio-ctl failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn migrate_reports_an_up_to_date_database() {
    let f = Fixture::new().await;
    let out = stdout(&ctl(&f, KEY_A, &["migrate"]).await);
    assert!(out.contains("database is up to date"), "{out}");
    f.cleanup().await;
}

#[tokio::test]
async fn dlq_list_filters_and_show_makes_field_errors_readable() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let id = seed_dead_letter(&store, "broken.example.com").await;

    let out = stdout(&ctl(&f, KEY_A, &["dlq", "list"]).await);
    assert!(out.contains(&id.to_string()), "{out}");
    assert!(out.contains("outgoing_account"), "{out}");
    assert!(out.contains("1 dead letter(s)"), "{out}");
    // Filters: by connector, kind and error text.
    let out = stdout(
        &ctl(
            &f,
            KEY_A,
            &[
                "dlq",
                "list",
                "--connector",
                CONNECTOR,
                "--error",
                "STATUS matching",
            ],
        )
        .await,
    );
    assert!(out.contains("1 dead letter(s)"), "{out}");
    let out = stdout(&ctl(&f, KEY_A, &["dlq", "list", "--kind", "outgoing_user"]).await);
    assert!(out.contains("0 dead letter(s)"), "{out}");
    let out = stdout(&ctl(&f, KEY_A, &["dlq", "list", "--connector", "someone-else"]).await);
    assert!(out.contains("0 dead letter(s)"), "{out}");

    // Every error (the earlier transient one too), the field error readable, the payload.
    let out = stdout(&ctl(&f, KEY_A, &["dlq", "show", &id.to_string()]).await);
    assert!(out.contains("attempts:   2"), "{out}");
    assert!(
        out.contains("attempt 0: Close: Close server error 503"),
        "{out}"
    );
    assert!(
        out.contains("status: Status matching query does not exist: stat_gone"),
        "{out}"
    );
    assert!(out.contains("\"domain\": \"broken.example.com\""), "{out}");

    let json = parse(
        stdout(&ctl(&f, KEY_A, &["--json", "dlq", "show", &id.to_string()]).await).as_bytes(),
    );
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["connector_id"], CONNECTOR);

    let missing = ctl(
        &f,
        KEY_A,
        &["dlq", "show", &uuid::Uuid::new_v4().to_string()],
    )
    .await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no dead letter"));
    f.cleanup().await;
}

#[tokio::test]
async fn dlq_replay_publishes_with_attempts_reset_and_purge_deletes() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let one = seed_dead_letter(&store, "one.example.com").await;
    seed_dead_letter(&store, "two.example.com").await;
    seed_dead_letter(&store, "three.example.com").await;
    stdout(&ctl(&f, KEY_A, &["declare-queues"]).await);

    let out = stdout(&ctl(&f, KEY_A, &["dlq", "replay", &one.to_string()]).await);
    assert!(out.contains("replayed 1 dead letter(s)"), "{out}");
    let queue = f.queue();
    let outgoing = queue.topology().queue(QueueKind::Outgoing);
    assert_eq!(queue.depth(&outgoing).await.expect("depth"), 1);
    let conn = queue.open_connection().await.expect("connection");
    let ch = conn.create_channel().await.expect("channel");
    let delivery = queue
        .get(&ch, QueueKind::Outgoing)
        .await
        .expect("get")
        .expect("a message");
    let env = Envelope::from_bytes(&delivery.data).expect("envelope");
    assert_eq!(env.attempt, 0, "attempts reset");
    let _ = conn.close(200, "done".into()).await;

    // Replayed ones are hidden unless asked for.
    let out = stdout(&ctl(&f, KEY_A, &["dlq", "list"]).await);
    assert!(out.contains("2 dead letter(s)"), "{out}");
    let out = stdout(&ctl(&f, KEY_A, &["dlq", "list", "--all"]).await);
    assert!(out.contains("(replayed)"), "{out}");

    let refused = ctl(&f, KEY_A, &["dlq", "replay"]).await;
    assert!(!refused.status.success(), "an id or --all is required");
    let out = stdout(
        &ctl(
            &f,
            KEY_A,
            &["dlq", "replay", "--all", "--connector", CONNECTOR],
        )
        .await,
    );
    assert!(out.contains("replayed 2 dead letter(s)"), "{out}");
    // The two, plus the first one (inspected above without an ack, so back in the queue).
    assert_eq!(queue.depth(&outgoing).await.expect("depth"), 3);

    let out = stdout(&ctl(&f, KEY_A, &["dlq", "purge", "--replayed"]).await);
    assert!(out.contains("deleted 3 dead letter(s)"), "{out}");
    let out = stdout(&ctl(&f, KEY_A, &["dlq", "list", "--all"]).await);
    assert!(out.contains("0 dead letter(s)"), "{out}");
    f.cleanup().await;
}

#[tokio::test]
async fn retries_and_connectors_show_state_counters_and_no_secret() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let parked = account_job("parked.example.com");
    store
        .park_connector(
            CONNECTOR,
            "Close: Close rejected the API key (401 Unauthorized)",
        )
        .await
        .expect("park");
    store
        .schedule_retry(
            &parked,
            "Close: Close rejected the API key (401 Unauthorized)",
            chrono::Utc::now(),
            true,
        )
        .await
        .expect("retry");
    let waiting = account_job("waiting.example.com");
    store
        .schedule_retry(
            &waiting,
            "Close: Close server error 502",
            chrono::Utc::now(),
            false,
        )
        .await
        .expect("retry");
    seed_dead_letter(&store, "dead.example.com").await;

    let out = stdout(&ctl(&f, KEY_A, &["retries", "list"]).await);
    assert!(
        out.contains(&parked.id.to_string()) && out.contains("parked"),
        "{out}"
    );
    assert!(
        out.contains(&waiting.id.to_string()) && out.contains("scheduled"),
        "{out}"
    );
    assert!(out.contains("2 retr(y/ies)"), "{out}");
    let json = parse(
        stdout(
            &ctl(
                &f,
                KEY_A,
                &["--json", "retries", "list", "--connector", CONNECTOR],
            )
            .await,
        )
        .as_bytes(),
    );
    assert_eq!(json.as_array().map(Vec::len), Some(2));

    let out = stdout(&ctl(&f, KEY_A, &["connectors", "list"]).await);
    assert!(
        out.contains(CONNECTOR) && out.contains("acme.hullapp.io"),
        "{out}"
    );
    let json = parse(stdout(&ctl(&f, KEY_A, &["--json", "connectors", "list"]).await).as_bytes());
    let c = &json["connectors"][0];
    assert_eq!(c["retries"], 1);
    assert_eq!(c["parked"], 1);
    assert_eq!(c["dead_letters"], 1);
    assert!(c["lag_seconds"].as_f64().is_some());

    let out = stdout(&ctl(&f, KEY_A, &["connectors", "show", CONNECTOR]).await);
    assert!(
        out.contains("parked:           Close: Close rejected the API key"),
        "{out}"
    );
    assert!(out.contains("fingerprint"), "{out}");
    assert!(
        !out.contains(API_KEY),
        "the API key is never printed: {out}"
    );
    assert!(out.contains("\"lead_status\": \"stat_gone\""), "{out}");
    let missing = ctl(&f, KEY_A, &["connectors", "show", "nope"]).await;
    assert!(!missing.status.success());
    f.cleanup().await;
}

#[tokio::test]
async fn rotate_key_reencrypts_every_secret_and_is_idempotent() {
    let f = Fixture::new().await;
    seed_connector(&f.store(KEY_A, None)).await;

    // Rotation: B is the new key, A the previous one.
    let mut env = f.env(KEY_B);
    env.push(("ENCRYPTION_KEY_PREVIOUS".into(), KEY_A.into()));
    let out = stdout(&ctl_with(env.clone(), &["rotate-key"]).await);
    assert!(
        out.contains("connectors.api_key_enc: 1 re-encrypted, 0 already current"),
        "{out}"
    );
    assert!(
        out.contains("connectors.secret_enc: 1 re-encrypted, 0 already current"),
        "{out}"
    );
    let again = stdout(&ctl_with(env, &["rotate-key"]).await);
    assert!(
        again.contains("connectors.api_key_enc: 0 re-encrypted, 1 already current"),
        "{again}"
    );

    // The old key is no longer needed; it no longer opens anything.
    let c = f
        .store(KEY_B, None)
        .connector(CONNECTOR)
        .await
        .expect("readable with B alone")
        .expect("connector");
    assert_eq!(c.api_key.as_deref(), Some(API_KEY));
    assert_eq!(c.secret, "connector-secret");
    assert!(
        f.store(KEY_A, None).connector(CONNECTOR).await.is_err(),
        "A cannot open it any more"
    );

    // Without the previous key a value under an unknown key is an error, and nothing changes.
    let unknown = ctl(&f, KEY_A, &["rotate-key"]).await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("ENCRYPTION_KEY"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    assert!(f.store(KEY_B, None).connector(CONNECTOR).await.is_ok());
    f.cleanup().await;
}

#[tokio::test]
async fn dlq_import_broker_records_what_rabbitmq_dead_lettered() {
    use lapin::options::{BasicNackOptions, BasicPublishOptions};

    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    stdout(&ctl(&f, KEY_A, &["declare-queues"]).await);
    let queue = f.queue();
    let t = queue.topology().clone();

    // A job that "crashes" every worker: delivered and returned until the broker's delivery
    // limit moves it to the dead queue.
    let poison = account_job("poison.example.com");
    queue.publish(&poison).await.expect("publish");
    let conn = queue.open_connection().await.expect("connection");
    let ch = conn.create_channel().await.expect("channel");
    for _ in 0..(common::queue::DELIVERY_LIMIT + 5) {
        match queue.get(&ch, QueueKind::Outgoing).await.expect("get") {
            Some(d) => {
                d.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .expect("nack");
            }
            None => break,
        }
    }
    // A worker's copy of a dead letter it recorded itself, and a message that is not a job.
    queue
        .publish_dead(&account_job("copy.example.com").to_bytes(), "recorded")
        .await
        .expect("copy");
    let c = ch
        .basic_publish(
            t.dlx().into(),
            "dead".into(),
            BasicPublishOptions::default(),
            b"not a job",
            Default::default(),
        )
        .await
        .expect("publish");
    c.await.expect("confirm");
    let _ = conn.close(200, "done".into()).await;
    assert_eq!(
        queue
            .depth(&t.queue(QueueKind::Outgoing))
            .await
            .expect("depth"),
        0,
        "the broker dead-lettered the poison job"
    );

    let out = stdout(&ctl(&f, KEY_A, &["dlq", "import-broker"]).await);
    assert!(out.contains("imported 1 dead letter(s)"), "{out}");
    assert!(out.contains("dropped 1 copie(s)"), "{out}");
    assert!(out.contains("left 1 unreadable"), "{out}");
    assert_eq!(
        queue.depth(&t.dead_queue()).await.expect("depth"),
        1,
        "only the unreadable message is left"
    );

    let json = parse(stdout(&ctl(&f, KEY_A, &["--json", "dlq", "list"]).await).as_bytes());
    let letters = json.as_array().expect("array");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["envelope"]["id"], poison.id.to_string());
    let error = letters[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("dead-lettered by RabbitMQ")
            && error.contains(&t.queue(QueueKind::Outgoing)),
        "{error}"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn fetch_requests_a_fetch_that_the_progress_shows() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let out = stdout(&ctl(&f, KEY_A, &["fetch", CONNECTOR, "--full"]).await);
    assert!(out.contains("full import requested"), "{out}");
    let progress = store
        .incoming_progress(CONNECTOR)
        .await
        .expect("progress")
        .expect("known connector");
    assert!(progress.fetch_requested_at.is_some());
    let unknown = ctl(&f, KEY_A, &["fetch", "000000000000000000000000"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no connector"));
    f.cleanup().await;
}
