//! `POST /batch` (user extracts) and `POST /batch-accounts` (account extracts): Hull posts
//! the URL of an NDJSON extract; ingest downloads it and publishes one job per line.
//!
//! The URL is hostile until proven otherwise: only `http(s)` on `HULL_EXTRACT_HOSTS` or the
//! connector's own organization, redirects only to such hosts (three at most), a connect and
//! a total timeout. The download is streamed and parsed line by line (`EXTRACT_MAX_LINE_BYTES`
//! per line, `EXTRACT_MAX_BYTES` in all) and jobs are published in chunks of `PUBLISH_BATCH`,
//! so memory stays flat whatever the extract's size. A bad line becomes a dead letter with its
//! line number; the good lines are still processed.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Map, Value};

use common::allowlist::HostAllowList;
use common::jobs::{Envelope, Job, OutgoingMessage};

use crate::auth::authenticate;
use crate::backpressure;
use crate::App;

/// Largest `/batch` request body (the extract's description, not the extract).
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Refused lines listed in the answer.
const LISTED_REFUSALS: usize = 20;
/// Parsed lines held before they are published, in bytes of their text.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// Longest copy of a refused line kept in its dead letter.
const KEPT_LINE_BYTES: usize = 64 * 1024;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// `POST /batch`.
pub async fn batch(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    handle(app, q, body, "user_report").await
}

/// `POST /batch-accounts`.
pub async fn batch_accounts(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    handle(app, q, body, "account_report").await
}

/// What the caller asked for.
struct Request {
    url: url::Url,
    object_type: String,
    notification_id: String,
}

fn parse_request(body: &[u8], default_type: &str) -> Result<Request, String> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let url = body
        .get("url")
        .and_then(Value::as_str)
        .ok_or("url is missing")?;
    let url = url::Url::parse(url).map_err(|e| format!("url is not a URL: {e}"))?;
    let format = body.get("format").and_then(Value::as_str).unwrap_or("json");
    if format != "json" {
        return Err(format!("format {format:?} is not supported (json only)"));
    }
    let object_type = body
        .get("object_type")
        .and_then(Value::as_str)
        .unwrap_or(default_type)
        .to_string();
    if !matches!(
        object_type.as_str(),
        "user_report" | "user" | "account_report" | "account"
    ) {
        return Err(format!(
            "object_type must be user_report or account_report, got {object_type:?}"
        ));
    }
    let notification_id = body
        .get("notification_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("batch:{}", uuid::Uuid::new_v4()));
    Ok(Request {
        url,
        object_type,
        notification_id,
    })
}

/// The hosts an extract may come from: `HULL_EXTRACT_HOSTS`, plus the organization.
fn extract_hosts(app: &App, organization: &str) -> HostAllowList {
    let mut items: Vec<String> = app
        .cfg
        .hull_extract_hosts
        .describe()
        .split(',')
        .map(str::to_string)
        .collect();
    items.retain(|s| !s.is_empty());
    items.push(organization.to_string());
    HostAllowList::parse("HULL_EXTRACT_HOSTS", &items).unwrap_or_default()
}

fn download_client(app: &App, hosts: HostAllowList) -> reqwest::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > 3 {
            attempt.error("too many redirects")
        } else if hosts.allows_url(attempt.url()) {
            attempt.follow()
        } else {
            attempt.error("redirect to a host that is not allowed")
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(app.cfg.extract_connect_timeout)
        .timeout(app.cfg.extract_timeout)
        .build()
}

/// Counts of one extract.
#[derive(Default)]
struct Progress {
    lines: usize,
    published: usize,
    refused: usize,
    listed: Vec<Value>,
    jobs: Vec<Envelope>,
    /// Bytes of the lines behind `jobs`: a flush also happens past [`MAX_PENDING_BYTES`].
    pending_bytes: usize,
    bad: Vec<(Envelope, String)>,
}

impl Progress {
    fn refuse(
        &mut self,
        connector: &str,
        line_no: usize,
        line: &[u8],
        reason: String,
        object_type: &str,
        nid: &str,
    ) {
        let reason = format!("line {line_no}: {reason}");
        let kept = String::from_utf8_lossy(&line[..line.len().min(KEPT_LINE_BYTES)]).into_owned();
        let message = OutgoingMessage {
            notification_id: nid.to_string(),
            is_export: true,
            message: json!({"extract_line": line_no, "raw": kept}),
        };
        let job = if object_type.starts_with("account") {
            Job::OutgoingAccount(message)
        } else {
            Job::OutgoingUser(message)
        };
        let env = Envelope::new(connector.to_string(), job);
        crate::notify::log_refused(&env, &reason);
        self.refused += 1;
        if self.listed.len() < LISTED_REFUSALS {
            self.listed.push(json!({"line": line_no, "error": reason}));
        }
        self.bad.push((env, reason));
    }
}

async fn handle(app: App, q: HashMap<String, String>, body: Body, default_type: &str) -> Response {
    // Credentials first: an outsider cannot occupy an extract slot.
    let connector = match authenticate(&app, &q).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(_slot) = app.slots.batch().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest is busy with other extracts; retry later",
        );
    };
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body exceeds {MAX_REQUEST_BYTES} bytes"),
            )
        }
    };
    let req = match parse_request(&body, default_type) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let hosts = extract_hosts(&app, &connector.organization);
    if !hosts.allows_url(&req.url) {
        metrics::counter!("ingest_rejections_total", "reason" => "extract_host").increment(1);
        return error(StatusCode::BAD_REQUEST, "url must be http(s) on an allowed extract host (HULL_EXTRACT_HOSTS or the organization)");
    }
    let client = match download_client(&app, hosts) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("HTTP client: {e}"),
            )
        }
    };
    let response = match client.get(req.url.clone()).send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the extract download answered HTTP {}", r.status().as_u16()),
            )
        }
        Err(e) if e.is_redirect() => {
            return error(
                StatusCode::BAD_GATEWAY,
                "the extract download redirected to a host that is not allowed",
            )
        }
        Err(e) if e.is_timeout() => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                "the extract download timed out",
            )
        }
        Err(_) => return error(StatusCode::BAD_GATEWAY, "could not download the extract"),
    };
    let max = app.cfg.extract_max_bytes;
    if response.content_length().is_some_and(|n| n > max) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the extract exceeds EXTRACT_MAX_BYTES ({max} bytes); nothing was enqueued"),
        );
    }
    tracing::info!(connector = %connector.id, object_type = %req.object_type, "outgoing.job.start");
    let mut p = Progress::default();
    let mut stream = response.bytes_stream();
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    let mut total: u64 = 0;
    let max_line = app.cfg.extract_max_line_bytes;
    let mut stop: Option<StatusCode> = None;
    'download: while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(connector = %connector.id, error = %e.without_url(), "the extract download broke off");
                stop = Some(StatusCode::BAD_GATEWAY);
                break;
            }
        };
        total += chunk.len() as u64;
        if total > max {
            stop = Some(StatusCode::PAYLOAD_TOO_LARGE);
            break;
        }
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let (part, complete) = match memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = if complete {
                &rest[part.len() + 1..]
            } else {
                &[]
            };
            if !overlong {
                if line.len() + part.len() > max_line {
                    overlong = true;
                    line.clear();
                } else {
                    line.extend_from_slice(part);
                }
            }
            if complete {
                p.lines += 1;
                finish_line(&app, &connector.id, &req, &mut p, &line, overlong);
                line.clear();
                overlong = false;
                if let Err(status) = flush(&app, &mut p, false).await {
                    stop = Some(status);
                    break 'download;
                }
            }
        }
    }
    if stop.is_none() && (!line.is_empty() || overlong) {
        p.lines += 1;
        finish_line(&app, &connector.id, &req, &mut p, &line, overlong);
    }
    if let Err(status) = flush(&app, &mut p, true).await {
        stop.get_or_insert(status);
    }
    tracing::info!(connector = %connector.id, object_type = %req.object_type, jobs = p.published, refused = p.refused, lines = p.lines, "outgoing.job.success");
    metrics::counter!("ingest_jobs_published_total", "channel" => "batch")
        .increment(p.published as u64);
    if let Some(status) = stop {
        let body = json!({"error": stop_message(status), "jobs": p.published, "refused": p.listed, "refused_count": p.refused});
        return (status, Json(body)).into_response();
    }
    (StatusCode::OK, Json(json!({"ok": true, "jobs": p.published, "refused": p.listed, "refused_count": p.refused}))).into_response()
}

fn stop_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the extract exceeds EXTRACT_MAX_BYTES; the lines before the limit were enqueued"
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            "the outgoing queue is full (FLOW_CONTROL_HARD_LIMIT) or the queue or database is unavailable; the lines before it were enqueued (retry the batch)"
        }
        _ => "the extract download broke off; the lines before it were enqueued (retry the batch)",
    }
}

fn finish_line(
    app: &App,
    connector: &str,
    req: &Request,
    p: &mut Progress,
    line: &[u8],
    overlong: bool,
) {
    let line_no = p.lines;
    if overlong {
        let reason = format!(
            "longer than EXTRACT_MAX_LINE_BYTES ({} bytes)",
            app.cfg.extract_max_line_bytes
        );
        p.refuse(
            connector,
            line_no,
            line,
            reason,
            &req.object_type,
            &req.notification_id,
        );
        return;
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let parsed = serde_json::from_slice::<Map<String, Value>>(line)
        .map_err(|e| e.to_string())
        .and_then(|m| job_from_extract(&req.object_type, m, &req.notification_id));
    match parsed {
        Ok(job) => {
            p.pending_bytes += line.len();
            p.jobs.push(Envelope::new(connector.to_string(), job))
        }
        Err(e) => p.refuse(
            connector,
            line_no,
            line,
            e,
            &req.object_type,
            &req.notification_id,
        ),
    }
}

/// Publishes the pending jobs (once `PUBLISH_BATCH` are waiting, or all at the end) and
/// records the pending dead letters.
async fn flush(app: &App, p: &mut Progress, all: bool) -> Result<(), StatusCode> {
    let due = p.jobs.len() >= app.cfg.publish_batch || p.pending_bytes >= MAX_PENDING_BYTES;
    if due || (all && !p.jobs.is_empty()) {
        // Extracts obey the same hard limit as notifications.
        if let backpressure::Pressure::Refuse(_) =
            backpressure::decide(&app.limits, app.gauge.depth().await, false)
        {
            tracing::warn!(
                pending = p.jobs.len(),
                "outgoing queue above FLOW_CONTROL_HARD_LIMIT: extract stopped"
            );
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        if let Err(e) = app.queue.publish_all(&p.jobs).await {
            tracing::warn!(error = %e, "could not enqueue extract jobs");
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        p.published += p.jobs.len();
        p.jobs.clear();
        p.pending_bytes = 0;
    }
    if p.bad.len() >= 100 || (all && !p.bad.is_empty()) {
        if let Err(e) = app.store.dead_letter_many(&p.bad).await {
            tracing::warn!(error = %e, "could not record refused extract lines");
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        p.bad.clear();
    }
    Ok(())
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// Builds the job for one line of a Hull extract. Extracts are exports: the segment filters
/// do not apply.
pub fn job_from_extract(
    object_type: &str,
    line: Map<String, Value>,
    notification_id: &str,
) -> Result<Job, String> {
    let ids = |v: Option<&Value>| -> Value {
        Value::Array(
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|id| json!({ "id": id }))
                        .collect()
                })
                .unwrap_or_default(),
        )
    };
    let wrap = |message: Value| OutgoingMessage {
        notification_id: notification_id.to_string(),
        is_export: true,
        message,
    };
    match object_type {
        "user_report" | "user" => {
            let mut user = line;
            let account = user
                .remove("account")
                .filter(|a| a.is_object())
                .unwrap_or(Value::Object(Map::new()));
            let account_segments = ids(user
                .get("account_segment_ids")
                .or_else(|| account.get("segment_ids")));
            let segments = ids(user.get("segment_ids"));
            if user
                .get("id")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err("a user has no id".into());
            }
            Ok(Job::OutgoingUser(wrap(json!({
                "user": user, "account": account, "segments": segments, "account_segments": account_segments
            }))))
        }
        "account_report" | "account" => {
            let account_segments = ids(line.get("segment_ids"));
            if common::mapping::account_key(&line).is_none() {
                return Err("an account has no id, external_id or domain".into());
            }
            Ok(Job::OutgoingAccount(wrap(
                json!({"account": line, "account_segments": account_segments}),
            )))
        }
        other => Err(format!(
            "object_type must be user_report or account_report, got {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated() {
        let ok = parse_request(
            br#"{"url":"https://x.s3.amazonaws.com/e.json","object_type":"account_report"}"#,
            "user_report",
        )
        .expect("ok");
        assert_eq!(ok.object_type, "account_report");
        assert_eq!(
            parse_request(br#"{"url":"https://x/e.json"}"#, "account_report")
                .expect("ok")
                .object_type,
            "account_report"
        );
        for (raw, expected) in [
            (&br#"{}"#[..], "url is missing"),
            (br#"{"url":"not a url"}"#, "url is not a URL"),
            (br#"{"url":"https://x/e","format":"csv"}"#, "not supported"),
            (
                br#"{"url":"https://x/e","object_type":"event"}"#,
                "object_type must be",
            ),
        ] {
            assert!(
                parse_request(raw, "user_report")
                    .err()
                    .unwrap_or_default()
                    .contains(expected),
                "{expected}"
            );
        }
    }

    #[test]
    fn extract_lines() {
        let line = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(job_from_extract(
            "user_report",
            line(json!({"id": "u1", "email": "a@b.c"})),
            "n"
        )
        .is_ok());
        assert!(job_from_extract("user_report", line(json!({"email": "a@b.c"})), "n").is_err());
        assert!(
            job_from_extract("account_report", line(json!({"domain": "acme.com"})), "n").is_ok()
        );
        assert!(job_from_extract("account_report", line(json!({"name": "Acme"})), "n").is_err());
    }
}
