//! Test harness: a fresh Postgres database and a unique RabbitMQ prefix per test, the Close and
//! Hull simulators on ephemeral ports, ingest served in-process over real HTTP, and an
//! in-process worker driven until the queues are empty.
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) must let the
//! test create databases; `TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::{json, Value};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use common::queue::Queue;
use sandbox::close::{CloseConfig, CloseSim};
use sandbox::hull::{ConnectorSeed, HullConfig, HullSim};

pub use sandbox;

pub mod services;

/// The connector id every test uses.
pub const CONNECTOR_ID: &str = "5c092905c36af496c700012e";
/// Its secret.
pub const CONNECTOR_SECRET: &str = "20a512cc2cd99de69be65313e2f35d45";
/// The Close API key.
pub const API_KEY: &str = "api_test_key_0001";
/// The whitelisted account segment.
pub const SYNC_SEGMENT: &str = "5bffc38f625718d58b000001";
/// An account segment that is not whitelisted.
pub const OTHER_SEGMENT: &str = "5bffc38f625718d58b000002";

/// The admin URL used to create and drop test databases.
pub fn admin_db_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The broker URL.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Quiet logs unless `RUST_LOG` asks for them.
pub fn init_logs() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The private settings of the test connector (original defaults, whitelisting [`SYNC_SEGMENT`]).
pub fn default_settings() -> Value {
    json!({
        "api_key": API_KEY,
        "synchronized_account_segments": [SYNC_SEGMENT],
        "lead_status": "hull-default",
        "lead_identifier_hull": "domain",
        "lead_identifier_service": "url",
        "lead_attributes_outbound": [{"hull_field_name": "name", "closeio_field_name": "name"}],
        "lead_attributes_inbound": ["name"],
        "contact_attributes_outbound": [
            {"hull_field_name": "email", "closeio_field_name": "emails.office"},
            {"hull_field_name": "traits_title", "closeio_field_name": "title"}
        ],
        "contact_attributes_inbound": ["emails", "title"]
    })
}

/// A fresh database (migrated) that is dropped by [`TestDb::drop_db`].
pub struct TestDb {
    /// Its URL.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates and migrates a database with a unique name.
    pub async fn create() -> anyhow::Result<TestDb> {
        TestDb::create_on(&admin_db_url()).await
    }

    /// Creates and migrates a database with a unique name on the server of `admin_url`.
    pub async fn create_on(admin_url: &str) -> anyhow::Result<TestDb> {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        url_with_db(admin_url, &name)?;
        let (client, conn) = tokio_postgres::connect(admin_url, NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        // Never fall back to the admin database: a test migrates only its own database.
        let url = url_with_db(admin_url, &name)?;
        common::store::migrate(&url).await?;
        Ok(TestDb {
            url,
            name,
            admin_url: admin_url.to_string(),
        })
    }

    /// Drops the database.
    pub async fn drop_db(&self) {
        if let Ok((client, conn)) = tokio_postgres::connect(&self.admin_url, NoTls).await {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let _ = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

/// The URL of database `db` on the server of `admin` (a `postgres://` URL).
pub fn url_with_db(admin: &str, db: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(admin).map_err(|e| {
        anyhow::anyhow!(
            "TEST_DATABASE_URL must be a postgres:// URL ({e}); refusing to use the admin database"
        )
    })?;
    if !matches!(u.scheme(), "postgres" | "postgresql") || u.host_str().is_none() {
        anyhow::bail!("TEST_DATABASE_URL must be a postgres:// URL with a host; refusing to use the admin database");
    }
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

/// Options of a test environment.
#[derive(Clone)]
pub struct EnvOptions {
    /// Private settings of the connector in the Hull simulator.
    pub settings: Value,
    /// Close simulator configuration (the API key [`API_KEY`] is always added).
    pub close: CloseConfig,
    /// Hull accounts to seed.
    pub accounts: Vec<Value>,
    /// Hull users to seed.
    pub users: Vec<Value>,
    /// Skip notification signature verification in ingest.
    pub skip_signature: bool,
    /// Override the AMQP URL (a private broker).
    pub amqp_url: Option<String>,
    /// Override the admin database URL the test database is created with (a private cluster).
    pub admin_db_url: Option<String>,
    /// Variables set on top of the defaults (ingest, worker and scheduler read them).
    pub vars: Vec<(String, String)>,
    /// More connectors (tenants) in the Hull simulator, each with its own settings (its own
    /// Close key: add that key to `close.api_keys`); their URL is set to ingest.
    pub more_connectors: Vec<ConnectorSeed>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            settings: default_settings(),
            close: CloseConfig::default(),
            accounts: vec![],
            users: vec![],
            skip_signature: false,
            amqp_url: None,
            admin_db_url: None,
            vars: vec![],
            more_connectors: vec![],
        }
    }
}

/// A complete system under test.
pub struct TestEnv {
    /// The database.
    pub db: TestDb,
    /// Queue prefix.
    pub prefix: String,
    /// Close simulator.
    pub close: CloseSim,
    /// Hull simulator.
    pub hull: HullSim,
    /// Address of the in-process ingest.
    pub ingest_addr: SocketAddr,
    ingest_stop: CancellationToken,
    ingest_task: tokio::task::JoinHandle<()>,
    /// The variables the services were configured with.
    pub vars: HashMap<String, String>,
    /// An in-process worker.
    pub worker: worker::Worker,
}

impl TestEnv {
    /// Starts everything.
    pub async fn start(opts: EnvOptions) -> anyhow::Result<TestEnv> {
        init_logs();
        let db = match &opts.admin_db_url {
            Some(admin) => TestDb::create_on(admin).await?,
            None => TestDb::create().await?,
        };
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut close_cfg = opts.close.clone();
        if !close_cfg.api_keys.iter().any(|k| k == API_KEY) {
            close_cfg.api_keys.push(API_KEY.to_string());
        }
        let close = CloseSim::start("127.0.0.1:0".parse()?, close_cfg).await?;
        let hull = HullSim::start(
            "127.0.0.1:0".parse()?,
            HullConfig {
                connectors: std::iter::once(ConnectorSeed {
                    id: CONNECTOR_ID.into(),
                    secret: CONNECTOR_SECRET.into(),
                    private_settings: opts.settings.clone(),
                    settings: json!({}),
                    url: None,
                })
                .chain(opts.more_connectors.iter().cloned())
                .collect(),
                accounts: opts.accounts.clone(),
                users: opts.users.clone(),
                users_segments: vec![
                    json!({"id": "5bffc38f625718d58b000011", "name": "VIP users"}),
                ],
                accounts_segments: vec![
                    json!({"id": SYNC_SEGMENT, "name": "Sync to Close"}),
                    json!({"id": OTHER_SEGMENT, "name": "Other accounts"}),
                ],
                ..HullConfig::default()
            },
        )
        .await?;
        let amqp = opts.amqp_url.clone().unwrap_or_else(amqp_url);
        let mut vars: HashMap<String, String> = [
            ("DATABASE_URL", db.url.clone()),
            ("DATABASE_POOL_SIZE", "12".into()),
            ("AMQP_URL", amqp.clone()),
            ("QUEUE_PREFIX", prefix.clone()),
            ("CLOSE_API_URL", close.base_url()),
            ("CLOSE_RATE_LIMIT_RPS", "500".into()),
            ("CLOSE_TIMEOUT_SECS", "5".into()),
            ("HULL_PROTOCOL", "http".into()),
            ("HULL_FIREHOSE_URL", hull.firehose_url()),
            ("INGEST_LISTEN", "127.0.0.1:0".into()),
            ("HULL_KEY_HOSTS", hull.addr().to_string()),
            ("LOCAL_MODE", "true".into()),
            ("HULL_ORGANIZATIONS", hull.organization()),
            (
                "SKIP_SIGNATURE_VERIFICATION",
                opts.skip_signature.to_string(),
            ),
            ("WORKER_CONCURRENCY", "4".into()),
            ("WORKER_INLINE_RETRIES", "2".into()),
            ("WORKER_RETRY_BASE_SECS", "0.05".into()),
            // Tests that drive only the worker expect every job to finish in it; the fairness
            // tests (and production, at 2 s) defer jobs whose tenant's budget is busy.
            ("WORKER_DEFER_AFTER_SECS", "60".into()),
            // Likewise new leads are created at once; `nesting` tests gather their contacts.
            ("NEW_LEAD_GATHER_SECS", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        vars.insert("SCHEDULER_TICK_SECS".into(), "0.2".into());
        for (k, v) in &opts.vars {
            vars.insert(k.clone(), v.clone());
        }
        Queue::connect(&amqp, &prefix).await?;
        let ingest_cfg = ingest::IngestConfig::from_source(&vars)?;
        let ingest_stop = CancellationToken::new();
        let (ingest_addr, ingest_task) = ingest::start(ingest_cfg, ingest_stop.clone()).await?;
        hull.set_connector_url(CONNECTOR_ID, &format!("http://{ingest_addr}"));
        for c in &opts.more_connectors {
            hull.set_connector_url(&c.id, &format!("http://{ingest_addr}"));
        }
        // Close webhooks are delivered to the in-process ingest.
        vars.insert("PUBLIC_URL".into(), format!("http://{ingest_addr}"));
        let worker = worker::Worker::new(worker::WorkerConfig::from_source(&vars)?)?;
        Ok(TestEnv {
            db,
            prefix,
            close,
            hull,
            ingest_addr,
            ingest_stop,
            ingest_task,
            vars,
            worker,
        })
    }

    /// Ingest's base URL.
    pub fn ingest_url(&self) -> String {
        format!("http://{}", self.ingest_addr)
    }

    /// Query string with the connector's credentials (as Hull sends to non-notification calls).
    pub fn creds_query(&self) -> String {
        format!(
            "organization={}&ship={}&secret={}",
            self.hull.organization(),
            CONNECTOR_ID,
            CONNECTOR_SECRET
        )
    }

    /// Another worker on the same system.
    pub fn new_worker(&self) -> anyhow::Result<worker::Worker> {
        worker::Worker::new(worker::WorkerConfig::from_source(&self.vars)?)
    }

    /// A scheduler on this system, configured from [`TestEnv::vars`] (its `PUBLIC_URL` is
    /// ingest's URL, so Close webhook subscriptions point at the in-process ingest).
    pub fn scheduler(&self) -> anyhow::Result<scheduler::Scheduler> {
        self.scheduler_with(&[])
    }

    /// A scheduler with some variables overridden.
    pub fn scheduler_with(
        &self,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<scheduler::Scheduler> {
        let mut vars = self.vars.clone();
        for (k, v) in overrides {
            vars.insert((*k).to_string(), (*v).to_string());
        }
        scheduler::Scheduler::new(scheduler::SchedulerConfig::from_source(&vars)?)
    }

    /// A store handle on the test database.
    pub fn store(&self) -> anyhow::Result<common::store::Store> {
        let cfg = common::config::CommonConfig::from_source(&self.vars)?;
        Ok(common::store::Store::connect(
            &cfg.database_url,
            4,
            common::crypto::SecretBox::new(cfg.encryption_key, cfg.encryption_key_previous),
        )?)
    }

    /// Runs the scheduler's due retries and the in-process worker until no job is queued or
    /// waiting in `retries` (deferred jobs included), or `timeout` passes; returns the jobs
    /// handled.
    pub async fn drain_with_retries(&self, timeout: std::time::Duration) -> anyhow::Result<usize> {
        let sched = self.scheduler()?;
        let store = self.store()?;
        let deadline = std::time::Instant::now() + timeout;
        let mut handled = self.drain().await?;
        loop {
            let waiting = store.retries(None, 1).await?;
            if waiting.is_empty() {
                return Ok(handled);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("jobs still waiting after {timeout:?}: {waiting:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            sched.republish_due_retries().await;
            handled += self.drain().await?;
        }
    }

    /// Runs the in-process worker until the queues are empty.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        Ok(self.worker.run_until_idle().await?)
    }

    /// Messages waiting in a queue of this test.
    pub async fn depth(&self, kind: common::jobs::QueueKind) -> anyhow::Result<u32> {
        let q = Queue::lazy(
            self.vars
                .get("AMQP_URL")
                .map(String::as_str)
                .unwrap_or_default(),
            &self.prefix,
        );
        Ok(q.depth(&q.topology().queue(kind)).await?)
    }

    /// Close requests made so far that changed something (POST, PUT, DELETE), excluding searches.
    pub fn close_writes(&self) -> Vec<sandbox::close::RequestRecord> {
        self.close
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET" && !r.path.contains("/data/search"))
            .collect()
    }

    /// Leads in Close whose `url` is `url`.
    pub fn leads_with_url(&self, url: &str) -> Vec<Value> {
        self.close
            .leads()
            .into_iter()
            .filter(|l| l.get("url").and_then(Value::as_str) == Some(url))
            .collect()
    }

    /// Stops ingest, deletes the queues and drops the database.
    pub async fn cleanup(self) {
        self.ingest_stop.cancel();
        let _ = self.ingest_task.await;
        if let Some(amqp) = self.vars.get("AMQP_URL") {
            let _ = Queue::lazy(amqp, &self.prefix).delete_topology().await;
        }
        self.db.drop_db().await;
        self.close.shutdown().await;
        self.hull.shutdown().await;
    }
}
