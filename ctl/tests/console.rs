//! The ops console over real HTTP (no browser; `tests/tests/console.rs` drives it in
//! Chromium): the login form and its session cookie, CSRF on every action, escaping, the
//! security headers, and each action doing what the JSON API does.

mod support;

use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use admin::Admin;
use common::store::Store;
use support::*;

const TOKEN: &str = "console-token-for-tests-0123456789";

struct Console {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Console {
    async fn start(f: &Fixture) -> Console {
        let (base, stop) = serve_admin(f, TOKEN).await;
        Console {
            base,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            stop,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.expect("request")
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Response {
        let mut r = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.expect("request")
    }

    /// Logs in as a browser would; returns the session cookie (`name=value`).
    async fn login(&self) -> String {
        let form = self.get("/console/login", None).await;
        let login_cookie = cookie_pair(&form, "__Host-closeio-login").expect("login cookie");
        let html = form.text().await.expect("html");
        let login_csrf = hidden(&html, "login_csrf").expect("login_csrf field");
        let r = self
            .post(
                "/console/login",
                Some(&login_cookie),
                &[("token", TOKEN), ("login_csrf", &login_csrf)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        cookie_pair(&r, "__Host-closeio-console").expect("session cookie")
    }

    /// A signed-in page and the CSRF token of its forms.
    async fn page(&self, path: &str, session: &str) -> (String, String) {
        let r = self.get(path, Some(session)).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let html = r.text().await.expect("html");
        let csrf = hidden(&html, "csrf").unwrap_or_default();
        (html, csrf)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `name=value` of a `Set-Cookie` of the response.
fn cookie_pair(r: &Response, name: &str) -> Option<String> {
    set_cookie(r, name).map(|c| c.split(';').next().unwrap_or_default().to_string())
}

fn set_cookie(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// The value of the first hidden input `name` of a page.
fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

fn location(r: &Response) -> String {
    r.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn replayed(store: &Store, id: uuid::Uuid) -> bool {
    store
        .dead_letter_by_id(id)
        .await
        .expect("read")
        .expect("exists")
        .replayed_at
        .is_some()
}

#[tokio::test]
async fn login_sets_a_strict_session_cookie_and_logout_ends_it() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let c = Console::start(&f).await;

    // Signed out: every page leads to the login form.
    for path in ["/console/", "/console/dead-letters", "/console/retries"] {
        let r = c.get(path, None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&r), "/console/login");
    }
    let r = c
        .get("/console/", Some("__Host-closeio-console=forged"))
        .await;
    assert_eq!(location(&r), "/console/login", "an unknown session id");

    // The login form: its double-submit cookie is required.
    let form = c.get("/console/login", None).await;
    assert_eq!(form.status(), StatusCode::OK);
    let csp = form
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(
        form.headers().get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );
    let login_cookie = cookie_pair(&form, "__Host-closeio-login").expect("login cookie");
    let login_csrf = hidden(&form.text().await.expect("html"), "login_csrf").expect("field");
    let no_cookie = c
        .post(
            "/console/login",
            None,
            &[("token", TOKEN), ("login_csrf", &login_csrf)],
        )
        .await;
    assert_eq!(no_cookie.status(), StatusCode::FORBIDDEN);
    assert!(cookie_pair(&no_cookie, "__Host-closeio-console").is_none());

    // A wrong token: refused, no session.
    let wrong = c
        .post(
            "/console/login",
            Some(&login_cookie),
            &[
                ("token", "console-token-for-tests-0123456780"),
                ("login_csrf", &login_csrf),
            ],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_pair(&wrong, "__Host-closeio-console").is_none());
    assert!(wrong
        .text()
        .await
        .expect("html")
        .contains("not the admin token"));

    // The right one: a session cookie no script can read and no other site sends.
    let ok = c
        .post(
            "/console/login",
            Some(&login_cookie),
            &[("token", TOKEN), ("login_csrf", &login_csrf)],
        )
        .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&ok), "/console/");
    let raw = set_cookie(&ok, "__Host-closeio-console").expect("session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(raw.contains(attr), "{raw} lacks {attr}");
    }
    let session = cookie_pair(&ok, "__Host-closeio-console").expect("pair");
    let id = session.split_once('=').map(|(_, v)| v).unwrap_or_default();
    let stored: i64 = {
        let (client, conn) = tokio_postgres::connect(&f.db_url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT count(*) FROM console_sessions WHERE id_hash = sha256($1::text::bytea)",
                &[&id],
            )
            .await
            .expect("query")
            .get(0)
    };
    assert_eq!(stored, 1, "only the hash of the session id is stored");

    let (html, csrf) = c.page("/console/", &session).await;
    assert!(html.contains(CONNECTOR), "the overview lists the connector");
    assert!(!csrf.is_empty());

    // Logging out needs the CSRF token too, then the session is gone.
    let forged = c.post("/console/logout", Some(&session), &[]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let out = c
        .post("/console/logout", Some(&session), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = c.get("/console/", Some(&session)).await;
    assert_eq!(
        location(&after),
        "/console/login",
        "the old cookie no longer works"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn every_action_needs_the_sessions_csrf_token_and_this_origin() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    f.queue().declare_topology().await.expect("topology");
    let dead = seed_dead_letter(&store, "one.example.com").await;
    let c = Console::start(&f).await;
    let session = c.login().await;
    let (_, csrf) = c
        .page(&format!("/console/dead-letters/{dead}"), &session)
        .await;
    let path = format!("/console/dead-letters/{dead}/replay");

    let none = c.post(&path, Some(&session), &[]).await;
    assert_eq!(none.status(), StatusCode::FORBIDDEN);
    let stale = c
        .post(&path, Some(&session), &[("csrf", "not-the-token")])
        .await;
    assert_eq!(stale.status(), StatusCode::FORBIDDEN);
    let other_session = c.login().await;
    let (_, other_csrf) = c.page("/console/", &other_session).await;
    let crossed = c
        .post(&path, Some(&session), &[("csrf", &other_csrf)])
        .await;
    assert_eq!(
        crossed.status(),
        StatusCode::FORBIDDEN,
        "a token is bound to its session"
    );
    let cross_site = c
        .http
        .post(format!("{}{path}", c.base))
        .header(COOKIE, &session)
        .header(ORIGIN, "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert!(!replayed(&store, dead).await, "nothing was replayed");

    let ok = c.post(&path, Some(&session), &[("csrf", &csrf)]).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert!(location(&ok).contains("done=replayed"));
    assert!(replayed(&store, dead).await);
    let (html, _) = c.page(&location(&ok), &session).await;
    assert!(
        html.contains("1 dead letter(s) replayed"),
        "the page says what happened"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn dead_letters_are_filtered_grouped_shown_escaped_and_purged_after_confirmation() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    f.queue().declare_topology().await.expect("topology");
    let bad = seed_dead_letter(&store, "one.example.com").await;
    seed_dead_letter(&store, "two.example.com").await;
    let mut hostile = account_job("<script>alert(1)</script>.example.com");
    hostile.attempt = 7;
    let body = serde_json::json!({"name": "<img src=x onerror=alert(2)>", "url": "https://x"});
    let xss = store
        .dead_letter(
            &hostile,
            "gave up after 8 attempts: Close server error 503: <script>alert(3)</script>",
            "close_server_error",
            Some(&body),
        )
        .await
        .expect("dead letter");
    let c = Console::start(&f).await;
    let session = c.login().await;

    let (html, _) = c.page("/console/dead-letters", &session).await;
    assert!(html.contains("close_bad_request") && html.contains("close_server_error"));
    assert!(
        !html.contains("<script>alert"),
        "nothing from a job is markup"
    );
    let (html, _) = c
        .page(
            "/console/dead-letters?class=close_server_error&since=hour",
            &session,
        )
        .await;
    assert!(html.contains(&xss.to_string()));
    assert!(!html.contains(&bad.to_string()), "filtered by class");
    let r = c
        .get("/console/dead-letters?since=fortnight", Some(&session))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a bad filter is named, not ignored"
    );

    // One dead letter: the Hull entity and the body last sent, escaped.
    let (html, csrf) = c
        .page(&format!("/console/dead-letters/{xss}"), &session)
        .await;
    assert!(
        html.contains("&#60;img src=x onerror=alert(2)&#62;"),
        "the body is shown"
    );
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;.example.com"),
        "the Hull entity is shown"
    );
    assert!(!html.contains("<img src=x") && !html.contains("<script>alert"));
    assert!(html.contains("close_server_error"));

    // Purge all matching: a confirmation page first, then only the matching ones go.
    let purge = "/console/dead-letters/purge?class=close_bad_request";
    let confirm = c.post(purge, Some(&session), &[("csrf", &csrf)]).await;
    assert_eq!(confirm.status(), StatusCode::OK);
    let text = confirm.text().await.expect("html");
    assert!(text.contains("Delete 2 dead letter(s)?"), "{text}");
    assert_eq!(
        store
            .dead_letters(None, None, None, true, 10)
            .await
            .expect("list")
            .len(),
        3
    );
    let done = c
        .post(
            purge,
            Some(&session),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&done).contains("done=purged&n=2"),
        "{}",
        location(&done)
    );
    let left = store
        .dead_letters(None, None, None, true, 10)
        .await
        .expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, xss);
    f.cleanup().await;
}

#[tokio::test]
async fn retry_now_unpark_and_fetch_from_the_connector_pages() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let later = account_job("later.example.com");
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    store
        .schedule_retry(&later, "Close: Close server error 502", in_an_hour, false)
        .await
        .expect("retry");
    store
        .park_connector(CONNECTOR, "Close rejected the API key (401 Unauthorized)")
        .await
        .expect("park");
    let c = Console::start(&f).await;
    let session = c.login().await;

    let (html, csrf) = c.page("/console/retries", &session).await;
    assert!(
        html.contains("later.example.com") || html.contains("acc-later"),
        "{html}"
    );
    let r = c
        .post(
            &format!("/console/retries/{}/retry", later.id),
            Some(&session),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let due = store.retries(None, 10).await.expect("retries");
    assert!(
        due[0].next_attempt_at <= chrono::Utc::now(),
        "due now: {:?}",
        due[0]
    );
    let unknown = c
        .post(
            &format!("/console/retries/{}/retry", uuid::Uuid::new_v4()),
            Some(&session),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    let page = format!("/console/connectors/{CONNECTOR}");
    let (html, csrf) = c.page(&page, &session).await;
    assert!(html.contains("Parked:") && html.contains("401 Unauthorized"));
    assert!(!html.contains(API_KEY), "no secret on the page");
    let r = c
        .post(
            &format!("{page}/unpark"),
            Some(&session),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let parked = store.connector_summaries().await.expect("summaries")[0]
        .parked_reason
        .clone();
    assert_eq!(parked, None);
    let again = c
        .post(
            &format!("{page}/unpark"),
            Some(&session),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        again.status(),
        StatusCode::BAD_REQUEST,
        "not parked any more"
    );

    let r = c
        .post(
            &format!("{page}/fetch"),
            Some(&session),
            &[("csrf", &csrf), ("full", "1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let p = store
        .incoming_progress(CONNECTOR)
        .await
        .expect("progress")
        .expect("state");
    assert!(p.fetch_requested_at.is_some());
    let missing = c.get("/console/connectors/nope", Some(&session)).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    f.cleanup().await;
}

#[tokio::test]
async fn the_json_api_offers_every_console_action() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    f.queue().declare_topology().await.expect("topology");
    let dead = seed_dead_letter(&store, "one.example.com").await;
    let c = Console::start(&f).await;
    let api = |m: reqwest::Method, p: &str| {
        c.http
            .request(m, format!("{}{p}", c.base))
            .bearer_auth(TOKEN)
            .send()
    };
    let overview: Value = api(reqwest::Method::GET, "/overview")
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(overview["connectors"][0]["id"], CONNECTOR);
    assert_eq!(overview["queues"].as_array().map(Vec::len), Some(3));
    assert_eq!(overview["dead_letter_retention_days"], 30);
    let classes: Value = api(reqwest::Method::GET, "/dlq/classes")
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(classes["classes"][0]["error_class"], "close_bad_request");
    assert_eq!(classes["classes"][0]["last_hour"], 1);
    let detail: Value = api(reqwest::Method::GET, &format!("/dlq/{dead}"))
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(detail["hull_entity"]["domain"], "one.example.com");
    assert_eq!(detail["close_object"]["state"], "not_synced");
    let del = api(reqwest::Method::DELETE, &format!("/dlq/{dead}"))
        .await
        .expect("r");
    assert_eq!(del.status(), StatusCode::OK);
    let again = api(reqwest::Method::DELETE, &format!("/dlq/{dead}"))
        .await
        .expect("r");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    f.cleanup().await;
}

#[tokio::test]
async fn dead_letters_older_than_the_retention_are_deleted() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let old = seed_dead_letter(&store, "old.example.com").await;
    let fresh = seed_dead_letter(&store, "fresh.example.com").await;
    {
        let (client, conn) = tokio_postgres::connect(&f.db_url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .execute(
                "UPDATE dead_letters SET created_at = now() - interval '31 days' WHERE id = $1",
                &[&old],
            )
            .await
            .expect("age");
    }
    let admin = Admin::new(store.clone(), f.queue());
    assert_eq!(
        admin.apply_retention(0).await.expect("retention"),
        0,
        "0 keeps everything"
    );
    assert_eq!(admin.apply_retention(30).await.expect("retention"), 1);
    let left: Vec<_> = store
        .dead_letters(None, None, None, true, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, vec![fresh]);
    f.cleanup().await;
}

#[tokio::test]
async fn bulk_actions_act_on_what_the_confirmation_counted() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    f.queue().declare_topology().await.expect("topology");
    let replayed_before = seed_dead_letter(&store, "old.example.com").await;
    store.mark_replayed(replayed_before).await.expect("mark");
    let waiting = seed_dead_letter(&store, "waiting.example.com").await;
    let c = Console::start(&f).await;
    let session = c.login().await;
    let (_, csrf) = c.page("/console/dead-letters?all=1", &session).await;

    // Replay all matching, "replayed too" checked: only the one not replayed yet.
    let confirm = c
        .post(
            "/console/dead-letters/replay?all=1",
            Some(&session),
            &[("csrf", &csrf)],
        )
        .await;
    let html = confirm.text().await.expect("html");
    assert!(html.contains("Replay 1 dead letter(s)?"), "{html}");
    let action = hidden_action(&html);
    assert!(action.contains("until="), "the action is pinned: {action}");
    let done = c
        .post(
            &action,
            Some(&session),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert!(
        location(&done).contains("done=replayed&n=1"),
        "{}",
        location(&done)
    );
    assert!(replayed(&store, waiting).await);

    // Purge: a dead letter that dies after the confirmation page is not deleted with them.
    let confirm = c
        .post(
            "/console/dead-letters/purge?all=1",
            Some(&session),
            &[("csrf", &csrf)],
        )
        .await;
    let html = confirm.text().await.expect("html");
    assert!(html.contains("Delete 2 dead letter(s)?"), "{html}");
    let action = hidden_action(&html);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let newer = seed_dead_letter(&store, "newer.example.com").await;
    let done = c
        .post(
            &action,
            Some(&session),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert!(
        location(&done).contains("done=purged&n=2"),
        "{}",
        location(&done)
    );
    let left: Vec<_> = store
        .dead_letters(None, None, None, true, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, vec![newer]);

    // The JSON API does not purge everything without being told so.
    let api = |p: &str| {
        c.http
            .post(format!("{}{p}", c.base))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(
        api("/dlq/purge").await.expect("r").status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        store
            .dead_letters(None, None, None, true, 10)
            .await
            .expect("list")
            .len(),
        1
    );
    let r: Value = api("/dlq/purge?everything=true")
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(r["deleted"], 1);
    f.cleanup().await;
}

/// The action of the confirmation form (the page's only form with `confirm`).
fn hidden_action(html: &str) -> String {
    let at = html.find("name=\"confirm\"").expect("confirm form");
    let start = html[..at].rfind("action=\"").expect("action") + 8;
    let end = start + html[start..].find('"').expect("end");
    html[start..end].replace("&#38;", "&").replace("&amp;", "&")
}

#[tokio::test]
async fn a_new_admin_token_ends_the_sessions_of_the_old_one() {
    let f = Fixture::new().await;
    seed_connector(&f.store(KEY_A, None)).await;
    let old = Console::start(&f).await;
    let session = old.login().await;
    assert_eq!(
        old.get("/console/", Some(&session)).await.status(),
        StatusCode::OK
    );
    // The same database served with another token (as after rotating ADMIN_TOKEN).
    let (base, stop) = serve_admin(&f, "a-rotated-console-token-0123456789").await;
    let rotated = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{base}/console/"))
        .header(COOKIE, &session)
        .send()
        .await
        .expect("request");
    assert_eq!(rotated.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&rotated), "/console/login");
    stop.cancel();
    f.cleanup().await;
}

#[tokio::test]
async fn bad_ids_and_filters_get_a_page_that_names_them() {
    let f = Fixture::new().await;
    let store = f.store(KEY_A, None);
    seed_connector(&store).await;
    let percent = {
        let mut env = account_job("percent.example.com");
        env.attempt = 0;
        store
            .dead_letter(&env, "Close: 100% refused", "close_bad_request", None)
            .await
            .expect("dead letter")
    };
    seed_dead_letter(&store, "plain.example.com").await;
    let c = Console::start(&f).await;
    let session = c.login().await;
    for path in [
        "/console/dead-letters/not-an-id",
        "/console/dead-letters?until=yesterday",
    ] {
        let r = c.get(path, Some(&session)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let html = r.text().await.expect("html");
        assert!(html.contains("<h1>400 Bad Request</h1>"), "{path}: {html}");
    }
    // `%` in the error filter is the character, not a wildcard.
    let (html, _) = c.page("/console/dead-letters?error=100%25", &session).await;
    assert!(html.contains(&percent.to_string()));
    assert!(html.contains("1 matching"), "{html}");
    let (html, _) = c.page("/console/dead-letters?error=%25", &session).await;
    assert!(
        html.contains("1 matching"),
        "only the one with a % in its error"
    );
    f.cleanup().await;
}
