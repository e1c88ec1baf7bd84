//! The JSON admin API: every [`Admin`] function over HTTP, behind the bearer token.
//!
//! Routes (all JSON; `Authorization: Bearer $ADMIN_TOKEN` required, else 401):
//! - `GET /overview` (connectors, queues, Close budgets)
//! - `GET /connectors`, `GET /connectors/{id}`, `POST /connectors/{id}/unpark`,
//!   `POST /connectors/{id}/fetch?full=`
//! - `GET /dlq?connector=&kind=&class=&error=&since=hour|day|week&all=&limit=`,
//!   `GET /dlq/classes?…` (counts per error class), `GET /dlq/{id}` (with the Hull entity and
//!   the Close object), `DELETE /dlq/{id}`
//! - `POST /dlq/{id}/replay`, `POST /dlq/replay?…` (every dead letter matching the filter)
//! - `POST /dlq/purge?…` (every dead letter matching the filter), `DELETE /dlq?connector=&replayed=`
//! - `POST /dlq/import-broker` (dead letters RabbitMQ made, into Postgres)
//! - `GET /retries?connector=&limit=`, `POST /retries/{id}/retry`
//!
//! The ops console ([`crate::console`]) is served on the same listener under `/console/`.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    Admin, AdminError, BrokerImport, ConnectorDetail, DeadLetterDetail, DlqFilter, Overview,
    ReplayTarget,
};

/// What the console needs beyond the admin functions.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleOptions {
    /// `DEAD_LETTER_RETENTION_DAYS`, shown on the pages.
    pub retention_days: u32,
    /// `CONSOLE_SESSION_HOURS`.
    pub session_hours: u32,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            retention_days: 30,
            session_hours: 12,
        }
    }
}

impl crate::AdminConfig {
    /// The console's options from this configuration.
    pub fn console_options(&self) -> ConsoleOptions {
        ConsoleOptions {
            retention_days: self.dead_letter_retention_days,
            session_hours: self.console_session_hours,
        }
    }
}

#[derive(Clone)]
struct ApiState {
    admin: Admin,
    token: std::sync::Arc<str>,
    options: ConsoleOptions,
}

/// The JSON admin API (every route behind the bearer token).
pub fn router(admin: Admin, token: &str) -> Router {
    router_with(admin, token, ConsoleOptions::default())
}

fn router_with(admin: Admin, token: &str, options: ConsoleOptions) -> Router {
    let state = ApiState {
        admin,
        token: token.into(),
        options,
    };
    Router::new()
        .route("/overview", get(overview))
        .route("/connectors", get(list_connectors))
        .route("/connectors/{id}", get(show_connector))
        .route("/connectors/{id}/unpark", post(unpark))
        .route("/connectors/{id}/fetch", post(fetch_now))
        .route("/dlq", get(list_dlq).delete(purge_dlq))
        .route("/dlq/classes", get(dlq_classes))
        .route("/dlq/replay", post(replay_matching))
        .route("/dlq/purge", post(purge_matching))
        .route("/dlq/import-broker", post(import_broker))
        .route("/dlq/{id}", get(show_dlq).delete(delete_dlq))
        .route("/dlq/{id}/replay", post(replay_one))
        .route("/retries", get(list_retries))
        .route("/retries/{id}/retry", post(retry_now))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Everything the admin listener serves: the JSON API and, under `/console/`, the ops console.
pub fn app(admin: Admin, token: &str, options: ConsoleOptions) -> Router {
    router_with(admin.clone(), token, options).merge(crate::console::router(admin, token, options))
}

/// Serves [`app`] on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Admin,
    token: &str,
    options: ConsoleOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app(admin, token, options))
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
) -> Result<Json<DeadLetterDetail>, AdminError> {
    Ok(Json(s.admin.dead_letter_detail(id).await?))
}

async fn delete_dlq(
    State(s): State<ApiState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, AdminError> {
    s.admin.delete_dead_letter(id).await?;
    Ok(Json(json!({"deleted": 1})))
}

async fn dlq_classes(
    State(s): State<ApiState>,
    Query(f): Query<DlqFilter>,
) -> Result<Json<Value>, AdminError> {
    let classes = s.admin.error_classes(&f).await?;
    Ok(Json(json!({"classes": classes})))
}

/// `POST /dlq/purge?…`: an empty filter would delete every dead letter; that takes
/// `everything=true`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PurgeGuard {
    everything: bool,
}

async fn purge_matching(
    State(s): State<ApiState>,
    Query(f): Query<DlqFilter>,
    Query(guard): Query<PurgeGuard>,
) -> Result<Json<Value>, AdminError> {
    let unfiltered = DlqFilter {
        all: f.all,
        limit: f.limit,
        ..DlqFilter::default()
    };
    if f == unfiltered && !guard.everything {
        return Err(AdminError::BadRequest(
            "no filter given: add one (connector, kind, class, error, since, until), or everything=true to delete every dead letter".into(),
        ));
    }
    let n = s.admin.purge_matching(&f).await?;
    Ok(Json(json!({"deleted": n})))
}

async fn overview(State(s): State<ApiState>) -> Result<Json<Overview>, AdminError> {
    Ok(Json(s.admin.overview(s.options.retention_days).await?))
}

async fn unpark(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    s.admin.unpark(&id).await?;
    Ok(Json(json!({"unparked": id})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FetchQuery {
    full: bool,
}

async fn fetch_now(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<FetchQuery>,
) -> Result<Json<Value>, AdminError> {
    s.admin.fetch_now(&id, q.full).await?;
    Ok(Json(json!({"fetch_requested": id, "full": q.full})))
}

async fn retry_now(
    State(s): State<ApiState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, AdminError> {
    s.admin.retry_now(id).await?;
    Ok(Json(json!({"due": id})))
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

async fn replay_matching(
    State(s): State<ApiState>,
    Query(f): Query<DlqFilter>,
) -> Result<Json<Value>, AdminError> {
    let n = s.admin.replay(ReplayTarget::Matching(f)).await?;
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
