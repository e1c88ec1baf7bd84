//! Console sessions and forgery protection.
//!
//! - Logging in checks the admin token (constant time) and records a session in Postgres: a
//!   random 256-bit id, of which only the SHA-256 is stored, and the session's CSRF token. Every
//!   replica of the listener shares the sessions; logging out deletes the row.
//! - The id travels in a `__Host-` cookie: `Secure`, `HttpOnly`, `SameSite=Strict`, `Path=/`,
//!   no `Domain`, so no script reads it and no other site sends it.
//! - Every `POST` of a signed-in page carries the session's CSRF token in its form; the
//!   session layer checks it (and the `Origin` header, when the browser sends one) before any
//!   handler runs, so no action can be added without the check.
//! - The login form has its own double-submit token (a cookie and a form field), so another
//!   site cannot sign a browser into the console.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::ConsoleState;

/// The session cookie.
pub const SESSION_COOKIE: &str = "__Host-closeio-console";
/// The login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "__Host-closeio-login";
/// Largest form body a console action reads.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The signed-in session of a request (put in its extensions by [`require_session`]).
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every form of the session must carry.
    pub csrf: String,
    id_hash: Vec<u8>,
}

impl Session {
    /// Ends the session.
    pub async fn end(&self, state: &ConsoleState) -> Result<(), store::StoreError> {
        state
            .admin
            .store()
            .delete_console_session(&self.id_hash)
            .await
    }
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// The value of cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the console's attributes.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let v = format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Starts a session after a successful login; returns its cookie.
pub async fn start(state: &ConsoleState) -> Result<HeaderValue, store::StoreError> {
    let id = random_token();
    let ttl = chrono::Duration::hours(i64::from(state.options.session_hours));
    state
        .admin
        .store()
        .create_console_session(
            &hash(&id),
            &random_token(),
            &token_fingerprint(state),
            Utc::now() + ttl,
        )
        .await?;
    Ok(set_cookie(SESSION_COOKIE, &id, ttl.num_seconds()))
}

/// Whether `given` is the admin token: their SHA-256 digests compared in constant time, so
/// neither the token's content nor its length shows in the timing.
pub fn token_matches(state: &ConsoleState, given: &str) -> bool {
    domain::crypto::constant_time_eq(&hash(given.trim()), &hash(&state.token))
}

/// What a session records of the admin token it was opened with: a new `ADMIN_TOKEN` ends
/// every session opened with the old one.
fn token_fingerprint(state: &ConsoleState) -> String {
    hex::encode(hash(&format!("console-session:{}", state.token)))
}

/// The layer of every signed-in page: no session, to the login form; a `POST` without the
/// session's CSRF token (or from another origin), refused.
pub async fn require_session(
    State(state): State<ConsoleState>,
    mut req: Request,
    next: Next,
) -> Response {
    let session = match cookie(req.headers(), SESSION_COOKIE) {
        Some(id) => {
            let id_hash = hash(id);
            match state
                .admin
                .store()
                .console_session(&id_hash, &token_fingerprint(&state))
                .await
            {
                Ok(Some(s)) => Some(Session {
                    csrf: s.csrf,
                    id_hash,
                }),
                Ok(None) => None,
                Err(e) => {
                    // The detail goes to the log, not to a caller who may not be signed in.
                    tracing::warn!(error = %e, "ops console: cannot read the session");
                    return super::pages::unavailable("try again in a moment");
                }
            }
        }
        None => None,
    };
    let Some(session) = session else {
        metrics::counter!("admin_console_requests_total", "outcome" => "signed_out").increment(1);
        return Redirect::to("/console/login").into_response();
    };
    if req.method() == Method::POST {
        let authority = req.uri().authority().map(|a| a.as_str().to_owned());
        if !same_origin(req.headers(), authority.as_deref()) {
            return forbidden("the request came from another site");
        }
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => return forbidden("the form is too large"),
        };
        let given = form_field(&bytes, "csrf").unwrap_or_default();
        if !domain::crypto::constant_time_eq(given.as_bytes(), session.csrf.as_bytes()) {
            metrics::counter!("admin_console_requests_total", "outcome" => "csrf_refused")
                .increment(1);
            return forbidden(
                "the form's anti-forgery token is missing or stale: reload the page and try again",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// A field of an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `false` when the browser says the request comes from another site. Browsers that send
/// `Sec-Fetch-Site` are trusted on it (it holds behind a proxy that rewrites `Host`); for
/// others an `Origin` header must name this host (`Host`, or the request's authority over
/// HTTP/2). Without either, the CSRF token alone decides.
fn same_origin(headers: &HeaderMap, authority: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority)
    else {
        return false;
    };
    origin
        .split_once("://")
        .map(|(_, rest)| rest == host)
        .unwrap_or(false)
}

fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        super::pages::error_page(StatusCode::FORBIDDEN, why),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cookies_and_form_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-closeio-console=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
        assert_eq!(
            form_field(b"x=1&csrf=a%2Bb&y=2", "csrf").as_deref(),
            Some("a+b")
        );
        assert_eq!(form_field(b"x=1", "csrf"), None);
    }

    #[test]
    fn origin_must_be_this_host_when_given() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9110"));
        assert!(
            same_origin(&h, None),
            "no Origin header: allowed (CSRF token decides)"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9110"),
        );
        assert!(same_origin(&h, None));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, None));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h, None));
        // HTTP/2: no Host header, the request's authority instead.
        let mut h2 = HeaderMap::new();
        h2.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://ops.example"),
        );
        assert!(same_origin(&h2, Some("ops.example")));
        assert!(!same_origin(&h2, None));
    }

    #[test]
    fn sec_fetch_site_decides_when_the_browser_sends_it() {
        let mut h = HeaderMap::new();
        // Behind a proxy that rewrites Host: Origin and Host differ, the browser says
        // same-origin.
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9110"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://ops.example"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h, None));
        for other in ["cross-site", "same-site"] {
            h.insert("sec-fetch-site", HeaderValue::from_static(other));
            assert!(!same_origin(&h, None), "{other}");
        }
    }

    #[test]
    fn cookies_are_secure_http_only_and_strict() {
        let c = set_cookie(SESSION_COOKIE, "v", 60);
        let c = c.to_str().unwrap();
        for attr in [
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(c.contains(attr), "{c} lacks {attr}");
        }
        assert!(!c.contains("Domain"));
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 43);
    }
}
