//! The operator surface: what an operator can do over the store and the broker (connectors
//! with lag, activity and budgets; dead letters listed, grouped by error class, shown beside
//! their Hull entity and Close object, replayed or purged; retries made due; connectors
//! unparked; fetches asked for; encryption key rotation), and the two ways it is served on the
//! admin listener, behind the admin token:
//! - [`api`]: the JSON admin API (bearer token), used by scripts;
//! - [`console`]: the ops console, server-rendered pages for a browser (a login form, a
//!   session cookie and a CSRF token on every action).
//!
//! `closeio-ctl`, the JSON API and the console call the same [`Admin`] functions, so they
//! always agree.

use std::net::SocketAddr;

pub mod api;
pub mod console;

pub use api::{router, serve};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use domain::config::{self, ConfigError, Source};
use domain::jobs::{Envelope, QueueKind};
use queue::{Queue, QueueError};
use store::{ConnectorSummary, DeadLetter, IncomingProgress, RetryRow, Store, StoreError};

/// Most rows a listing returns.
pub const MAX_LIMIT: i64 = 10_000;

/// Shortest accepted admin token.
const MIN_TOKEN_LEN: usize = 24;

/// Where and how the admin API is served.
#[derive(Clone, clap::Args)]
pub struct AdminConfig {
    /// Address of the HTTP admin API (a separate listener)
    #[arg(
        id = "admin_listen",
        env = "ADMIN_LISTEN",
        default_value = "127.0.0.1:9110"
    )]
    pub listen: SocketAddr,
    /// Bearer token of the admin API, at least 24 characters (unset: the admin API is off)
    #[arg(id = "admin_token", env = "ADMIN_TOKEN", value_parser = admin_token)]
    pub token: Option<String>,
    /// Dead letters older than this many days are deleted by the scheduler (0: kept until
    /// purged by hand; at most 36500)
    #[arg(
        env = "DEAD_LETTER_RETENTION_DAYS",
        default_value = "30",
        value_parser = clap::value_parser!(u32).range(0..=36_500)
    )]
    pub dead_letter_retention_days: u32,
    /// Hours an ops console session lasts after logging in (1 to 8760)
    #[arg(
        env = "CONSOLE_SESSION_HOURS",
        default_value = "12",
        value_parser = clap::value_parser!(u32).range(1..=8_760)
    )]
    pub console_session_hours: u32,
}

/// `ADMIN_TOKEN`: long enough not to be guessed.
fn admin_token(raw: &str) -> Result<String, String> {
    let token = raw.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("must be at least {MIN_TOKEN_LEN} characters"));
    }
    Ok(token.to_string())
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field(
                "dead_letter_retention_days",
                &self.dead_letter_retention_days,
            )
            .field("console_session_hours", &self.console_session_hours)
            .finish()
    }
}

impl config::Settings for AdminConfig {}

impl AdminConfig {
    /// Reads `ADMIN_LISTEN`, `ADMIN_TOKEN`, `DEAD_LETTER_RETENTION_DAYS` and
    /// `CONSOLE_SESSION_HOURS`.
    pub fn from_source(src: &dyn Source) -> Result<AdminConfig, ConfigError> {
        config::load(src)
    }
}

/// An operator action that failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// No such dead letter.
    #[error("no dead letter {0}")]
    NoDeadLetter(Uuid),
    /// No such connector.
    #[error("no connector {0}")]
    NoConnector(String),
    /// A request an operator must correct.
    #[error("{0}")]
    BadRequest(String),
    /// A dead letter whose payload is not a job of this version.
    #[error("dead letter {id} holds an unreadable job: {reason}")]
    Unreadable {
        /// The dead letter.
        id: Uuid,
        /// Why it cannot be read.
        reason: String,
    },
}

impl AdminError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::NoDeadLetter(_) | AdminError::NoConnector(_) => StatusCode::NOT_FOUND,
            AdminError::Unreadable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Store(_) | AdminError::Queue(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// Filter of a dead-letter listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DlqFilter {
    /// Only this connector.
    pub connector: Option<String>,
    /// Only this job kind (`outgoing_account`, `outgoing_user`, …).
    pub kind: Option<String>,
    /// Only those whose last error contains this text (case-insensitive).
    pub error: Option<String>,
    /// Only this error class (`close_bad_request`, `close_server_error`, …).
    pub class: Option<String>,
    /// Only those that died in the last `hour`, `day` or `week`.
    pub since: Option<Since>,
    /// Only those that died at or before this instant (RFC 3339): a bulk action confirmed on
    /// a page acts on what the page counted.
    pub until: Option<DateTime<Utc>>,
    /// Include dead letters already replayed.
    pub all: bool,
    /// At most this many (default 50).
    pub limit: Option<i64>,
}

/// How far back a dead-letter filter looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Since {
    /// The last hour.
    Hour,
    /// The last day.
    Day,
    /// The last week.
    Week,
}

impl Since {
    /// Every bucket, shortest first.
    pub const ALL: [Since; 3] = [Since::Hour, Since::Day, Since::Week];

    /// Its name in a query string.
    pub fn as_str(self) -> &'static str {
        match self {
            Since::Hour => "hour",
            Since::Day => "day",
            Since::Week => "week",
        }
    }

    fn start(self) -> DateTime<Utc> {
        Utc::now()
            - match self {
                Since::Hour => chrono::Duration::hours(1),
                Since::Day => chrono::Duration::days(1),
                Since::Week => chrono::Duration::days(7),
            }
    }
}

impl DlqFilter {
    /// The store's query for this filter, with empty fields meaning "any".
    pub fn query(&self) -> store::DeadLetterQuery {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        store::DeadLetterQuery {
            connector: given(&self.connector),
            job_name: given(&self.kind),
            error_class: given(&self.class),
            error_contains: given(&self.error),
            since: self.since.map(Since::start),
            until: self.until,
            include_replayed: self.all,
        }
    }
}

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayTarget {
    /// One dead letter (even if it was replayed before).
    One(Uuid),
    /// Every dead letter not replayed yet, optionally of one connector.
    All {
        /// Only this connector.
        connector: Option<String>,
    },
    /// Every dead letter matching a filter that was not replayed yet (the newest
    /// [`MAX_LIMIT`]): a dead letter replayed before is either synced or dead again as a newer
    /// dead letter, so replaying it again would send an old snapshot or the same job twice.
    Matching(DlqFilter),
}

/// One of the deployment's queues.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    /// Queue name.
    pub name: String,
    /// What it carries.
    pub role: &'static str,
    /// Messages ready and consumers (`None` when the broker is unreachable).
    pub stats: Option<queue::QueueStats>,
}

/// Everything on the console's first page.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Every connector, with its recent activity.
    pub connectors: Vec<ConnectorView>,
    /// The deployment's queues.
    pub queues: Vec<QueueView>,
    /// The Close budgets, per key and endpoint group.
    pub budgets: Vec<store::BudgetRow>,
    /// Dead letters are deleted after this many days (0: never).
    pub dead_letter_retention_days: u32,
}

/// The Close object of a dead letter's entity, as fetched for the console.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CloseObject {
    /// The entity has no Close id yet.
    NotSynced,
    /// Close could not be asked (no Close client here, or the connector has no API key).
    Unavailable {
        /// Why.
        reason: String,
    },
    /// What Close holds now.
    Found {
        /// Lead or contact id.
        id: String,
        /// The object.
        object: Value,
    },
    /// Close answered with an error.
    Failed {
        /// Lead or contact id.
        id: String,
        /// The error.
        error: String,
    },
}

/// One dead letter with what an operator needs beside it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterDetail {
    /// The dead letter (job, errors, last body sent).
    #[serde(flatten)]
    pub dead_letter: DeadLetter,
    /// The Hull entity the job carried (account or user), when it carried one.
    pub hull_entity: Option<Value>,
    /// The entity's sync state.
    pub entity_state: Option<store::EntityState>,
    /// The entity's Close object, fetched now.
    pub close_object: CloseObject,
}

/// Depth of the deployment's queues (messages ready; `None` when the broker is unreachable).
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueDepths {
    /// Outgoing jobs waiting.
    pub outgoing: Option<u32>,
    /// Incoming jobs waiting.
    pub incoming: Option<u32>,
    /// Messages in the broker's dead-letter queue.
    pub dead: Option<u32>,
}

/// A connector as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorView {
    /// Status, counters and last successful write.
    #[serde(flatten)]
    pub summary: ConnectorSummary,
    /// Age in seconds of the oldest job still waiting for another attempt (0: none waiting).
    pub lag_seconds: f64,
    /// Retries whose attempt is more than a minute overdue (the scheduler is behind or down).
    pub overdue_retries: i64,
    /// Incoming sync: every Close lead updated before this instant is in Hull (the last
    /// successful fetch).
    pub incoming_cursor: Option<DateTime<Utc>>,
    /// Incoming sync: seconds between now and the cursor.
    pub incoming_lag_seconds: Option<f64>,
    /// When the last fetch run that completed finished (`None`: none completed yet, or the
    /// last run is still going or failed).
    pub last_fetch_completed_at: Option<DateTime<Utc>>,
    /// Recent throughput and retries due.
    pub activity: store::Activity,
}

/// One connector in detail.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorDetail {
    /// The listing view.
    #[serde(flatten)]
    pub view: ConnectorView,
    /// Private settings (without the API key).
    pub private_settings: Value,
    /// Whether a Close API key is stored.
    pub api_key_configured: bool,
    /// Fingerprint of the stored key (safe to show).
    pub api_key_fingerprint: Option<String>,
    /// When the Close metadata was last fetched.
    pub metadata_fetched_at: Option<DateTime<Utc>>,
    /// The deployment's queue depths (queues are shared by every connector).
    pub queues: QueueDepths,
    /// Incoming sync in detail (cursor, last run and its windows).
    pub incoming: Option<IncomingProgress>,
    /// The most recent fetch runs, newest first.
    pub recent_fetch_runs: Vec<store::FetchRun>,
    /// The Close webhook subscription, if there is one.
    pub webhook_subscription: Option<store::SubscriptionSummary>,
    /// Entities whose last write failed, most recent first.
    pub recent_errors: Vec<store::EntityError>,
}

/// Result of a key rotation, per encrypted column.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RotatedColumn {
    /// `table.column`.
    pub column: String,
    /// Values re-encrypted with the current key.
    pub reencrypted: u64,
    /// Values already under the current key.
    pub already_current: u64,
}

/// What [`Admin::import_broker_dead_letters`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BrokerImport {
    /// Messages RabbitMQ dead-lettered (delivery limit), now recorded as dead letters.
    pub imported: usize,
    /// Copies of dead letters already recorded by a worker, dropped from the queue.
    pub copies_dropped: usize,
    /// Messages that are not jobs of this version, left in the queue.
    pub unreadable: usize,
}

/// Every column holding a sealed secret: (table, column).
const SEALED_COLUMNS: &[(&str, &str)] = &[
    ("connectors", "secret_enc"),
    ("connectors", "api_key_enc"),
    ("webhook_subscriptions", "signature_key_enc"),
    ("key_check", "sealed"),
];

/// Operator functions over one deployment.
#[derive(Clone)]
pub struct Admin {
    store: Store,
    queue: Queue,
    close: Option<closeio::CloseClient>,
}

/// How long the console waits for Close when it shows a dead letter's Close object.
const CLOSE_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Admin {
    /// Operations over `store` and `queue`.
    pub fn new(store: Store, queue: Queue) -> Admin {
        Admin {
            store,
            queue,
            close: None,
        }
    }

    /// Also shows the Close object of a dead letter's entity, fetched with `close` (its
    /// requests count against the connector's shared budget).
    pub fn with_close(mut self, close: closeio::CloseClient) -> Admin {
        self.close = Some(close);
        self
    }

    /// The store it works on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every connector with status, counters, lag and last successful write.
    pub async fn connectors(&self) -> Result<Vec<ConnectorView>, AdminError> {
        let summaries = self.store.connector_summaries().await?;
        let c = self.store.pool().get().await.map_err(StoreError::from)?;
        let rows = c
            .query(
                "SELECT connector_id,
                        COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8,
                        count(*) FILTER (WHERE state = 'scheduled' AND next_attempt_at < now() - interval '1 minute')
                 FROM retries WHERE state IN ('scheduled', 'queued') GROUP BY connector_id",
                &[],
            )
            .await
            .map_err(StoreError::from)?;
        let mut activity = self.store.activity().await?;
        let lag: std::collections::HashMap<String, (f64, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    (r.get::<_, f64>(1), r.get::<_, i64>(2)),
                )
            })
            .collect();
        drop(c);
        let mut views = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let (lag_seconds, overdue_retries) = lag.get(&summary.id).copied().unwrap_or((0.0, 0));
            let incoming = self.store.incoming_progress(&summary.id).await?;
            let act = activity.remove(&summary.id).unwrap_or_default();
            views.push(view(
                summary,
                lag_seconds,
                overdue_retries,
                incoming.as_ref(),
                act,
            ));
        }
        Ok(views)
    }

    /// One connector in detail.
    pub async fn connector(&self, id: &str) -> Result<ConnectorDetail, AdminError> {
        let view = self
            .connectors()
            .await?
            .into_iter()
            .find(|c| c.summary.id == id)
            .ok_or_else(|| AdminError::NoConnector(id.to_string()))?;
        let c = self
            .store
            .connector(id)
            .await?
            .ok_or_else(|| AdminError::NoConnector(id.to_string()))?;
        let incoming = self.store.incoming_progress(id).await?;
        Ok(ConnectorDetail {
            view,
            private_settings: c.private_settings.clone(),
            api_key_configured: c.api_key.is_some(),
            api_key_fingerprint: c.api_key.as_deref().map(domain::crypto::fingerprint),
            metadata_fetched_at: c.metadata_fetched_at,
            queues: self.queue_depths().await,
            incoming,
            recent_fetch_runs: self.store.recent_fetch_runs(id, 10).await?,
            webhook_subscription: self.store.subscription_summary(id).await?,
            recent_errors: self.store.entity_errors(id, 20).await?,
        })
    }

    /// Messages waiting in the deployment's queues.
    pub async fn queue_depths(&self) -> QueueDepths {
        let t = self.queue.topology();
        QueueDepths {
            outgoing: self.queue.depth(&t.queue(QueueKind::Outgoing)).await.ok(),
            incoming: self.queue.depth(&t.queue(QueueKind::Incoming)).await.ok(),
            dead: self.queue.depth(&t.dead_queue()).await.ok(),
        }
    }

    /// The console's first page: connectors, queues and Close budgets.
    pub async fn overview(&self, retention_days: u32) -> Result<Overview, AdminError> {
        Ok(Overview {
            connectors: self.connectors().await?,
            queues: self.queues().await,
            budgets: self.store.budgets().await?,
            dead_letter_retention_days: retention_days,
        })
    }

    /// The deployment's queues with their messages and consumers.
    pub async fn queues(&self) -> Vec<QueueView> {
        let t = self.queue.topology();
        let mut out = Vec::new();
        for (name, role) in [
            (t.queue(QueueKind::Outgoing), "Hull → Close writes"),
            (t.queue(QueueKind::Incoming), "Close → Hull reads"),
            (t.dead_queue(), "dead letters (broker copies)"),
        ] {
            let stats = self.queue.stats(&name).await.ok();
            out.push(QueueView { name, role, stats });
        }
        out
    }

    /// Dead letters, newest first.
    pub async fn dead_letters(&self, f: &DlqFilter) -> Result<Vec<DeadLetter>, AdminError> {
        let limit = f.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
        Ok(self.store.dead_letters_where(&f.query(), limit).await?)
    }

    /// How many dead letters match `f` (its `limit` aside).
    pub async fn count_dead_letters(&self, f: &DlqFilter) -> Result<i64, AdminError> {
        Ok(self.store.count_dead_letters_where(&f.query()).await?)
    }

    /// Dead letters matching `f`, counted per error class and age (the last hour, day, week).
    pub async fn error_classes(
        &self,
        f: &DlqFilter,
    ) -> Result<Vec<store::ErrorClassCount>, AdminError> {
        Ok(self.store.dead_letter_classes(&f.query()).await?)
    }

    /// One dead letter with its Hull entity, its sync state and its Close object (fetched
    /// now, when a Close client is configured).
    pub async fn dead_letter_detail(&self, id: Uuid) -> Result<DeadLetterDetail, AdminError> {
        let d = self
            .store
            .dead_letter_by_id(id)
            .await?
            .ok_or(AdminError::NoDeadLetter(id))?;
        let env = serde_json::from_value::<Envelope>(d.envelope.clone()).ok();
        let entity = env.as_ref().and_then(|env| match &env.job {
            domain::jobs::Job::OutgoingAccount(m) => m.message.get("account").cloned(),
            domain::jobs::Job::OutgoingUser(m) => m.message.get("user").cloned(),
            _ => None,
        });
        // The entity as the sync state keys it (an account without a Hull id by its
        // external id or domain).
        let key = env.as_ref().and_then(|env| env.job.outgoing_entity());
        let entity_state = match &key {
            Some((kind, hull_id)) => {
                self.store
                    .entity_state(&d.connector_id, kind.as_str(), hull_id)
                    .await?
            }
            None => None,
        };
        let close_id = entity_state.as_ref().and_then(|s| s.close_id.clone());
        let close_object = match (close_id, &key) {
            (Some(cid), Some((kind, _))) => self.close_object(&d.connector_id, *kind, cid).await?,
            _ => CloseObject::NotSynced,
        };
        Ok(DeadLetterDetail {
            dead_letter: d,
            hull_entity: entity,
            entity_state,
            close_object,
        })
    }

    async fn close_object(
        &self,
        connector: &str,
        kind: domain::jobs::EntityKind,
        id: String,
    ) -> Result<CloseObject, AdminError> {
        let Some(close) = &self.close else {
            return Ok(CloseObject::Unavailable {
                reason: "this process has no Close client".into(),
            });
        };
        let key = match self
            .store
            .connector(connector)
            .await?
            .and_then(|c| c.api_key)
        {
            Some(k) => closeio::ApiKey::new(k),
            None => {
                return Ok(CloseObject::Unavailable {
                    reason: "the connector has no Close API key".into(),
                })
            }
        };
        let read = async {
            if kind == domain::jobs::EntityKind::User {
                close.get_contact(&key, &id).await
            } else {
                close.get_lead(&key, &id).await
            }
        };
        Ok(
            match tokio::time::timeout(CLOSE_LOOKUP_TIMEOUT, read).await {
                Ok(Ok(object)) => CloseObject::Found { id, object },
                Ok(Err(e)) => CloseObject::Failed {
                    id,
                    error: e.to_string(),
                },
                Err(_) => CloseObject::Failed {
                    id,
                    error: format!("Close did not answer within {CLOSE_LOOKUP_TIMEOUT:?}"),
                },
            },
        )
    }

    /// Deletes the dead letters matching `f`; returns how many.
    pub async fn purge_matching(&self, f: &DlqFilter) -> Result<u64, AdminError> {
        Ok(self.store.purge_dead_letters_where(&f.query()).await?)
    }

    /// Deletes one dead letter.
    pub async fn delete_dead_letter(&self, id: Uuid) -> Result<(), AdminError> {
        if self.store.delete_dead_letter(id).await? {
            Ok(())
        } else {
            Err(AdminError::NoDeadLetter(id))
        }
    }

    /// Deletes the dead letters older than `days` days (the retention); returns how many.
    pub async fn apply_retention(&self, days: u32) -> Result<u64, AdminError> {
        if days == 0 {
            return Ok(0);
        }
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
        Ok(self.store.purge_dead_letters_before(cutoff).await?)
    }

    /// Makes a scheduled or parked retry due now (the scheduler republishes it within
    /// `RETRY_POLL_MS`).
    pub async fn retry_now(&self, id: Uuid) -> Result<(), AdminError> {
        if self.store.retry_now(id).await? {
            tracing::info!(retry = %id, "retry made due by an operator");
            Ok(())
        } else {
            Err(AdminError::BadRequest(format!(
                "no scheduled or parked retry {id} (it may have run already)"
            )))
        }
    }

    /// Unparks a connector by hand: its parked jobs run again now (they park it again if
    /// the cause is not fixed).
    pub async fn unpark(&self, connector: &str) -> Result<(), AdminError> {
        self.require_connector(connector).await?;
        if self.store.unpark(connector).await? {
            tracing::info!(connector, "connector unparked by an operator");
            Ok(())
        } else {
            Err(AdminError::BadRequest(format!(
                "connector {connector} is not parked"
            )))
        }
    }

    /// Asks the scheduler for a fetch of `connector` (a full import when `full`).
    pub async fn fetch_now(&self, connector: &str, full: bool) -> Result<(), AdminError> {
        if self.store.request_fetch(connector, full).await? {
            tracing::info!(connector, full, "fetch asked for by an operator");
            Ok(())
        } else {
            Err(AdminError::NoConnector(connector.to_string()))
        }
    }

    async fn require_connector(&self, id: &str) -> Result<(), AdminError> {
        match self.store.connector(id).await? {
            Some(_) => Ok(()),
            None => Err(AdminError::NoConnector(id.to_string())),
        }
    }

    /// One dead letter, `None` if there is no such id.
    pub async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>, AdminError> {
        Ok(self.store.dead_letter_by_id(id).await?)
    }

    /// Publishes dead letters again with their attempt counter reset (publisher confirms), and
    /// marks them replayed. Returns how many were replayed. A crash between the two steps
    /// replays a job twice at worst, which the idempotent worker absorbs.
    pub async fn replay(&self, target: ReplayTarget) -> Result<usize, AdminError> {
        let one = matches!(target, ReplayTarget::One(_));
        let letters = match target {
            ReplayTarget::One(id) => vec![self
                .store
                .dead_letter_by_id(id)
                .await?
                .ok_or(AdminError::NoDeadLetter(id))?],
            ReplayTarget::All { connector } => {
                self.store
                    .dead_letters(connector.as_deref(), None, None, false, MAX_LIMIT)
                    .await?
            }
            ReplayTarget::Matching(f) => {
                let q = DlqFilter { all: false, ..f }.query();
                self.store.dead_letters_where(&q, MAX_LIMIT).await?
            }
        };
        let mut replayed = 0;
        for d in letters {
            let mut env: Envelope = match serde_json::from_value(d.envelope.clone()) {
                Ok(env) => env,
                // "Replay all" skips what is not a job (unreadable messages); one is an error.
                Err(_) if !one => {
                    tracing::warn!(dead_letter = %d.id, job = %d.job_name, "not a job: left in place");
                    continue;
                }
                Err(e) => {
                    return Err(AdminError::Unreadable {
                        id: d.id,
                        reason: e.to_string(),
                    })
                }
            };
            env.attempt = 0;
            self.queue.publish(&env).await?;
            self.store.mark_replayed(d.id).await?;
            tracing::info!(dead_letter = %d.id, connector = %d.connector_id, job = %d.job_name, "dead letter replayed");
            replayed += 1;
        }
        Ok(replayed)
    }

    /// Deletes dead letters (of one connector or all; only replayed ones if asked).
    pub async fn purge(
        &self,
        connector: Option<&str>,
        replayed_only: bool,
    ) -> Result<u64, AdminError> {
        Ok(self
            .store
            .purge_dead_letters(connector, replayed_only)
            .await?)
    }

    /// Retries (scheduled, queued, parked), soonest first.
    pub async fn retries(
        &self,
        connector: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<RetryRow>, AdminError> {
        Ok(self
            .store
            .retries(connector, limit.unwrap_or(50).clamp(1, MAX_LIMIT))
            .await?)
    }

    /// Empties the broker's dead-letter queue into Postgres: messages RabbitMQ dead-lettered
    /// (a job that crashed or hung workers `x-delivery-limit` times) become dead letters with
    /// the broker's reason, so they can be listed and replayed; the copies workers publish of
    /// dead letters they recorded themselves are dropped; unreadable messages stay queued.
    pub async fn import_broker_dead_letters(&self) -> Result<BrokerImport, AdminError> {
        let dead = self.queue.topology().dead_queue();
        let waiting = self.queue.depth(&dead).await?;
        let conn = self.queue.open_connection().await?;
        let ch = conn.create_channel().await.map_err(QueueError::from)?;
        let mut report = BrokerImport::default();
        // Unreadable messages stay unacknowledged until the connection closes (then they are
        // back in the queue), so one pass sees each message once.
        let mut held = Vec::new();
        for _ in 0..waiting {
            let Some(msg) = ch
                .basic_get(dead.as_str().into(), BasicGetOptions::default())
                .await
                .map_err(QueueError::from)?
            else {
                break;
            };
            let delivery = msg.delivery;
            let headers = delivery.properties.headers().clone().unwrap_or_default();
            if header(&headers, "x-closeio-reason").is_some() {
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(QueueError::from)?;
                report.copies_dropped += 1;
                continue;
            }
            match Envelope::from_bytes(&delivery.data) {
                Ok(env) => {
                    let reason = broker_reason(&headers);
                    let id = self
                        .store
                        .dead_letter(&env, &reason, "broker_delivery_limit", None)
                        .await?;
                    delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(QueueError::from)?;
                    tracing::warn!(dead_letter = %id, connector = %env.connector_id, job = env.job.name(), reason, "broker dead letter imported");
                    report.imported += 1;
                }
                Err(_) => {
                    held.push(delivery);
                    report.unreadable += 1;
                }
            }
        }
        let _ = conn.close(200, "done".into()).await;
        drop(held);
        Ok(report)
    }

    /// Re-encrypts every stored secret that is not under the current `ENCRYPTION_KEY` (values
    /// under `ENCRYPTION_KEY_PREVIOUS` are opened with it). One transaction per column; running
    /// it twice changes nothing the second time. Fails, changing nothing in that column, if a
    /// value opens with neither key.
    pub async fn rotate_key(&self) -> Result<Vec<RotatedColumn>, AdminError> {
        let secrets = self.store.secrets().clone();
        let mut client = self.store.pool().get().await.map_err(StoreError::from)?;
        let mut report = Vec::new();
        for (table, column) in SEALED_COLUMNS {
            let exists: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2)",
                    &[table, column],
                )
                .await
                .map_err(StoreError::from)?
                .get(0);
            if !exists {
                continue;
            }
            let tx = client.transaction().await.map_err(StoreError::from)?;
            // Table and column names come from the constant list above, never from input.
            let rows = tx
                .query(
                    &format!("SELECT ctid::text, {column} FROM {table} WHERE {column} IS NOT NULL FOR UPDATE"),
                    &[],
                )
                .await
                .map_err(StoreError::from)?;
            let mut col = RotatedColumn {
                column: format!("{table}.{column}"),
                reencrypted: 0,
                already_current: 0,
            };
            for r in &rows {
                let ctid: String = r.get(0);
                let sealed: Vec<u8> = r.get(1);
                if secrets.is_current(&sealed) {
                    col.already_current += 1;
                    continue;
                }
                let plain = secrets.open(&sealed).map_err(StoreError::from)?;
                tx.execute(
                    &format!("UPDATE {table} SET {column} = $1 WHERE ctid = $2::text::tid"),
                    &[&secrets.seal(&plain), &ctid],
                )
                .await
                .map_err(StoreError::from)?;
                col.reencrypted += 1;
            }
            tx.commit().await.map_err(StoreError::from)?;
            report.push(col);
        }
        Ok(report)
    }
}

fn view(
    summary: ConnectorSummary,
    lag_seconds: f64,
    overdue_retries: i64,
    incoming: Option<&IncomingProgress>,
    activity: store::Activity,
) -> ConnectorView {
    let last_run = incoming.and_then(|p| p.last_run.as_ref());
    ConnectorView {
        summary,
        lag_seconds,
        overdue_retries,
        incoming_cursor: incoming.and_then(|p| p.cursor),
        incoming_lag_seconds: incoming.and_then(|p| p.lag_seconds),
        last_fetch_completed_at: last_run
            .filter(|r| r.state == store::FetchRunState::Completed)
            .and_then(|r| r.finished_at),
        activity,
    }
}

fn header<'a>(headers: &'a FieldTable, name: &str) -> Option<&'a AMQPValue> {
    headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
}

/// The reason RabbitMQ gives in `x-death` (reason, source queue, count), readable.
fn broker_reason(headers: &FieldTable) -> String {
    let first = match header(headers, "x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().iter().find_map(|d| match d {
            AMQPValue::FieldTable(t) => Some(t.clone()),
            _ => None,
        }),
        _ => None,
    };
    let text = |t: &FieldTable, k: &str| match header(t, k) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_string(),
        Some(AMQPValue::LongLongInt(n)) => n.to_string(),
        Some(AMQPValue::LongInt(n)) => n.to_string(),
        _ => "?".into(),
    };
    match first {
        Some(t) => format!(
            "dead-lettered by RabbitMQ ({} from {}, {} time(s)): the job crashed or timed out workers until the delivery limit",
            text(&t, "reason"),
            text(&t, "queue"),
            text(&t, "count")
        ),
        None => "dead-lettered by RabbitMQ (no x-death header)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn token_comparison() {
        assert!(domain::crypto::constant_time_eq(b"abc", b"abc"));
        assert!(!domain::crypto::constant_time_eq(b"abd", b"abc"));
        assert!(!domain::crypto::constant_time_eq(b"ab", b"abc"));
        assert!(!domain::crypto::constant_time_eq(b"", b"abc"));
    }

    #[test]
    fn config_requires_a_long_token_and_is_off_without_one() {
        let mut src: HashMap<String, String> = HashMap::new();
        let off = AdminConfig::from_source(&src).unwrap();
        assert!(off.token.is_none());
        assert_eq!(off.listen.to_string(), "127.0.0.1:9110");
        src.insert("ADMIN_TOKEN".into(), "short".into());
        let err = AdminConfig::from_source(&src).unwrap_err();
        assert_eq!(err.var, "ADMIN_TOKEN");
        assert!(
            !err.to_string().contains("short"),
            "the token is not echoed"
        );
        src.insert(
            "ADMIN_TOKEN".into(),
            "a-very-long-admin-token-0123456789".into(),
        );
        assert!(AdminConfig::from_source(&src).unwrap().token.is_some());
    }
}
