//! Ingest configuration (environment variables; see `common::config`).

use std::net::SocketAddr;
use std::time::Duration;

use common::allowlist::HostAllowList;
use common::config::{self, CommonConfig, ConfigError, Settings, Source};

/// Where Hull stores extracts by default (`HULL_EXTRACT_HOSTS`).
pub const DEFAULT_EXTRACT_HOSTS: &str = "hull-platform.s3.amazonaws.com";

/// Everything ingest needs.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestConfig {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonConfig,
    /// Address of the connector endpoints (and /metrics, /healthz, /readyz)
    #[arg(env = "INGEST_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    /// Comma-separated hosts whose notification public-key URLs are trusted
    #[arg(env = "HULL_KEY_HOSTS", default_value = "", value_parser = config::host_list)]
    pub hull_key_hosts: HostAllowList,
    /// Hosts /batch extracts may be downloaded from (besides the connector's organization)
    #[arg(env = "HULL_EXTRACT_HOSTS", default_value = DEFAULT_EXTRACT_HOSTS, value_parser = config::host_list)]
    pub hull_extract_hosts: HostAllowList,
    /// Largest /batch extract downloaded, in bytes
    #[arg(env = "EXTRACT_MAX_BYTES", default_value = "4294967296", value_parser = config::positive::<u64>)]
    pub extract_max_bytes: u64,
    /// Longest line of a /batch extract, in bytes
    #[arg(env = "EXTRACT_MAX_LINE_BYTES", default_value = "4194304", value_parser = config::positive::<usize>)]
    pub extract_max_line_bytes: usize,
    /// Connect timeout of an extract download, in seconds
    #[arg(env = "EXTRACT_CONNECT_TIMEOUT_SECS", default_value = "10", value_parser = config::seconds)]
    pub extract_connect_timeout: Duration,
    /// Total timeout of an extract download, in seconds
    #[arg(env = "EXTRACT_TIMEOUT_SECS", default_value = "900", value_parser = config::seconds)]
    pub extract_timeout: Duration,
    /// Most messages accepted in one notification
    #[arg(env = "NOTIFICATION_MAX_MESSAGES", default_value = "10000", value_parser = config::positive::<usize>)]
    pub notification_max_messages: usize,
    /// How long accepted notification ids are remembered, in seconds (at least 600)
    #[arg(env = "NOTIFICATION_REPLAY_WINDOW_SECS", default_value = "86400", value_parser = replay_window)]
    pub notification_replay_window: Duration,
    /// Largest Close webhook body, in bytes
    #[arg(env = "CLOSE_WEBHOOK_MAX_BYTES", default_value = "1048576", value_parser = config::positive::<usize>)]
    pub webhook_max_bytes: usize,
    /// Notifications processed at once (others wait, then get 503)
    #[arg(env = "INGEST_MAX_CONCURRENT_NOTIFICATIONS", default_value = "16", value_parser = config::positive::<usize>)]
    pub max_concurrent_notifications: usize,
    /// /batch extracts processed at once
    #[arg(env = "INGEST_MAX_CONCURRENT_BATCHES", default_value = "2", value_parser = config::positive::<usize>)]
    pub max_concurrent_batches: usize,
    /// Open client connections (more wait in the listen backlog)
    #[arg(env = "INGEST_MAX_CONNECTIONS", default_value = "1024", value_parser = config::positive::<usize>)]
    pub max_connections: usize,
    /// Time for a client to send a request's headers (and longest idle keep-alive), in seconds
    #[arg(env = "INGEST_HEADER_TIMEOUT_SECS", default_value = "10", value_parser = config::seconds)]
    pub header_timeout: Duration,
    /// Time for a client to send a request's body, in seconds
    #[arg(env = "INGEST_BODY_TIMEOUT_SECS", default_value = "60", value_parser = config::seconds)]
    pub body_timeout: Duration,
    /// Outgoing queue depth above which Hull is asked to slow down
    #[arg(env = "FLOW_CONTROL_HIGH_WATER", default_value = "50000", value_parser = config::positive::<u32>)]
    pub flow_control_high_water: u32,
    /// Outgoing queue depth above which notifications are refused with retry (503)
    #[arg(env = "FLOW_CONTROL_HARD_LIMIT", default_value = "200000", value_parser = config::positive::<u32>)]
    pub flow_control_hard_limit: u32,
    /// Delay asked from Hull above the high-water mark, in ms
    #[arg(env = "FLOW_CONTROL_BUSY_IN_MS", default_value = "5000")]
    pub flow_control_busy_in_ms: u64,
    /// How long a queue depth reading is reused, in ms
    #[arg(env = "FLOW_CONTROL_DEPTH_TTL_MS", default_value = "1000", value_parser = config::millis)]
    pub flow_control_depth_ttl: Duration,
    /// A pinned PEM public key of the Hull platform (the text, or a path to a file)
    #[arg(env = "HULL_PUBLIC_KEY_PEM", value_parser = pem_key)]
    pub hull_public_key_pem: Option<String>,
    /// Accept unsigned notifications (LOCAL_MODE only)
    #[arg(env = "SKIP_SIGNATURE_VERIFICATION", default_value = "false", action = config::BOOL, value_parser = config::boolean())]
    pub skip_signature_verification: bool,
    /// Largest request body accepted, in bytes
    #[arg(env = "INGEST_MAX_BODY_BYTES", default_value = "20971520", value_parser = config::positive::<usize>)]
    pub max_body_bytes: usize,
    /// Messages per notification asked from Hull
    #[arg(env = "FLOW_CONTROL_SIZE", default_value = "100", value_parser = config::positive::<u32>)]
    pub flow_control_size: u32,
    /// Delay asked before the next notification, in ms
    #[arg(env = "FLOW_CONTROL_IN_MS", default_value = "1")]
    pub flow_control_in_ms: u64,
    /// Jobs published per confirm round trip for /batch extracts
    #[arg(env = "PUBLISH_BATCH", default_value = "500", value_parser = config::positive::<usize>)]
    pub publish_batch: usize,
    /// Accepted distance between a Close webhook's timestamp and now, in seconds
    #[arg(env = "CLOSE_WEBHOOK_TOLERANCE_SECS", default_value = "300", value_parser = config::seconds)]
    pub webhook_tolerance: Duration,
}

/// `NOTIFICATION_REPLAY_WINDOW_SECS`: tokens that live longer than the window are refused, so
/// it must cover Hull's token lifetime.
fn replay_window(raw: &str) -> Result<Duration, String> {
    let window = config::seconds(raw)?;
    if window < Duration::from_secs(600) {
        return Err(
            "must be at least 600 (tokens that live longer than the window are refused)".into(),
        );
    }
    Ok(window)
}

/// `HULL_PUBLIC_KEY_PEM`: the PEM text, or a path to a file holding it.
fn pem_key(raw: &str) -> Result<String, String> {
    let pem = if raw.contains("-----BEGIN") {
        raw.to_string()
    } else {
        std::fs::read_to_string(raw)
            .map_err(|e| format!("neither a PEM key nor a readable file: {e}"))?
    };
    if !pem.contains("-----BEGIN PUBLIC KEY-----") {
        return Err("must be a PEM public key (-----BEGIN PUBLIC KEY-----)".into());
    }
    Ok(pem)
}

impl Settings for IngestConfig {
    fn finish(&mut self, src: &dyn Source) -> Result<(), ConfigError> {
        self.common.finish(src)?;
        self.common.require_organizations()?;
        if self.skip_signature_verification && !self.common.local_mode {
            return Err(ConfigError {
                var: "SKIP_SIGNATURE_VERIFICATION",
                value: "true".into(),
                reason: "is only allowed with LOCAL_MODE=true".into(),
            });
        }
        if self.flow_control_hard_limit < self.flow_control_high_water {
            return Err(ConfigError {
                var: "FLOW_CONTROL_HARD_LIMIT",
                value: self.flow_control_hard_limit.to_string(),
                reason: format!(
                    "must not be below FLOW_CONTROL_HIGH_WATER ({})",
                    self.flow_control_high_water
                ),
            });
        }
        Ok(())
    }
}

impl IngestConfig {
    /// Reads and validates the configuration.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        config::load(src)
    }
}
