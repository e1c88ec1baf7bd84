//! `closeio-ingest`: the Hull connector endpoints.

use clap::Parser;
use tokio_util::sync::CancellationToken;

use common::config::{describe, Env, COMMON_VARS};
use common::telemetry;
use ingest::IngestConfig;

fn help() -> String {
    format!(
        "{}\n{}",
        describe(COMMON_VARS),
        describe(ingest::config::VARS)
    )
}

/// Serves the Hull connector endpoints (/smart-notifier, /batch, /status, settings options,
/// /manifest.json, /admin) and /metrics, /healthz, /readyz. Configured by environment variables.
#[derive(Parser)]
#[command(name = "closeio-ingest", version, after_help = help())]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    let cfg = match IngestConfig::from_source(&Env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("closeio-ingest: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&cfg.common.log_format);
    cfg.common.warn_if_local("closeio-ingest");
    if cfg.skip_signature_verification {
        tracing::warn!(
            "SKIP_SIGNATURE_VERIFICATION is on: notifications are not verified (local mode only)"
        );
    }
    let shutdown = CancellationToken::new();
    let (addr, handle) = match ingest::start(cfg, shutdown.clone()).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("closeio-ingest: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    tracing::info!(%addr, "closeio-ingest listening");
    telemetry::shutdown_signal().await;
    shutdown.cancel();
    let _ = handle.await;
    tracing::info!("closeio-ingest stopped");
    std::process::ExitCode::SUCCESS
}
