//! Ingest configuration (environment variables).

use std::net::SocketAddr;

use common::config::{self, CommonConfig, ConfigError, Source};

/// Everything ingest needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Shared settings.
    pub common: CommonConfig,
    /// `INGEST_LISTEN`: the connector's HTTP surface (plus `/metrics`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// `HULL_KEY_HOSTS`: hosts whose smart-notifier public-key URLs are trusted.
    pub hull_key_hosts: Vec<String>,
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
    ("INGEST_LISTEN", "127.0.0.1:8082", "address of the connector endpoints"),
    ("HULL_KEY_HOSTS", "(none)", "comma-separated hosts whose notification public-key URLs are trusted"),
    ("HULL_PUBLIC_KEY_PEM", "(none)", "pinned PEM public key of the Hull platform (text or file path)"),
    ("SKIP_SIGNATURE_VERIFICATION", "false", "accept unsigned notifications (local use only)"),
    ("INGEST_MAX_BODY_BYTES", "20971520", "largest request body accepted"),
    ("FLOW_CONTROL_SIZE", "100", "messages per notification asked from Hull"),
    ("FLOW_CONTROL_IN_MS", "1", "delay before the next notification, in ms"),
    ("PUBLISH_BATCH", "500", "jobs published per confirm round trip for /batch"),
    ("CLOSE_WEBHOOK_TOLERANCE_SECS", "300", "accepted distance between a Close webhook's timestamp and now"),
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
        Ok(IngestConfig {
            common: CommonConfig::from_source(src)?,
            listen: config::addr_or(src, "INGEST_LISTEN", "127.0.0.1:8082")?,
            hull_key_hosts: config::list(src, "HULL_KEY_HOSTS"),
            hull_public_key_pem: pem,
            skip_signature_verification: config::bool_or(src, "SKIP_SIGNATURE_VERIFICATION", false)?,
            max_body_bytes: config::positive_or(src, "INGEST_MAX_BODY_BYTES", 20 * 1024 * 1024usize)?,
            flow_control_size: config::positive_or(src, "FLOW_CONTROL_SIZE", 100u32)?,
            flow_control_in_ms: config::parse_or(src, "FLOW_CONTROL_IN_MS", 1u64)?,
            publish_batch: config::positive_or(src, "PUBLISH_BATCH", 500usize)?,
            webhook_tolerance: config::secs_or(src, "CLOSE_WEBHOOK_TOLERANCE_SECS", 300.0)?,
        })
    }
}
