//! `closeio-ingest`: the Hull connector endpoints.

use std::process::ExitCode;

use common::startup::Startup;
use ingest::IngestConfig;

/// The first line of `--help`.
const ABOUT: &str = "Serves the Hull connector endpoints (/smart-notifier, /batch, /status, settings options, /manifest.json, /admin) and /metrics, /healthz, /readyz. Configured by environment variables (each also a flag named after it).";

#[tokio::main]
async fn main() -> ExitCode {
    let start = Startup::new("closeio-ingest");
    run(start).await.unwrap_or_else(|code| code)
}

async fn run(start: Startup) -> Result<ExitCode, ExitCode> {
    let cfg = start.configure::<IngestConfig>(ABOUT, |c| &c.common)?;
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
