//! Simulator of the Hull platform, as seen by a connector.
//!
//! [`HullSim`] serves, over real HTTP on a local address:
//!
//! * the platform REST API under `/api/v1/` (connector object, settings, status, segment lists,
//!   attribute bootstraps),
//! * the firehose (`POST /api/v1/firehose`, also `/firehose`) with per-entry HS256 token
//!   verification, identity resolution and trait operations applied to an in-memory profile
//!   store,
//! * the public key that verifies its RS256-signed smart-notifier notifications,
//! * NDJSON extracts for the legacy `/batch` flow,
//! * a control API under `/_sandbox/` (no authentication) for tests, demos and benchmarks.
//!
//! It also plays the notifier: [`HullSim::notify`], [`HullSim::notify_changed`],
//! [`HullSim::notify_export`] and [`HullSim::send_batch`] push data to a connector and honour
//! its flow control. See `docs/sandbox-hull.md` for what is simulated and what is inferred.

mod error;
mod firehose;
mod notify;
mod routes;
mod seed;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use store::{Kind, Store};

/// RSA private key (PKCS#8 PEM) the simulator signs notifications with. Test material only.
const PRIVATE_KEY_PEM: &str = include_str!("keys/private.pem");
/// Public half of [`PRIVATE_KEY_PEM`], served at [`HullSim::public_key_url`].
const PUBLIC_KEY_PEM: &str = include_str!("keys/public.pem");

/// Default request body limit when [`HullConfig::max_body_bytes`] is 0.
const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Seed data and limits of a simulated Hull organization.
#[derive(Clone, Debug, Default)]
pub struct HullConfig {
    /// Installed connectors; empty means one default connector (24-hex id, seeded secret).
    pub connectors: Vec<ConnectorSeed>,
    /// Seed accounts: flat attributes (`domain`, `name`, `external_id`, `closeio/id`, …), may
    /// carry `segment_ids` and `anonymous_ids`.
    pub accounts: Vec<Value>,
    /// Seed users: flat attributes plus optional `account_domain` / `account_external_id` /
    /// `account_id` (link) and `segment_ids`.
    pub users: Vec<Value>,
    /// Users segments `{"id","name"}`; empty means a couple of default segments.
    pub users_segments: Vec<Value>,
    /// Accounts segments `{"id","name"}`; empty means a couple of default segments.
    pub accounts_segments: Vec<Value>,
    /// Deterministic bulk data generator, applied after the explicit seeds.
    pub generate: Option<GenerateSpec>,
    /// Maximum accepted request body in bytes (firehose and control API); 0 means 10 MiB.
    pub max_body_bytes: usize,
    /// The organization host the simulator advertises (`configuration.organization`, REST and
    /// public-key URLs), e.g. `sandbox:8091` inside a container network. `None`: the bound
    /// `ip:port`.
    pub organization: Option<String>,
}

/// A connector installed in the simulated organization.
#[derive(Clone, Debug, Default)]
pub struct ConnectorSeed {
    /// 24-hex id; empty means a generated one.
    pub id: String,
    /// Connector secret; empty means a generated one.
    pub secret: String,
    /// Initial `private_settings` (an object; `null` means `{}`).
    pub private_settings: Value,
    /// Initial `settings` (an object; `null` means `{}`).
    pub settings: Value,
    /// Connector base URL, e.g. `http://127.0.0.1:8082`; notifications go to `<url>/smart-notifier`.
    pub url: Option<String>,
}

/// Deterministic data generator: the same spec always yields the same profiles and ids.
#[derive(Clone, Debug, Default)]
pub struct GenerateSpec {
    /// Random seed.
    pub seed: u64,
    /// Number of accounts to generate.
    pub n_accounts: usize,
    /// Users generated (and linked) per account.
    pub users_per_account: usize,
    /// Probability (0..=1) that a profile belongs to each segment of its kind.
    pub segment_probability: f64,
}

/// A connector as the platform stores it.
#[derive(Clone, Debug, Serialize)]
pub struct Connector {
    /// 24-hex connector id (`Hull-App-Id`, `ship`).
    pub id: String,
    /// Connector secret (`Hull-Access-Token`, JWT signing key of firehose entries).
    pub secret: String,
    /// Display name.
    pub name: String,
    /// `private_settings` object.
    pub private_settings: Value,
    /// `settings` object.
    pub settings: Value,
    /// Connector base URL, if known.
    pub url: Option<String>,
    /// Last status pushed with `PUT /api/v1/{id}/status`, `null` before.
    pub status: Value,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last settings update (RFC 3339).
    pub updated_at: String,
}

/// A user or account profile of the simulated organization.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Profile {
    /// 24-hex Hull id.
    pub id: String,
    /// Flat attributes as stored: top-level ones (`email`, `domain`, `name`, `external_id`, …)
    /// and grouped ones (`closeio/id`), without the `traits_` notification prefix.
    pub attributes: Map<String, Value>,
    /// Accumulated anonymous ids (`closeio:lead_…`).
    pub anonymous_ids: Vec<String>,
    /// Linked account (users only).
    pub account_id: Option<String>,
    /// Segment ids the profile belongs to.
    pub segment_ids: Vec<String>,
}

/// One firehose entry as received, with the outcome.
#[derive(Clone, Debug, Serialize)]
pub struct FirehoseRecord {
    /// Receive time (RFC 3339).
    pub received_at: String,
    /// `Hull-App-Id` of the batch, if present.
    pub connector_id: Option<String>,
    /// Entry type: `traits`, `track`, `alias`, `unalias` (or whatever was sent).
    pub entry_type: String,
    /// Decoded JWT claims (`null` when the token could not be verified).
    pub claims: Value,
    /// Entry body.
    pub body: Value,
    /// Whether the entry was applied.
    pub accepted: bool,
    /// Why it was not applied.
    pub reason: Option<String>,
    /// HTTP status the batch was answered with.
    pub status: u16,
}

/// One notification or batch call made to a connector.
#[derive(Clone, Debug, Serialize)]
pub struct NotificationRecord {
    /// Send time (RFC 3339).
    pub sent_at: String,
    /// Target connector.
    pub connector_id: String,
    /// Target URL.
    pub url: String,
    /// `user:update`, `account:update`, `user:extract` or `account:extract`.
    pub channel: String,
    /// `notification_id` of the body (retries of one batch share it).
    pub notification_id: String,
    /// Number of messages (or extract lines).
    pub message_count: usize,
    /// `is_export` flag of the body.
    pub is_export: bool,
    /// `kraken.retries` of the body.
    pub retries: usize,
    /// Connector's HTTP status; `None` on a transport error or timeout.
    pub status: Option<u16>,
    /// Connector's answer (JSON if it parsed, else a string).
    pub response: Value,
    /// Transport error, if any.
    pub error: Option<String>,
}

/// Outcome of a notification run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NotifyReport {
    /// HTTP calls made (retries included).
    pub http_calls: usize,
    /// Messages the connector accepted.
    pub messages_delivered: usize,
    /// Messages the run had to deliver.
    pub messages_total: usize,
    /// Re-deliveries of a batch (after `retry`, a non-2xx answer or a transport error).
    pub retries: usize,
    /// Last `flow_control` object the connector answered.
    pub final_flow_control: Option<Value>,
    /// Status of every call in order; 0 means no HTTP answer (transport error or timeout).
    pub statuses: Vec<u16>,
    /// True when a batch exhausted its retries and the run stopped.
    pub failed: bool,
    /// Why the run stopped, when `failed`.
    pub error: Option<String>,
}

/// Firehose fault injection, settable at run time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FirehoseFault {
    /// Probability (0..=1) that a firehose call is answered with `status`.
    pub error_rate: f64,
    /// Status for injected errors; 0 means 503.
    pub status: u16,
    /// When true every firehose call answers 503.
    pub outage: bool,
    /// Delay added before answering each firehose call.
    pub latency_ms: u64,
}

/// Shared state behind the HTTP server and the [`HullSim`] handle.
pub(crate) struct Inner {
    pub(crate) org: String,
    pub(crate) base_url: String,
    pub(crate) store: Mutex<Store>,
    pub(crate) fault: Mutex<FirehoseFault>,
    pub(crate) fault_rng: Mutex<StdRng>,
    pub(crate) signing_key: jsonwebtoken::EncodingKey,
    pub(crate) http: reqwest::Client,
    pub(crate) config: HullConfig,
    pub(crate) max_body_bytes: usize,
}

impl Inner {
    pub(crate) fn public_key_url(&self) -> String {
        format!("{}/api/v1/public_key", self.base_url)
    }
}

/// A running Hull platform simulator.
pub struct HullSim {
    inner: Arc<Inner>,
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HullSim {
    /// Binds `listen` (use port 0 for an ephemeral port), seeds the organization and serves.
    pub async fn start(listen: SocketAddr, config: HullConfig) -> anyhow::Result<HullSim> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the Hull simulator to {listen}"))?;
        let addr = listener.local_addr()?;
        let org = config
            .organization
            .clone()
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| format!("{}:{}", addr.ip(), addr.port()));
        let base_url = format!("http://{org}");
        let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(PRIVATE_KEY_PEM.as_bytes())
            .context("loading the notification signing key")?;
        let http = reqwest::Client::builder()
            .timeout(notify::CONNECTOR_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        let store = seed::build_store(&config, &org);
        let max_body_bytes = match config.max_body_bytes {
            0 => DEFAULT_MAX_BODY_BYTES,
            n => n,
        };
        let fault_seed = config.generate.as_ref().map_or(0, |g| g.seed);
        let inner = Arc::new(Inner {
            org,
            base_url,
            store: Mutex::new(store),
            fault: Mutex::new(FirehoseFault::default()),
            fault_rng: Mutex::new(StdRng::seed_from_u64(fault_seed)),
            signing_key,
            http,
            config,
            max_body_bytes,
        });
        let app = routes::router(inner.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender also ends the server.
                    let _ = rx.await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "Hull simulator server stopped");
            }
        });
        Ok(HullSim {
            inner,
            addr,
            shutdown: tx,
            task,
        })
    }

    /// Address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Organization host, `127.0.0.1:PORT` (what goes in `configuration.organization`).
    pub fn organization(&self) -> String {
        self.inner.org.clone()
    }

    /// `http://127.0.0.1:PORT`; the REST API lives under `/api/v1/`.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// Firehose URL (`/firehose` is accepted too).
    pub fn firehose_url(&self) -> String {
        format!("{}/api/v1/firehose", self.inner.base_url)
    }

    /// URL serving the notification public key (GET, or POST with the signature as body).
    pub fn public_key_url(&self) -> String {
        self.inner.public_key_url()
    }

    /// PEM (`-----BEGIN PUBLIC KEY-----`) verifying notification signatures.
    pub fn public_key_pem(&self) -> &'static str {
        PUBLIC_KEY_PEM
    }

    /// All installed connectors.
    pub fn connectors(&self) -> Vec<Connector> {
        self.inner.store.lock().connectors.clone()
    }

    /// One connector by id.
    pub fn connector(&self, id: &str) -> Option<Connector> {
        self.inner.store.lock().connector(id).cloned()
    }

    /// Sets the base URL notifications and batch calls go to. Unknown ids are ignored.
    pub fn set_connector_url(&self, id: &str, url: &str) {
        self.inner
            .store
            .lock()
            .update_connector(id, Some(url), None, None);
    }

    /// Rotates the connector's secret (as Hull does when a connector is reinstalled). Unknown
    /// ids are ignored.
    pub fn set_connector_secret(&self, id: &str, secret: &str) {
        let mut store = self.inner.store.lock();
        if let Some(c) = store.connectors.iter_mut().find(|c| c.id == id) {
            c.secret = secret.to_string();
        }
    }

    /// Replaces the connector's `private_settings`. Unknown ids are ignored.
    pub fn set_private_settings(&self, id: &str, settings: Value) {
        self.inner
            .store
            .lock()
            .update_connector(id, None, Some(settings), None);
    }

    /// Creates or updates an account from flat attributes (resolved by `id`, `external_id`,
    /// `domain`, `anonymous_id`); marks it changed and returns its Hull id.
    pub fn upsert_account(&self, attrs: Value) -> String {
        self.inner.store.lock().upsert(Kind::Account, &attrs)
    }

    /// Creates or updates a user from flat attributes (resolved by `id`, `external_id`,
    /// `email`, `anonymous_id`); `account_id` / `account_domain` / `account_external_id` link it.
    pub fn upsert_user(&self, attrs: Value) -> String {
        self.inner.store.lock().upsert(Kind::User, &attrs)
    }

    /// Replaces an account's segments (entered/left show in its next notification).
    pub fn set_account_segments(&self, account_id: &str, segment_ids: &[&str]) {
        self.inner
            .store
            .lock()
            .set_segments(Kind::Account, account_id, segment_ids);
    }

    /// Replaces a user's segments (entered/left show in its next notification).
    pub fn set_user_segments(&self, user_id: &str, segment_ids: &[&str]) {
        self.inner
            .store
            .lock()
            .set_segments(Kind::User, user_id, segment_ids);
    }

    /// Every account, in creation order.
    pub fn accounts(&self) -> Vec<Profile> {
        self.inner.store.lock().profiles(Kind::Account)
    }

    /// Every user, in creation order.
    pub fn users(&self) -> Vec<Profile> {
        self.inner.store.lock().profiles(Kind::User)
    }

    /// Finds an account by `domain`, `external_id`, `anonymous_id` or `id`.
    pub fn find_account(&self, claim_key: &str, value: &str) -> Option<Profile> {
        self.inner
            .store
            .lock()
            .find_by(Kind::Account, claim_key, value)
    }

    /// Finds a user by `email`, `external_id`, `anonymous_id` or `id`.
    pub fn find_user(&self, claim_key: &str, value: &str) -> Option<Profile> {
        self.inner
            .store
            .lock()
            .find_by(Kind::User, claim_key, value)
    }

    /// Every firehose entry received, in order.
    pub fn firehose_log(&self) -> Vec<FirehoseRecord> {
        self.inner.store.lock().firehose_log.clone()
    }

    /// Firehose entries received so far (`firehose_log().len()`, without copying the log).
    pub fn firehose_entries(&self) -> usize {
        self.inner.store.lock().firehose_log.len()
    }

    /// Firehose calls received so far (each carries a batch of entries).
    pub fn firehose_calls(&self) -> u64 {
        self.inner.store.lock().firehose_calls
    }

    /// Bodies of `PUT /api/v1/{id}/status` calls (with `connector_id` added), in order.
    pub fn status_log(&self) -> Vec<Value> {
        self.inner.store.lock().status_log.clone()
    }

    /// Sets the firehose fault injection.
    pub fn set_firehose_fault(&self, fault: FirehoseFault) {
        *self.inner.fault.lock() = fault;
    }

    /// Sends signed `user:update` / `account:update` notifications for these profiles to the
    /// connector's `<url>/smart-notifier`, honouring flow control.
    pub async fn notify(
        &self,
        connector_id: &str,
        channel: &str,
        ids: &[String],
    ) -> anyhow::Result<NotifyReport> {
        Ok(notify::notify(&self.inner, connector_id, channel, ids, false).await?)
    }

    /// Notifies every profile changed since its last notification (accounts first, then
    /// users) and clears the changed flags of what was delivered.
    pub async fn notify_changed(&self, connector_id: &str) -> anyhow::Result<NotifyReport> {
        Ok(notify::notify_changed(&self.inner, connector_id).await?)
    }

    /// Sends `is_export` notifications (tag `kraken-exports`) for these profiles.
    pub async fn notify_export(
        &self,
        connector_id: &str,
        channel: &str,
        ids: &[String],
    ) -> anyhow::Result<NotifyReport> {
        Ok(notify::notify(&self.inner, connector_id, channel, ids, true).await?)
    }

    /// Legacy extract flow: serves an NDJSON extract of these profiles (all of them when `ids`
    /// is empty) and calls `POST <url>/batch?ship=&organization=&secret=`; returns the status.
    pub async fn send_batch(
        &self,
        connector_id: &str,
        object_type: &str,
        ids: &[String],
    ) -> anyhow::Result<u16> {
        Ok(notify::send_batch(&self.inner, connector_id, object_type, ids).await?)
    }

    /// Every notification and batch call made, with the connector's answers.
    pub fn notification_log(&self) -> Vec<NotificationRecord> {
        self.inner.store.lock().notification_log.clone()
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "Hull simulator task failed");
        }
    }
}
