//! The scheduler: one active instance (a Postgres advisory lock; a second instance waits and
//! takes over when the first one dies). Each tick it republishes due retries, runs the status
//! checks that are due (pushed to Hull) and refreshes stale Close metadata, and schedules the
//! incoming sync (full imports, incremental fetches, webhook subscriptions; see [`fetch`]).

pub mod fetch;

use std::net::SocketAddr;
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use common::clients::Clients;
use common::closeio::CloseClient;
use common::config::{self, CommonConfig, ConfigError, Settings, Source};
use common::hull::HullClient;
use common::queue::Queue;
use common::store::Store;

/// The advisory lock key held by the active scheduler.
pub const LEADER_LOCK_KEY: i64 = 0x636c_6f73_6569_6f01;

/// Scheduler configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerConfig {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonConfig,
    /// Address of /metrics, /healthz and /readyz
    #[arg(env = "SCHEDULER_LISTEN", default_value = "127.0.0.1:9102")]
    pub listen: SocketAddr,
    /// Seconds between scheduler passes
    #[arg(env = "SCHEDULER_TICK_SECS", default_value = "5", value_parser = config::seconds)]
    pub tick: Duration,
    /// Seconds between status checks of a connector
    #[arg(env = "STATUS_INTERVAL_SECS", default_value = "1800", value_parser = config::seconds)]
    pub status_interval: Duration,
    /// Seconds between refreshes of a connector's Close metadata
    #[arg(env = "METADATA_REFRESH_SECS", default_value = "3600", value_parser = config::seconds)]
    pub metadata_interval: Duration,
    /// Milliseconds between checks for due retries (between passes too): deferred jobs come
    /// back this close to the time booked for them
    #[arg(env = "RETRY_POLL_MS", default_value = "250", value_parser = config::positive_millis)]
    pub retry_poll: Duration,
    /// Due retries republished per pass at most
    #[arg(env = "RETRY_BATCH", default_value = "500", value_parser = config::positive::<i64>)]
    pub retry_batch: i64,
    /// Seconds between imports of the broker's dead letters into Postgres
    #[arg(env = "BROKER_DEAD_LETTER_IMPORT_SECS", default_value = "60", value_parser = config::seconds)]
    pub broker_import: Duration,
    /// Incoming sync scheduling (`FETCH_*`, `PUBLIC_URL`, `WEBHOOK_CHECK_SECS`).
    #[command(flatten)]
    pub fetch: fetch::FetchConfig,
    /// The HTTP admin API (`ADMIN_LISTEN`, `ADMIN_TOKEN`).
    #[command(flatten)]
    pub admin: admin::AdminConfig,
}

impl Settings for SchedulerConfig {
    fn finish(&mut self, src: &dyn Source) -> Result<(), ConfigError> {
        self.common.finish(src)?;
        self.common.require_organizations()
    }
}

impl SchedulerConfig {
    /// Reads and validates the configuration.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        config::load(src)
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Retries republished.
    pub retries_republished: usize,
    /// Status checks run.
    pub status_checks: usize,
    /// Metadata refreshes.
    pub metadata_refreshed: usize,
    /// Incoming sync: runs started or expired, webhook subscriptions checked.
    pub incoming: fetch::FetchReport,
    /// Messages the broker dead-lettered (delivery limit) now recorded in Postgres.
    pub broker_dead_letters_imported: usize,
    /// Dead letters deleted because they were older than `DEAD_LETTER_RETENTION_DAYS`.
    pub dead_letters_expired: u64,
}

/// The scheduler's counters, exported at 0 from the start (see
/// `common::telemetry::declare_counter`).
fn declare_metrics() {
    use common::telemetry::declare_counter;
    declare_counter("scheduler_retries_republished_total", &[]);
    declare_counter("scheduler_dead_letters_expired_total", &[]);
    for kind in ["full", "incremental"] {
        declare_counter("scheduler_fetch_runs_started_total", &[("kind", kind)]);
    }
    common::telemetry::declare_close_counters();
}

/// The scheduler.
#[derive(Clone)]
pub struct Scheduler {
    /// Postgres.
    pub store: Store,
    /// RabbitMQ.
    pub queue: Queue,
    close: CloseClient,
    hull: HullClient,
    cfg: SchedulerConfig,
    admin: admin::Admin,
    last_broker_import: std::sync::Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
    last_expired: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Scheduler {
    /// Builds the clients.
    pub fn new(cfg: SchedulerConfig) -> anyhow::Result<Scheduler> {
        declare_metrics();
        // A replica is not active until it holds the lock; exported from the start.
        metrics::gauge!("scheduler_active").set(0.0);
        let Clients {
            store,
            queue,
            close,
            hull,
        } = Clients::new(&cfg.common, cfg.common.database_pool_size.min(4))?;
        let admin = admin::Admin::new(store.clone(), queue.clone()).with_close(close.clone());
        Ok(Scheduler {
            store,
            queue,
            close,
            hull,
            cfg,
            admin,
            last_broker_import: Default::default(),
            last_expired: Default::default(),
        })
    }

    /// The operator functions (with the Close client, to show dead letters' Close objects).
    pub fn admin(&self) -> admin::Admin {
        self.admin.clone()
    }

    /// Records the messages RabbitMQ dead-lettered (a job redelivered past the delivery
    /// limit) as Postgres dead letters, at most every `BROKER_DEAD_LETTER_IMPORT_SECS`. Their
    /// retry rows (left `queued` when the republished job never came back) go with them.
    async fn import_broker_dead_letters(&self) -> usize {
        {
            let mut last = self.last_broker_import.lock();
            if last.is_some_and(|t| t.elapsed() < self.cfg.broker_import) {
                return 0;
            }
            *last = Some(std::time::Instant::now());
        }
        // The retention runs as often as the import: both are dead-letter upkeep.
        self.last_expired.store(
            self.expire_dead_letters().await,
            std::sync::atomic::Ordering::Relaxed,
        );
        match self.admin.import_broker_dead_letters().await {
            Ok(r) => {
                if r.imported > 0 {
                    tracing::warn!(imported = r.imported, "broker dead letters imported");
                }
                r.imported
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not import the broker's dead letters");
                0
            }
        }
    }

    /// Deletes the dead letters older than `DEAD_LETTER_RETENTION_DAYS` (0: none); returns how
    /// many.
    pub async fn expire_dead_letters(&self) -> u64 {
        match self
            .admin
            .apply_retention(self.cfg.admin.dead_letter_retention_days)
            .await
        {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(
                        deleted = n,
                        days = self.cfg.admin.dead_letter_retention_days,
                        "dead letters past their retention deleted"
                    );
                    metrics::counter!("scheduler_dead_letters_expired_total").increment(n);
                }
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not apply the dead-letter retention");
                0
            }
        }
    }

    /// Republishes the retries that are due (deferred jobs included); returns how many.
    pub async fn republish_due_retries(&self) -> usize {
        let queue = self.queue.clone();
        let n = match self
            .store
            .republish_due_retries(self.cfg.retry_batch, |envs| async move {
                queue.publish_all(&envs).await
            })
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not read due retries");
                0
            }
        };
        metrics::counter!("scheduler_retries_republished_total").increment(n as u64);
        n
    }

    /// One pass. Errors of one step are logged and do not stop the others.
    pub async fn tick(&self) -> TickReport {
        let mut report = TickReport {
            retries_republished: self.republish_due_retries().await,
            ..TickReport::default()
        };
        report.broker_dead_letters_imported = self.import_broker_dead_letters().await;
        report.dead_letters_expired = self
            .last_expired
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        match self
            .store
            .connectors_due_for_metadata(self.cfg.metadata_interval.as_secs_f64())
            .await
        {
            Ok(ids) => {
                for id in ids {
                    if let Ok(Some(c)) = self.store.connector(&id).await {
                        match common::metadata::refresh(&self.store, &self.close, &c).await {
                            Ok(_) => report.metadata_refreshed += 1,
                            Err(e) => {
                                tracing::warn!(connector = %id, error = %e, "connector.metadata.error")
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list connectors"),
        }
        match self
            .store
            .connectors_due_for_status(self.cfg.status_interval.as_secs_f64())
            .await
        {
            Ok(ids) => {
                for id in ids {
                    if self.check_status(&id).await {
                        report.status_checks += 1;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list connectors"),
        }
        report.incoming = self.schedule_incoming().await;
        report
    }

    async fn check_status(&self, id: &str) -> bool {
        let Ok(Some(c)) = self.store.connector(id).await else {
            return false;
        };
        let meta = c
            .metadata
            .as_ref()
            .and_then(|m| serde_json::from_value(m.clone()).ok());
        if let Err(e) = common::status::check_and_publish(
            &self.store,
            &self.close,
            &self.hull,
            &c,
            meta.as_ref(),
        )
        .await
        {
            tracing::warn!(connector = id, error = %e, "could not record the status");
            return false;
        }
        true
    }

    /// Waits for leadership, then ticks until `shutdown`. Leadership is a session advisory lock
    /// on a dedicated connection: when this process dies, Postgres releases it and a waiting
    /// scheduler takes over.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        while !shutdown.is_cancelled() {
            let lock = match self.acquire_leadership(&shutdown).await {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach Postgres for the scheduler lock; retrying");
                    tokio::select! { _ = tokio::time::sleep(self.cfg.tick) => {}, _ = shutdown.cancelled() => {} }
                    continue;
                }
            };
            tracing::info!("this scheduler is active");
            metrics::gauge!("scheduler_active").set(1.0);
            loop {
                let report = self.tick().await;
                if report != TickReport::default() {
                    tracing::info!(?report, "scheduler pass");
                }
                // Between passes, due retries are republished every RETRY_POLL_MS.
                let next_pass = tokio::time::Instant::now() + self.cfg.tick;
                let mut stopped = false;
                loop {
                    let poll = tokio::time::Instant::now() + self.cfg.retry_poll;
                    tokio::select! {
                        _ = tokio::time::sleep_until(poll.min(next_pass)) => {},
                        _ = shutdown.cancelled() => { stopped = true; break; }
                    }
                    if tokio::time::Instant::now() >= next_pass {
                        break;
                    }
                    self.republish_due_retries().await;
                }
                if stopped {
                    break;
                }
                if lock.0.is_closed() {
                    tracing::warn!(
                        "lost the scheduler lock connection; waiting for leadership again"
                    );
                    break;
                }
            }
            metrics::gauge!("scheduler_active").set(0.0);
            drop(lock);
        }
        Ok(())
    }

    async fn acquire_leadership(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>)>, tokio_postgres::Error>
    {
        let (client, conn) = tokio_postgres::connect(&self.cfg.common.database_url, NoTls).await?;
        let handle = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut waiting_logged = false;
        loop {
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY])
                .await?
                .get(0);
            if got {
                return Ok(Some((client, handle)));
            }
            if !waiting_logged {
                tracing::info!("another scheduler is active; waiting to take over");
                waiting_logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.tick) => {},
                _ = shutdown.cancelled() => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A zero poll interval would make the scheduler spin: it is refused, naming the variable.
    #[test]
    fn a_zero_retry_poll_is_refused_naming_the_variable() {
        let vars: HashMap<String, String> = [("LOCAL_MODE", "true"), ("RETRY_POLL_MS", "0")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let err = SchedulerConfig::from_source(&vars)
            .expect_err("0 is refused")
            .to_string();
        assert!(err.contains("RETRY_POLL_MS"), "{err}");
    }
}
