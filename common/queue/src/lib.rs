//! The queue facade over lapin (RabbitMQ).
//!
//! Topology, for a prefix `P` (`QUEUE_PREFIX`, unique per test):
//! - `P.jobs`: durable direct exchange; routing keys `outgoing` and `incoming`;
//! - `P.outgoing`, `P.incoming`: durable **quorum** queues with a delivery limit
//!   (`x-delivery-limit`): a message that crashed or timed out workers that many times is
//!   dead-lettered by the broker instead of looping forever;
//! - `P.dlx` → `P.dead`: the dead-letter exchange and queue (broker dead-letters and the
//!   worker's own permanent failures, which are also recorded in Postgres).
//!
//! Messages are persistent and published with publisher confirms; a publish returns only
//! after the broker confirmed it. The publishing connection is rebuilt lazily when it
//! dropped, so a RabbitMQ restart costs the callers errors while it is down, nothing more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use domain::error::{Classify, ErrorClass};
use domain::jobs::{bundle_messages, Envelope, Message, QueueKind};

/// The AMQP frame size connections ask for, unless `AMQP_URL` sets `frame_max`. lapin keeps
/// two ring buffers of 32 frames per connection, so at RabbitMQ's default (128 KiB) each
/// connection would hold 8 MiB — most of a worker's memory. Jobs are small; a larger message is
/// split into frames.
pub const FRAME_MAX: u32 = 16 * 1024;

/// How many deliveries a message may have before the broker dead-letters it.
pub const DELIVERY_LIMIT: i64 = 10;

/// A broker failure. Always retryable: the broker will be back.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The connection or channel failed.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused a publish (negative confirm or unroutable).
    #[error("RabbitMQ did not confirm the publish: {0}")]
    NotConfirmed(String),
    /// An operation timed out.
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
    /// The broker URL does not parse (`AMQP_URL` is checked at start, so this is not expected
    /// at run time).
    #[error("invalid RabbitMQ URL: {0}")]
    InvalidUrl(String),
}

impl Classify for QueueError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Retryable { after: None }
    }
}

/// Exchange and queue names for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology {
            prefix: prefix.into(),
        }
    }
    /// The jobs exchange.
    pub fn exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }
    /// The dead-letter exchange.
    pub fn dlx(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    /// The queue of a kind.
    pub fn queue(&self, kind: QueueKind) -> String {
        format!("{}.{}", self.prefix, kind.as_str())
    }
    /// The dead-letter queue.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

/// A handle on the broker: publishing, consuming and inspection.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    topology: Topology,
    timeout: Duration,
    publisher: Mutex<Option<(Connection, Channel)>>,
    /// Jobs and messages this process published (confirmed), for [`Queue::jobs_per_message`].
    published: (AtomicU64, AtomicU64),
}

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

async fn with_timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r.map_err(QueueError::from),
        Err(_) => Err(QueueError::Timeout(d)),
    }
}

impl Queue {
    /// Connects and declares the topology. Fails if the broker is unreachable.
    pub async fn connect(url: &str, prefix: &str) -> Result<Queue, QueueError> {
        let q = Queue::lazy(url, prefix);
        q.declare_topology().await?;
        Ok(q)
    }

    /// A handle that connects on first use (for processes that must start while the broker is
    /// down, and answer "not ready" until it is back).
    pub fn lazy(url: &str, prefix: &str) -> Queue {
        Queue {
            inner: Arc::new(Inner {
                url: url.to_string(),
                topology: Topology::new(prefix),
                timeout: CONFIRM_TIMEOUT,
                publisher: Mutex::new(None),
                published: (AtomicU64::new(0), AtomicU64::new(0)),
            }),
        }
    }

    /// The names in use.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Opens a new connection (each consumer gets its own connection and channel).
    pub async fn open_connection(&self) -> Result<Connection, QueueError> {
        let props = ConnectionProperties::default().with_connection_name("closeio-sync".into());
        let mut uri: AMQPUri = self.inner.url.parse().map_err(QueueError::InvalidUrl)?;
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        with_timeout(self.inner.timeout, Connection::connect_uri(uri, props)).await
    }

    /// Declares exchanges, queues and bindings (idempotent).
    pub async fn declare_topology(&self) -> Result<(), QueueError> {
        let conn = self.open_connection().await?;
        let res = self.declare_on(&conn).await;
        let _ = conn.close(200, "done".into()).await;
        res
    }

    async fn declare_on(&self, conn: &Connection) -> Result<(), QueueError> {
        let t = &self.inner.topology;
        let ch = conn.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            t.exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.dlx().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        let qopts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(t.dead_queue().into(), qopts, quorum_args(None))
            .await?;
        ch.queue_bind(
            t.dead_queue().into(),
            t.dlx().into(),
            "dead".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        for kind in QueueKind::ALL {
            ch.queue_declare(t.queue(kind).into(), qopts, quorum_args(Some(&t.dlx())))
                .await?;
            ch.queue_bind(
                t.queue(kind).into(),
                t.exchange().into(),
                kind.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        // Close the channel before its connection goes away (avoids a spurious error log).
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    async fn publisher_channel(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<(Connection, Channel)>>, QueueError> {
        let mut guard = self.inner.publisher.lock().await;
        let healthy =
            matches!(&*guard, Some((c, ch)) if c.status().connected() && ch.status().connected());
        if !healthy {
            if let Some((c, _)) = guard.take() {
                let _ = c.close(200, "reconnecting".into()).await;
            }
            let conn = self.open_connection().await?;
            self.declare_on(&conn).await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            *guard = Some((conn, ch));
        }
        Ok(guard)
    }

    /// Publishes envelopes and returns once the broker confirmed every one of them.
    /// Consecutive jobs of one queue travel in bundles (`jobs::bundle_messages`): one message,
    /// one delivery and one acknowledgement for up to `jobs::BUNDLE_MAX_JOBS` of them.
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<(), QueueError> {
        self.publish_messages(bundle_messages(envelopes, true))
            .await
    }

    /// Publishes each envelope as a message of its own (a bundle that must be split: see the
    /// worker's handling of a redelivered bundle).
    pub async fn publish_each(&self, envelopes: &[Envelope]) -> Result<(), QueueError> {
        self.publish_messages(bundle_messages(envelopes, false))
            .await
    }

    async fn publish_messages(&self, messages: Vec<Message>) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        let guard = self.publisher_channel().await?;
        let Some((_, ch)) = guard.as_ref() else {
            return Err(QueueError::NotConfirmed("no channel".into()));
        };
        let res = self.publish_on(ch, &messages).await;
        drop(guard);
        if res.is_err() {
            // Drop the publisher so the next call reconnects.
            let mut g = self.inner.publisher.lock().await;
            if let Some((c, _)) = g.take() {
                let _ = c.close(200, "publish failed".into()).await;
            }
        }
        res
    }

    async fn publish_on(&self, ch: &Channel, messages: &[Message]) -> Result<(), QueueError> {
        let t = &self.inner.topology;
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(m.id.to_string().into());
            let c = with_timeout(
                self.inner.timeout,
                ch.basic_publish(
                    t.exchange().into(),
                    m.queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &m.body,
                    props,
                ),
            )
            .await?;
            confirms.push(c);
        }
        for c in confirms {
            let confirmation = with_timeout(self.inner.timeout, c).await?;
            if !confirmation.is_ack() {
                return Err(QueueError::NotConfirmed("negative acknowledgement".into()));
            }
            if confirmation.take_message().is_some() {
                return Err(QueueError::NotConfirmed("message was unroutable".into()));
            }
        }
        let (jobs, sent) = &self.inner.published;
        jobs.fetch_add(
            messages.iter().map(|m| m.jobs as u64).sum(),
            Ordering::Relaxed,
        );
        sent.fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// How many jobs a message this process published carried on average (1 before it
    /// published any): a queue's depth counts messages, this turns it into jobs.
    pub fn jobs_per_message(&self) -> f64 {
        let (jobs, sent) = &self.inner.published;
        match sent.load(Ordering::Relaxed) {
            0 => 1.0,
            sent => jobs.load(Ordering::Relaxed) as f64 / sent as f64,
        }
    }

    /// Publishes one envelope (see [`Queue::publish_all`]).
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), QueueError> {
        self.publish_all(std::slice::from_ref(envelope)).await
    }

    /// Publishes raw bytes to the dead-letter exchange (for permanent failures).
    pub async fn publish_dead(&self, payload: &[u8], reason: &str) -> Result<(), QueueError> {
        let guard = self.publisher_channel().await?;
        let Some((_, ch)) = guard.as_ref() else {
            return Err(QueueError::NotConfirmed("no channel".into()));
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "x-closeio-reason".into(),
            AMQPValue::LongString(reason.into()),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        let t = &self.inner.topology;
        let c = with_timeout(
            self.inner.timeout,
            ch.basic_publish(
                t.dlx().into(),
                "dead".into(),
                BasicPublishOptions::default(),
                payload,
                props,
            ),
        )
        .await?;
        let confirmation = with_timeout(self.inner.timeout, c).await?;
        if !confirmation.is_ack() {
            return Err(QueueError::NotConfirmed("negative acknowledgement".into()));
        }
        Ok(())
    }

    /// Opens a consumer channel with `prefetch` unacknowledged deliveries at most.
    pub async fn consume(
        &self,
        conn: &Connection,
        kind: QueueKind,
        prefetch: u16,
        tag: &str,
    ) -> Result<(Channel, lapin::Consumer), QueueError> {
        let ch = conn.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = ch
            .basic_consume(
                self.inner.topology.queue(kind).into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((ch, consumer))
    }

    /// Pulls one message (no consumer); `None` when the queue is empty.
    pub async fn get(
        &self,
        ch: &Channel,
        kind: QueueKind,
    ) -> Result<Option<lapin::message::Delivery>, QueueError> {
        let msg = with_timeout(
            self.inner.timeout,
            ch.basic_get(
                self.inner.topology.queue(kind).into(),
                BasicGetOptions::default(),
            ),
        )
        .await?;
        Ok(msg.map(|m| m.delivery))
    }

    /// Messages ready in a queue (not counting unacknowledged ones).
    pub async fn depth(&self, name: &str) -> Result<u32, QueueError> {
        Ok(self.stats(name).await?.messages)
    }

    /// Messages ready in queue `name` and the consumers it has.
    pub async fn stats(&self, name: &str) -> Result<QueueStats, QueueError> {
        let conn = self.open_connection().await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = conn.close(200, "done".into()).await;
        let q = q?;
        Ok(QueueStats {
            messages: q.message_count(),
            consumers: q.consumer_count(),
        })
    }

    /// Whether the broker answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.publisher_channel().await.map(|_| ())
    }

    /// Deletes every queue and exchange of this prefix (tests clean up with it).
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let conn = self.open_connection().await?;
        let ch = conn.create_channel().await?;
        let t = &self.inner.topology;
        for q in [
            t.queue(QueueKind::Outgoing),
            t.queue(QueueKind::Incoming),
            t.dead_queue(),
        ] {
            let _ = ch
                .queue_delete(q.into(), QueueDeleteOptions::default())
                .await;
        }
        for e in [t.exchange(), t.dlx()] {
            let _ = ch.exchange_delete(e.into(), Default::default()).await;
        }
        let _ = conn.close(200, "done".into()).await;
        Ok(())
    }

    /// Closes the publishing connection.
    pub async fn close(&self) {
        if let Some((c, _)) = self.inner.publisher.lock().await.take() {
            let _ = c.close(200, "shutdown".into()).await;
        }
    }
}

fn quorum_args(dlx: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(dlx) = dlx {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString("dead".into()),
        );
    }
    args
}

/// What a queue holds and who consumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Messages ready.
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}
