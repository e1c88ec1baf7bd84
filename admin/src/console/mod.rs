//! The ops console: server-rendered pages (templates in `admin/templates/`, rendered with
//! askama, which escapes every value) over the same [`Admin`] functions as the JSON API.
//!
//! Pages (under `/console/`, all but the login form behind a session, see [`session`]):
//! - `/console/` — overview: connectors (status, parked reason, throughput, lag, retries,
//!   dead letters, last success), queues (messages, consumers), Close budgets per key and group;
//! - `/console/connectors/{id}` — settings without secrets, incoming sync and fetch runs,
//!   webhook subscription, recent errors; "fetch now", "full import", "unpark";
//! - `/console/retries` — due, next attempt, last error; "retry now";
//! - `/console/dead-letters` — filters (connector, job kind, error class, age), counts per error
//!   class, "replay all matching", "purge all matching" (each confirmed on a second page);
//! - `/console/dead-letters/{id}` — its error history, the job, and side by side the Hull
//!   entity, the body last sent to Close and the Close object now; "replay", "delete".
//!
//! No JavaScript: every action is a form `POST` answered by a redirect (post/redirect/get).
//! Every answer carries a strict Content-Security-Policy, `no-store` caching and
//! `frame-ancestors 'none'`.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::ConsoleOptions;
use crate::Admin;

pub mod pages;
pub mod session;

pub use pages::HullTab;

/// The console's stylesheet (also inlined in Hull's dashboard tab).
pub const STYLESHEET: &str = include_str!("../../templates/console.css");

/// What every console handler shares.
#[derive(Clone)]
pub struct ConsoleState {
    /// The admin functions.
    pub admin: Admin,
    /// The admin token (the login password).
    pub token: Arc<str>,
    /// Retention and session length.
    pub options: ConsoleOptions,
}

/// The console's routes (to merge into the admin listener's router).
pub fn router(admin: Admin, token: &str, options: ConsoleOptions) -> Router {
    let state = ConsoleState {
        admin,
        token: token.into(),
        options,
    };
    let signed_in = Router::new()
        .route("/console/", get(pages::overview))
        .route("/console/connectors/{id}", get(pages::connector))
        .route("/console/connectors/{id}/unpark", post(pages::unpark))
        .route("/console/connectors/{id}/fetch", post(pages::fetch_now))
        .route("/console/retries", get(pages::retries))
        .route("/console/retries/{id}/retry", post(pages::retry_now))
        .route("/console/dead-letters", get(pages::dead_letters))
        .route("/console/dead-letters/replay", post(pages::replay_matching))
        .route("/console/dead-letters/purge", post(pages::purge_matching))
        .route("/console/dead-letters/{id}", get(pages::dead_letter))
        .route("/console/dead-letters/{id}/replay", post(pages::replay_one))
        .route("/console/dead-letters/{id}/delete", post(pages::delete_one))
        .route("/console/logout", post(pages::logout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::require_session,
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console/login",
            get(pages::login_form).post(pages::login),
        )
        .route("/console/static/console.css", get(stylesheet))
        .merge(signed_in)
        .with_state(state)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            // `same-origin`, not `no-referrer`: with `no-referrer` browsers send `Origin: null` on
            // the console's own form posts, which the origin check refuses.
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
}
