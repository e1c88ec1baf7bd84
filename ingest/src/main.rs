//! `closeio-ingest`: the Hull connector endpoints.

use clap::Parser;
use std::process::ExitCode;

use common::config::{describe, Env, COMMON_VARS};
use common::startup::Startup;
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
async fn main() -> ExitCode {
    let _ = Cli::parse();
    let start = Startup::new("closeio-ingest");
    run(start).await.unwrap_or_else(|code| code)
}

async fn run(start: Startup) -> Result<ExitCode, ExitCode> {
    let cfg = start.configure(IngestConfig::from_source(&Env), |c| &c.common)?;
    if cfg.skip_signature_verification {
        tracing::warn!(
            "SKIP_SIGNATURE_VERIFICATION is on: notifications are not verified (local mode only)"
        );
    }
    let shutdown = start.shutdown_on_signal();
    let (addr, handle) = ingest::start(cfg, shutdown.clone())
        .await
        .map_err(|e| start.fail(e))?;
    tracing::info!(%addr, "closeio-ingest listening");
    shutdown.cancelled().await;
    Ok(start.finish(handle.await))
}
