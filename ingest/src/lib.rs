//! ingest: the Hull connector HTTP surface and the Close webhook receiver. It verifies and
//! validates what it is sent, records the connector's settings, publishes one job per entity
//! with publisher confirms and answers with flow control. It makes no Close call on the
//! notification path.
//!
//! One module per endpoint family: [`notify`] (`/smart-notifier`), [`batch`] (`/batch`,
//! `/batch-accounts`), [`webhooks`] (Close webhooks), [`routes`] (`/status`, the settings option
//! sources, `/fetch`, `/manifest.json`, `/admin`); [`auth`] authenticates query
//! credentials, [`backpressure`] turns the broker's state into flow control, and [`server`]
//! bounds connections and slow clients.

pub mod auth;
pub mod backpressure;
pub mod batch;
pub mod config;
pub mod notify;
mod routes;
pub mod server;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use common::clients::Clients;
use common::closeio::CloseClient;
use common::hull::{HullClient, NotificationVerifier, VerifierConfig};
use common::queue::Queue;
use common::store::Store;
use common::telemetry;

pub use config::IngestConfig;

/// How long a request waits for a processing slot before it is answered 503.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// Shared state of the handlers.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

/// Concurrency limits of the expensive endpoints: total memory is bounded by
/// slots × body limit, whatever arrives.
pub struct Slots {
    notifications: Arc<Semaphore>,
    webhooks: Arc<Semaphore>,
    batches: Arc<Semaphore>,
}

impl Slots {
    async fn take(sem: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(SLOT_WAIT, sem.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// A slot for a notification (`None`: busy for too long).
    pub async fn notification(&self) -> Option<OwnedSemaphorePermit> {
        Self::take(&self.notifications).await
    }

    /// A slot for a Close webhook delivery.
    pub async fn webhook(&self) -> Option<OwnedSemaphorePermit> {
        Self::take(&self.webhooks).await
    }

    /// A slot for a `/batch` extract.
    pub async fn batch(&self) -> Option<OwnedSemaphorePermit> {
        Self::take(&self.batches).await
    }
}

/// What [`App`] holds.
pub struct AppInner {
    /// Configuration.
    pub cfg: IngestConfig,
    /// Postgres.
    pub store: Store,
    /// RabbitMQ.
    pub queue: Queue,
    /// Smart-notifier signature verification.
    pub verifier: NotificationVerifier,
    /// Close (settings endpoints and status only).
    pub close: CloseClient,
    /// Hull REST.
    pub hull: HullClient,
    /// Concurrency limits.
    pub slots: Slots,
    /// Flow-control limits.
    pub limits: backpressure::Limits,
    /// The outgoing queue's depth and publish latency.
    pub gauge: backpressure::Gauge,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

impl App {
    /// Builds the clients; connections open on demand.
    pub fn new(cfg: IngestConfig) -> anyhow::Result<App> {
        let Clients {
            store,
            queue,
            close,
            hull,
        } = Clients::new(&cfg.common, cfg.common.database_pool_size)?;
        let verifier = NotificationVerifier::new(VerifierConfig {
            allowed_key_hosts: cfg.hull_key_hosts.clone(),
            pinned_pem: cfg.hull_public_key_pem.clone(),
            skip_verification: cfg.skip_signature_verification,
            require_https: !cfg.common.local_mode,
        })
        .map_err(|e| anyhow::anyhow!("HULL_PUBLIC_KEY_PEM: {}", e.message()))?;
        let slots = Slots {
            notifications: Arc::new(Semaphore::new(cfg.max_concurrent_notifications)),
            webhooks: Arc::new(Semaphore::new(cfg.max_concurrent_notifications)),
            batches: Arc::new(Semaphore::new(cfg.max_concurrent_batches)),
        };
        let limits = backpressure::Limits::from_config(&cfg);
        let gauge = backpressure::Gauge::new(queue.clone(), cfg.flow_control_depth_ttl);
        Ok(App {
            inner: Arc::new(AppInner {
                cfg,
                store,
                queue,
                verifier,
                close,
                hull,
                slots,
                limits,
                gauge,
            }),
        })
    }
}

/// Reads a request body: at most `limit` bytes within `INGEST_BODY_TIMEOUT_SECS` in all.
pub async fn read_body(
    app: &App,
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    match tokio::time::timeout(app.cfg.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| {
                s.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
            });
            Err(if too_large {
                BodyError::TooLarge
            } else {
                BodyError::Broken
            })
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit.
    TooLarge,
    /// Not sent within `INGEST_BODY_TIMEOUT_SECS`.
    TimedOut,
    /// The connection broke.
    Broken,
}

/// Every route: the connector endpoints plus `/metrics`, `/healthz`, `/readyz`.
pub fn router(app: App) -> Router {
    let ops = telemetry::ops_router(telemetry::store_and_queue_ready(
        app.store.clone(),
        app.queue.clone(),
    ));
    let limit = app.cfg.max_body_bytes;
    let body_timeout = app.cfg.body_timeout;
    Router::new()
        .route("/smart-notifier", post(notify::smart_notifier))
        .route("/batch", post(batch::batch))
        .route("/batch-accounts", post(batch::batch_accounts))
        .route("/fetch", post(routes::fetch))
        .route("/fetch-recent-leads", post(routes::fetch))
        .route(
            "/webhooks/close/{connector_id}",
            post(webhooks::close_webhook),
        )
        .route("/status", any(routes::status))
        .route("/leadstatuses", get(routes::lead_statuses))
        .route("/fields-account-ident", get(routes::fields_account_ident))
        .route("/fields-lead-out", get(routes::fields_lead_out))
        .route("/fields-lead-in", get(routes::fields_lead_in))
        .route("/fields-contact-out", get(routes::fields_contact_out))
        .route("/fields-contact-in", get(routes::fields_contact_in))
        .route("/manifest.json", get(routes::manifest))
        .route("/admin", get(routes::admin))
        .route("/", get(routes::index))
        .layer(axum::middleware::from_fn(routes::count_requests))
        // One span per request: method and path only (the query carries credentials).
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
            },
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .with_state(app)
        .merge(ops)
}

/// Ingest's counters of rare events, exported at 0 from the start (see
/// `common::telemetry::declare_counter`).
fn declare_metrics() {
    use common::telemetry::declare_counter;
    for reason in ["organization", "secret", "unconfirmed", "extract_host"] {
        declare_counter("ingest_rejections_total", &[("reason", reason)]);
    }
    for outcome in ["accepted", "duplicate", "ignored", "rejected"] {
        declare_counter("ingest_webhooks_total", &[("outcome", outcome)]);
    }
    declare_counter("ingest_messages_refused_total", &[]);
}

/// Binds `cfg.listen` and serves until `shutdown` is cancelled. Returns the bound address and
/// the server task. Fails when `ENCRYPTION_KEY` cannot open the stored secrets.
pub async fn start(
    cfg: IngestConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listen = cfg.listen;
    declare_metrics();
    let app = App::new(cfg)?;
    app.store
        .check_key_at_start()
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on INGEST_LISTEN={listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let router = router(app.clone());
    let limits = server::Limits {
        max_connections: app.cfg.max_connections,
        header_timeout: app.cfg.header_timeout,
    };
    tokio::spawn(purge_notifications(app.clone(), shutdown.clone()));
    let handle = tokio::spawn(async move {
        server::serve(listener, router, limits, shutdown).await;
        app.queue.close().await;
    });
    Ok((addr, handle))
}

/// Forgets accepted notification ids once they are older than the replay window.
async fn purge_notifications(app: App, shutdown: CancellationToken) {
    let window = app.cfg.notification_replay_window.as_secs_f64();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        if let Err(e) = app.store.purge_notifications(window).await {
            tracing::debug!(error = %e, "could not purge old notification ids");
        }
    }
}
