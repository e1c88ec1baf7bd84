//! Operator functions over the store and the broker — connectors with lag and counters, dead
//! letters (list, show, replay, purge), retries, encryption key rotation — and the HTTP admin
//! API that serves them on a separate listener, behind a bearer token.
//!
//! `closeio-ctl` calls the same functions, so the CLI and the HTTP API always agree.
//!
//! Routes (all JSON; `Authorization: Bearer $ADMIN_TOKEN` required, else 401):
//! - `GET /connectors`, `GET /connectors/{id}`
//! - `GET /dlq?connector=&kind=&error=&all=&limit=`, `GET /dlq/{id}`
//! - `POST /dlq/{id}/replay`, `POST /dlq/replay?connector=` (every dead letter not replayed yet)
//! - `POST /dlq/import-broker` (dead letters RabbitMQ made, into Postgres)
//! - `DELETE /dlq?connector=&replayed=`
//! - `GET /retries?connector=&limit=`

use std::net::SocketAddr;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
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
            .finish()
    }
}

impl config::Settings for AdminConfig {}

impl AdminConfig {
    /// Reads `ADMIN_LISTEN` and `ADMIN_TOKEN`.
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
    fn status(&self) -> StatusCode {
        match self {
            AdminError::NoDeadLetter(_) | AdminError::NoConnector(_) => StatusCode::NOT_FOUND,
            AdminError::Unreadable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DlqFilter {
    /// Only this connector.
    pub connector: Option<String>,
    /// Only this job kind (`outgoing_account`, `outgoing_user`, …).
    pub kind: Option<String>,
    /// Only those whose last error contains this text (case-insensitive).
    pub error: Option<String>,
    /// Include dead letters already replayed.
    pub all: bool,
    /// At most this many (default 50).
    pub limit: Option<i64>,
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
}

impl Admin {
    /// Operations over `store` and `queue`.
    pub fn new(store: Store, queue: Queue) -> Admin {
        Admin { store, queue }
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
            views.push(view(
                summary,
                lag_seconds,
                overdue_retries,
                incoming.as_ref(),
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

    /// Dead letters, newest first.
    pub async fn dead_letters(&self, f: &DlqFilter) -> Result<Vec<DeadLetter>, AdminError> {
        let limit = f.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
        Ok(self
            .store
            .dead_letters(
                f.connector.as_deref(),
                f.kind.as_deref(),
                f.error.as_deref(),
                f.all,
                limit,
            )
            .await?)
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
                    let id = self.store.dead_letter(&env, &reason).await?;
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

#[derive(Clone)]
struct ApiState {
    admin: Admin,
    token: std::sync::Arc<str>,
}

/// The admin API (every route behind the bearer token).
pub fn router(admin: Admin, token: &str) -> Router {
    let state = ApiState {
        admin,
        token: token.into(),
    };
    Router::new()
        .route("/connectors", get(list_connectors))
        .route("/connectors/{id}", get(show_connector))
        .route("/dlq", get(list_dlq).delete(purge_dlq))
        .route("/dlq/replay", post(replay_all))
        .route("/dlq/import-broker", post(import_broker))
        .route("/dlq/{id}", get(show_dlq))
        .route("/dlq/{id}/replay", post(replay_one))
        .route("/retries", get(list_retries))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Admin,
    token: &str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(admin, token))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn require_token(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if !domain::crypto::constant_time_eq(given.as_bytes(), s.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response();
    }
    next.run(req).await
}

async fn list_connectors(State(s): State<ApiState>) -> Result<Json<Value>, AdminError> {
    let connectors = s.admin.connectors().await?;
    let queues = s.admin.queue_depths().await;
    Ok(Json(json!({"connectors": connectors, "queues": queues})))
}

async fn show_connector(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ConnectorDetail>, AdminError> {
    Ok(Json(s.admin.connector(&id).await?))
}

async fn list_dlq(
    State(s): State<ApiState>,
    Query(f): Query<DlqFilter>,
) -> Result<Json<Value>, AdminError> {
    let letters = s.admin.dead_letters(&f).await?;
    Ok(Json(json!({"dead_letters": letters})))
}

async fn show_dlq(
    State(s): State<ApiState>,
    Path(id): Path<Uuid>,
) -> Result<Json<DeadLetter>, AdminError> {
    Ok(Json(
        s.admin
            .dead_letter(id)
            .await?
            .ok_or(AdminError::NoDeadLetter(id))?,
    ))
}

async fn replay_one(
    State(s): State<ApiState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, AdminError> {
    let n = s.admin.replay(ReplayTarget::One(id)).await?;
    Ok(Json(json!({"replayed": n})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConnectorQuery {
    connector: Option<String>,
    limit: Option<i64>,
    replayed: bool,
}

async fn replay_all(
    State(s): State<ApiState>,
    Query(q): Query<ConnectorQuery>,
) -> Result<Json<Value>, AdminError> {
    let n = s
        .admin
        .replay(ReplayTarget::All {
            connector: q.connector,
        })
        .await?;
    Ok(Json(json!({"replayed": n})))
}

async fn import_broker(State(s): State<ApiState>) -> Result<Json<BrokerImport>, AdminError> {
    Ok(Json(s.admin.import_broker_dead_letters().await?))
}

async fn purge_dlq(
    State(s): State<ApiState>,
    Query(q): Query<ConnectorQuery>,
) -> Result<Json<Value>, AdminError> {
    let n = s.admin.purge(q.connector.as_deref(), q.replayed).await?;
    Ok(Json(json!({"deleted": n})))
}

async fn list_retries(
    State(s): State<ApiState>,
    Query(q): Query<ConnectorQuery>,
) -> Result<Json<Value>, AdminError> {
    let retries = s.admin.retries(q.connector.as_deref(), q.limit).await?;
    Ok(Json(json!({"retries": retries})))
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
