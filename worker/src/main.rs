//! `closeio-worker`: consumes sync jobs and applies them to Close and Hull.

use clap::Parser;
use tokio_util::sync::CancellationToken;

use common::config::{describe, Env, COMMON_VARS};
use common::telemetry;
use worker::{Worker, WorkerConfig};

fn help() -> String {
    format!(
        "{}\n{}",
        describe(COMMON_VARS),
        describe(worker::config::VARS)
    )
}

/// Consumes jobs from RabbitMQ and syncs Hull with Close. Configured by environment variables.
#[derive(Parser)]
#[command(name = "closeio-worker", version, after_help = help())]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    let cfg = match WorkerConfig::from_source(&Env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("closeio-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&cfg.common.log_format);
    cfg.common.warn_if_local("closeio-worker");
    let worker = match Worker::new(cfg.clone()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("closeio-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = worker.ctx().store.check_key_at_start().await {
        eprintln!("closeio-worker: {e}");
        return std::process::ExitCode::from(2);
    }
    let shutdown = CancellationToken::new();
    let ready =
        telemetry::store_and_queue_ready(worker.ctx().store.clone(), worker.ctx().queue.clone());
    if let Err(e) = telemetry::serve_ops("WORKER_LISTEN", cfg.listen, ready, shutdown.clone()).await
    {
        eprintln!("closeio-worker: {e}");
        return std::process::ExitCode::from(2);
    }
    let signal = shutdown.clone();
    tokio::spawn(async move {
        telemetry::shutdown_signal().await;
        signal.cancel();
    });
    tracing::info!(listen = %cfg.listen, concurrency = cfg.concurrency, "closeio-worker started");
    match worker.run(shutdown).await {
        Ok(()) => {
            tracing::info!("closeio-worker stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "closeio-worker failed");
            std::process::ExitCode::FAILURE
        }
    }
}
