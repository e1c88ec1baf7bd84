//! Logs, metrics and health endpoints shared by every binary.
//!
//! - `tracing` with either JSON lines or human-readable output (`LOG_FORMAT`), filtered by
//!   `RUST_LOG` (default `info`; read with the shared settings).
//! - a Prometheus recorder from `metrics-exporter-prometheus`; [`ops_router`] serves it on
//!   `/metrics` together with `/healthz` (the process is alive) and `/readyz` (its
//!   dependencies answer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Whether `filter` is a valid log filter (`RUST_LOG`); the error says why not.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Installs the global tracing subscriber (`format` is `json` or `pretty`, `filter` is
/// `RUST_LOG`'s value; an invalid one falls back to `info`). Safe to call twice.
pub fn init_tracing(format: &str, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed already (e.g. two tests in one
            // process); metrics then go to that one.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Registers counter `name` with `labels` at 0 (a counter that exists already keeps its value).
/// Counters of rare events are declared at start this way, so that they are exported before
/// the first event and `increase()` / `rate()` in alert rules see that first event.
pub fn declare_counter(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, *v))
        .collect();
    metrics::counter!(name, labels).increment(0);
}

/// Declares the Close client's counters of rare events, per endpoint group (processes that
/// call Close: the worker and the scheduler).
pub fn declare_close_counters() {
    for group in closeio::EndpointGroup::ALL {
        for name in [
            "closeio_rate_limited_total",
            "closeio_budget_busy_total",
            "closeio_write_resent_after_429_total",
        ] {
            declare_counter(name, &[("group", group.as_str())]);
        }
    }
}

/// A readiness probe: resolves to `Err(reason)` when a dependency is not usable.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    handle: PrometheusHandle,
    ready: ReadinessCheck,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn ops_router(ready: ReadinessCheck) -> Router {
    let state = OpsState {
        handle: metrics_handle(),
        ready,
    };
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<OpsState>| async move { s.handle.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<OpsState>| async move {
                match (s.ready)().await {
                    Ok(()) => (StatusCode::OK, "ready".to_string()).into_response(),
                    Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
                }
            }),
        )
        .with_state(state)
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Readiness of a process that depends on Postgres and RabbitMQ.
pub fn store_and_queue_ready(
    store: crate::store::Store,
    queue: crate::queue::Queue,
) -> ReadinessCheck {
    Arc::new(move || {
        let (store, queue) = (store.clone(), queue.clone());
        Box::pin(async move {
            store.ping().await.map_err(|e| format!("postgres: {e}"))?;
            queue.ping().await.map_err(|e| format!("rabbitmq: {e}"))
        })
    })
}

/// Binds `listen` and serves [`ops_router`] there until `shutdown`. `var` names the variable
/// the address came from, for the error message.
pub async fn serve_ops(
    var: &str,
    listen: std::net::SocketAddr,
    ready: ReadinessCheck,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {var}={listen}: {e}"))?;
    let router = ops_router(ready);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(())
}
