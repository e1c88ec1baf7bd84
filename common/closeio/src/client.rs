//! The Close HTTP client core: configuration, authentication, pacing by the shared request
//! budget (see [`crate::budget`]), the single request attempt, read retries, metrics and
//! tracing. Endpoint methods live in `api.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use url::Url;

use super::budget::{Budget, LanePlaces, Learner, LocalBudget, Slot};
use super::error::CloseError;
use super::model::{ApiKey, ListPage};
use super::rate_limit::{parse_rate_limit_header, proactive_wait, rate_limit_wait};

/// Default Close API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.close.com/api/v1";

/// Requests per second of a group before Close's `RateLimit` header has been seen.
pub const DEFAULT_INITIAL_RPS: f64 = 5.0;

/// Page size used when listing (`_limit`).
pub(crate) const PAGE_SIZE: usize = 100;

/// Most pages read by one listing, so a misbehaving server cannot keep the client paging forever.
pub(crate) const MAX_PAGES: usize = 1_000;

/// Settings of a [`CloseClient`].
#[derive(Debug, Clone)]
pub struct CloseClientConfig {
    /// API base, e.g. `https://api.close.com/api/v1` (a simulator URL in tests).
    pub base_url: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Optional ceiling on the request rate of each endpoint group of a key (requests per
    /// second); also the rate before Close's headers have taught the group's limit. `None`:
    /// [`DEFAULT_INITIAL_RPS`] at first, then whatever Close allows.
    pub rate_limit_rps: Option<f64>,
    /// Burst allowed above the steady rate per key and group. 1 (the default) spaces requests
    /// evenly, which keeps a key inside Close's windowed limits without 429s.
    pub burst: u32,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Total attempts for reads (GET, `POST /data/search/`) on transient failures, and for
    /// writes answered 429 (not applied), >= 1.
    pub max_read_attempts: usize,
    /// First delay of the exponential read-retry backoff (jittered, doubled each time).
    pub retry_base_delay: Duration,
}

impl Default for CloseClientConfig {
    fn default() -> Self {
        CloseClientConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            rate_limit_rps: None,
            burst: 1,
            user_agent: concat!("closeio-sync/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_read_attempts: 3,
            retry_base_delay: Duration::from_millis(250),
        }
    }
}

/// Endpoint group of a request (method + path template), the label of the Close metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointGroup {
    /// `GET /lead/…`
    LeadRead,
    /// `POST|PUT|DELETE /lead/…`
    LeadWrite,
    /// `GET /contact/…`
    ContactRead,
    /// `POST|PUT|DELETE /contact/…`
    ContactWrite,
    /// `POST /data/search/`
    Search,
    /// `GET /event/`
    Event,
    /// Statuses and custom fields.
    Meta,
    /// `/webhook/…`
    Webhook,
    /// `GET /me/`
    Me,
}

impl EndpointGroup {
    /// Every group.
    pub const ALL: [EndpointGroup; 9] = [
        EndpointGroup::LeadRead,
        EndpointGroup::LeadWrite,
        EndpointGroup::ContactRead,
        EndpointGroup::ContactWrite,
        EndpointGroup::Search,
        EndpointGroup::Event,
        EndpointGroup::Meta,
        EndpointGroup::Webhook,
        EndpointGroup::Me,
    ];

    /// Metric label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointGroup::LeadRead => "lead-read",
            EndpointGroup::LeadWrite => "lead-write",
            EndpointGroup::ContactRead => "contact-read",
            EndpointGroup::ContactWrite => "contact-write",
            EndpointGroup::Search => "search",
            EndpointGroup::Event => "event",
            EndpointGroup::Meta => "meta",
            EndpointGroup::Webhook => "webhook",
            EndpointGroup::Me => "me",
        }
    }
}

/// A request body, borrowed from the caller: a write's body is serialised straight from the
/// map the mapping built, never cloned into a `Value` first.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body<'a> {
    Json(&'a Value),
    Object(&'a Map<String, Value>),
}

impl serde::Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Body::Json(v) => v.serialize(s),
            Body::Object(m) => m.serialize(s),
        }
    }
}

/// One logical API call.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub group: EndpointGroup,
    pub segments: Vec<&'a str>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Body<'a>>,
    /// Whether the client may re-send it on transient failures (reads only).
    pub read: bool,
    /// Whether the caller has waited for its slot already ([`CloseClient::await_slot`]): the
    /// first attempt is sent at once (a re-send after a 429 waits for a slot as usual).
    pub in_slot: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn get(group: EndpointGroup, segments: Vec<&'a str>) -> Self {
        Call {
            method: Method::GET,
            group,
            segments,
            query: Vec::new(),
            body: None,
            read: true,
            in_slot: false,
        }
    }

    pub(crate) fn write(
        method: Method,
        group: EndpointGroup,
        segments: Vec<&'a str>,
        body: Option<Body<'a>>,
    ) -> Self {
        Call {
            method,
            group,
            segments,
            query: Vec::new(),
            body,
            read: false,
            in_slot: false,
        }
    }

    pub(crate) fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }
}

struct Inner {
    http: reqwest::Client,
    /// Per (key fingerprint, group): until when this process knows the group to be booked
    /// (see [`CloseClient::pace`]).
    booked_until: parking_lot::Mutex<std::collections::HashMap<(String, &'static str), Instant>>,
    base: Url,
    budget: Arc<dyn Budget>,
    learner: Learner,
    /// Spacing of a group not learned yet.
    initial_spacing: Duration,
    ceiling_rps: Option<f64>,
    burst: u32,
    max_write_attempts_on_429: usize,
    backoff: ExponentialBuilder,
}

/// Client of the Close REST API. Cheap to clone; clones share the HTTP pool and the request
/// budget (pacing per key and endpoint group, and 429 pauses; shared with other processes when
/// the budget is).
///
/// Writes (POST/PUT/DELETE) are sent once, except after a 429 (which Close did not apply):
/// then they are sent again after the reset, like reads. Any other failed write is never
/// re-sent by the client; check [`CloseError::is_ambiguous_write`] and look the object up
/// before retrying.
/// Reads are retried on 429 (after the reset) and transient failures, a bounded number of times.
#[derive(Clone)]
pub struct CloseClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CloseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloseClient")
            .field("base_url", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

impl CloseClient {
    /// Builds a client paced by a budget of this process only; fails on an unusable base URL
    /// or rate settings.
    pub fn new(config: CloseClientConfig) -> Result<Self, CloseError> {
        Self::with_budget(config, Arc::new(LocalBudget::new()))
    }

    /// Builds a client paced by `budget` (shared by every process that uses the same one).
    pub fn with_budget(
        config: CloseClientConfig,
        budget: Arc<dyn Budget>,
    ) -> Result<Self, CloseError> {
        let base = Url::parse(&config.base_url)
            .map_err(|e| CloseError::InvalidConfig(format!("base_url: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(CloseError::InvalidConfig(format!(
                "base_url {} cannot be a base URL",
                config.base_url
            )));
        }
        let initial_rps = match config.rate_limit_rps {
            Some(rps) if !rps.is_finite() || rps <= 0.0 => {
                return Err(CloseError::InvalidConfig(format!(
                    "rate_limit_rps must be a positive number, got {rps}"
                )))
            }
            Some(rps) => rps,
            None => DEFAULT_INITIAL_RPS,
        };
        if config.burst == 0 {
            return Err(CloseError::InvalidConfig("burst must be at least 1".into()));
        }
        let initial_spacing = Duration::try_from_secs_f64(1.0 / initial_rps)
            .map_err(|e| CloseError::InvalidConfig(format!("rate_limit_rps: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| CloseError::InvalidConfig(format!("HTTP client: {e}")))?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.retry_base_delay)
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(config.max_read_attempts.saturating_sub(1))
            .with_jitter();
        Ok(CloseClient {
            inner: Arc::new(Inner {
                http,
                booked_until: Default::default(),
                base,
                budget,
                learner: Learner::default(),
                initial_spacing,
                ceiling_rps: config.rate_limit_rps,
                burst: config.burst,
                max_write_attempts_on_429: config.max_read_attempts.max(1),
                backoff,
            }),
        })
    }

    /// Performs `call`, retrying reads on transient failures; returns the JSON body (an empty
    /// object for an empty 2xx body).
    pub(crate) async fn execute(&self, key: &ApiKey, call: &Call<'_>) -> Result<Value, CloseError> {
        if !call.read {
            // A write answered 429 was not applied: it is sent again once the group's pause
            // (set by that 429, shared with every worker) has passed. Any other failure of a
            // write is returned as it is (it may have been applied).
            let mut attempts = 1;
            let mut in_slot = call.in_slot;
            loop {
                let sent = self.attempt_in(key, call, in_slot).await;
                in_slot = false;
                match sent {
                    Err(CloseError::RateLimited { .. })
                        if attempts < self.inner.max_write_attempts_on_429 =>
                    {
                        attempts += 1;
                        metrics::counter!("closeio_write_resent_after_429_total", "group" => call.group.as_str())
                            .increment(1);
                    }
                    other => return other,
                }
            }
        }
        (|| self.attempt(key, call))
            .retry(self.inner.backoff)
            .sleep(tokio::time::sleep)
            .when(CloseError::is_transient)
            // After a 429 the group's pause already holds the next attempt until the reset.
            .adjust(|err, delay| match err {
                CloseError::RateLimited { .. } => delay.map(|_| Duration::ZERO),
                _ => delay,
            })
            .notify(|err, delay| {
                tracing::debug!(
                    group = call.group.as_str(),
                    error = %err,
                    delay_ms = delay.as_millis() as u64,
                    "retrying Close read"
                );
            })
            .await
    }

    /// Performs `call` and decodes the body into `T`.
    pub(crate) async fn execute_as<T: DeserializeOwned>(
        &self,
        key: &ApiKey,
        call: &Call<'_>,
    ) -> Result<T, CloseError> {
        decode(self.execute(key, call).await?)
    }

    /// GETs every page of a `{data, has_more}` list with `_skip`/`_limit`.
    pub(crate) async fn list_all<T: DeserializeOwned>(
        &self,
        key: &ApiKey,
        call: Call<'_>,
    ) -> Result<Vec<T>, CloseError> {
        let mut out = Vec::new();
        let mut skip = 0usize;
        for _ in 0..MAX_PAGES {
            let mut page_call = Call {
                method: call.method.clone(),
                group: call.group,
                segments: call.segments.clone(),
                query: call.query.clone(),
                body: call.body,
                read: call.read,
                in_slot: false,
            };
            page_call.query.push(("_skip", skip.to_string()));
            page_call.query.push(("_limit", PAGE_SIZE.to_string()));
            let page: ListPage<T> = self.execute_as(key, &page_call).await?;
            let n = page.data.len();
            out.extend(page.data);
            if !page.has_more || n == 0 {
                return Ok(out);
            }
            skip += n;
        }
        Err(CloseError::Decode(format!(
            "listing did not end after {MAX_PAGES} pages"
        )))
    }

    fn url(&self, segments: &[&str]) -> Result<Url, CloseError> {
        let mut url = self.inner.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| CloseError::InvalidConfig("base_url cannot be a base".into()))?;
            path.pop_if_empty().extend(segments).push("");
        }
        Ok(url)
    }

    /// Waits for this request's slot in the budget of its key and group; fails with
    /// [`CloseError::BudgetBusy`] instead when the task waits at most a time (see
    /// [`crate::budget::deferring`]) and the slot is further away.
    async fn pace(&self, key_fp: &str, group: &'static str) -> Result<(), CloseError> {
        let inner = &self.inner;
        let max_wait = super::budget::max_wait_for(group);
        self.refuse_if_booked(key_fp, group, super::budget::gives_way(group))?;
        let slot = inner
            .budget
            .reserve(key_fp, group, inner.initial_spacing, inner.burst, max_wait)
            .await
            .map_err(|e| CloseError::Budget(e.to_string()))?;
        let wait = match slot {
            Slot::Reserved(wait) => wait,
            Slot::Busy { after, spacing } => {
                self.note_booked(key_fp, group, after);
                metrics::counter!("closeio_budget_busy_total", "group" => group).increment(1);
                return Err(CloseError::BudgetBusy {
                    key_fp: key_fp.to_owned(),
                    group,
                    after,
                    spacing,
                });
            }
        };
        if !wait.is_zero() {
            metrics::histogram!("closeio_budget_wait_seconds", "group" => group)
                .record(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Fails with [`CloseError::BudgetBusy`] when the current task will not wait for a slot of
    /// `group` (see [`crate::budget::deferring`]) and this process knows the group to be booked
    /// for the key: work that would only wait can give way before it starts.
    pub fn check_booked(&self, key: &ApiKey, group: EndpointGroup) -> Result<(), CloseError> {
        let group = group.as_str();
        self.refuse_if_booked(&key.fingerprint(), group, super::budget::gives_way(group))
    }

    /// A caller that gives way (new work that will not wait long) is refused at once while
    /// the group is known to be booked — by a busy answer, or by jobs deferred before it,
    /// which it must not overtake — and is sent to the group's deferral lane.
    fn refuse_if_booked(
        &self,
        key_fp: &str,
        group: &'static str,
        gives_way: bool,
    ) -> Result<(), CloseError> {
        if !gives_way {
            return Ok(());
        }
        let booked = self
            .inner
            .booked_until
            .lock()
            .get(&(key_fp.to_owned(), group))
            .copied();
        match booked.and_then(|u| u.checked_duration_since(Instant::now())) {
            Some(after) => {
                metrics::counter!("closeio_budget_busy_total", "group" => group).increment(1);
                Err(CloseError::BudgetBusy {
                    key_fp: key_fp.to_owned(),
                    group,
                    after,
                    spacing: Duration::ZERO,
                })
            }
            None => Ok(()),
        }
    }

    /// Books the return of a job deferred because `group` of the key `key_fp` was busy (see
    /// [`CloseError::BudgetBusy`]): deferred jobs come back one spacing apart, after the slots
    /// already reserved. Returns how long from now.
    pub async fn defer(&self, key_fp: &str, group: &'static str) -> Result<Duration, CloseError> {
        Ok(self.defer_places(key_fp, group, 1).await?.first)
    }

    /// [`CloseClient::defer`] for `places` jobs at once (one place each, one spacing apart).
    pub async fn defer_places(
        &self,
        key_fp: &str,
        group: &'static str,
        places: u32,
    ) -> Result<LanePlaces, CloseError> {
        let lane = self
            .inner
            .budget
            .defer(key_fp, group, places)
            .await
            .map_err(|e| CloseError::Budget(e.to_string()))?;
        // New work of the key waits behind the deferred jobs.
        self.note_booked(key_fp, group, lane.nth(places.max(1) - 1));
        Ok(lane)
    }

    /// Remembers that `group` of `key_fp` is booked for `after` from now (a later end wins).
    fn note_booked(&self, key_fp: &str, group: &'static str, after: Duration) {
        let until = Instant::now() + after;
        let mut booked = self.inner.booked_until.lock();
        let entry = booked.entry((key_fp.to_owned(), group)).or_insert(until);
        *entry = (*entry).max(until);
        // Forget what has passed, so the map stays as small as the busy keys.
        if booked.len() > 64 {
            let now = Instant::now();
            booked.retain(|_, u| *u > now);
        }
    }

    /// Learns the group's limit from a response's headers and holds the group after a 429 or
    /// an exhausted window. A budget that cannot be written is logged, not fatal: the request
    /// itself succeeded or failed already.
    async fn learn(
        &self,
        key_fp: &str,
        group: &'static str,
        headers: &reqwest::header::HeaderMap,
        pause: Option<Duration>,
    ) {
        let inner = &self.inner;
        let header = headers
            .get("ratelimit")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_rate_limit_header);
        if let Some((limit, reset)) = header.and_then(|h| h.limit.zip(h.reset)) {
            if let Some(spacing) =
                inner
                    .learner
                    .observe(key_fp, group, limit, reset, inner.ceiling_rps)
            {
                tracing::debug!(
                    group,
                    limit,
                    reset_ms = reset.as_millis() as u64,
                    spacing_ms = spacing.as_secs_f64() * 1000.0,
                    "Close rate limit learned"
                );
                if let Err(e) = inner.budget.set_spacing(key_fp, group, spacing).await {
                    tracing::warn!(group, error = %e, "could not record the learned rate limit");
                }
            }
        }
        if let Some(wait) = pause {
            let wait = wait + super::budget::PAUSE_MARGIN;
            if let Err(e) = inner.budget.pause(key_fp, group, wait).await {
                tracing::warn!(group, error = %e, "could not record a rate-limit pause");
            }
        }
    }

    /// One request: wait for its slot in the budget, send, record telemetry, learn from the
    /// headers, map the answer.
    async fn attempt(&self, key: &ApiKey, call: &Call<'_>) -> Result<Value, CloseError> {
        self.attempt_in(key, call, false).await
    }

    /// Waits for a slot of `group` in the key's budget (as every request does) without
    /// sending anything: the caller then sends one request of that group with `in_slot`, once
    /// it has built it — a body that should be as late as possible (a new lead's nested
    /// contacts, joined while it waited) is built after the wait, not before.
    pub async fn await_slot(&self, key: &ApiKey, group: EndpointGroup) -> Result<(), CloseError> {
        self.pace(&key.fingerprint(), group.as_str()).await
    }

    /// One request, in the slot the caller waited for if `in_slot`.
    async fn attempt_in(
        &self,
        key: &ApiKey,
        call: &Call<'_>,
        in_slot: bool,
    ) -> Result<Value, CloseError> {
        let url = self.url(&call.segments)?;
        let key_fp = key.fingerprint();
        let group = call.group.as_str();
        if !in_slot {
            self.pace(&key_fp, group).await?;
        }

        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url.clone())
            .basic_auth(key.expose(), Some(""))
            .header(reqwest::header::ACCEPT, "application/json");
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = call.body {
            request = request.json(&body);
        }

        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                response
                    .text()
                    .await
                    .map(|text| (status, headers, text))
                    .map_err(map_transport_error)
            }
            Err(e) => Err(map_transport_error(e)),
        };
        let elapsed = started.elapsed();
        let status_label = match &outcome {
            Ok((status, _, _)) => status.to_string(),
            Err(CloseError::Timeout) => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        record_call(call, url.path(), &status_label, elapsed);
        let (status, headers, text) = outcome?;

        if status == 429 {
            let body: Option<Value> = serde_json::from_str(&text).ok();
            let wait = rate_limit_wait(&headers, body.as_ref());
            self.learn(&key_fp, group, &headers, Some(wait)).await;
            metrics::counter!("closeio_rate_limited_total", "group" => group).increment(1);
            tracing::info!(
                group,
                wait_ms = wait.as_millis() as u64,
                "Close rate limit hit; pausing this endpoint group of the key"
            );
            return Err(CloseError::RateLimited { wait });
        }
        self.learn(&key_fp, group, &headers, proactive_wait(&headers))
            .await;
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Object(Map::new()));
            }
            return serde_json::from_str(&text).map_err(|e| CloseError::Decode(e.to_string()));
        }
        Err(CloseError::from_status(status, &text))
    }
}

/// Decodes a JSON value into `T`, mapping failures to [`CloseError::Decode`].
pub(crate) fn decode<T: DeserializeOwned>(value: Value) -> Result<T, CloseError> {
    serde_json::from_value(value).map_err(|e| CloseError::Decode(e.to_string()))
}

fn map_transport_error(e: reqwest::Error) -> CloseError {
    let e = e.without_url();
    if e.is_connect() {
        CloseError::Connect(e.to_string())
    } else if e.is_timeout() {
        CloseError::Timeout
    } else {
        CloseError::Transport(e.to_string())
    }
}

fn record_call(call: &Call<'_>, path: &str, status: &str, elapsed: Duration) {
    let group = call.group.as_str();
    metrics::counter!(
        "closeio_requests_total",
        "group" => group,
        "method" => call.method.as_str().to_owned(),
        "status" => status.to_owned()
    )
    .increment(1);
    metrics::histogram!("closeio_request_duration_seconds", "group" => group)
        .record(elapsed.as_secs_f64());
    tracing::debug!(
        method = %call.method,
        path,
        status,
        duration_ms = elapsed.as_millis() as u64,
        "connector.service_api.call"
    );
}
