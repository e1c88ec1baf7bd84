//! Ingest with the broker down: it answers Hull's notifications with 503 and flow control
//! "retry" (never 200 for jobs it could not enqueue), and the notification is delivered once
//! the broker is back. Runs on a private RabbitMQ node that the test stops and starts.

use std::time::{Duration, Instant};

use harness::services::RabbitNode;
use harness::{EnvOptions, TestEnv, CONNECTOR_ID, SYNC_SEGMENT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_down_answers_503_retry_then_delivers_once_back() {
    let mut rabbit = RabbitNode::start().await.expect("private RabbitMQ node");
    let env = TestEnv::start(EnvOptions {
        accounts: vec![
            json!({"domain": "acme.example.com", "name": "Acme", "segment_ids": [SYNC_SEGMENT]}),
        ],
        amqp_url: Some(rabbit.url()),
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let acme = env
        .hull
        .find_account("domain", "acme.example.com")
        .expect("account")
        .id;

    rabbit.stop().await.expect("stop RabbitMQ");
    let readyz = reqwest::get(format!("{}/readyz", env.ingest_url()))
        .await
        .expect("readyz");
    assert_eq!(
        readyz.status(),
        503,
        "ingest is not ready without its broker"
    );

    let restart = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = env.hull.notification_log();
            if let Some(n) = log.iter().find(|n| n.status == Some(503)) {
                assert_eq!(n.response["flow_control"]["type"], json!("retry"), "{n:?}");
                break;
            }
            assert!(Instant::now() < deadline, "ingest never answered 503");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rabbit.start_again().await.expect("start RabbitMQ");
    };
    let ids = [acme];
    let (report, ()) = tokio::join!(
        env.hull.notify(CONNECTOR_ID, "account:update", &ids),
        restart
    );
    let report = report.expect("notify");
    assert!(
        !report.failed,
        "delivered once the broker is back: {report:?}"
    );
    assert!(report.statuses.contains(&503), "{report:?}");
    assert_eq!(report.statuses.last(), Some(&200), "{report:?}");
    assert_eq!(report.messages_delivered, 1);

    // Exactly one job was enqueued (the refused attempts enqueued nothing) and it syncs.
    assert_eq!(env.drain().await.expect("drain"), 1);
    assert_eq!(env.leads_with_url("acme.example.com").len(), 1);
    env.cleanup().await;
    drop(rabbit);
}
