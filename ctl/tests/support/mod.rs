//! Fixtures of the operator tooling tests: a fresh migrated database and a unique queue prefix
//! per test, and seeded connectors, retries and dead letters.

#![allow(dead_code)]

use serde_json::{json, Value};
use tokio_postgres::NoTls;

use common::closeio::CloseError;
use common::crypto::SecretBox;
use common::jobs::{Envelope, Job, OutgoingMessage};
use common::queue::Queue;
use common::store::Store;

/// base64 of 32 × `A`.
pub const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
/// base64 of 32 × `B`.
pub const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
/// The seeded connector.
pub const CONNECTOR: &str = "5c092905c36af496c700012e";
/// Its Close API key.
pub const API_KEY: &str = "api_ctl_test_key";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The broker URL.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A fresh database and queue prefix.
pub struct Fixture {
    /// Database URL.
    pub db_url: String,
    db_name: String,
    /// Queue prefix.
    pub prefix: String,
}

fn key(b64: &str) -> [u8; 32] {
    let mut k = [0u8; 32];
    let c = if b64 == KEY_A { b'A' } else { b'B' };
    k.iter_mut().for_each(|b| *b = c);
    k
}

impl Fixture {
    /// Creates and migrates a database.
    pub async fn new() -> Fixture {
        let db_name = format!("t_ctl_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await
            .expect("create database");
        let mut url = url::Url::parse(&admin_url()).expect("url");
        url.set_path(&format!("/{db_name}"));
        let db_url = url.to_string();
        common::store::migrate(&db_url).await.expect("migrate");
        Fixture {
            db_url,
            db_name,
            prefix: format!("tctl{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// A store whose current key is `current` (and previous `previous`).
    pub fn store(&self, current: &str, previous: Option<&str>) -> Store {
        Store::connect(
            &self.db_url,
            2,
            SecretBox::new(key(current), previous.map(key)),
        )
        .expect("store")
    }

    /// The queue handle of this fixture.
    pub fn queue(&self) -> Queue {
        Queue::lazy(&amqp_url(), &self.prefix)
    }

    /// Environment of the CLI.
    pub fn env(&self, key: &str) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.db_url.clone()),
            ("AMQP_URL".into(), amqp_url()),
            ("QUEUE_PREFIX".into(), self.prefix.clone()),
            ("ENCRYPTION_KEY".into(), key.into()),
        ]
    }

    /// Drops the database and the queues.
    pub async fn cleanup(self) {
        let _ = self.queue().delete_topology().await;
        if let Ok((client, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await {
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.db_name
                ))
                .await;
        }
    }
}

/// The connector with an API key.
pub async fn seed_connector(store: &Store) {
    store
        .upsert_connector(
            CONNECTOR,
            "acme.hullapp.io",
            "connector-secret",
            &json!({"api_key": API_KEY, "synchronized_account_segments": ["s1"], "lead_status": "stat_gone"}),
        )
        .await
        .expect("connector");
}

/// An outgoing account job for `domain`.
pub fn account_job(domain: &str) -> Envelope {
    Envelope::new(
        CONNECTOR,
        Job::OutgoingAccount(OutgoingMessage {
            notification_id: "n-1".into(),
            is_export: false,
            message: json!({"account": {"id": format!("acc-{domain}"), "domain": domain, "name": domain}, "account_segments": [{"id": "s1"}]}),
        }),
    )
}

/// The error text the worker records for Close's 400 on an unknown status.
pub fn status_rejection() -> String {
    let e = CloseError::BadRequest {
        errors: vec![],
        field_errors: json!({"status": "Status matching query does not exist: stat_gone"}),
        message: None,
    };
    format!("Close: {e}")
}

/// A dead letter of a 400, after a first transient failure recorded as a retry.
pub async fn seed_dead_letter(store: &Store, domain: &str) -> uuid::Uuid {
    let env = account_job(domain);
    store
        .schedule_retry(
            &env,
            "Close: Close server error 503",
            chrono::Utc::now(),
            false,
        )
        .await
        .expect("retry");
    let mut next = env.clone();
    next.attempt = 1;
    store
        .dead_letter(&next, &status_rejection(), "close_bad_request", None)
        .await
        .expect("dead letter")
}

/// The JSON of a value printed by `--json`.
pub fn parse(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(stdout)))
}

/// Serves the admin listener (JSON API and console) of fixture `f` with `token` on an
/// ephemeral port; returns its base URL and the token that stops it.
pub async fn serve_admin(
    f: &Fixture,
    token: &'static str,
) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let admin = admin::Admin::new(f.store(KEY_A, None), f.queue());
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { admin::serve(listener, admin, token, Default::default(), s).await });
    (base, stop)
}
