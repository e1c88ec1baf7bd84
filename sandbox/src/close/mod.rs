//! A simulator of the Close REST API (`/api/v1/`), faithful to the behaviour documented in
//! docs/sandbox.md: auth, leads, contacts, statuses, custom fields, legacy queries, Advanced
//! Filtering, the event log, webhooks, rate limits and fault injection, plus a control API
//! under `/_sandbox/`.

mod api;
mod control;
mod error;
mod events;
mod faults;
mod legacy_query;
mod model;
mod ratelimit;
mod routes;
mod search;
mod seed;
mod server;
mod store;
mod time;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use faults::Faults;
pub use seed::{Seed, DEFAULT_API_KEY};
pub use server::RequestRecord;
pub use webhooks::{signature, DeliveryRecord};

use api::Limits;
use faults::FaultState;
use ratelimit::RateLimiter;
use search::SearchLimits;
use server::Inner;
use store::{Actor, Store};
use webhooks::RetryPolicy;

/// Configuration of the Close simulator. Zero values mean "use the default".
#[derive(Clone, Debug, Default)]
pub struct CloseConfig {
    /// API keys; empty → one key, [`DEFAULT_API_KEY`]. Each key is its own organization unless
    /// grouped by `organizations`.
    pub api_keys: Vec<String>,
    /// Groups of API keys sharing one organization (keys listed here need not repeat in
    /// `api_keys`).
    pub organizations: Vec<Vec<String>>,
    /// Per API key and endpoint group, requests per second; the organization limit is 3×.
    /// `None` = no rate limits.
    pub rate_limit_rps: Option<f64>,
    /// Length of a rate-limit window in seconds (0 → 1 s); limit = rps × window.
    pub rate_window_secs: f64,
    /// Initial data.
    pub seed: Seed,
    /// Initial faults.
    pub faults: Faults,
    /// Request body limit (0 → 1 MiB); larger bodies get 413.
    pub max_body_bytes: usize,
    /// Maximum `_limit` of list endpoints and search (0 → 200).
    pub max_limit: usize,
    /// Maximum `_skip` (0 → 10 000).
    pub max_skip: usize,
    /// Objects per search pagination sequence (0 → 10 000).
    pub max_search_results: usize,
    /// Attempts per webhook delivery (0 → 5).
    pub webhook_max_attempts: u32,
    /// Delay before the second delivery attempt, doubling after each failure (0 → 1000 ms).
    pub webhook_retry_base_ms: u64,
}

fn or<T: PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

/// A running Close simulator.
pub struct CloseSim {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl CloseSim {
    /// Binds `listen` (port 0 for an ephemeral port) and starts serving.
    pub async fn start(listen: SocketAddr, config: CloseConfig) -> anyhow::Result<CloseSim> {
        let store = seed::build(&config.api_keys, &config.organizations, &config.seed)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the Close simulator to {listen}"))?;
        let addr = listener.local_addr()?;
        let window = or(config.rate_window_secs, 1.0);
        if !(window.is_finite() && window > 0.0) {
            return Err(anyhow!("rate_window_secs must be positive"));
        }
        let mut limiter = RateLimiter::new(None, Duration::from_secs_f64(window));
        limiter.set_rps(config.rate_limit_rps);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            limits: Limits {
                max_limit: or(config.max_limit, 200),
                max_skip: or(config.max_skip, 10_000),
                search: SearchLimits {
                    max_limit: or(config.max_limit, 200),
                    max_results: or(config.max_search_results, 10_000),
                },
            },
            retry: RetryPolicy {
                max_attempts: or(config.webhook_max_attempts, 5),
                base_delay: Duration::from_millis(or(config.webhook_retry_base_ms, 1000)),
            },
            store: Mutex::new(store),
            limiter: Mutex::new(limiter),
            faults: Mutex::new(FaultState::new(config.faults.clone())),
            requests: Mutex::new(Vec::new()),
            counters: Mutex::new(Default::default()),
            deliveries: Arc::new(Mutex::new(Vec::new())),
            http,
            cancel: cancel.clone(),
            runtime: tokio::runtime::Handle::current(),
            config,
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone(), cancel));
        Ok(CloseSim { inner, addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/v1`.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}{}", routes::API_PREFIX)
    }

    /// Every API key, organization by organization.
    pub fn api_keys(&self) -> Vec<String> {
        let store = self.inner.store.lock();
        store
            .orgs
            .iter()
            .flat_map(|o| o.api_keys.iter().map(|k| k.key.clone()))
            .collect()
    }

    /// Every lead of every organization, as `GET /lead/{id}/` returns it, in creation order.
    pub fn leads(&self) -> Vec<Value> {
        let store = self.inner.store.lock();
        store
            .lead_order
            .values()
            .filter_map(|id| store.leads.get(id))
            .map(|l| store.lead_json(l))
            .collect()
    }

    /// Every contact of every organization, in creation order.
    pub fn contacts(&self) -> Vec<Value> {
        let store = self.inner.store.lock();
        store
            .contact_order
            .values()
            .filter_map(|id| store.contacts.get(id))
            .map(|c| store.contact_json(c))
            .collect()
    }

    /// The request log (control requests excluded).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.requests.lock().clone()
    }

    /// Empties the request log and the counters.
    pub fn clear_requests(&self) {
        self.inner.clear_requests();
    }

    /// Webhook deliveries so far.
    pub fn webhook_deliveries(&self) -> Vec<DeliveryRecord> {
        self.inner.deliveries.lock().clone()
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.inner.set_faults(faults);
    }

    /// Changes the per-key rate limit (`None` = off).
    pub fn set_rate_limit(&self, rps: Option<f64>) {
        self.inner.set_rate_limit(rps);
    }

    /// Restores the initial (seed) state: data, events, webhooks, logs, faults, limits.
    pub fn reset(&self) -> anyhow::Result<()> {
        self.inner.reset()
    }

    /// Changes made "by a Close user in the UI": they go through the same code paths as the API
    /// (date_updated bumped, events appended, webhooks delivered).
    pub fn ui_update_lead(&self, lead_id: &str, patch: Value) -> anyhow::Result<Value> {
        self.inner.ui_update_lead(lead_id, patch)
    }

    /// Deletes a lead as a UI user.
    pub fn ui_delete_lead(&self, lead_id: &str) -> anyhow::Result<()> {
        self.inner.ui_delete_lead(lead_id)
    }

    /// Merges `source` into `destination` as a UI user.
    pub fn ui_merge_leads(&self, source: &str, destination: &str) -> anyhow::Result<()> {
        self.inner.ui_merge_leads(source, destination)
    }

    /// Creates a lead (same body as `POST /lead/`) as a UI user of `api_key`'s organization.
    pub fn ui_create_lead(&self, api_key: &str, lead: Value) -> anyhow::Result<Value> {
        self.inner.ui_create_lead(api_key, lead)
    }

    /// Deletes a contact as a UI user.
    pub fn ui_delete_contact(&self, contact_id: &str) -> anyhow::Result<()> {
        self.inner.ui_delete_contact(contact_id)
    }

    /// Stops serving, closes open connections and cancels pending webhook retries.
    pub async fn shutdown(mut self) {
        self.inner.cancel.cancel();
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "Close simulator accept loop ended abnormally");
        }
    }
}

impl Drop for CloseSim {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "Close simulator accept failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let inner = inner.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| server::serve(inner.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = cancel.cancelled() => {}
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "Close simulator connection ended");
                    }
                }
            }
        });
    }
}

fn object(v: Value) -> anyhow::Result<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("The body must be a JSON object.").into()),
    }
}

impl Inner {
    fn ui_actor(store: &mut Store, org: usize, method: &str, path: String) -> Actor {
        Actor {
            org,
            user_id: store.orgs[org].ui_user.id.clone(),
            api_key_id: None,
            request_id: store.id("req_", 22),
            method: method.to_string(),
            path,
        }
    }

    fn lead_org(store: &Store, lead_id: &str) -> anyhow::Result<usize> {
        store
            .leads
            .get(lead_id)
            .map(|l| l.org)
            .ok_or_else(|| ApiError::not_found("Lead").into())
    }

    fn clear_requests(&self) {
        self.requests.lock().clear();
        self.counters.lock().clear();
    }

    fn set_faults(&self, faults: Faults) {
        *self.faults.lock() = FaultState::new(faults);
    }

    fn set_rate_limit(&self, rps: Option<f64>) {
        self.limiter.lock().set_rps(rps);
    }

    fn reset(&self) -> anyhow::Result<()> {
        let fresh = seed::build(
            &self.config.api_keys,
            &self.config.organizations,
            &self.config.seed,
        )?;
        *self.store.lock() = fresh;
        self.clear_requests();
        self.deliveries.lock().clear();
        self.set_faults(self.config.faults.clone());
        self.set_rate_limit(self.config.rate_limit_rps);
        Ok(())
    }

    fn ui_update_lead(&self, lead_id: &str, patch: Value) -> anyhow::Result<Value> {
        let body = object(patch)?;
        let mut store = self.store.lock();
        let org = Self::lead_org(&store, lead_id)?;
        let actor = Self::ui_actor(&mut store, org, "PUT", format!("/api/v1/lead/{lead_id}/"));
        let result = store.update_lead(&actor, lead_id, &body);
        self.flush_outbox(&mut store);
        result?;
        let lead = store.lead(org, lead_id)?;
        Ok(store.lead_json(lead))
    }

    fn ui_delete_lead(&self, lead_id: &str) -> anyhow::Result<()> {
        let mut store = self.store.lock();
        let org = Self::lead_org(&store, lead_id)?;
        let actor = Self::ui_actor(
            &mut store,
            org,
            "DELETE",
            format!("/api/v1/lead/{lead_id}/"),
        );
        let result = store.delete_lead(&actor, lead_id);
        self.flush_outbox(&mut store);
        Ok(result?)
    }

    fn ui_merge_leads(&self, source: &str, destination: &str) -> anyhow::Result<()> {
        let mut store = self.store.lock();
        let org = Self::lead_org(&store, source)?;
        let actor = Self::ui_actor(&mut store, org, "POST", "/api/v1/lead/merge/".to_string());
        let result = store.merge_leads(&actor, source, destination);
        self.flush_outbox(&mut store);
        Ok(result?)
    }

    fn ui_create_lead(&self, api_key: &str, lead: Value) -> anyhow::Result<Value> {
        let body = object(lead)?;
        let mut store = self.store.lock();
        let (org, _) = *store
            .key_index
            .get(api_key)
            .ok_or_else(|| anyhow!("unknown API key"))?;
        let actor = Self::ui_actor(&mut store, org, "POST", "/api/v1/lead/".to_string());
        let result = store.create_lead(&actor, &body);
        self.flush_outbox(&mut store);
        let id = result?;
        let lead = store.lead(org, &id)?;
        Ok(store.lead_json(lead))
    }

    fn ui_delete_contact(&self, contact_id: &str) -> anyhow::Result<()> {
        let mut store = self.store.lock();
        let org = store
            .contacts
            .get(contact_id)
            .map(|c| c.org)
            .ok_or_else(|| ApiError::not_found("Contact"))?;
        let actor = Self::ui_actor(
            &mut store,
            org,
            "DELETE",
            format!("/api/v1/contact/{contact_id}/"),
        );
        let result = store.delete_contact(&actor, contact_id);
        self.flush_outbox(&mut store);
        Ok(result?)
    }
}
