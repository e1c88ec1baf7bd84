//! Worker configuration (environment variables).

use std::net::SocketAddr;
use std::time::Duration;

use common::config::{self, CommonConfig, ConfigError, Source};

/// Everything a worker needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shared settings.
    pub common: CommonConfig,
    /// `WORKER_LISTEN`: `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// `WORKER_CONCURRENCY`: jobs processed at once (also the RabbitMQ prefetch).
    pub concurrency: usize,
    /// `WORKER_MAX_ATTEMPTS`: attempts before a job becomes a dead letter.
    pub max_attempts: u32,
    /// `WORKER_INLINE_RETRIES`: quick in-process retries of a transient failure before the job
    /// is handed to the scheduler's retry table.
    pub inline_retries: usize,
    /// `WORKER_RETRY_BASE_SECS`: first delay of the persisted retry schedule (doubles each time).
    pub retry_base: Duration,
    /// `WORKER_RETRY_MAX_SECS`: longest delay of the persisted retry schedule.
    pub retry_max: Duration,
    /// `WORKER_DRAIN_SECS`: on SIGTERM, how long in-flight jobs may take to finish.
    pub drain: Duration,
    /// `METADATA_TTL_SECS`: cached Close metadata older than this is refreshed on use.
    pub metadata_ttl: Duration,
    /// `FIREHOSE_BATCH_SIZE`: entries per firehose call at most (write-backs of concurrent jobs
    /// share calls).
    pub firehose_batch: usize,
    /// `FIREHOSE_LINGER_MS`: how long a write-back waits for others to share its call.
    pub firehose_linger: Duration,
}

/// Worker-specific variables for `--help`.
pub const VARS: &[(&str, &str, &str)] = &[
    (
        "WORKER_LISTEN",
        "127.0.0.1:9101",
        "address of /metrics, /healthz and /readyz",
    ),
    (
        "WORKER_CONCURRENCY",
        "8",
        "jobs processed at once (RabbitMQ prefetch)",
    ),
    (
        "WORKER_MAX_ATTEMPTS",
        "8",
        "attempts before a job becomes a dead letter",
    ),
    (
        "WORKER_INLINE_RETRIES",
        "3",
        "in-process retries of a transient failure",
    ),
    (
        "WORKER_RETRY_BASE_SECS",
        "5",
        "first delay of the persisted retry schedule",
    ),
    (
        "WORKER_RETRY_MAX_SECS",
        "3600",
        "longest delay of the persisted retry schedule",
    ),
    (
        "WORKER_DRAIN_SECS",
        "30",
        "time in-flight jobs get to finish on SIGTERM",
    ),
    (
        "METADATA_TTL_SECS",
        "3600",
        "age at which cached Close metadata is refreshed",
    ),
    (
        "FIREHOSE_BATCH_SIZE",
        "50",
        "entries per Hull firehose call at most",
    ),
    (
        "FIREHOSE_LINGER_MS",
        "20",
        "how long a write-back waits to share a firehose call",
    ),
];

impl WorkerConfig {
    /// Reads and validates the configuration.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(WorkerConfig {
            common: CommonConfig::for_hull_service(src)?,
            listen: config::addr_or(src, "WORKER_LISTEN", "127.0.0.1:9101")?,
            concurrency: config::positive_or(src, "WORKER_CONCURRENCY", 8usize)?,
            max_attempts: config::positive_or(src, "WORKER_MAX_ATTEMPTS", 8u32)?,
            inline_retries: config::parse_or(src, "WORKER_INLINE_RETRIES", 3usize)?,
            retry_base: config::secs_or(src, "WORKER_RETRY_BASE_SECS", 5.0)?,
            retry_max: config::secs_or(src, "WORKER_RETRY_MAX_SECS", 3600.0)?,
            drain: config::secs_or(src, "WORKER_DRAIN_SECS", 30.0)?,
            metadata_ttl: config::secs_or(src, "METADATA_TTL_SECS", 3600.0)?,
            firehose_batch: config::positive_or(src, "FIREHOSE_BATCH_SIZE", 50usize)?,
            firehose_linger: Duration::from_millis(config::parse_or(
                src,
                "FIREHOSE_LINGER_MS",
                20u64,
            )?),
        })
    }
}
