//! Ingest configuration (environment variables).

use std::net::SocketAddr;

use std::time::Duration;

use common::allowlist::HostAllowList;
use common::config::{self, CommonConfig, ConfigError, Source};

/// Where Hull stores extracts by default (`HULL_EXTRACT_HOSTS`).
pub const DEFAULT_EXTRACT_HOSTS: &str = "hull-platform.s3.amazonaws.com";

/// Everything ingest needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Shared settings.
    pub common: CommonConfig,
    /// `INGEST_LISTEN`: the connector's HTTP surface (plus `/metrics`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// `HULL_KEY_HOSTS`: hosts whose smart-notifier public-key URLs are trusted.
    pub hull_key_hosts: HostAllowList,
    /// `HULL_EXTRACT_HOSTS`: hosts `/batch` extracts may be downloaded from (besides the
    /// connector's own organization).
    pub hull_extract_hosts: HostAllowList,
    /// `EXTRACT_MAX_BYTES`: largest extract downloaded.
    pub extract_max_bytes: u64,
    /// `EXTRACT_MAX_LINE_BYTES`: longest line of an extract.
    pub extract_max_line_bytes: usize,
    /// `EXTRACT_CONNECT_TIMEOUT_SECS`.
    pub extract_connect_timeout: Duration,
    /// `EXTRACT_TIMEOUT_SECS`: the whole download.
    pub extract_timeout: Duration,
    /// `NOTIFICATION_MAX_MESSAGES`: most messages accepted in one notification.
    pub notification_max_messages: usize,
    /// `NOTIFICATION_REPLAY_WINDOW_SECS`: how long accepted notification ids are remembered.
    pub notification_replay_window: Duration,
    /// `CLOSE_WEBHOOK_MAX_BYTES`: largest Close webhook body.
    pub webhook_max_bytes: usize,
    /// `INGEST_MAX_CONCURRENT_NOTIFICATIONS`: notifications processed at once.
    pub max_concurrent_notifications: usize,
    /// `INGEST_MAX_CONCURRENT_BATCHES`: `/batch` extracts processed at once.
    pub max_concurrent_batches: usize,
    /// `INGEST_MAX_CONNECTIONS`: open client connections.
    pub max_connections: usize,
    /// `INGEST_HEADER_TIMEOUT_SECS`: time for a client to send a request's headers (and
    /// longest idle keep-alive).
    pub header_timeout: Duration,
    /// `INGEST_BODY_TIMEOUT_SECS`: time for a client to send a request's body.
    pub body_timeout: Duration,
    /// `FLOW_CONTROL_HIGH_WATER`: outgoing queue depth above which Hull is asked to slow down.
    pub flow_control_high_water: u32,
    /// `FLOW_CONTROL_HARD_LIMIT`: outgoing queue depth above which notifications are refused
    /// with `retry`.
    pub flow_control_hard_limit: u32,
    /// `FLOW_CONTROL_BUSY_IN_MS`: delay asked from Hull above the high-water mark.
    pub flow_control_busy_in_ms: u64,
    /// `FLOW_CONTROL_DEPTH_TTL_MS`: how long a queue depth reading is reused.
    pub flow_control_depth_ttl: Duration,
    /// `HULL_PUBLIC_KEY_PEM`: a pinned PEM public key (the text, or a path to a file).
    pub hull_public_key_pem: Option<String>,
    /// `SKIP_SIGNATURE_VERIFICATION`: accept unsigned notifications. Local use only.
    pub skip_signature_verification: bool,
    /// `INGEST_MAX_BODY_BYTES`: largest request body accepted.
    pub max_body_bytes: usize,
    /// `FLOW_CONTROL_SIZE`: messages per notification asked from Hull.
    pub flow_control_size: u32,
    /// `FLOW_CONTROL_IN_MS`: delay asked before the next notification.
    pub flow_control_in_ms: u64,
    /// `PUBLISH_BATCH`: jobs published per confirm round trip for `/batch` extracts.
    pub publish_batch: usize,
    /// `CLOSE_WEBHOOK_TOLERANCE_SECS`: how far a Close webhook's `close-sig-timestamp` may be
    /// from now (older deliveries are refused as replays).
    pub webhook_tolerance: std::time::Duration,
}

/// Ingest-specific variables for `--help`.
pub const VARS: &[(&str, &str, &str)] = &[
    (
        "INGEST_LISTEN",
        "127.0.0.1:8082",
        "address of the connector endpoints",
    ),
    (
        "HULL_KEY_HOSTS",
        "(none)",
        "comma-separated hosts whose notification public-key URLs are trusted",
    ),
    (
        "HULL_EXTRACT_HOSTS",
        DEFAULT_EXTRACT_HOSTS,
        "hosts /batch extracts may be downloaded from (plus the organization)",
    ),
    (
        "EXTRACT_MAX_BYTES",
        "4294967296",
        "largest /batch extract downloaded",
    ),
    (
        "EXTRACT_MAX_LINE_BYTES",
        "4194304",
        "longest line of a /batch extract",
    ),
    (
        "EXTRACT_CONNECT_TIMEOUT_SECS",
        "10",
        "connect timeout of an extract download",
    ),
    (
        "EXTRACT_TIMEOUT_SECS",
        "900",
        "total timeout of an extract download",
    ),
    (
        "NOTIFICATION_MAX_MESSAGES",
        "10000",
        "most messages accepted in one notification",
    ),
    (
        "NOTIFICATION_REPLAY_WINDOW_SECS",
        "86400",
        "how long accepted notification ids are remembered",
    ),
    (
        "INGEST_MAX_CONCURRENT_NOTIFICATIONS",
        "16",
        "notifications processed at once (others wait, then get 503)",
    ),
    (
        "INGEST_MAX_CONCURRENT_BATCHES",
        "2",
        "/batch extracts processed at once",
    ),
    (
        "INGEST_MAX_CONNECTIONS",
        "1024",
        "open client connections (more wait in the listen backlog)",
    ),
    (
        "INGEST_HEADER_TIMEOUT_SECS",
        "10",
        "time to send request headers; longest idle keep-alive",
    ),
    (
        "INGEST_BODY_TIMEOUT_SECS",
        "60",
        "time to send a request body",
    ),
    (
        "HULL_PUBLIC_KEY_PEM",
        "(none)",
        "pinned PEM public key of the Hull platform (text or file path)",
    ),
    (
        "SKIP_SIGNATURE_VERIFICATION",
        "false",
        "accept unsigned notifications (local use only)",
    ),
    (
        "INGEST_MAX_BODY_BYTES",
        "20971520",
        "largest request body accepted",
    ),
    (
        "FLOW_CONTROL_SIZE",
        "100",
        "messages per notification asked from Hull",
    ),
    (
        "FLOW_CONTROL_IN_MS",
        "1",
        "delay before the next notification, in ms",
    ),
    (
        "FLOW_CONTROL_HIGH_WATER",
        "50000",
        "outgoing queue depth above which Hull is asked to slow down",
    ),
    (
        "FLOW_CONTROL_HARD_LIMIT",
        "200000",
        "outgoing queue depth above which notifications get retry (503)",
    ),
    (
        "FLOW_CONTROL_BUSY_IN_MS",
        "5000",
        "delay asked from Hull above the high-water mark",
    ),
    (
        "FLOW_CONTROL_DEPTH_TTL_MS",
        "1000",
        "how long a queue depth reading is reused",
    ),
    (
        "PUBLISH_BATCH",
        "500",
        "jobs published per confirm round trip for /batch",
    ),
    (
        "CLOSE_WEBHOOK_TOLERANCE_SECS",
        "300",
        "accepted distance between a Close webhook's timestamp and now",
    ),
];

impl IngestConfig {
    /// Reads and validates the configuration.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let pem = match src.get("HULL_PUBLIC_KEY_PEM") {
            None => None,
            Some(v) if v.contains("-----BEGIN") => Some(v),
            Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| ConfigError {
                var: "HULL_PUBLIC_KEY_PEM",
                value: path.clone(),
                reason: format!("neither a PEM key nor a readable file: {e}"),
            })?),
        };
        if let Some(p) = &pem {
            if !p.contains("-----BEGIN PUBLIC KEY-----") {
                return Err(ConfigError {
                    var: "HULL_PUBLIC_KEY_PEM",
                    value: "(key)".into(),
                    reason: "must be a PEM public key (-----BEGIN PUBLIC KEY-----)".into(),
                });
            }
        }
        let common = CommonConfig::for_hull_service(src)?;
        let extract_hosts = match src.get("HULL_EXTRACT_HOSTS") {
            Some(_) => config::list(src, "HULL_EXTRACT_HOSTS"),
            None => DEFAULT_EXTRACT_HOSTS
                .split(',')
                .map(str::to_string)
                .collect(),
        };
        let skip_signature_verification =
            config::bool_or(src, "SKIP_SIGNATURE_VERIFICATION", false)?;
        if skip_signature_verification && !common.local_mode {
            return Err(ConfigError {
                var: "SKIP_SIGNATURE_VERIFICATION",
                value: "true".into(),
                reason: "is only allowed with LOCAL_MODE=true".into(),
            });
        }
        let replay_window = config::secs_or(src, "NOTIFICATION_REPLAY_WINDOW_SECS", 86_400.0)?;
        if replay_window < Duration::from_secs(600) {
            return Err(ConfigError {
                var: "NOTIFICATION_REPLAY_WINDOW_SECS",
                value: replay_window.as_secs_f64().to_string(),
                reason:
                    "must be at least 600 (tokens that live longer than the window are refused)"
                        .into(),
            });
        }
        let high_water = config::positive_or(src, "FLOW_CONTROL_HIGH_WATER", 50_000u32)?;
        let hard_limit = config::positive_or(src, "FLOW_CONTROL_HARD_LIMIT", 200_000u32)?;
        if hard_limit < high_water {
            return Err(ConfigError {
                var: "FLOW_CONTROL_HARD_LIMIT",
                value: hard_limit.to_string(),
                reason: format!("must not be below FLOW_CONTROL_HIGH_WATER ({high_water})"),
            });
        }
        Ok(IngestConfig {
            common,
            listen: config::addr_or(src, "INGEST_LISTEN", "127.0.0.1:8082")?,
            hull_key_hosts: HostAllowList::parse(
                "HULL_KEY_HOSTS",
                &config::list(src, "HULL_KEY_HOSTS"),
            )?,
            hull_extract_hosts: HostAllowList::parse("HULL_EXTRACT_HOSTS", &extract_hosts)?,
            extract_max_bytes: config::positive_or(src, "EXTRACT_MAX_BYTES", 4u64 << 30)?,
            extract_max_line_bytes: config::positive_or(
                src,
                "EXTRACT_MAX_LINE_BYTES",
                4usize << 20,
            )?,
            extract_connect_timeout: config::secs_or(src, "EXTRACT_CONNECT_TIMEOUT_SECS", 10.0)?,
            extract_timeout: config::secs_or(src, "EXTRACT_TIMEOUT_SECS", 900.0)?,
            notification_max_messages: config::positive_or(
                src,
                "NOTIFICATION_MAX_MESSAGES",
                10_000usize,
            )?,
            notification_replay_window: replay_window,
            webhook_max_bytes: config::positive_or(src, "CLOSE_WEBHOOK_MAX_BYTES", 1usize << 20)?,
            max_concurrent_notifications: config::positive_or(
                src,
                "INGEST_MAX_CONCURRENT_NOTIFICATIONS",
                16usize,
            )?,
            max_concurrent_batches: config::positive_or(
                src,
                "INGEST_MAX_CONCURRENT_BATCHES",
                2usize,
            )?,
            max_connections: config::positive_or(src, "INGEST_MAX_CONNECTIONS", 1024usize)?,
            header_timeout: config::secs_or(src, "INGEST_HEADER_TIMEOUT_SECS", 10.0)?,
            body_timeout: config::secs_or(src, "INGEST_BODY_TIMEOUT_SECS", 60.0)?,
            flow_control_high_water: high_water,
            flow_control_hard_limit: hard_limit,
            flow_control_busy_in_ms: config::parse_or(src, "FLOW_CONTROL_BUSY_IN_MS", 5000u64)?,
            flow_control_depth_ttl: Duration::from_millis(config::parse_or(
                src,
                "FLOW_CONTROL_DEPTH_TTL_MS",
                1000u64,
            )?),
            hull_public_key_pem: pem,
            skip_signature_verification,
            max_body_bytes: config::positive_or(
                src,
                "INGEST_MAX_BODY_BYTES",
                20 * 1024 * 1024usize,
            )?,
            flow_control_size: config::positive_or(src, "FLOW_CONTROL_SIZE", 100u32)?,
            flow_control_in_ms: config::parse_or(src, "FLOW_CONTROL_IN_MS", 1u64)?,
            publish_batch: config::positive_or(src, "PUBLISH_BATCH", 500usize)?,
            webhook_tolerance: config::secs_or(src, "CLOSE_WEBHOOK_TOLERANCE_SECS", 300.0)?,
        })
    }
}
