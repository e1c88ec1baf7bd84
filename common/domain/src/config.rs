//! Configuration from environment variables, declared once.
//!
//! Each group of settings is a struct deriving [`clap::Args`]: every field names its variable
//! (`env = "..."`), its default and its parser, and its doc comment is the `--help` text. That
//! declaration is the only one: [`load`] reads it from a [`Source`] (the process environment, or
//! a map in tests), `--help` prints it, and a test checks `docs/configuration.md` against it.
//! Values are validated when a process starts; a bad value stops it with a [`ConfigError`] that
//! names the variable. Checks that involve several variables live in [`Settings::finish`].
//!
//! An empty variable counts as unset. Each variable can also be given as a flag named after it
//! (`WORKER_CONCURRENCY` is `--worker-concurrency`); a flag wins over the environment.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue};
use clap::ArgAction;

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

impl Source for HashMap<String, String> {
    fn raw(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// A group of settings: a [`clap::Args`] struct whose every argument declares its variable,
/// plus the checks that involve several variables.
pub trait Settings: clap::Args + clap::FromArgMatches + Sized {
    /// Checks and derived values across variables, run once every value has parsed. `src` is
    /// where the values came from (to tell "set but empty" from "unset" where that matters).
    fn finish(&mut self, _src: &dyn Source) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// `WORKER_CONCURRENCY` → `worker-concurrency`.
fn flag_name(var: &str) -> String {
    var.to_ascii_lowercase().replace('_', "-")
}

/// The command of `T` for binary `bin`: each argument's flag and value name come from its
/// variable. Panics if an argument declares no variable (a programming error, caught by the
/// tests of every settings group).
pub fn command<T: Settings>(bin: &'static str) -> clap::Command {
    T::augment_args(clap::Command::new(bin))
        .mut_args(|a| {
            let var = a
                .get_env()
                .and_then(|e| e.to_str())
                .map(str::to_string)
                .unwrap_or_else(|| panic!("setting {} declares no variable", a.get_id()));
            a.long(flag_name(&var))
                .value_name(var)
                .hide_env_values(true)
        })
        .args_override_self(true)
}

/// One declared variable, for `--help`, docs and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// Its default as written, if it has one.
    pub default: Option<String>,
    /// What it means (the field's doc comment).
    pub help: String,
}

/// Every variable `T` declares, in declaration order.
pub fn variables<T: Settings>() -> Vec<Variable> {
    command::<T>("closeio")
        .get_arguments()
        .filter_map(|a| {
            Some(Variable {
                name: a.get_env()?.to_str()?.to_string(),
                default: a
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned()),
                help: a.get_help().map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Renders variables as an aligned table (for `--help` of a binary that has its own flags).
pub fn describe(vars: &[Variable]) -> String {
    let mut out = String::from("Environment variables:\n");
    for v in vars {
        let default = v.default.as_deref().unwrap_or("none");
        out.push_str(&format!(
            "  {:<28} {} [default: {default}]\n",
            v.name, v.help
        ));
    }
    out
}

/// Why [`load_with_args`] did not give settings.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A variable's value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line asked for `--help`: print this (every variable with its flag, default
    /// and meaning) and exit successfully.
    #[error("{0}")]
    Help(String),
    /// The command line asked for `--help` or `--version`, or is invalid: print it (clap
    /// renders it) and exit with its code.
    #[error("{0}")]
    Cli(clap::Error),
}

/// Reads `T` from `src`.
pub fn load<T: Settings>(src: &dyn Source) -> Result<T, ConfigError> {
    match load_with_args::<T>("closeio", None, src, Vec::new()) {
        Ok(t) => Ok(t),
        Err(LoadError::Config(e)) => Err(e),
        Err(LoadError::Help(_)) => Err(ConfigError {
            var: "(command line)",
            value: String::new(),
            reason: "help was asked for".into(),
        }),
        Err(LoadError::Cli(e)) => Err(ConfigError {
            var: "(command line)",
            value: String::new(),
            reason: e.to_string(),
        }),
    }
}

/// Reads `T` from `src` and from command-line flags `cli` (which win), for binary `bin`.
pub fn load_with_args<T: Settings>(
    bin: &'static str,
    about: Option<&'static str>,
    src: &dyn Source,
    cli: Vec<OsString>,
) -> Result<T, LoadError> {
    let declared = command::<T>(bin).version(env!("CARGO_PKG_VERSION"));
    let declared = match about {
        Some(text) => declared.about(text),
        None => declared,
    };
    let mut declared = declared;
    if cli.iter().any(|a| a == "--help" || a == "-h") {
        // Help whatever the environment holds (even a value that would not parse).
        return Err(LoadError::Help(declared.render_long_help().to_string()));
    }
    let mut argv: Vec<OsString> = vec![bin.into()];
    let mut given: HashMap<String, String> = HashMap::new();
    for arg in declared.get_arguments() {
        let (Some(var), Some(flag)) = (arg.get_env().and_then(|e| e.to_str()), arg.get_long())
        else {
            continue;
        };
        if let Some(value) = src.get(var) {
            argv.push(format!("--{flag}={}", value.trim()).into());
            given.insert(var.to_string(), value);
        }
    }
    let from_cli = !cli.is_empty();
    argv.extend(cli);
    // Values come from `src` only: the process environment is read through `Env`, so that
    // tests never see it and an empty variable counts as unset.
    let parser = declared.mut_args(|a| a.env(None::<&'static str>));
    let matches = match parser.clone().try_get_matches_from(argv) {
        Ok(m) => m,

        Err(e) => return Err(clap_error(&parser, &given, from_cli, e)),
    };
    let mut settings =
        T::from_arg_matches(&matches).map_err(|e| clap_error(&parser, &given, from_cli, e))?;
    settings.finish(src)?;
    Ok(settings)
}

/// Turns a parse error into a [`ConfigError`] naming the variable, or keeps it as a command-line
/// answer (help, version, an unknown flag).
fn clap_error(
    cmd: &clap::Command,
    given: &HashMap<String, String>,
    from_cli: bool,
    e: clap::Error,
) -> LoadError {
    use clap::error::ErrorKind;
    let invalid_arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let var = invalid_arg.as_deref().and_then(|s| {
        cmd.get_arguments()
            .filter_map(|a| a.get_long())
            .find(|flag| s.starts_with(&format!("--{flag} ")) || *s == format!("--{flag}"))
            .map(|flag| flag.to_ascii_uppercase().replace('-', "_"))
    });
    let value_error = matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    );
    match var {
        Some(var) if value_error && (!from_cli || given.contains_key(&var)) => {
            let reason = match std::error::Error::source(&e) {
                Some(inner) => inner.to_string(),
                None => match e.get(ContextKind::ValidValue) {
                    Some(ContextValue::Strings(v)) => format!("expected one of: {}", v.join(", ")),
                    _ => e.kind().to_string(),
                },
            };
            let raw = given.get(&var).cloned().unwrap_or_default();
            LoadError::Config(ConfigError {
                value: shown_value(&var, &raw),
                // Error paths only, once per failed start: the name must outlive the command.
                var: Box::leak(var.into_boxed_str()),
                reason,
            })
        }
        _ => LoadError::Cli(e),
    }
}

/// A value as it may appear in an error message: secrets are never echoed, URLs lose their
/// password.
fn shown_value(var: &str, raw: &str) -> String {
    if ["KEY", "TOKEN", "SECRET", "PASSWORD"]
        .iter()
        .any(|w| var.contains(w))
        && !var.ends_with("_HOSTS")
    {
        "***".into()
    } else {
        redact_url(raw)
    }
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

// ----- value parsers (used in `value_parser = ...` of the settings structs) -----

/// A number greater than zero.
pub fn positive<T>(s: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Default,
    T::Err: Display,
{
    let v: T = s.parse().map_err(|e: T::Err| e.to_string())?;
    if v <= T::default() {
        return Err("must be greater than zero".into());
    }
    Ok(v)
}

/// A duration in (possibly fractional) seconds, not negative.
pub fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|e: std::num::ParseFloatError| e.to_string())?;
    if !v.is_finite() || v < 0.0 {
        return Err("expected a non-negative number of seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

/// A duration in whole milliseconds.
pub fn millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| e.to_string())
}

/// A duration in whole milliseconds, at least one (an interval a loop sleeps for).
pub fn positive_millis(s: &str) -> Result<Duration, String> {
    positive::<u64>(s).map(Duration::from_millis)
}

/// A boolean: `true/false`, `1/0`, `yes/no`, `on/off` (any case).
pub fn boolean() -> BoolishValueParser {
    BoolishValueParser::new()
}

/// The action of a boolean variable: it takes a value (`LOCAL_MODE=true`), it is not a bare flag.
pub const BOOL: ArgAction = ArgAction::Set;

/// A URL with one of `schemes`, without a trailing slash.
pub fn url_with(
    schemes: &'static [&'static str],
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |raw: &str| {
        let parsed = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err(format!("scheme must be one of {}", schemes.join(", ")));
        }
        Ok(raw.trim_end_matches('/').to_string())
    }
}

/// An http(s) URL.
pub fn http_url(raw: &str) -> Result<String, String> {
    url_with(&["http", "https"])(raw)
}

/// A comma-separated list of hosts (`host`, `host:port`, `*.domain`).
pub fn host_list(raw: &str) -> Result<HostAllowList, String> {
    let items: Vec<String> = raw
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    HostAllowList::parse("", &items).map_err(|e| e.reason)
}

/// 32 bytes in base64.
pub fn key32(raw: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("must decode to 32 bytes, got {}", b.len()))
}

/// A name usable in exchange and queue names.
fn queue_prefix(raw: &str) -> Result<String, String> {
    if raw.is_empty()
        || !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    Ok(raw.to_string())
}

// ----- the settings every binary shares -----

/// The development key used when `ENCRYPTION_KEY` is unset in local mode. Outside local mode
/// a process refuses to start with it (or without a key).
pub const DEV_ENCRYPTION_KEY: &str = "ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=";

/// Settings every binary shares.
#[derive(Clone, clap::Args)]
pub struct CommonConfig {
    /// Postgres connection URL (postgres:// or postgresql://)
    #[arg(
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/closeio_sync",
        value_parser = url_with(&["postgres", "postgresql"])
    )]
    pub database_url: String,
    /// Connections in each process's pool
    #[arg(env = "DATABASE_POOL_SIZE", default_value = "16", value_parser = positive::<usize>)]
    pub database_pool_size: usize,
    /// RabbitMQ URL (amqp:// or amqps://); connections ask for 16 KiB frames unless it sets ?frame_max=
    #[arg(
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_parser = url_with(&["amqp", "amqps"])
    )]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name
    #[arg(env = "QUEUE_PREFIX", default_value = "closeio", value_parser = queue_prefix)]
    pub queue_prefix: String,
    /// A local demo or test run: allows the development key and any Hull organization
    #[arg(env = "LOCAL_MODE", default_value = "false", action = BOOL, value_parser = boolean())]
    pub local_mode: bool,
    /// Base64 of 32 random bytes; encrypts Close API keys and secrets at rest (required; the
    /// development key in LOCAL_MODE)
    #[arg(env = "ENCRYPTION_KEY", value_parser = key32)]
    encryption_key_given: Option<[u8; 32]>,
    /// The key in use (`ENCRYPTION_KEY`, or the development key in local mode).
    #[arg(skip)]
    pub encryption_key: [u8; 32],
    /// The previous key during a rotation, still accepted for decryption
    #[arg(env = "ENCRYPTION_KEY_PREVIOUS", value_parser = key32)]
    pub encryption_key_previous: Option<[u8; 32]>,
    /// Close API base URL
    #[arg(
        env = "CLOSE_API_URL",
        default_value = "https://api.close.com/api/v1",
        value_parser = http_url
    )]
    pub close_api_url: String,
    /// Optional ceiling on Close requests per second per API key and endpoint group, in all
    /// processes together; also the rate before Close's RateLimit headers teach each group's
    /// limit (unset: 5 at first, then what Close allows)
    #[arg(env = "CLOSE_RATE_LIMIT_RPS", value_parser = positive::<f64>)]
    pub close_rate_limit_rps: Option<f64>,
    /// Close requests a key may send at once above the steady rate
    #[arg(env = "CLOSE_RATE_LIMIT_BURST", default_value = "1", value_parser = positive::<u32>)]
    pub close_rate_limit_burst: u32,
    /// Timeout of one Close request, in seconds
    #[arg(env = "CLOSE_TIMEOUT_SECS", default_value = "30", value_parser = seconds)]
    pub close_timeout: Duration,
    /// Protocol of the Hull organization's REST API (https; http for the simulator)
    #[arg(env = "HULL_PROTOCOL", default_value = "https", value_parser = ["http", "https"])]
    pub hull_protocol: String,
    /// Firehose URL override (default: derived from the organization)
    #[arg(env = "HULL_FIREHOSE_URL", value_parser = http_url)]
    pub hull_firehose_url: Option<String>,
    /// Comma-separated Hull organizations served: host, host:port or *.domain (required; any
    /// in LOCAL_MODE)
    #[arg(env = "HULL_ORGANIZATIONS", value_parser = host_list)]
    hull_organizations_given: Option<HostAllowList>,
    /// The organizations served: `HULL_ORGANIZATIONS`; open when unset in local mode, empty
    /// (nothing is accepted: fail closed) when unset outside it.
    #[arg(skip)]
    pub hull_organizations: HostAllowList,
    /// Log format: json or pretty
    #[arg(env = "LOG_FORMAT", default_value = "pretty", value_parser = ["json", "pretty"])]
    pub log_format: String,
    /// Log filter, e.g. info,worker=debug
    #[arg(env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
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

impl Settings for CommonConfig {
    fn finish(&mut self, src: &dyn Source) -> Result<(), ConfigError> {
        if matches!(src.raw("ENCRYPTION_KEY"), Some(v) if v.trim().is_empty()) {
            return Err(ConfigError {
                var: "ENCRYPTION_KEY",
                value: String::new(),
                reason: "is set but empty".into(),
            });
        }
        self.encryption_key = match (self.encryption_key_given, self.local_mode) {
            (Some(key), false) if Some(key) == key32(DEV_ENCRYPTION_KEY).ok() => {
                return Err(ConfigError {
                    var: "ENCRYPTION_KEY",
                    value: "***".into(),
                    reason: "is the published development key; generate one with `openssl rand -base64 32` (or set LOCAL_MODE=true for a local demo)".into(),
                })
            }
            (Some(key), _) => key,
            (None, true) => key32(DEV_ENCRYPTION_KEY).unwrap_or_default(),
            (None, false) => {
                return Err(ConfigError {
                    var: "ENCRYPTION_KEY",
                    value: String::new(),
                    reason: "is required (base64 of 32 random bytes: `openssl rand -base64 32`); set LOCAL_MODE=true for a local demo".into(),
                })
            }
        };
        self.hull_organizations = match (&self.hull_organizations_given, self.local_mode) {
            (Some(list), _) => list.clone(),
            (None, true) => HostAllowList::open(),
            (None, false) => HostAllowList::default(),
        };
        Ok(())
    }
}

impl CommonConfig {
    /// Reads and validates the shared variables.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        load(src)
    }

    /// For a service that talks to Hull (ingest, worker, scheduler): outside local mode it
    /// needs `HULL_ORGANIZATIONS`, rather than failing closed on every Hull call later.
    pub fn require_organizations(&self) -> Result<(), ConfigError> {
        if self.hull_organizations.is_empty() {
            return Err(ConfigError {
                var: "HULL_ORGANIZATIONS",
                value: String::new(),
                reason: "is required: the Hull organizations this deployment serves (e.g. *.hullapp.io); set LOCAL_MODE=true for a local demo".into(),
            });
        }
        Ok(())
    }

    /// Whether the development encryption key is in use (local mode only).
    pub fn uses_dev_key(&self) -> bool {
        key32(DEV_ENCRYPTION_KEY).is_ok_and(|k| k == self.encryption_key)
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
    fn positive_millis_refuses_zero_and_garbage() {
        assert_eq!(positive_millis("250"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-5", "x", ""] {
            assert!(positive_millis(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = CommonConfig::from_source(&src(&[])).unwrap();
        assert_eq!(c.queue_prefix, "closeio");
        assert_eq!(c.close_rate_limit_rps, None);
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

#[cfg(test)]
mod declaration_tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.entry("LOCAL_MODE".into())
            .or_insert_with(|| "true".into());
        m
    }

    #[test]
    fn every_shared_setting_declares_a_variable_default_and_help() {
        let declared = variables::<CommonConfig>();
        let names: Vec<&str> = declared.iter().map(|v| v.name.as_str()).collect();
        for var in [
            "DATABASE_URL",
            "ENCRYPTION_KEY",
            "HULL_ORGANIZATIONS",
            "RUST_LOG",
        ] {
            assert!(names.contains(&var), "{var} missing from {names:?}");
        }
        for v in &declared {
            assert!(!v.help.is_empty(), "{} has no help text", v.name);
        }
        let pool = declared
            .iter()
            .find(|v| v.name == "DATABASE_POOL_SIZE")
            .unwrap();
        assert_eq!(pool.default.as_deref(), Some("16"));
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let c = CommonConfig::from_source(&vars(&[("DATABASE_POOL_SIZE", "  ")])).unwrap();
        assert_eq!(c.database_pool_size, 16);
    }

    #[test]
    fn a_flag_wins_over_the_environment() {
        let src = vars(&[("QUEUE_PREFIX", "from-env")]);
        let c: CommonConfig =
            load_with_args("closeio-x", None, &src, vec!["--queue-prefix=flag".into()]).unwrap();
        assert_eq!(c.queue_prefix, "flag");
        // A bad flag value names the variable too.
        let err = load_with_args::<CommonConfig>(
            "closeio-x",
            None,
            &src,
            vec!["--database-pool-size=0".into()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("DATABASE_POOL_SIZE"), "{err}");
        // Help is a command-line answer, not a configuration error.
        let help = load_with_args::<CommonConfig>("closeio-x", None, &src, vec!["--help".into()])
            .unwrap_err();
        assert!(
            matches!(help, LoadError::Help(ref text) if text.contains("[env: DATABASE_URL]")),
            "{help}"
        );
    }

    #[test]
    fn the_process_environment_is_not_read_from_a_map_source() {
        // Each test runs in its own process (nextest), so this variable is seen by no other.
        std::env::set_var("QUEUE_PREFIX", "from-the-process");
        std::env::set_var("LOCAL_MODE", "true");
        let c = CommonConfig::from_source(&vars(&[])).unwrap();
        assert_eq!(c.queue_prefix, "closeio");
        let c = CommonConfig::from_source(&Env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.queue_prefix, "from-the-process");
    }
}
