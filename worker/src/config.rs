//! Worker configuration (environment variables; see `common::config`).

use std::net::SocketAddr;
use std::time::Duration;

use common::config::{self, CommonConfig, ConfigError, Settings, Source};

/// Everything a worker needs.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonConfig,
    /// Address of /metrics, /healthz and /readyz
    #[arg(env = "WORKER_LISTEN", default_value = "127.0.0.1:9101")]
    pub listen: SocketAddr,
    /// Jobs processed at once (also the RabbitMQ prefetch)
    #[arg(env = "WORKER_CONCURRENCY", default_value = "8", value_parser = config::positive::<usize>)]
    pub concurrency: usize,
    /// Threads of the worker's async runtime. A worker's jobs wait on the network; one thread
    /// runs them with less CPU per job than several (no work stealing, fewer thread wake-ups).
    /// Scale with worker processes, not threads
    #[arg(env = "WORKER_THREADS", default_value = "1", value_parser = config::positive::<usize>)]
    pub threads: usize,
    /// Attempts before a job becomes a dead letter
    #[arg(env = "WORKER_MAX_ATTEMPTS", default_value = "8", value_parser = config::positive::<u32>)]
    pub max_attempts: u32,
    /// Quick in-process retries of a transient failure before the job goes to the retry table
    #[arg(env = "WORKER_INLINE_RETRIES", default_value = "3")]
    pub inline_retries: usize,
    /// First delay of the persisted retry schedule, in seconds (doubles each time)
    #[arg(env = "WORKER_RETRY_BASE_SECS", default_value = "5", value_parser = config::seconds)]
    pub retry_base: Duration,
    /// Longest delay of the persisted retry schedule, in seconds
    #[arg(env = "WORKER_RETRY_MAX_SECS", default_value = "3600", value_parser = config::seconds)]
    pub retry_max: Duration,
    /// On SIGTERM, how long in-flight jobs may take to finish, in seconds
    #[arg(env = "WORKER_DRAIN_SECS", default_value = "30", value_parser = config::seconds)]
    pub drain: Duration,
    /// Seconds an entity lease lasts without renewal: how long others wait for a worker that
    /// died while writing that entity (a live worker renews it every third of this)
    #[arg(env = "WORKER_LEASE_SECS", default_value = "15", value_parser = config::seconds)]
    pub lease: Duration,
    /// Longest wait, in seconds, an outgoing job accepts for its slot in its tenant's Close
    /// budget; a job whose slot is further away is deferred (recorded for later without
    /// burning an attempt) so that it does not hold a place other tenants' jobs could use
    #[arg(env = "WORKER_DEFER_AFTER_SECS", default_value = "0.5", value_parser = config::seconds)]
    pub defer_after: Duration,
    /// Seconds a new lead waits for the contacts of its users before it is created, so that one
    /// POST /lead/ creates it with them nested (0: create at once, contacts one by one)
    #[arg(env = "NEW_LEAD_GATHER_SECS", default_value = "5", value_parser = config::seconds)]
    pub new_lead_gather: Duration,
    /// How long a lead lookup waits for others of the same key to share its Close search, in
    /// ms (0: every lookup searches alone)
    #[arg(env = "LOOKUP_LINGER_MS", default_value = "50", value_parser = config::millis)]
    pub lookup_linger: Duration,
    /// Age in seconds at which cached Close metadata is refreshed on use
    #[arg(env = "METADATA_TTL_SECS", default_value = "3600", value_parser = config::seconds)]
    pub metadata_ttl: Duration,
    /// Entries per Hull firehose call at most (write-backs of concurrent jobs share calls)
    #[arg(env = "FIREHOSE_BATCH_SIZE", default_value = "50", value_parser = config::positive::<usize>)]
    pub firehose_batch: usize,
    /// How long a write-back waits for others to share its firehose call, in ms
    #[arg(env = "FIREHOSE_LINGER_MS", default_value = "20", value_parser = config::millis)]
    pub firehose_linger: Duration,
    /// How long a write-back waits at most for the write-backs its connector's jobs in flight
    /// have announced, in ms
    #[arg(env = "FIREHOSE_LINGER_MAX_MS", default_value = "500", value_parser = config::millis)]
    pub firehose_linger_max: Duration,
}

impl Settings for WorkerConfig {
    fn finish(&mut self, src: &dyn Source) -> Result<(), ConfigError> {
        self.common.finish(src)?;
        self.common.require_organizations()
    }
}

impl WorkerConfig {
    /// Reads and validates the configuration.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        config::load(src)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<WorkerConfig, ConfigError> {
        let mut vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.insert("LOCAL_MODE".into(), "true".into());
        WorkerConfig::from_source(&vars)
    }

    #[test]
    fn one_runtime_thread_unless_told_otherwise() {
        assert_eq!(load(&[]).expect("defaults").threads, 1);
        assert_eq!(load(&[("WORKER_THREADS", "4")]).expect("four").threads, 4);
        for bad in ["0", "two", "-1"] {
            let err = load(&[("WORKER_THREADS", bad)]).expect_err(bad);
            assert_eq!(err.var, "WORKER_THREADS", "{bad}: {err}");
        }
    }
}
