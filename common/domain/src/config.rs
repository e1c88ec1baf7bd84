//! Configuration from environment variables.
//!
//! Every variable has a default for local use. Values are validated when a process starts; a
//! bad value stops it with a [`ConfigError`] that names the variable. `docs/configuration.md`
//! lists every variable; [`describe`] renders the same table for `--help`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;

use crate::allowlist::HostAllowList;

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// The value it had (secrets are not echoed).
    pub value: String,
    /// What was expected.
    pub reason: String,
}

/// Where variables are read from: the process environment, or a map in tests.
pub trait Source {
    /// The value of `name` exactly as set (possibly empty).
    fn raw(&self, name: &str) -> Option<String>;

    /// The value of `name`, if set (an empty string counts as unset).
    fn get(&self, name: &str) -> Option<String> {
        self.raw(name).filter(|v| !v.trim().is_empty())
    }
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env;

impl Source for Env {
    fn raw(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn raw(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Reads a variable with `FromStr`, falling back to `default` when unset.
pub fn parse_or<T: FromStr>(
    src: &dyn Source,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match src.get(var) {
        None => Ok(default),
        Some(raw) => raw.trim().parse::<T>().map_err(|e| ConfigError {
            var,
            value: raw.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Reads an optional variable with `FromStr`.
pub fn parse_opt<T: FromStr>(src: &dyn Source, var: &'static str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match src.get(var) {
        None => Ok(None),
        Some(raw) => raw.trim().parse::<T>().map(Some).map_err(|e| ConfigError {
            var,
            value: raw.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Reads a string, falling back to `default`.
pub fn string_or(src: &dyn Source, var: &'static str, default: &str) -> String {
    src.get(var).unwrap_or_else(|| default.to_string())
}

/// Reads a boolean (`true/false/1/0/yes/no/on/off`).
pub fn bool_or(src: &dyn Source, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match src.get(var) {
        None => Ok(default),
        Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError {
                var,
                value: raw,
                reason: "expected true or false".into(),
            }),
        },
    }
}

/// Reads a positive number, falling back to `default`.
pub fn positive_or<T>(src: &dyn Source, var: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Default + Copy,
    T::Err: std::fmt::Display,
{
    let v = parse_or(src, var, default)?;
    if v <= T::default() {
        return Err(ConfigError {
            var,
            value: src.get(var).unwrap_or_default(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(v)
}

/// Reads a duration given in (possibly fractional) seconds.
pub fn secs_or(src: &dyn Source, var: &'static str, default: f64) -> Result<Duration, ConfigError> {
    let v: f64 = parse_or(src, var, default)?;
    if !v.is_finite() || v < 0.0 {
        return Err(ConfigError {
            var,
            value: v.to_string(),
            reason: "expected a non-negative number of seconds".into(),
        });
    }
    Ok(Duration::from_secs_f64(v))
}

/// Reads a comma-separated list.
pub fn list(src: &dyn Source, var: &'static str) -> Vec<String> {
    src.get(var)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a URL (must parse and be http(s)/amqp/postgres as given in `schemes`).
pub fn url_or(
    src: &dyn Source,
    var: &'static str,
    default: &str,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    let raw = string_or(src, var, default);
    let parsed = url::Url::parse(&raw).map_err(|e| ConfigError {
        var,
        value: redact_url(&raw),
        reason: format!("not a URL: {e}"),
    })?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(ConfigError {
            var,
            value: redact_url(&raw),
            reason: format!("scheme must be one of {}", schemes.join(", ")),
        });
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// A URL with its password replaced, for error messages and logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

/// Settings every binary shares.
#[derive(Clone)]
pub struct CommonConfig {
    /// `DATABASE_URL`
    pub database_url: String,
    /// `DATABASE_POOL_SIZE`
    pub database_pool_size: usize,
    /// `AMQP_URL`
    pub amqp_url: String,
    /// `QUEUE_PREFIX`: names of exchanges and queues start with it.
    pub queue_prefix: String,
    /// `ENCRYPTION_KEY`: 32 bytes, base64; encrypts Close API keys at rest.
    pub encryption_key: [u8; 32],
    /// `ENCRYPTION_KEY_PREVIOUS`: the key before a rotation, still accepted for reading.
    pub encryption_key_previous: Option<[u8; 32]>,
    /// `CLOSE_API_URL`
    pub close_api_url: String,
    /// `CLOSE_RATE_LIMIT_RPS`: requests per second per Close API key, per process.
    pub close_rate_limit_rps: f64,
    /// `CLOSE_RATE_LIMIT_BURST`: requests a key may send at once above the steady rate.
    pub close_rate_limit_burst: u32,
    /// `CLOSE_TIMEOUT_SECS`
    pub close_timeout: Duration,
    /// `HULL_PROTOCOL`: `https` (production) or `http` (the simulator).
    pub hull_protocol: String,
    /// `HULL_FIREHOSE_URL`: overrides the firehose URL derived from the organization.
    pub hull_firehose_url: Option<String>,
    /// `LOG_FORMAT`: `json` or `pretty`.
    pub log_format: String,
    /// `LOCAL_MODE`: a local demo or test run. Allows the development encryption key and an
    /// unset `HULL_ORGANIZATIONS` (then any organization is accepted).
    pub local_mode: bool,
    /// `HULL_ORGANIZATIONS`: the Hull organizations this deployment serves. Empty outside
    /// local mode: nothing is accepted (fail closed).
    pub hull_organizations: HostAllowList,
}

impl std::fmt::Debug for CommonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_pool_size", &self.database_pool_size)
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("queue_prefix", &self.queue_prefix)
            .field("encryption_key", &"***")
            .field("close_api_url", &self.close_api_url)
            .field("close_rate_limit_rps", &self.close_rate_limit_rps)
            .field("hull_protocol", &self.hull_protocol)
            .field("hull_firehose_url", &self.hull_firehose_url)
            .field("local_mode", &self.local_mode)
            .field("hull_organizations", &self.hull_organizations.describe())
            .finish()
    }
}

/// The development key used when `ENCRYPTION_KEY` is unset in local mode. Outside local mode
/// a process refuses to start with it (or without a key).
pub const DEV_ENCRYPTION_KEY: &str = "ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=";

fn parse_key(
    src: &dyn Source,
    var: &'static str,
    default: Option<&str>,
) -> Result<Option<[u8; 32]>, ConfigError> {
    if matches!(src.raw(var), Some(v) if v.trim().is_empty()) {
        return Err(ConfigError {
            var,
            value: String::new(),
            reason: "is set but empty".into(),
        });
    }
    let Some(raw) = src.get(var).or(default.map(str::to_string)) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|e| ConfigError {
            var,
            value: "***".into(),
            reason: format!("not base64: {e}"),
        })?;
    let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| ConfigError {
        var,
        value: "***".into(),
        reason: format!("must decode to 32 bytes, got {}", b.len()),
    })?;
    Ok(Some(key))
}

impl CommonConfig {
    /// Reads and validates the shared variables.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let log_format = string_or(src, "LOG_FORMAT", "pretty");
        if !matches!(log_format.as_str(), "json" | "pretty") {
            return Err(ConfigError {
                var: "LOG_FORMAT",
                value: log_format,
                reason: "expected json or pretty".into(),
            });
        }
        let hull_protocol = string_or(src, "HULL_PROTOCOL", "https");
        if !matches!(hull_protocol.as_str(), "http" | "https") {
            return Err(ConfigError {
                var: "HULL_PROTOCOL",
                value: hull_protocol,
                reason: "expected http or https".into(),
            });
        }
        let queue_prefix = string_or(src, "QUEUE_PREFIX", "closeio");
        if !queue_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError {
                var: "QUEUE_PREFIX",
                value: queue_prefix,
                reason: "only letters, digits, '-', '_' and '.' are allowed".into(),
            });
        }
        let local_mode = bool_or(src, "LOCAL_MODE", false)?;
        let key_default = if local_mode {
            Some(DEV_ENCRYPTION_KEY)
        } else {
            None
        };
        let encryption_key = parse_key(src, "ENCRYPTION_KEY", key_default)?.ok_or_else(|| ConfigError {
            var: "ENCRYPTION_KEY",
            value: String::new(),
            reason: "is required (base64 of 32 random bytes: `openssl rand -base64 32`); set LOCAL_MODE=true for a local demo".into(),
        })?;
        if !local_mode
            && src
                .get("ENCRYPTION_KEY")
                .is_some_and(|k| k.trim() == DEV_ENCRYPTION_KEY)
        {
            return Err(ConfigError {
                var: "ENCRYPTION_KEY",
                value: "***".into(),
                reason: "is the published development key; generate one with `openssl rand -base64 32` (or set LOCAL_MODE=true for a local demo)".into(),
            });
        }
        let orgs = list(src, "HULL_ORGANIZATIONS");
        let hull_organizations = if orgs.is_empty() && local_mode {
            HostAllowList::open()
        } else {
            HostAllowList::parse("HULL_ORGANIZATIONS", &orgs)?
        };
        let hull_firehose_url = match src.get("HULL_FIREHOSE_URL") {
            None => None,
            Some(_) => Some(url_or(src, "HULL_FIREHOSE_URL", "", &["http", "https"])?),
        };
        Ok(CommonConfig {
            database_url: url_or(
                src,
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/closeio_sync",
                &["postgres", "postgresql"],
            )?,
            database_pool_size: positive_or(src, "DATABASE_POOL_SIZE", 16usize)?,
            amqp_url: url_or(
                src,
                "AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                &["amqp", "amqps"],
            )?,
            queue_prefix,
            encryption_key,
            encryption_key_previous: parse_key(src, "ENCRYPTION_KEY_PREVIOUS", None)?,
            close_api_url: url_or(
                src,
                "CLOSE_API_URL",
                "https://api.close.com/api/v1",
                &["http", "https"],
            )?,
            close_rate_limit_rps: positive_or(src, "CLOSE_RATE_LIMIT_RPS", 10.0f64)?,
            close_rate_limit_burst: positive_or(src, "CLOSE_RATE_LIMIT_BURST", 1u32)?,
            close_timeout: secs_or(src, "CLOSE_TIMEOUT_SECS", 30.0)?,
            hull_protocol,
            hull_firehose_url,
            log_format,
            local_mode,
            hull_organizations,
        })
    }

    /// [`Self::from_source`] for a service that talks to Hull (ingest, worker, scheduler):
    /// outside local mode it also needs `HULL_ORGANIZATIONS`, rather than failing closed on
    /// every Hull call later.
    pub fn for_hull_service(src: &dyn Source) -> Result<Self, ConfigError> {
        let c = Self::from_source(src)?;
        if c.hull_organizations.is_empty() {
            return Err(ConfigError {
                var: "HULL_ORGANIZATIONS",
                value: String::new(),
                reason: "is required: the Hull organizations this deployment serves (e.g. *.hullapp.io); set LOCAL_MODE=true for a local demo".into(),
            });
        }
        Ok(c)
    }

    /// Whether the development encryption key is in use (local mode only).
    pub fn uses_dev_key(&self) -> bool {
        parse_key(
            &std::collections::HashMap::new(),
            "ENCRYPTION_KEY",
            Some(DEV_ENCRYPTION_KEY),
        )
        .ok()
        .flatten()
        .is_some_and(|k| k == self.encryption_key)
    }

    /// Logs what local mode relaxes; every binary calls it once at start.
    pub fn warn_if_local(&self, binary: &str) {
        if self.local_mode {
            tracing::warn!(
                binary,
                "LOCAL_MODE is on: development defaults are allowed (never in production)"
            );
        }
        if self.uses_dev_key() {
            tracing::warn!(
                binary,
                "ENCRYPTION_KEY is the development key (local mode only)"
            );
        }
        if self.hull_organizations.is_open() {
            tracing::warn!(binary, "HULL_ORGANIZATIONS is not set: any Hull organization is accepted (local mode only)");
        }
    }
}

/// The shared variables, for `--help` output: (name, default, meaning).
pub const COMMON_VARS: &[(&str, &str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/closeio_sync",
        "Postgres connection URL",
    ),
    ("DATABASE_POOL_SIZE", "16", "connections in the pool"),
    (
        "AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "RabbitMQ URL",
    ),
    (
        "QUEUE_PREFIX",
        "closeio",
        "prefix of exchange and queue names",
    ),
    (
        "LOCAL_MODE",
        "false",
        "local demo/test run: allows the development key and any Hull organization",
    ),
    (
        "ENCRYPTION_KEY",
        "(required; development key in LOCAL_MODE)",
        "base64 of 32 bytes; encrypts Close API keys at rest",
    ),
    (
        "ENCRYPTION_KEY_PREVIOUS",
        "(none)",
        "previous key, still accepted for decryption during a rotation",
    ),
    (
        "CLOSE_API_URL",
        "https://api.close.com/api/v1",
        "Close API base URL",
    ),
    (
        "CLOSE_RATE_LIMIT_RPS",
        "10",
        "Close requests per second per API key in this process",
    ),
    (
        "CLOSE_RATE_LIMIT_BURST",
        "1",
        "Close requests a key may send at once above the steady rate",
    ),
    ("CLOSE_TIMEOUT_SECS", "30", "timeout of one Close request"),
    (
        "HULL_PROTOCOL",
        "https",
        "protocol of the Hull organization's REST API",
    ),
    ("HULL_FIREHOSE_URL", "(derived)", "firehose URL override"),
    (
        "HULL_ORGANIZATIONS",
        "(required; any in LOCAL_MODE)",
        "comma-separated Hull organizations served (host, host:port, *.domain)",
    ),
    ("LOG_FORMAT", "pretty", "json or pretty"),
    ("RUST_LOG", "info", "log filter"),
];

/// Renders variables as an aligned table for `--help`.
pub fn describe(vars: &[(&str, &str, &str)]) -> String {
    let mut out = String::from("Environment variables:\n");
    for (name, default, meaning) in vars {
        out.push_str(&format!("  {name:<28} {meaning} [default: {default}]\n"));
    }
    out
}

/// Parses a listen address variable.
pub fn addr_or(
    src: &dyn Source,
    var: &'static str,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let raw = string_or(src, var, default);
    raw.parse::<SocketAddr>().map_err(|e| ConfigError {
        var,
        value: raw.clone(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    /// Local mode plus the given pairs.
    fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.entry("LOCAL_MODE".into())
            .or_insert_with(|| "true".into());
        m
    }

    #[test]
    fn defaults_are_valid() {
        let c = CommonConfig::from_source(&src(&[])).unwrap();
        assert_eq!(c.queue_prefix, "closeio");
        assert_eq!(c.close_rate_limit_rps, 10.0);
        assert!(c.uses_dev_key());
        assert!(c.hull_organizations.is_open());
    }

    #[test]
    fn outside_local_mode_a_real_key_is_required() {
        let prod = |pairs: &[(&str, &str)]| {
            let mut m = src(pairs);
            m.insert("LOCAL_MODE".into(), "false".into());
            CommonConfig::from_source(&m)
        };
        for pairs in [
            vec![],
            vec![("ENCRYPTION_KEY", "")],
            vec![("ENCRYPTION_KEY", "   ")],
            vec![("ENCRYPTION_KEY", DEV_ENCRYPTION_KEY)],
        ] {
            let err = prod(&pairs)
                .err()
                .unwrap_or_else(|| panic!("{pairs:?} must be refused"));
            assert_eq!(err.var, "ENCRYPTION_KEY", "{pairs:?}");
        }
        // An empty key is an error in local mode too (it is not "unset").
        assert_eq!(
            CommonConfig::from_source(&src(&[("ENCRYPTION_KEY", "")]))
                .unwrap_err()
                .var,
            "ENCRYPTION_KEY"
        );
        let c = prod(&[("ENCRYPTION_KEY", KEY)]).unwrap();
        assert!(!c.uses_dev_key());
        // Fail closed: no organization is allowed until HULL_ORGANIZATIONS lists some.
        assert!(c.hull_organizations.is_empty());
        let c = prod(&[
            ("ENCRYPTION_KEY", KEY),
            ("HULL_ORGANIZATIONS", "*.hullapp.io"),
        ])
        .unwrap();
        assert!(c
            .hull_organizations
            .check_organization("acme.hullapp.io")
            .is_ok());
        assert!(c.hull_organizations.check_organization("evil.com").is_err());
        assert_eq!(
            prod(&[("ENCRYPTION_KEY", KEY), ("HULL_ORGANIZATIONS", "a.com/x")])
                .unwrap_err()
                .var,
            "HULL_ORGANIZATIONS"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            ("DATABASE_POOL_SIZE", "zero"),
            ("DATABASE_POOL_SIZE", "0"),
            ("AMQP_URL", "http://x"),
            ("DATABASE_URL", "not a url"),
            ("CLOSE_RATE_LIMIT_RPS", "-1"),
            ("ENCRYPTION_KEY", "c2hvcnQ="),
            ("LOG_FORMAT", "xml"),
            ("QUEUE_PREFIX", "a b"),
            ("CLOSE_TIMEOUT_SECS", "NaN"),
            ("LOCAL_MODE", "maybe"),
            ("HULL_ORGANIZATIONS", "https://acme.hullapp.io"),
        ];
        for (var, value) in cases {
            let err = CommonConfig::from_source(&src(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn secrets_are_not_echoed() {
        let err = CommonConfig::from_source(&src(&[("ENCRYPTION_KEY", "%%%")])).unwrap_err();
        assert!(!err.to_string().contains("%%%"));
        let c = CommonConfig::from_source(&src(&[("AMQP_URL", "amqp://u:topsecret@h:5672/%2f")]))
            .unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
