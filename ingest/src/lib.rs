//! ingest: the Hull connector HTTP surface. It verifies and validates what Hull sends, records
//! the connector's settings, publishes one job per entity with publisher confirms and answers
//! with flow control. It makes no Close call on the notification path.

pub mod config;
pub mod notify;
mod routes;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use common::clients::Clients;
use common::closeio::CloseClient;
use common::hull::{HullClient, NotificationVerifier, VerifierConfig};
use common::queue::Queue;
use common::store::Store;
use common::telemetry;

pub use config::IngestConfig;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
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
        let Clients { store, queue, close, hull } = Clients::new(&cfg.common, cfg.common.database_pool_size)?;
        let verifier = NotificationVerifier::new(VerifierConfig {
            allowed_key_hosts: cfg.hull_key_hosts.clone(),
            pinned_pem: cfg.hull_public_key_pem.clone(),
            skip_verification: cfg.skip_signature_verification,
        })
        .map_err(|e| anyhow::anyhow!("HULL_PUBLIC_KEY_PEM: {}", e.message()))?;
        Ok(App { inner: Arc::new(AppInner { cfg, store, queue, verifier, close, hull }) })
    }
}

/// Every route: the connector endpoints plus `/metrics`, `/healthz`, `/readyz`.
pub fn router(app: App) -> Router {
    let ops = telemetry::ops_router(telemetry::store_and_queue_ready(app.store.clone(), app.queue.clone()));
    let limit = app.cfg.max_body_bytes;
    Router::new()
        .route("/smart-notifier", post(notify::smart_notifier))
        .route("/batch", post(routes::batch))
        .route("/fetch", post(webhooks::fetch))
        .route("/fetch-recent-leads", post(webhooks::fetch))
        .route("/webhooks/close/{connector_id}", post(webhooks::close_webhook))
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
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
        .merge(ops)
}

/// Binds `addr` and serves until `shutdown` is cancelled. Returns the bound address and the
/// server task.
pub async fn start(
    cfg: IngestConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listen = cfg.listen;
    let app = App::new(cfg)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on INGEST_LISTEN={listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let router = router(app.clone());
    let handle = tokio::spawn(async move {
        let res = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "ingest server failed");
        }
        app.queue.close().await;
    });
    Ok((addr, handle))
}
