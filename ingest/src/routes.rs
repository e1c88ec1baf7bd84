//! The connector endpoints other than notifications, extracts and webhooks: `/status`, the
//! settings option sources, the fetch triggers (`/fetch`, `/fetch-recent-leads`),
//! `/manifest.json` and `/admin`.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use common::mapping::CloseMetadata;
use common::store::Connector;

use crate::auth::authenticate;
use crate::App;

/// The manifest declared to Hull.
pub const MANIFEST: &str = include_str!("../manifest.json");

/// Counts requests per route and status.
pub async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unknown".into());
    let start = std::time::Instant::now();
    let res = next.run(req).await;
    metrics::counter!("ingest_requests_total", "route" => route.clone(), "status" => res.status().as_u16().to_string()).increment(1);
    metrics::histogram!("ingest_request_duration_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn metadata(app: &App, connector: &Connector, kind: &str) -> Option<CloseMetadata> {
    match common::metadata::get(
        &app.store,
        &app.close,
        connector,
        common::metadata::DEFAULT_TTL,
    )
    .await
    {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(connector = %connector.id, error = %e, r#type = kind, "connector.metadata.error");
            None
        }
    }
}

fn options(list: Vec<(String, String)>) -> Json<Value> {
    Json(
        json!({"options": list.into_iter().map(|(v, l)| json!({"value": v, "label": l})).collect::<Vec<_>>()}),
    )
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(v, l)| (v.to_string(), l.to_string()))
        .collect()
}

/// `GET /leadstatuses`.
pub async fn lead_statuses(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let connector = match authenticate(&app, &q).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(meta) = metadata(&app, &connector, "/leadstatus").await else {
        return options(vec![]).into_response();
    };
    let mut list = pairs(&[("N/A", "(Use default)")]);
    list.extend(meta.lead_statuses.into_iter().map(|s| (s.id, s.label)));
    options(list).into_response()
}

/// `GET /fields-account-ident`.
pub async fn fields_account_ident() -> Json<Value> {
    options(pairs(&[
        ("domain", "Domain"),
        ("external_id", "External ID"),
    ]))
}

async fn lead_fields(app: &App, q: &HashMap<String, String>, inbound: bool) -> Response {
    let connector = match authenticate(app, q).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(meta) = metadata(app, &connector, "/fields-lead").await else {
        return options(vec![]).into_response();
    };
    let mut list = pairs(&[
        ("name", "Name"),
        ("url", "Url"),
        ("description", "Description"),
    ]);
    if inbound {
        list.extend(pairs(&[
            ("status_id", "Status"),
            ("addresses", "Addresses"),
        ]));
    }
    list.extend(
        meta.lead_custom_fields
            .into_iter()
            .map(|f| (format!("custom.{}", f.id), f.name)),
    );
    options(list).into_response()
}

/// `GET /fields-lead-out`.
pub async fn fields_lead_out(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    lead_fields(&app, &q, false).await
}

/// `GET /fields-lead-in`.
pub async fn fields_lead_in(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    lead_fields(&app, &q, true).await
}

/// `GET /fields-contact-out`.
pub async fn fields_contact_out() -> Json<Value> {
    options(pairs(&[
        ("name", "Name"),
        ("title", "Title"),
        ("phones.mobile", "Phones > Mobile"),
        ("phones.office", "Phones > Office"),
        ("phones.direct", "Phones > Direct"),
        ("phones.home", "Phones > Home"),
        ("phones.fax", "Phones > Fax"),
        ("phones.other", "Phones > Other"),
        ("emails.office", "Emails > Office"),
        ("emails.home", "Emails > Home"),
        ("emails.other", "Emails > Other"),
        ("urls.url", "Url"),
    ]))
}

/// `GET /fields-contact-in`.
pub async fn fields_contact_in() -> Json<Value> {
    options(pairs(&[
        ("name", "Name"),
        ("title", "Title"),
        ("phones", "Phones"),
        ("emails", "Emails"),
        ("urls", "Urls"),
    ]))
}

/// `ALL /status`: runs the status check, records it, pushes it to Hull and answers it.
pub async fn status(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let connector = match authenticate(&app, &q).await {
        Ok(c) => c,
        Err(r) if r.status() == StatusCode::UNAUTHORIZED || r.status() == StatusCode::NOT_FOUND => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"status": 404, "messages": ["Request doesn't contain data about the connector"]})),
            )
                .into_response()
        }
        Err(r) => return r,
    };
    let meta = if connector.api_key.is_some() {
        metadata(&app, &connector, "/status").await
    } else {
        None
    };
    let report = match common::status::check_and_publish(
        &app.store,
        &app.close,
        &app.hull,
        &connector,
        meta.as_ref(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            // The answer still tells Hull the result; only recording it failed.
            tracing::warn!(error = %e, "could not record the status");
            common::status::check(&app.close, &connector, meta.as_ref()).await
        }
    };
    (
        StatusCode::OK,
        Json(json!({"status": report.status, "messages": report.messages})),
    )
        .into_response()
}

/// `GET /manifest.json`.
pub async fn manifest() -> Response {
    match serde_json::from_str::<Value>(MANIFEST) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("manifest.json is invalid: {e}"),
        ),
    }
}

/// `GET /`.
pub async fn index() -> Html<&'static str> {
    Html("<h1>closeio-sync</h1><p>Hull ⇄ Close connector. See <a href=\"/manifest.json\">manifest.json</a>.</p>")
}

/// `GET /admin`: the dashboard tab — the connector's status and sync counters, rendered with
/// the ops console's templates (`admin::console::HullTab`).
pub async fn admin(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let connector = match authenticate(&app, &q).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let summary = app
        .store
        .connector_summaries()
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|s| s.id == connector.id));
    let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into())
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(s) = &summary {
        for (k, v) in [
            ("Accounts synced as leads", s.synced_accounts.to_string()),
            ("Users synced as contacts", s.synced_users.to_string()),
            ("Jobs waiting for a retry", s.retries.to_string()),
            ("Jobs parked (settings to fix)", s.parked.to_string()),
            ("Dead letters", s.dead_letters.to_string()),
            ("Last successful write", fmt(s.last_success_at)),
        ] {
            rows.push((k.into(), v));
        }
    }
    if let Ok(Some(p)) = app.store.incoming_progress(&connector.id).await {
        rows.push(("Leads fetched up to".into(), fmt(p.cursor)));
        rows.push((
            "Lag".into(),
            p.lag_seconds
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "-".into()),
        ));
        rows.push((
            "Full import completed".into(),
            fmt(p.full_import_completed_at),
        ));
        if let Some(run) = &p.last_run {
            rows.push((
                "Last fetch".into(),
                format!(
                    "{} ({}): {} pages, {} leads",
                    run.kind, run.state, run.pages_done, run.leads_imported
                ),
            ));
        }
    }
    // The query string carries the credentials the button needs, as Hull's dashboard gives them.
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in q
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "organization" | "ship" | "id" | "secret"))
    {
        query.append_pair(k, v);
    }
    let tab = admin::console::HullTab {
        status: connector.status.clone(),
        messages: connector.status_messages.clone(),
        rows,
        fetch_query: query.finish(),
    };
    match tab.html() {
        Ok(html) => Html(html).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("page error: {e}"),
        ),
    }
}

/// `POST /fetch` and `POST /fetch-recent-leads`: ask for an incremental fetch (a full import
/// when none has completed yet); answers `{"ok":true}` at once.
pub async fn fetch(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let connector = match authenticate(&app, &q).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match app.store.request_fetch(&connector.id, false).await {
        Ok(_) => fetch_answer(StatusCode::OK, json!({"ok": true})),
        Err(e) => fetch_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("database unavailable: {e}")}),
        ),
    }
}

fn fetch_answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}
