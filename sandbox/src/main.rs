//! `closeio-sandbox`: runs the Close API simulator and the Hull platform simulator side by
//! side until SIGINT/SIGTERM. Every option is also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sandbox::close::{CloseConfig, CloseSim, Faults, Seed};
use sandbox::hull::{ConnectorSeed, GenerateSpec, HullConfig, HullSim};
use serde_json::Value;

/// Close API and Hull platform simulators for tests, demos and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "closeio-sandbox", version, about)]
struct Args {
    /// Address of the Close API simulator.
    #[arg(long, env = "SANDBOX_CLOSE_LISTEN", default_value = "127.0.0.1:8090")]
    close_listen: SocketAddr,
    /// Address of the Hull platform simulator.
    #[arg(long, env = "SANDBOX_HULL_LISTEN", default_value = "127.0.0.1:8091")]
    hull_listen: SocketAddr,
    /// Close API key (repeatable; env: comma-separated). Default: one key, api_sandbox_key_0001.
    #[arg(long = "api-key", env = "SANDBOX_API_KEYS", value_delimiter = ',')]
    api_keys: Vec<String>,
    /// Put all API keys into one Close organization (default: one organization per key).
    #[arg(long, env = "SANDBOX_SINGLE_ORG")]
    single_org: bool,
    /// Generated Close leads per organization (0 = none).
    #[arg(long, env = "SANDBOX_SEED_LEADS", default_value_t = 0)]
    seed_leads: usize,
    /// Contacts per generated lead.
    #[arg(long, env = "SANDBOX_CONTACTS_PER_LEAD", default_value_t = 2)]
    contacts_per_lead: usize,
    /// Random seed of the Close generator (same seed, same data).
    #[arg(long, env = "SANDBOX_SEED_VALUE", default_value_t = 1)]
    seed_value: u64,
    /// Close seed file (the /_sandbox/state format); overrides --seed-leads.
    #[arg(long = "seed", env = "SANDBOX_SEED_FILE")]
    seed_file: Option<PathBuf>,
    /// Close rate limit per API key and endpoint group, requests per second (org limit = 3x).
    #[arg(long, env = "SANDBOX_RATE_LIMIT")]
    rate_limit: Option<f64>,
    /// Close rate-limit window in seconds.
    #[arg(long, env = "SANDBOX_RATE_WINDOW", default_value_t = 1.0)]
    rate_window: f64,
    /// Close faults as JSON, e.g. '{"error_rate":0.05,"latency_ms":20}'.
    #[arg(long, env = "SANDBOX_FAULTS")]
    faults: Option<String>,
    /// Maximum `_skip` of Close list endpoints.
    #[arg(long, env = "SANDBOX_MAX_SKIP", default_value_t = 10_000)]
    max_skip: usize,
    /// Attempts per Close webhook delivery.
    #[arg(long, env = "SANDBOX_WEBHOOK_MAX_ATTEMPTS", default_value_t = 5)]
    webhook_max_attempts: u32,
    /// Delay before the second webhook attempt in ms (doubles per attempt).
    #[arg(long, env = "SANDBOX_WEBHOOK_RETRY_BASE_MS", default_value_t = 1000)]
    webhook_retry_base_ms: u64,
    /// Hull connector id (24 hex chars; default: generated).
    #[arg(long, env = "SANDBOX_HULL_CONNECTOR_ID")]
    hull_connector_id: Option<String>,
    /// Hull connector secret (default: generated).
    #[arg(long, env = "SANDBOX_HULL_CONNECTOR_SECRET")]
    hull_connector_secret: Option<String>,
    /// Hull connector private settings as a JSON object.
    #[arg(long, env = "SANDBOX_HULL_PRIVATE_SETTINGS")]
    hull_private_settings: Option<String>,
    /// Base URL of the connector the Hull simulator notifies (e.g. http://127.0.0.1:8082).
    #[arg(long, env = "SANDBOX_HULL_CONNECTOR_URL")]
    hull_connector_url: Option<String>,
    /// Organization host the Hull simulator advertises (REST, firehose and public-key URLs are
    /// built from it), e.g. `sandbox:8091` in a container network. Default: the listen address.
    #[arg(long, env = "SANDBOX_HULL_ORGANIZATION")]
    hull_organization: Option<String>,
    /// Generated Hull accounts (0 = none).
    #[arg(long, env = "SANDBOX_HULL_SEED_ACCOUNTS", default_value_t = 0)]
    hull_seed_accounts: usize,
    /// Generated Hull users per account.
    #[arg(long, env = "SANDBOX_HULL_USERS_PER_ACCOUNT", default_value_t = 2)]
    hull_users_per_account: usize,
    /// Random seed of the Hull generator.
    #[arg(long, env = "SANDBOX_HULL_SEED_VALUE", default_value_t = 1)]
    hull_seed_value: u64,
    /// Probability that a generated Hull profile is in each segment.
    #[arg(long, env = "SANDBOX_HULL_SEGMENT_PROBABILITY", default_value_t = 0.5)]
    hull_segment_probability: f64,
}

fn parse_json(text: Option<&str>, what: &str) -> anyhow::Result<Value> {
    text.map(|t| serde_json::from_str(t).with_context(|| format!("parsing {what}")))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn close_config(args: &Args) -> anyhow::Result<CloseConfig> {
    let faults: Faults = match &args.faults {
        Some(f) => serde_json::from_str(f).context("parsing --faults")?,
        None => Faults::default(),
    };
    let seed = match (&args.seed_file, args.seed_leads) {
        (Some(path), _) => Seed::File(path.clone()),
        (None, 0) => Seed::Empty,
        (None, leads) => Seed::Generated {
            seed: args.seed_value,
            leads,
            contacts_per_lead: args.contacts_per_lead,
        },
    };
    let api_keys: Vec<String> = args
        .api_keys
        .iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    Ok(CloseConfig {
        organizations: if args.single_org {
            vec![api_keys.clone()]
        } else {
            Vec::new()
        },
        api_keys,
        rate_limit_rps: args.rate_limit,
        rate_window_secs: args.rate_window,
        seed,
        faults,
        max_skip: args.max_skip,
        webhook_max_attempts: args.webhook_max_attempts,
        webhook_retry_base_ms: args.webhook_retry_base_ms,
        ..CloseConfig::default()
    })
}

fn hull_config(args: &Args) -> anyhow::Result<HullConfig> {
    let connector = ConnectorSeed {
        id: args.hull_connector_id.clone().unwrap_or_default(),
        secret: args.hull_connector_secret.clone().unwrap_or_default(),
        private_settings: parse_json(
            args.hull_private_settings.as_deref(),
            "--hull-private-settings",
        )?,
        url: args.hull_connector_url.clone(),
        ..ConnectorSeed::default()
    };
    Ok(HullConfig {
        connectors: vec![connector],
        generate: (args.hull_seed_accounts > 0).then_some(GenerateSpec {
            seed: args.hull_seed_value,
            n_accounts: args.hull_seed_accounts,
            users_per_account: args.hull_users_per_account,
            segment_probability: args.hull_segment_probability,
        }),
        organization: args.hull_organization.clone(),
        ..HullConfig::default()
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let close = CloseSim::start(args.close_listen, close_config(&args)?).await?;
    let hull = HullSim::start(args.hull_listen, hull_config(&args)?).await?;

    println!("Close API simulator:   {}", close.base_url());
    println!("  control API:         http://{}/_sandbox/", close.addr());
    for key in close.api_keys() {
        println!("  API key:             {key}");
    }
    println!("Hull platform simulator: {}", hull.base_url());
    println!("  organization:        {}", hull.organization());
    for connector in hull.connectors() {
        println!("  connector id:        {}", connector.id);
        println!("  connector secret:    {}", connector.secret);
    }
    println!("Press Ctrl-C to stop.");

    wait_for_signal().await?;
    close.shutdown().await;
    hull.shutdown().await;
    Ok(())
}
