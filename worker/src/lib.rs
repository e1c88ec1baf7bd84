//! The worker: consumes jobs from RabbitMQ, calls Close and the Hull firehose through
//! rate-limited clients, records sync state in Postgres, and acknowledges a message only after
//! its outcome is committed (done, scheduled for retry, parked or dead-lettered).

// A future over 16 KiB is copied whole wherever it is moved (spawned, wrapped, awaited in a
// larger one): box it (see `Worker::run_job`).
#![warn(clippy::large_futures)]

pub mod config;
pub mod fairness;
pub mod firehose_sink;
pub mod first_reads;
pub mod gathering;
pub mod incoming;
pub mod lease;
pub mod lookups;
pub mod outcome;
pub mod outgoing;
pub mod shared_reads;
pub mod tenant;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use common::clients::Clients;
use common::closeio::{CloseClient, CloseError};
use common::error::{Classify, ErrorClass};
use common::hull::{HullClient, HullError};
use common::jobs::{Delivered, Envelope, Job, QueueKind};
use common::metadata::MetadataError;
use common::queue::{Queue, QueueError};
use common::store::{Store, StoreError};

pub use config::WorkerConfig;
pub use outcome::{Action, Outcome};

/// How long a delivery whose outcome could not be recorded is held while Postgres is
/// unreachable, before it goes back to the queue anyway.
pub const STORE_OUTAGE_HOLD: Duration = Duration::from_secs(120);

/// A job failure, classified.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Close failed.
    #[error("Close: {0}")]
    Close(#[from] CloseError),
    /// The Hull platform failed.
    #[error("Hull: {0}")]
    Hull(#[from] HullError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Close metadata could not be had.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The broker failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The job cannot succeed as it is.
    #[error("{0}")]
    Permanent(String),
    /// The connector's settings must be fixed first.
    #[error("{0}")]
    Configuration(String),
    /// The connector is parked (for the reason it carries): the job waits for a fix.
    #[error("connector is parked: {0}")]
    Parked(String),
    /// The job must run again later, without burning an attempt: its tenant's Close budget is
    /// booked further ahead than the job would wait (`booked`: its return was booked in the
    /// budget, see [`fairness`]), or it waits for a new lead's gathering to end.
    #[error("deferred: {}", if booked.is_some() { "the connector's Close budget is busy" } else { "a new lead gathers its contacts" })]
    Deferred {
        /// When to run it again.
        after: Duration,
        /// The endpoint group whose slot was booked for its return (its requests of that
        /// group then wait for their slot), if the budget was busy.
        booked: Option<&'static str>,
    },
    /// Nothing is wrong, but the job must look again later.
    #[error("{reason}")]
    Later {
        /// Why.
        reason: String,
        /// When to look again.
        after: Duration,
    },
}

impl JobError {
    /// Why the connector must be parked: the original reason for a job that found it parked
    /// already (so reasons never nest), the error otherwise.
    pub fn park_reason(&self) -> String {
        match self {
            JobError::Parked(reason) => reason.clone(),
            other => other.to_string(),
        }
    }

    /// A short, bounded label of the kind of failure, recorded with a dead letter so that
    /// operators can group and filter by it.
    pub fn label(&self) -> &'static str {
        match self {
            JobError::Close(e) => e.label(),
            JobError::Hull(_) => "hull",
            JobError::Store(_) => "database",
            JobError::Metadata(_) => "close_metadata",
            JobError::Queue(_) => "broker",
            JobError::Permanent(_) => "invalid_job",
            JobError::Configuration(_) | JobError::Parked(_) => "configuration",
            JobError::Later { .. } | JobError::Deferred { .. } => "later",
        }
    }
}

impl Classify for JobError {
    fn class(&self) -> ErrorClass {
        match self {
            JobError::Close(e) => e.class(),
            JobError::Hull(e) => e.class(),
            JobError::Store(e) => e.class(),
            JobError::Metadata(e) => e.class(),
            JobError::Queue(e) => e.class(),
            JobError::Permanent(_) => ErrorClass::Permanent,
            JobError::Configuration(_) | JobError::Parked(_) => ErrorClass::Configuration,
            JobError::Later { after, .. } | JobError::Deferred { after, .. } => {
                ErrorClass::Retryable {
                    after: Some(*after),
                }
            }
        }
    }
}

/// Why the consume loop must reconnect (not a job's failure).
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The broker connection or a channel failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The broker cancelled a consumer (a queue deleted, a node going down).
    #[error("the broker cancelled the consumer")]
    Cancelled,
}

/// Shared state of the worker's tasks.
pub struct Ctx {
    /// Postgres.
    pub store: Store,
    /// RabbitMQ.
    pub queue: Queue,
    /// Close.
    pub close: CloseClient,
    /// Hull.
    pub hull: HullClient,
    /// Batched firehose writes of the outgoing jobs.
    pub firehose: firehose_sink::FirehoseSink,
    /// Close metadata per connector, parsed once and fetched by one job at a time.
    pub metadata: common::metadata::MetadataCache,
    /// Configuration.
    pub cfg: WorkerConfig,
    /// The outgoing jobs' first reads (sync state, a user's lead), shared by concurrent jobs.
    pub first_reads: first_reads::FirstReads,
    /// Lead lookups shared by concurrent jobs.
    pub lookups: lookups::LeadLookups,
    /// Lookups of new leads made in the background while they gather.
    pub early_lookups: lookups::EarlyLookups,
    /// Jobs in flight in this process (mirrors the `worker_jobs_in_flight` gauge).
    pub in_flight: Arc<std::sync::atomic::AtomicI64>,
    /// One permit per job that may run at once (`WORKER_CONCURRENCY`), whether the jobs came
    /// one per message or bundled.
    pub job_slots: Arc<tokio::sync::Semaphore>,
    /// The tenants loaded, per settings version.
    pub tenants: tenant::TenantCache,
}

/// Counts a job in flight for as long as it lives, however it ends (done, failed, panicked or
/// aborted at the drain deadline), so the gauge cannot drift.
pub struct InFlight(Arc<std::sync::atomic::AtomicI64>);

impl InFlight {
    /// Counts one more job in flight.
    pub fn enter(counter: &Arc<std::sync::atomic::AtomicI64>) -> InFlight {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        metrics::gauge!("worker_jobs_in_flight").increment(1.0);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        metrics::gauge!("worker_jobs_in_flight").decrement(1.0);
    }
}

tokio::task_local! {
    /// The settings version of the connector the current job read (see `store::parking`).
    static SETTINGS_SEEN: std::cell::Cell<Option<i64>>;
    /// The body the current job sent to Close in a write that failed (kept with its dead
    /// letter, for operators).
    static FAILED_BODY: std::cell::RefCell<Option<serde_json::Value>>;
    /// The `retries` row the current job came from and has not cleared yet (see
    /// [`take_retry_row`]).
    static RETRY_ROW: std::cell::Cell<Option<uuid::Uuid>>;
}

/// Takes the `retries` row the current job came from (a retry or a deferral's return), for
/// the commit of its last write to delete in the same statement: the job then has no row left
/// to clear when it ends. `None` for a job that has none (or whose row was taken already).
pub fn take_retry_row() -> Option<uuid::Uuid> {
    RETRY_ROW.try_with(std::cell::Cell::take).ok().flatten()
}

/// Gives back a row taken with [`take_retry_row`] whose commit failed (nothing was deleted).
pub fn put_back_retry_row(row: Option<uuid::Uuid>) {
    if row.is_some() {
        let _ = RETRY_ROW.try_with(|c| c.set(row));
    }
}

/// Records the body of a Close write that failed, for the job's dead letter (called on the
/// failure path only, so a success costs nothing); the first body recorded in a job is kept.
pub fn note_failed_body(body: &serde_json::Map<String, serde_json::Value>) {
    let _ = FAILED_BODY.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.is_none() {
            *b = Some(serde_json::Value::Object(body.clone()));
        }
    });
}

/// Records the settings version the current job works with (called where the connector is
/// read); a configuration error parks the connector only if that version is still current.
pub fn note_settings_version(version: i64) {
    let _ = SETTINGS_SEEN.try_with(|c| c.set(Some(version)));
}

/// The job as it is recorded when deferred: with the group whose slot was `booked` for it, if
/// any (its requests of that group then wait for their slot instead of giving way).
pub fn deferred_envelope(env: &Envelope, booked: Option<&'static str>) -> Envelope {
    let mut next = env.clone();
    next.deferrals += u32::from(booked.is_some());
    if let Some(group) = booked.filter(|g| !next.booked_groups.iter().any(|b| b == g)) {
        next.booked_groups.push(group.to_owned());
    }
    next
}

/// The worker's counters of rare events, exported at 0 from the start (see
/// `common::telemetry::declare_counter`): the failure outcomes of every job kind, split
/// firehose batches, incoming imports, and the Close client's.
fn declare_metrics() {
    use common::telemetry::declare_counter;
    for job in common::jobs::Job::NAMES {
        for outcome in ["retry", "parked", "deferred", "dead", "panicked"] {
            declare_counter("worker_jobs_total", &[("job", job), ("outcome", outcome)]);
        }
    }
    declare_counter(
        "worker_jobs_total",
        &[("job", "unreadable"), ("outcome", "dead")],
    );
    declare_counter("worker_firehose_batches_split_total", &[]);
    for name in [
        "incoming_leads_total",
        "incoming_contacts_total",
        "incoming_pages_total",
    ] {
        declare_counter(name, &[]);
    }
    for kind in ["full", "incremental"] {
        declare_counter("incoming_runs_total", &[("kind", kind)]);
    }
    common::telemetry::declare_close_counters();
}

/// Runs a job's future, turning a panic into an error message instead of losing the job.
pub async fn catch_panic<T>(fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into())
        })
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done: what the job did.
    Done(Outcome),
    /// Scheduled for a later attempt in Postgres.
    Retry,
    /// Parked until the connector's settings are fixed.
    Parked,
    /// Deferred: the tenant's Close budget is busy; it runs again later, same attempt.
    Deferred,
    /// Recorded as a dead letter.
    Dead,
}

/// A worker process (or an in-process worker in tests).
#[derive(Clone)]
pub struct Worker {
    ctx: Arc<Ctx>,
}

impl Worker {
    /// Builds the clients. Connections are opened on demand.
    pub fn new(cfg: WorkerConfig) -> Result<Worker, anyhow::Error> {
        declare_metrics();
        let Clients {
            store,
            queue,
            close,
            hull,
        } = Clients::new(&cfg.common, cfg.common.database_pool_size)?;
        let firehose = firehose_sink::FirehoseSink::spawn(
            hull.clone(),
            cfg.firehose_batch,
            cfg.firehose_linger,
            cfg.firehose_linger_max,
        );
        let first_reads = first_reads::spawn(store.clone());
        let tenants = tenant::TenantCache::new(store.clone());
        let lookups = lookups::LeadLookups::new(close.clone(), cfg.lookup_linger);
        let early_lookups =
            lookups::EarlyLookups::spawn(lookups.clone(), store.clone(), cfg.lookup_linger);
        Ok(Worker {
            ctx: Arc::new(Ctx {
                store,
                queue,
                close,
                hull,
                firehose,
                metadata: common::metadata::MetadataCache::new(),
                first_reads,
                lookups,
                early_lookups,
                job_slots: Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1))),
                cfg,
                in_flight: Arc::new(std::sync::atomic::AtomicI64::new(0)),
                tenants,
            }),
        })
    }

    /// The shared state (tests inspect it).
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Runs one job to its outcome, with in-process retries of transient failures, and records
    /// what must be recorded (retry, parking, dead letter). An `Err` means even that failed
    /// (database or broker down): the message must go back to the queue.
    pub async fn handle(&self, env: Envelope) -> Result<Disposition, JobError> {
        self.handle_ref(&env).await
    }

    async fn handle_ref(&self, env: &Envelope) -> Result<Disposition, JobError> {
        let row = std::cell::Cell::new(env.from_retries.then_some(env.id));
        let scoped = RETRY_ROW.scope(row, self.handle_scoped(env));
        let scoped = FAILED_BODY.scope(Default::default(), scoped);
        SETTINGS_SEEN
            .scope(std::cell::Cell::new(None), scoped)
            .await
    }

    async fn handle_scoped(&self, env: &Envelope) -> Result<Disposition, JobError> {
        let start = Instant::now();
        let job_name = env.job.name();
        let in_flight = InFlight::enter(&self.ctx.in_flight);
        let inline = self.ctx.cfg.inline_retries;
        let result = (|| async {
            // Each attempt records the body of its own failed write (see `note_failed_body`).
            let _ = FAILED_BODY.try_with(|b| b.borrow_mut().take());
            self.run_job(env).await
        })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(30))
                    .with_max_times(inline)
                    .with_jitter(),
            )
            .when(|e: &JobError| {
                !matches!(e, JobError::Deferred { .. })
                    && matches!(e.class(), ErrorClass::Retryable { after } if after.is_none_or(|a| a <= Duration::from_secs(60)))
            })
            .adjust(|e: &JobError, dur| match e.class() {
                ErrorClass::Retryable { after: Some(after) } => Some(dur.map_or(after, |d| d.max(after))),
                _ => dur,
            })
            .notify(|e: &JobError, dur| {
                tracing::warn!(job = job_name, error = %e, retry_in = ?dur, "transient failure, retrying");
            })
            .await;
        drop(in_flight);
        metrics::histogram!("worker_job_duration_seconds", "job" => job_name)
            .record(start.elapsed().as_secs_f64());
        let disposition = match result {
            Ok(outcome) => {
                // A retry row may exist whatever the attempt number (parking and deferrals
                // burn none), so it is cleared whenever the job came from one — unless the
                // commit of its last write deleted it already; a job fresh from ingest has
                // none, and saves the statement.
                if let Some(row) = take_retry_row() {
                    self.ctx.store.clear_retry(row).await?;
                }
                Disposition::Done(outcome)
            }
            Err(e) => self.record_failure(env, &e).await?,
        };
        let label = match &disposition {
            Disposition::Done(outcome) => outcome.label(),
            Disposition::Retry => "retry",
            Disposition::Parked => "parked",
            Disposition::Deferred => "deferred",
            Disposition::Dead => "dead",
        };
        metrics::counter!("worker_jobs_total", "job" => job_name, "outcome" => label).increment(1);
        Ok(disposition)
    }

    /// Each kind of job runs as its own boxed future: the job futures are tens of kilobytes
    /// (every path of a job in one state machine), and unboxed they made every future around
    /// them as large, copied whole at each spawn and wrap (a tenth of a worker's CPU).
    async fn run_job(&self, env: &Envelope) -> Result<Outcome, JobError> {
        let (ctx, cid) = (&self.ctx, env.connector_id.as_str());
        match &env.job {
            Job::OutgoingAccount(m) => {
                Box::pin(fairness::fairly(ctx, env, outgoing::account(ctx, cid, m))).await
            }
            Job::OutgoingUser(m) => {
                Box::pin(fairness::fairly(
                    ctx,
                    env,
                    outgoing::user(ctx, cid, env.id, m),
                ))
                .await
            }
            Job::FetchStart { run_id } => Box::pin(incoming::fetch_start(ctx, cid, *run_id)).await,
            Job::FetchPage {
                run_id,
                window,
                seq,
            } => Box::pin(incoming::fetch_page(ctx, cid, *run_id, *window, *seq)).await,
            Job::RefreshLead { lead_id } => {
                Box::pin(incoming::refresh_lead(ctx, cid, lead_id)).await
            }
            Job::CloseDeleted {
                kind,
                close_id,
                at,
                merged_into,
            } => {
                Box::pin(incoming::close_deleted(
                    ctx,
                    cid,
                    *kind,
                    close_id,
                    at,
                    merged_into.as_deref(),
                ))
                .await
            }
        }
    }

    async fn record_failure(&self, env: &Envelope, e: &JobError) -> Result<Disposition, JobError> {
        let ctx = &self.ctx;
        if let JobError::Deferred { after, booked } = e {
            // Not a failure: no error is recorded and no attempt is burnt.
            let at = Utc::now()
                + chrono::Duration::from_std(*after).unwrap_or_else(|_| chrono::Duration::hours(1));
            let next = deferred_envelope(env, *booked);
            ctx.store.defer(&next, &e.to_string(), at).await?;
            tracing::debug!(job = env.job.name(), after = ?after, "job deferred: its tenant's Close budget is busy");
            return Ok(Disposition::Deferred);
        }
        let error = e.to_string();
        let (kind_event, entity) = match &env.job {
            Job::OutgoingAccount(_) => ("outgoing.account.error", env.job.entity_key()),
            Job::OutgoingUser(_) => ("outgoing.user.error", env.job.entity_key()),
            Job::FetchStart { .. } | Job::FetchPage { .. } => {
                ("incoming.job.error", env.job.entity_key())
            }
            Job::RefreshLead { .. }
            | Job::CloseDeleted {
                kind: common::jobs::EntityKind::Account,
                ..
            } => ("incoming.account.error", env.job.entity_key()),
            Job::CloseDeleted { .. } => ("incoming.user.error", env.job.entity_key()),
        };
        let class = e.class();
        tracing::warn!(entity = ?entity, attempt = env.attempt, class = class.label(), error = %error, "{kind_event}");
        if let Some((kind, hull_id)) = env.job.outgoing_entity() {
            let c = ctx.store.pool().get().await.map_err(StoreError::from)?;
            common::store::save_failure(&c, &env.connector_id, kind, &hull_id, &error, None)
                .await?;
        }
        match class {
            ErrorClass::Permanent => {
                self.dead_letter(env, &error, e.label()).await?;
                Ok(Disposition::Dead)
            }
            ErrorClass::Configuration => {
                match ctx
                    .store
                    .park(
                        env,
                        &e.park_reason(),
                        SETTINGS_SEEN.try_with(|c| c.get()).ok().flatten(),
                    )
                    .await?
                {
                    common::store::Parking::Parked => Ok(Disposition::Parked),
                    // The settings changed while the job ran: it tries again now.
                    common::store::Parking::Rescheduled => Ok(Disposition::Retry),
                }
            }
            ErrorClass::Retryable { after } => {
                let mut next = env.clone();
                next.attempt += 1;
                if next.attempt >= ctx.cfg.max_attempts {
                    // Recorded with the attempt that failed last, so the dead letter counts
                    // the attempts made (`attempt + 1`), not one more.
                    self.dead_letter(
                        env,
                        &format!("gave up after {} attempts: {error}", next.attempt),
                        e.label(),
                    )
                    .await?;
                    return Ok(Disposition::Dead);
                }
                let delay = retry_delay(&ctx.cfg, next.attempt, after);
                let at = Utc::now()
                    + chrono::Duration::from_std(delay)
                        .unwrap_or_else(|_| chrono::Duration::hours(1));
                ctx.store.schedule_retry(&next, &error, at, false).await?;
                Ok(Disposition::Retry)
            }
        }
    }

    async fn dead_letter(
        &self,
        env: &Envelope,
        error: &str,
        error_class: &str,
    ) -> Result<(), JobError> {
        let body = FAILED_BODY
            .try_with(|b| b.borrow_mut().take())
            .ok()
            .flatten();
        let id = self
            .ctx
            .store
            .dead_letter(env, error, error_class, body.as_ref())
            .await?;
        // The Postgres record is the source of truth; the DLQ copy feeds broker-side tooling.
        if let Err(e) = self.ctx.queue.publish_dead(&env.to_bytes(), error).await {
            tracing::warn!(dead_letter = %id, error = %e, "dead letter recorded in Postgres but not copied to the dead-letter queue");
        }
        tracing::error!(dead_letter = %id, job = env.job.name(), error, "job dead-lettered");
        Ok(())
    }

    /// Records a job that cannot be read as a dead letter (and copies it to the dead-letter
    /// queue).
    async fn record_unreadable(
        &self,
        bytes: &[u8],
        e: &serde_json::Error,
    ) -> Result<(), StoreError> {
        let error = format!("unreadable job: {e}");
        let id = self.ctx.store.dead_letter_unreadable(bytes, &error).await?;
        tracing::error!(dead_letter = %id, error = %e, "unreadable job: recorded as a dead letter");
        if let Err(qe) = self.ctx.queue.publish_dead(bytes, &error).await {
            tracing::warn!(dead_letter = %id, error = %qe, "unreadable job recorded in Postgres but not copied to the dead-letter queue");
        }
        metrics::counter!("worker_jobs_total", "job" => "unreadable", "outcome" => "dead")
            .increment(1);
        Ok(())
    }

    /// Returns a delivery to the queue once Postgres answers again: every requeue counts
    /// against the broker's delivery limit, so an outage must not burn its deliveries (and
    /// the prefetch window stops the intake meanwhile).
    async fn requeue_after_outage(&self, delivery: &lapin::message::Delivery) {
        self.wait_for_store().await;
        let _ = delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await;
    }

    /// Runs one job of a delivery to its recorded outcome; a panic is recorded as a dead
    /// letter. `Err` (with the job): its outcome could not be recorded.
    async fn run_delivered(&self, env: Envelope) -> Result<(), Box<Envelope>> {
        let copy = env;
        let outcome = match catch_panic(Box::pin(self.handle_ref(&copy))).await {
            Ok(outcome) => outcome,
            Err(panic) => {
                // A bug, not bad luck: keep the job as a dead letter instead of leaving the
                // delivery unacked (or redelivering it into the same panic).
                tracing::error!(job = copy.job.name(), connector = %copy.connector_id, panic = %panic, "job panicked");
                metrics::counter!("worker_jobs_total", "job" => copy.job.name(), "outcome" => "panicked").increment(1);
                self.dead_letter(&copy, &format!("the job panicked: {panic}"), "panicked")
                    .await
                    .map(|_| Disposition::Dead)
            }
        };
        outcome.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, job = copy.job.name(), "could not record the job's outcome");
            Box::new(copy)
        })
    }

    /// Handles one delivery: one job, or a bundle of them (see `jobs::bundle_messages`). Each
    /// job runs in a place of [`Ctx::job_slots`]. Returns how many jobs it held.
    async fn handle_delivery(&self, delivery: lapin::message::Delivery) -> usize {
        let items = match Delivered::read(&delivery.data) {
            Delivered::One(Ok(env)) => {
                let slot = self.ctx.job_slots.acquire().await;
                let result = self.run_delivered(env).await;
                drop(slot);
                match result {
                    Ok(()) => ack_without_waiting(&delivery),
                    Err(_) => self.requeue_after_outage(&delivery).await,
                }
                return 1;
            }
            Delivered::One(Err(e)) => {
                match self.record_unreadable(&delivery.data, &e).await {
                    Ok(()) => ack_without_waiting(&delivery),
                    Err(se) => {
                        tracing::error!(error = %se, "could not record an unreadable job; returning it to the queue");
                        self.requeue_after_outage(&delivery).await;
                    }
                }
                return 1;
            }
            Delivered::Bundle(items) => items,
        };
        let count = items.len();
        let mut envs = Vec::with_capacity(count);
        for item in items {
            match item {
                Ok(env) => envs.push(env),
                // One job that cannot be read does not keep the others from running.
                Err(bad) => {
                    if let Err(se) = self.record_unreadable(&bad.bytes, &bad.error).await {
                        tracing::error!(error = %se, "could not record an unreadable job; returning its bundle to the queue");
                        self.requeue_after_outage(&delivery).await;
                        return count;
                    }
                }
            }
        }
        if delivery.redelivered {
            // A bundle delivered before (its worker died or lost its connection) is split
            // into messages of one job each: a job that crashes workers then reaches the
            // broker's delivery limit alone, without its bundle's other jobs.
            match self.ctx.queue.publish_each(&envs).await {
                Ok(()) => ack_without_waiting(&delivery),
                Err(e) => {
                    tracing::warn!(error = %e, "could not split a redelivered bundle; returning it to the queue");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                }
            }
            return count;
        }
        // The bundle's new accounts and users take their first pass together, in one place
        // (see `gathering::defer_bundle`).
        let envs = {
            let _slot = self.ctx.job_slots.acquire().await;
            gathering::defer_bundle(&self.ctx, envs).await
        };
        let slots = &self.ctx.job_slots;
        let unrecorded: Vec<Envelope> = futures::stream::iter(envs)
            .map(|env| async move {
                let _slot = slots.acquire().await;
                self.run_delivered(env).await.err()
            })
            // At least 1: with 0, an empty bundle (`[]`) would never finish.
            .buffer_unordered(count.max(1))
            .filter_map(|e| async move { e.map(|e| *e) })
            .collect()
            .await;
        if unrecorded.is_empty() {
            ack_without_waiting(&delivery);
            return count;
        }
        // The jobs whose outcome could not be recorded go back to the queue on their own once
        // Postgres answers again (the others are done); the bundle, if even that fails.
        self.wait_for_store().await;
        match self.ctx.queue.publish_each(&unrecorded).await {
            Ok(()) => ack_without_waiting(&delivery),
            Err(e) => {
                tracing::warn!(error = %e, "could not republish a bundle's unrecorded jobs; returning the bundle to the queue");
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
        }
        count
    }

    /// Waits (with backoff, at most [`STORE_OUTAGE_HOLD`]) until Postgres answers again.
    async fn wait_for_store(&self) {
        let deadline = Instant::now() + STORE_OUTAGE_HOLD;
        let mut pause = Duration::from_millis(250);
        loop {
            tokio::time::sleep(pause).await;
            if self.ctx.store.ping().await.is_ok() || Instant::now() >= deadline {
                return;
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Processes jobs until every queue is empty and nothing is in flight (tests and one-shot
    /// runs). Returns how many jobs were handled (a bundle counts its jobs).
    pub async fn run_until_idle(&self) -> Result<usize, JobError> {
        let conn = self.ctx.queue.open_connection().await?;
        let ch = conn.create_channel().await.map_err(QueueError::from)?;
        let mut handled = 0;
        let mut tasks = JoinSet::new();
        loop {
            let mut got_any = false;
            for kind in [QueueKind::Outgoing, QueueKind::Incoming] {
                while tasks.len() < self.ctx.cfg.concurrency {
                    match self.ctx.queue.get(&ch, kind).await? {
                        Some(d) => {
                            got_any = true;
                            let me = self.clone();
                            tasks.spawn(async move { me.handle_delivery(d).await });
                        }
                        None => break,
                    }
                }
            }
            if !got_any || tasks.len() >= self.ctx.cfg.concurrency {
                match tasks.join_next().await {
                    Some(jobs) => handled += jobs.unwrap_or(0),
                    None => break,
                }
            }
        }
        let _ = conn.close(200, "idle".into()).await;
        Ok(handled)
    }

    /// Consumes until `shutdown` is cancelled, rebuilding the connection when it drops. On
    /// shutdown it stops consuming, lets in-flight jobs finish (up to the drain deadline) and
    /// returns.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ConsumeError> {
        let mut backoff = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            match self.consume_once(&shutdown).await {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "RabbitMQ connection lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = shutdown.cancelled() => {},
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        Ok(())
    }

    async fn consume_once(&self, shutdown: &CancellationToken) -> Result<(), ConsumeError> {
        let conn = self.ctx.queue.open_connection().await?;
        self.ctx.queue.declare_topology().await?;
        let prefetch = u16::try_from(self.ctx.cfg.concurrency).unwrap_or(u16::MAX);
        let tag = format!("worker-{}", uuid::Uuid::new_v4());
        let mut streams = Vec::new();
        let mut channels = Vec::new();
        for kind in QueueKind::ALL {
            let ctag = format!("{tag}-{}", kind.as_str());
            let (ch, consumer) = self.ctx.queue.consume(&conn, kind, prefetch, &ctag).await?;
            channels.push((ch, ctag));
            streams.push(consumer);
        }
        tracing::info!(prefetch, "consuming");
        let mut merged = futures::stream::select_all(streams);
        let mut tasks = JoinSet::new();
        let result = loop {
            // At most `concurrency` deliveries taken (the prefetch window), and at most
            // `concurrency` jobs running (`Ctx::job_slots`), a bundle's included.
            while tasks.len() >= self.ctx.cfg.concurrency {
                tasks.join_next().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {},
                next = merged.next() => match next {
                    Some(Ok(delivery)) => {
                        let me = self.clone();
                        tasks.spawn(async move { me.handle_delivery(delivery).await });
                    }
                    Some(Err(e)) => break Err(ConsumeError::Queue(e.into())),
                    None => break Err(ConsumeError::Cancelled),
                },
            }
        };
        // Stop taking new work, finish what is in flight (acks need the channels open).
        for (ch, ctag) in &channels {
            let _ = ch
                .basic_cancel(
                    ctag.as_str().into(),
                    lapin::options::BasicCancelOptions::default(),
                )
                .await;
        }
        let drain = self.ctx.cfg.drain;
        if tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                ?drain,
                "drain deadline passed; unfinished jobs will be redelivered"
            );
            tasks.abort_all();
        }
        let _ = conn.close(200, "bye".into()).await;
        result
    }
}

/// Acknowledges a finished job's delivery without waiting for lapin's I/O thread to have sent
/// the frame: the ack is queued at once (in order, before anything the channel does next), and
/// the job is done either way — an ack that never reaches the broker only redelivers an
/// idempotent job. Waiting cost every job a wake-up from that thread.
fn ack_without_waiting(delivery: &lapin::message::Delivery) {
    if let Some(Err(e)) = delivery.ack(BasicAckOptions::default()).now_or_never() {
        tracing::warn!(error = %e, "ack failed; the job will be redelivered (it is idempotent)");
    }
}

/// The persisted retry delay: exponential from the base, capped, with jitter, and never
/// shorter than what the remote side asked for.
pub fn retry_delay(cfg: &WorkerConfig, attempt: u32, after: Option<Duration>) -> Duration {
    let exp = cfg.retry_base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = exp.min(cfg.retry_max.as_secs_f64());
    let jittered = capped * rand::thread_rng().gen_range(0.8..1.2);
    Duration::from_secs_f64(jittered).max(after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[tokio::test]
    async fn a_panicking_job_is_caught_with_its_message() {
        let r: Result<(), String> = catch_panic(async { panic!("boom in a job") }).await;
        assert_eq!(r.unwrap_err(), "boom in a job");
        let r = catch_panic(async { panic!("{} formatted", 7) })
            .await
            .map(|_: ()| ());
        assert_eq!(r.unwrap_err(), "7 formatted");
        assert_eq!(catch_panic(async { 5 }).await, Ok(5));
    }

    #[tokio::test]
    async fn the_in_flight_count_survives_panics_and_aborts() {
        let counter = Arc::new(AtomicI64::new(0));
        // Aborted mid-job (the drain deadline).
        let c = counter.clone();
        let task = tokio::spawn(async move {
            let _guard = InFlight::enter(&c);
            futures::future::pending::<()>().await;
        });
        while counter.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        // Panicked mid-job.
        let c = counter.clone();
        let _ = catch_panic(async move {
            let _guard = InFlight::enter(&c);
            panic!("boom");
        })
        .await;
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }
}
