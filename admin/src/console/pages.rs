//! The console's handlers and the view models of its templates. Handlers call the [`Admin`]
//! functions and turn their results into rows of display strings; the templates only lay
//! them out.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::session::{self, Session, LOGIN_COOKIE};
use super::ConsoleState;
use crate::{AdminError, CloseObject, DlqFilter, ReplayTarget, Since};

/// Rows shown at most in a listing.
const LIST_LIMIT: i64 = 200;

/// What every signed-in page needs for its frame.
pub struct Frame {
    /// The active navigation entry.
    pub nav: &'static str,
    /// The session's CSRF token, for the forms.
    pub csrf: String,
    /// What the last action did.
    pub notice: Option<String>,
}

impl Frame {
    fn new(nav: &'static str, s: &Session, done: &Done) -> Frame {
        Frame {
            nav,
            csrf: s.csrf.clone(),
            notice: done.message(),
        }
    }
}

/// The outcome of the action that redirected here (post/redirect/get), from fixed messages.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Done {
    done: Option<String>,
    n: Option<String>,
}

impl Done {
    fn message(&self) -> Option<String> {
        let n: u64 = self.n.as_deref().and_then(|n| n.parse().ok()).unwrap_or(0);
        Some(match self.done.as_deref()? {
            "replayed" => format!("{n} dead letter(s) replayed: the jobs are queued again."),
            "purged" => format!("{n} dead letter(s) deleted."),
            "deleted" => "The dead letter was deleted.".into(),
            "retry" => "The retry is due now; the scheduler queues it within a second.".into(),
            "unparked" => "The connector is unparked; its parked jobs run again now.".into(),
            "fetch" => "A fetch was asked for; the scheduler starts it on its next pass.".into(),
            "full" => {
                "A full import was asked for; the scheduler starts it on its next pass.".into()
            }
            _ => return None,
        })
    }
}

fn done(to: &str, what: &str, n: Option<u64>) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    let url = match n {
        Some(n) => format!("{to}{sep}done={what}&n={n}"),
        None => format!("{to}{sep}done={what}"),
    };
    Redirect::to(&url).into_response()
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("page error: {e}"),
        ),
    }
}

/// The page of an error.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// An error page's HTML.
pub fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let page = ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or(""),
        message,
    };
    Html(page.render().unwrap_or_else(|_| "error".into()))
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, error_page(status, message)).into_response()
}

/// The answer when the database cannot be reached.
pub fn unavailable(why: &str) -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the database is unavailable: {why}"),
    )
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        error_response(self.0.status(), &self.0.to_string())
    }
}

/// An admin error, answered as a page.
pub struct PageError(AdminError);

impl From<AdminError> for PageError {
    fn from(e: AdminError) -> Self {
        PageError(e)
    }
}

impl From<store::StoreError> for PageError {
    fn from(e: store::StoreError) -> Self {
        PageError(AdminError::Store(e))
    }
}

type PageResult = Result<Response, PageError>;

// ---- formatting ----

fn when(t: Option<DateTime<Utc>>) -> String {
    match t {
        None => "never".into(),
        Some(t) => format!("{} ({})", ago(t), t.format("%Y-%m-%d %H:%M:%S UTC")),
    }
}

fn ago(t: DateTime<Utc>) -> String {
    let secs = (Utc::now() - t).num_seconds();
    let (future, secs) = (secs < 0, secs.unsigned_abs());
    let span = match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn seconds(s: f64) -> String {
    match s {
        s if s <= 0.0 => "0 s".into(),
        s if s < 10.0 => format!("{s:.1} s"),
        s if s < 3600.0 => format!("{s:.0} s"),
        s => format!("{:.1} h", s / 3600.0),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

fn status_class(status: &str, parked: bool) -> &'static str {
    match (status, parked) {
        (_, true) | ("error", _) => "bad",
        ("warning", _) => "warn",
        ("ok", _) => "good",
        _ => "",
    }
}

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    login_csrf: &'a str,
    error: Option<&'a str>,
}

/// `GET /console/login`.
pub async fn login_form() -> Response {
    let token = session::random_token();
    let mut r = render(&LoginPage {
        login_csrf: &token,
        error: None,
    });
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(LOGIN_COOKIE, &token, 3600),
    );
    r
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    login_csrf: String,
}

/// `POST /console/login`: checks the admin token and starts a session.
pub async fn login(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    let fresh = session::random_token();
    let again = |status: StatusCode, error: &str| {
        let mut r = render(&LoginPage {
            login_csrf: &fresh,
            error: Some(error),
        });
        *r.status_mut() = status;
        r.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(LOGIN_COOKIE, &fresh, 3600),
        );
        r
    };
    if expected.is_empty()
        || !domain::crypto::constant_time_eq(form.login_csrf.as_bytes(), expected.as_bytes())
    {
        metrics::counter!("admin_console_logins_total", "outcome" => "csrf_refused").increment(1);
        return again(
            StatusCode::FORBIDDEN,
            "The login form expired. Please try again.",
        );
    }
    if !session::token_matches(&state, &form.token) {
        metrics::counter!("admin_console_logins_total", "outcome" => "wrong_token").increment(1);
        tracing::warn!("ops console: login with a wrong token");
        // Slows down guessing (the token has at least 24 characters anyway).
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        return again(StatusCode::UNAUTHORIZED, "That is not the admin token.");
    }
    match session::start(&state).await {
        Ok(cookie) => {
            metrics::counter!("admin_console_logins_total", "outcome" => "ok").increment(1);
            tracing::info!("ops console: signed in");
            let mut r = Redirect::to("/console/").into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r.headers_mut()
                .append(header::SET_COOKIE, session::set_cookie(LOGIN_COOKIE, "", 0));
            r
        }
        Err(e) => unavailable(&e.to_string()),
    }
}

/// `POST /console/logout`.
pub async fn logout(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
) -> Response {
    if let Err(e) = s.end(&state).await {
        return unavailable(&e.to_string());
    }
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(session::SESSION_COOKIE, "", 0),
    );
    r
}

// ---- overview ----

struct ConnectorRow {
    id: String,
    organization: String,
    status: String,
    status_class: &'static str,
    parked_reason: Option<String>,
    synced: String,
    outgoing_5m: i64,
    incoming_1h: i64,
    lag: String,
    retries: i64,
    retries_due: i64,
    overdue: i64,
    dead_letters: i64,
    last_success: String,
    incoming_lag: String,
}

struct QueueRow {
    name: String,
    role: &'static str,
    messages: String,
    consumers: String,
    no_consumer: bool,
}

struct BudgetRow {
    key: String,
    connectors: String,
    group: String,
    limit: String,
    booked: String,
    paused: String,
    requests: i64,
    rate_limited: i64,
    share: String,
    last_429: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    frame: Frame,
    connectors: Vec<ConnectorRow>,
    queues: Vec<QueueRow>,
    budgets: Vec<BudgetRow>,
    retention_days: u32,
}

/// `GET /console/`.
pub async fn overview(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Query(d): Query<Done>,
) -> PageResult {
    let o = state.admin.overview(state.options.retention_days).await?;
    let connectors = o
        .connectors
        .iter()
        .map(|c| {
            let sm = &c.summary;
            ConnectorRow {
                id: sm.id.clone(),
                organization: sm.organization.clone(),
                status: sm.status.clone(),
                status_class: status_class(&sm.status, sm.parked_reason.is_some()),
                parked_reason: sm.parked_reason.clone(),
                synced: format!(
                    "{} leads · {} contacts",
                    sm.synced_accounts, sm.synced_users
                ),
                outgoing_5m: c.activity.outgoing_last_5m,
                incoming_1h: c.activity.incoming_last_hour,
                lag: seconds(c.lag_seconds),
                retries: sm.retries,
                retries_due: c.activity.retries_due,
                overdue: c.overdue_retries,
                dead_letters: sm.dead_letters,
                last_success: when(sm.last_success_at),
                incoming_lag: c
                    .incoming_lag_seconds
                    .map(seconds)
                    .unwrap_or_else(|| "no fetch yet".into()),
            }
        })
        .collect();
    let queues = o
        .queues
        .iter()
        .map(|q| QueueRow {
            name: q.name.clone(),
            role: q.role,
            messages: q
                .stats
                .map(|s| s.messages.to_string())
                .unwrap_or_else(|| "broker unreachable".into()),
            consumers: q
                .stats
                .map(|s| s.consumers.to_string())
                .unwrap_or_else(|| "?".into()),
            no_consumer: !q.role.starts_with("dead") && q.stats.is_some_and(|s| s.consumers == 0),
        })
        .collect();
    let budgets = o
        .budgets
        .iter()
        .map(|b| BudgetRow {
            key: b.key_fingerprint.clone(),
            connectors: if b.connectors.is_empty() {
                "(no connector has this key now)".into()
            } else {
                b.connectors.join(", ")
            },
            group: b.group.clone(),
            limit: format!("{:.1}/s", b.limit_per_second),
            booked: seconds(b.booked_ahead_seconds),
            paused: if b.paused_for_seconds > 0.0 {
                format!("paused {}", seconds(b.paused_for_seconds))
            } else {
                "—".into()
            },
            requests: b.requests,
            rate_limited: b.rate_limited,
            share: if b.requests > 0 {
                format!("{:.2} %", 100.0 * b.rate_limited as f64 / b.requests as f64)
            } else {
                "—".into()
            },
            last_429: b
                .last_rate_limited_at
                .map(ago)
                .unwrap_or_else(|| "never".into()),
        })
        .collect();
    Ok(render(&OverviewPage {
        frame: Frame::new("overview", &s, &d),
        connectors,
        queues,
        budgets,
        retention_days: o.dead_letter_retention_days,
    }))
}

// ---- connector ----

struct RunRow {
    kind: String,
    state: String,
    started: String,
    finished: String,
    pages: i32,
    leads: i64,
    contacts: i64,
    error: String,
}

struct EntityErrorRow {
    kind: String,
    hull_id: String,
    close_id: String,
    failures: i32,
    error: String,
    at: String,
}

#[derive(Template)]
#[template(path = "connector.html")]
struct ConnectorPage {
    frame: Frame,
    id: String,
    organization: String,
    status: String,
    status_class: &'static str,
    status_messages: Vec<String>,
    parked_reason: Option<String>,
    facts: Vec<(&'static str, String)>,
    settings: Vec<(String, String)>,
    incoming: Vec<(&'static str, String)>,
    runs: Vec<RunRow>,
    webhook: Vec<(&'static str, String)>,
    errors: Vec<EntityErrorRow>,
}

fn setting_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// `GET /console/connectors/{id}`.
pub async fn connector(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(d): Query<Done>,
) -> PageResult {
    let c = state.admin.connector(&id).await?;
    let v = &c.view;
    let sm = &v.summary;
    let facts = vec![
        ("Leads synced", sm.synced_accounts.to_string()),
        ("Contacts synced", sm.synced_users.to_string()),
        (
            "Written in the last 5 min",
            v.activity.outgoing_last_5m.to_string(),
        ),
        (
            "Leads fetched in the last hour",
            v.activity.incoming_last_hour.to_string(),
        ),
        ("Jobs waiting for a retry", sm.retries.to_string()),
        ("Retries due now", v.activity.retries_due.to_string()),
        ("Retries overdue (> 1 min)", v.overdue_retries.to_string()),
        ("Oldest waiting job", seconds(v.lag_seconds)),
        ("Parked jobs", sm.parked.to_string()),
        ("Dead letters", sm.dead_letters.to_string()),
        ("Last successful write", when(sm.last_success_at)),
        (
            "Close API key",
            match &c.api_key_fingerprint {
                Some(fp) => format!("configured (fingerprint {fp})"),
                None => "not configured".into(),
            },
        ),
        ("Close metadata fetched", when(c.metadata_fetched_at)),
    ];
    let settings = c
        .private_settings
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), shorten(&setting_text(v), 200)))
                .collect()
        })
        .unwrap_or_default();
    let mut incoming = vec![];
    if let Some(p) = &c.incoming {
        incoming.push(("Leads in Hull up to", when(p.cursor)));
        incoming.push((
            "Incoming lag",
            p.lag_seconds.map(seconds).unwrap_or_else(|| "—".into()),
        ));
        incoming.push(("Full import completed", when(p.full_import_completed_at)));
        incoming.push(("Fetch asked for", when(p.fetch_requested_at)));
    }
    let runs = c
        .recent_fetch_runs
        .iter()
        .map(|r| RunRow {
            kind: r.kind.to_string(),
            state: r.state.to_string(),
            started: when(Some(r.started_at)),
            finished: r.finished_at.map(ago).unwrap_or_else(|| "—".into()),
            pages: r.pages_done,
            leads: r.leads_imported,
            contacts: r.contacts_imported,
            error: r.last_error.clone().unwrap_or_default(),
        })
        .collect();
    let webhook = match &c.webhook_subscription {
        Some(w) => vec![
            ("Subscription", w.subscription_id.clone()),
            ("Delivers to", w.url.clone()),
            (
                "Made with the current API key",
                if w.current_key {
                    "yes"
                } else {
                    "no: it is renewed at the next upkeep"
                }
                .into(),
            ),
            ("Created", when(Some(w.created_at))),
            ("Last upkeep", when(Some(w.checked_at))),
        ],
        None => vec![(
            "Subscription",
            "none (webhooks are off or not set up yet)".into(),
        )],
    };
    let errors = c
        .recent_errors
        .iter()
        .map(|e| EntityErrorRow {
            kind: e.kind.clone(),
            hull_id: e.hull_id.clone(),
            close_id: e.close_id.clone().unwrap_or_else(|| "—".into()),
            failures: e.failures,
            error: shorten(&e.last_error, 300),
            at: ago(e.at),
        })
        .collect();
    Ok(render(&ConnectorPage {
        frame: Frame::new("overview", &s, &d),
        id: sm.id.clone(),
        organization: sm.organization.clone(),
        status: sm.status.clone(),
        status_class: status_class(&sm.status, sm.parked_reason.is_some()),
        status_messages: sm.status_messages.clone(),
        parked_reason: sm.parked_reason.clone(),
        facts,
        settings,
        incoming,
        runs,
        webhook,
        errors,
    }))
}

/// `POST /console/connectors/{id}/unpark`.
pub async fn unpark(State(state): State<ConsoleState>, Path(id): Path<String>) -> PageResult {
    state.admin.unpark(&id).await?;
    Ok(done(
        &format!("/console/connectors/{}", url_part(&id)),
        "unparked",
        None,
    ))
}

/// The "fetch now" form.
#[derive(Deserialize)]
pub struct FetchForm {
    #[serde(default)]
    full: Option<String>,
}

/// `POST /console/connectors/{id}/fetch`.
pub async fn fetch_now(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    Form(f): Form<FetchForm>,
) -> PageResult {
    let full = f.full.as_deref() == Some("1");
    state.admin.fetch_now(&id, full).await?;
    Ok(done(
        &format!("/console/connectors/{}", url_part(&id)),
        if full { "full" } else { "fetch" },
        None,
    ))
}

/// An id of a path: a malformed one is answered with a page, not a bare 400.
fn parse_id(raw: &str) -> Result<Uuid, PageError> {
    raw.parse()
        .map_err(|_| PageError(AdminError::BadRequest(format!("{raw:?} is not an id"))))
}

fn url_part(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---- retries ----

struct RetryRowView {
    id: Uuid,
    connector: String,
    job: String,
    entity: String,
    state: String,
    attempts: i32,
    next: String,
    overdue: bool,
    error: String,
    can_retry: bool,
}

#[derive(Template)]
#[template(path = "retries.html")]
struct RetriesPage {
    frame: Frame,
    connector: String,
    rows: Vec<RetryRowView>,
    limit: i64,
}

/// The retries page's filter.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RetryFilter {
    connector: Option<String>,
    #[serde(flatten)]
    done: Done,
}

/// `GET /console/retries`.
pub async fn retries(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Query(f): Query<RetryFilter>,
) -> PageResult {
    let connector = f.connector.filter(|c| !c.is_empty());
    let rows = state
        .admin
        .retries(connector.as_deref(), Some(LIST_LIMIT))
        .await?
        .into_iter()
        .map(|r| {
            let overdue = r.state == "scheduled"
                && r.next_attempt_at < Utc::now() - chrono::Duration::minutes(1);
            RetryRowView {
                id: r.id,
                connector: r.connector_id,
                job: r.job_name,
                entity: r.entity_key.unwrap_or_default(),
                can_retry: r.state != "queued",
                state: r.state,
                attempts: r.attempts,
                next: ago(r.next_attempt_at),
                overdue,
                error: shorten(&r.last_error, 300),
            }
        })
        .collect();
    Ok(render(&RetriesPage {
        frame: Frame::new("retries", &s, &f.done),
        connector: connector.unwrap_or_default(),
        rows,
        limit: LIST_LIMIT,
    }))
}

/// `POST /console/retries/{id}/retry`.
pub async fn retry_now(State(state): State<ConsoleState>, Path(id): Path<String>) -> PageResult {
    let id = parse_id(&id)?;
    state.admin.retry_now(id).await?;
    Ok(done("/console/retries", "retry", None))
}

// ---- dead letters ----

struct DeadRow {
    id: Uuid,
    died: String,
    connector: String,
    job: String,
    entity: String,
    class: String,
    attempts: i32,
    error: String,
    replayed: bool,
}

struct ClassRow {
    class: String,
    link: String,
    last_hour: i64,
    last_day: i64,
    last_week: i64,
    total: i64,
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLettersPage {
    frame: Frame,
    filter: FilterView,
    connectors: Vec<(String, bool)>,
    kinds: Vec<(&'static str, bool)>,
    since: Vec<(&'static str, bool)>,
    classes: Vec<ClassRow>,
    rows: Vec<DeadRow>,
    matching: i64,
    limit: i64,
    query: String,
    retention_days: u32,
}

/// The filter as the form shows it.
struct FilterView {
    class: String,
    error: String,
    all: bool,
}

/// The job kinds a dead letter can have: every job's, and `unreadable` (a message that was
/// not a job).
fn job_kinds() -> impl Iterator<Item = &'static str> {
    domain::jobs::Job::NAMES
        .into_iter()
        .chain(std::iter::once("unreadable"))
}

/// The dead-letter filter with the outcome of the last action.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeadFilter {
    connector: Option<String>,
    kind: Option<String>,
    class: Option<String>,
    error: Option<String>,
    since: Option<String>,
    all: Option<String>,
    until: Option<String>,
    done: Option<String>,
    n: Option<String>,
}

impl DeadFilter {
    fn filter(&self) -> Result<DlqFilter, AdminError> {
        let since = match self.since.as_deref().unwrap_or("") {
            "" => None,
            other => Some(
                Since::ALL
                    .into_iter()
                    .find(|s| s.as_str() == other)
                    .ok_or_else(|| {
                        AdminError::BadRequest(format!(
                            "since must be hour, day or week, not {other:?}"
                        ))
                    })?,
            ),
        };
        let until = match self.until.as_deref().unwrap_or("") {
            "" => None,
            other => Some(other.parse::<DateTime<Utc>>().map_err(|_| {
                AdminError::BadRequest(format!("until must be an RFC 3339 instant, not {other:?}"))
            })?),
        };
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Ok(DlqFilter {
            connector: given(&self.connector),
            kind: given(&self.kind),
            class: given(&self.class),
            error: self.error.clone().filter(|e| !e.trim().is_empty()),
            since,
            until,
            all: matches!(self.all.as_deref(), Some("1" | "true" | "on")),
            limit: Some(LIST_LIMIT),
        })
    }

    /// The filter as a query string (for links and actions).
    fn query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("connector", &self.connector),
            ("kind", &self.kind),
            ("class", &self.class),
            ("error", &self.error),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        if matches!(self.all.as_deref(), Some("1" | "true" | "on")) {
            q.append_pair("all", "1");
        }
        q.finish()
    }

    fn view(&self) -> FilterView {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        FilterView {
            class: s(&self.class),
            error: s(&self.error),
            all: matches!(self.all.as_deref(), Some("1" | "true" | "on")),
        }
    }
}

/// `GET /console/dead-letters`.
pub async fn dead_letters(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Query(f): Query<DeadFilter>,
) -> PageResult {
    let filter = f.filter()?;
    let letters = state.admin.dead_letters(&filter).await?;
    let class_counts = state
        .admin
        .error_classes(&DlqFilter {
            class: None,
            ..filter.clone()
        })
        .await?;
    let matching = class_counts
        .iter()
        .filter(|c| filter.class.as_deref().is_none_or(|k| k == c.error_class))
        .map(|c| c.total)
        .sum();
    let classes = class_counts
        .into_iter()
        .map(|c| {
            let link = DeadFilter {
                class: Some(c.error_class.clone()),
                done: None,
                n: None,
                ..f.clone_filter()
            }
            .query();
            ClassRow {
                class: c.error_class,
                link,
                last_hour: c.last_hour,
                last_day: c.last_day,
                last_week: c.last_week,
                total: c.total,
            }
        })
        .collect();
    let connectors = state
        .admin
        .store()
        .connector_summaries()
        .await?
        .into_iter()
        .map(|c| {
            let selected = f.connector.as_deref() == Some(c.id.as_str());
            (c.id, selected)
        })
        .collect();
    let kinds = job_kinds()
        .map(|k| (k, f.kind.as_deref() == Some(k)))
        .collect();
    let since = Since::ALL
        .into_iter()
        .map(|s| (s.as_str(), f.since.as_deref() == Some(s.as_str())))
        .collect();
    let rows = letters
        .into_iter()
        .map(|d| DeadRow {
            id: d.id,
            died: ago(d.created_at),
            connector: d.connector_id,
            job: d.job_name,
            entity: d.entity_key.unwrap_or_default(),
            class: d.error_class,
            attempts: d.attempts,
            error: shorten(&d.last_error, 200),
            replayed: d.replayed_at.is_some(),
        })
        .collect();
    let done = Done {
        done: f.done.clone(),
        n: f.n.clone(),
    };
    Ok(render(&DeadLettersPage {
        frame: Frame::new("dead", &s, &done),
        filter: f.view(),
        connectors,
        kinds,
        since,
        classes,
        rows,
        matching,
        limit: LIST_LIMIT,
        query: f.query(),
        retention_days: state.options.retention_days,
    }))
}

impl DeadFilter {
    fn clone_filter(&self) -> DeadFilter {
        DeadFilter {
            connector: self.connector.clone(),
            kind: self.kind.clone(),
            class: self.class.clone(),
            error: self.error.clone(),
            since: self.since.clone(),
            all: self.all.clone(),
            until: self.until.clone(),
            done: None,
            n: None,
        }
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    frame: Frame,
    action: String,
    verb: &'static str,
    count: i64,
    matching: i64,
    back: String,
    explanation: &'static str,
}

/// The confirmation field of a bulk action.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Confirm {
    confirm: Option<String>,
}

/// `POST /console/dead-letters/replay?…`: replays every dead letter matching the filter,
/// after a confirmation page.
pub async fn replay_matching(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Query(f): Query<DeadFilter>,
    Form(c): Form<Confirm>,
) -> PageResult {
    bulk(state, s, f, c, true).await
}

/// `POST /console/dead-letters/purge?…`: deletes every dead letter matching the filter, after
/// a confirmation page.
pub async fn purge_matching(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Query(f): Query<DeadFilter>,
    Form(c): Form<Confirm>,
) -> PageResult {
    bulk(state, s, f, c, false).await
}

async fn bulk(
    state: ConsoleState,
    s: Session,
    f: DeadFilter,
    c: Confirm,
    replay: bool,
) -> PageResult {
    let filter = DlqFilter {
        limit: Some(crate::MAX_LIMIT),
        // Replaying acts only on dead letters not replayed yet (see `ReplayTarget::Matching`).
        all: !replay && f.filter()?.all,
        ..f.filter()?
    };
    let back = format!(
        "/console/dead-letters?{}",
        DeadFilter {
            until: None,
            ..f.clone_filter()
        }
        .query()
    );
    if c.confirm.as_deref() != Some("yes") {
        let matching = state.admin.count_dead_letters(&filter).await?;
        let count = if replay {
            matching.min(crate::MAX_LIMIT)
        } else {
            matching
        };
        let (verb, path, explanation) = if replay {
            (
                "Replay",
                "replay",
                "Each job is queued again with its attempts reset; the dead letters are kept and marked replayed. Only dead letters not replayed yet are replayed (the newest 10000 at most).",
            )
        } else {
            (
                "Delete",
                "purge",
                "The dead letters are deleted for good; their jobs are not run.",
            )
        };
        // The action acts on what this page counted: nothing that dies after now.
        let pinned = DeadFilter {
            until: Some(filter.until.unwrap_or_else(Utc::now).to_rfc3339()),
            ..f.clone_filter()
        };
        return Ok(render(&ConfirmPage {
            frame: Frame::new("dead", &s, &Done::default()),
            action: format!("/console/dead-letters/{path}?{}", pinned.query()),
            verb,
            count,
            matching,
            back,
            explanation,
        }));
    }
    if replay {
        let n = state.admin.replay(ReplayTarget::Matching(filter)).await?;
        Ok(done(&back, "replayed", Some(n as u64)))
    } else {
        let n = state.admin.purge_matching(&filter).await?;
        Ok(done(&back, "purged", Some(n)))
    }
}

#[derive(Template)]
#[template(path = "dead_letter.html")]
struct DeadLetterPage {
    frame: Frame,
    id: Uuid,
    facts: Vec<(&'static str, String)>,
    replayed: bool,
    errors: Vec<(String, String, String)>,
    hull_entity: Option<String>,
    last_body: Option<String>,
    close_title: String,
    close_object: Option<String>,
    close_note: Option<String>,
    job: String,
}

/// `GET /console/dead-letters/{id}`.
pub async fn dead_letter(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(d): Query<Done>,
) -> PageResult {
    let id = parse_id(&id)?;
    let detail = state.admin.dead_letter_detail(id).await?;
    let dl = &detail.dead_letter;
    let mut facts = vec![
        ("Connector", dl.connector_id.clone()),
        ("Job", dl.job_name.clone()),
        (
            "Entity",
            dl.entity_key.clone().unwrap_or_else(|| "—".into()),
        ),
        ("Error class", dl.error_class.clone()),
        ("Attempts", dl.attempts.to_string()),
        ("Died", when(Some(dl.created_at))),
        ("Replayed", when(dl.replayed_at)),
    ];
    if let Some(st) = &detail.entity_state {
        facts.push((
            "Close id",
            st.close_id.clone().unwrap_or_else(|| "none yet".into()),
        ));
        facts.push(("Last successful write", when(st.last_success_at)));
    }
    let errors = dl
        .errors
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let at = e
                        .get("at")
                        .and_then(Value::as_str)
                        .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                        .map(|t| when(Some(t)))
                        .unwrap_or_default();
                    let attempt = e.get("attempt").map(Value::to_string).unwrap_or_default();
                    let error = e
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    (at, attempt, error)
                })
                .collect()
        })
        .unwrap_or_default();
    let (close_title, close_object, close_note) = match &detail.close_object {
        CloseObject::NotSynced => (
            "Close object".into(),
            None,
            Some("The entity has no Close object yet (it was never written, or it failed before its first write).".into()),
        ),
        CloseObject::Unavailable { reason } => ("Close object".into(), None, Some(reason.clone())),
        CloseObject::Found { id, object } => (format!("Close object {id} (now)"), Some(pretty(object)), None),
        CloseObject::Failed { id, error } => (
            format!("Close object {id}"),
            None,
            Some(format!("Close could not be asked: {error}")),
        ),
    };
    Ok(render(&DeadLetterPage {
        frame: Frame::new("dead", &s, &d),
        id: dl.id,
        facts,
        replayed: dl.replayed_at.is_some(),
        errors,
        hull_entity: detail.hull_entity.as_ref().map(pretty),
        last_body: dl.last_body.as_ref().map(pretty),
        close_title,
        close_object,
        close_note,
        job: pretty(&dl.envelope),
    }))
}

/// `POST /console/dead-letters/{id}/replay`.
pub async fn replay_one(State(state): State<ConsoleState>, Path(id): Path<String>) -> PageResult {
    let id = parse_id(&id)?;
    let n = state.admin.replay(ReplayTarget::One(id)).await?;
    Ok(done(
        &format!("/console/dead-letters/{id}"),
        "replayed",
        Some(n as u64),
    ))
}

/// `POST /console/dead-letters/{id}/delete`.
pub async fn delete_one(State(state): State<ConsoleState>, Path(id): Path<String>) -> PageResult {
    let id = parse_id(&id)?;
    state.admin.delete_dead_letter(id).await?;
    Ok(done("/console/dead-letters", "deleted", None))
}

// ---- Hull's dashboard tab ----

/// Hull's dashboard tab (`GET /admin` of the ingest service): the connector's status, sync
/// counters and the "fetch" button, on the console's templates and stylesheet.
#[derive(Template)]
#[template(path = "hull_tab.html")]
pub struct HullTab {
    /// The connector's status.
    pub status: String,
    /// Its status messages.
    pub messages: Vec<String>,
    /// Label and value rows.
    pub rows: Vec<(String, String)>,
    /// The query string of the fetch button (the credentials Hull's dashboard gave).
    pub fetch_query: String,
}

impl HullTab {
    /// The page's HTML.
    pub fn html(&self) -> Result<String, askama::Error> {
        self.render()
    }

    fn stylesheet(&self) -> &'static str {
        super::STYLESHEET
    }
}
