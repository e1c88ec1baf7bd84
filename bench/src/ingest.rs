//! `closeio-bench ingest`: how fast ingest accepts notification batches, against a bare lapin
//! publisher with publisher confirms on the same machine and broker.
//!
//! Both sides publish the same number of messages in the same batches with the same
//! concurrency: the baseline publishes each batch straight to RabbitMQ with lapin and waits for
//! the confirms; ingest receives each batch as a signed (or, with `--skip-signature`, unsigned)
//! smart-notifier request over HTTP, verifies and validates it, records the connector, splits it
//! into jobs and publishes them with confirms before answering.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use futures::future::join_all;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

use common::jobs::QueueKind;
use harness::{EnvOptions, TestEnv, CONNECTOR_ID, CONNECTOR_SECRET, SYNC_SEGMENT};

/// The Hull simulator's fixed test signing key.
const HULL_PRIVATE_KEY: &str = include_str!("../../sandbox/src/hull/keys/private.pem");

/// Options of `closeio-bench ingest`.
#[derive(Parser)]
pub struct IngestArgs {
    /// Notification batches sent.
    #[arg(long, default_value_t = 200)]
    notifications: usize,
    /// Messages per batch.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Send unsigned notifications (ingest started with SKIP_SIGNATURE_VERIFICATION).
    #[arg(long)]
    skip_signature: bool,
}

fn message(i: usize) -> Value {
    json!({
        "message_id": format!("m{i}"),
        "account": {"id": format!("5b{i:022x}"), "domain": format!("company-{i}.example.com"),
                    "name": format!("Company {i}"), "external_id": format!("ext-{i}"),
                    "indexed_at": "2024-01-01T00:00:00Z"},
        "account_segments": [{"id": SYNC_SEGMENT, "name": "Sync to Close"}],
        "changes": {"is_new": false, "account": {"name": ["Old", format!("Company {i}")]}}
    })
}

/// Runs the benchmark and prints its table.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    if args.notifications == 0 || args.messages == 0 || args.concurrency == 0 {
        bail!("--notifications, --messages and --concurrency must be at least 1");
    }
    let env = TestEnv::start(EnvOptions {
        skip_signature: args.skip_signature,
        ..EnvOptions::default()
    })
    .await?;
    let result = measure(&env, &args).await;
    env.cleanup().await;
    result
}

async fn measure(env: &TestEnv, args: &IngestArgs) -> anyhow::Result<()> {
    let total = args.notifications * args.messages;
    let batches: Vec<Vec<Value>> = (0..args.notifications)
        .map(|n| {
            (0..args.messages)
                .map(|m| message(n * args.messages + m))
                .collect()
        })
        .collect();
    let organization = env.hull.organization();
    let key_url = env.hull.public_key_url();
    let key = EncodingKey::from_rsa_pem(HULL_PRIVATE_KEY.as_bytes()).context("signing key")?;
    let requests: Vec<(String, Value)> = batches
        .iter()
        .enumerate()
        .map(|(n, messages)| {
            let id = format!("bench-{n}");
            let body = json!({
                "notification_id": id,
                "configuration": {"id": CONNECTOR_ID, "organization": organization, "secret": CONNECTOR_SECRET},
                "connector": {"id": CONNECTOR_ID, "private_settings": harness::default_settings()},
                "channel": "account:update", "messages": messages, "segments": [], "accounts_segments": [],
            });
            let claims = json!({"jti": id, "iat": chrono::Utc::now().timestamp(), "exp": chrono::Utc::now().timestamp() + 3600});
            let jwt = encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap_or_default();
            (jwt, body)
        })
        .collect();

    // Baseline: a bare lapin publisher with confirms, same batches, same concurrency.
    let amqp = harness::amqp_url();
    let conn = Connection::connect(&amqp, ConnectionProperties::default()).await?;
    let queue_name = format!("{}.bare", env.prefix);
    let setup = conn.create_channel().await?;
    setup
        .queue_declare(
            queue_name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let payloads: Vec<Vec<Vec<u8>>> = batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|m| serde_json::to_vec(m).unwrap_or_default())
                .collect()
        })
        .collect();
    let started = Instant::now();
    let chunks: Vec<Vec<Vec<Vec<u8>>>> = split(payloads, args.concurrency);
    let tasks = chunks.into_iter().map(|mine| {
        let conn = &conn;
        let queue_name = queue_name.clone();
        async move {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            for batch in mine {
                for p in &batch {
                    ch.basic_publish(
                        "".into(),
                        queue_name.as_str().into(),
                        BasicPublishOptions::default(),
                        p,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?;
                }
                ch.wait_for_confirms().await?;
            }
            Ok::<(), lapin::Error>(())
        }
    });
    for r in join_all(tasks).await {
        r?;
    }
    let bare = started.elapsed();
    setup
        .queue_delete(queue_name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;

    // ingest over HTTP.
    let client = reqwest::Client::new();
    let url = format!("{}/smart-notifier", env.ingest_url());
    let started = Instant::now();
    let chunks = split(requests, args.concurrency);
    let tasks = chunks.into_iter().map(|mine| {
        let client = client.clone();
        let url = url.clone();
        let key_url = key_url.clone();
        async move {
            for (jwt, body) in mine {
                let res = client
                    .post(&url)
                    .header("x-hull-smart-notifier", "true")
                    .header("x-hull-smart-notifier-signature-version", "v1")
                    .header("x-hull-smart-notifier-signature", jwt)
                    .header("x-hull-smart-notifier-signature-public-key-url", &key_url)
                    .json(&body)
                    .send()
                    .await?;
                if !res.status().is_success() {
                    bail!(
                        "ingest answered {}: {}",
                        res.status(),
                        res.text().await.unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
    });
    for r in join_all(tasks).await {
        r?;
    }
    let ingest = started.elapsed();
    let enqueued = env.depth(QueueKind::Outgoing).await?;
    if enqueued as usize != total {
        bail!("ingest enqueued {enqueued} jobs, expected {total}");
    }

    let rate = |d: std::time::Duration| total as f64 / d.as_secs_f64();
    println!("closeio-bench ingest");
    println!("| parameter | value |\n|---|---|");
    println!(
        "| notifications × messages | {} × {} |",
        args.notifications, args.messages
    );
    println!("| concurrency | {} |", args.concurrency);
    println!(
        "| signatures | {} |",
        if args.skip_signature {
            "not verified (SKIP_SIGNATURE_VERIFICATION)"
        } else {
            "RS256, verified"
        }
    );
    println!();
    println!("| publisher | elapsed | messages/s | batches/s |\n|---|---|---|---|");
    for (name, d) in [
        ("bare lapin, confirms", bare),
        ("ingest /smart-notifier", ingest),
    ] {
        println!(
            "| {name} | {:.2} s | {:.0} | {:.1} |",
            d.as_secs_f64(),
            rate(d),
            args.notifications as f64 / d.as_secs_f64()
        );
    }
    println!();
    println!(
        "ingest reaches {:.1} % of the bare publisher's rate (jobs enqueued: {enqueued})",
        100.0 * rate(ingest) / rate(bare)
    );
    Ok(())
}

/// Deals `items` round-robin into `n` lists.
fn split<T>(items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        out[i % n].push(item);
    }
    out
}
