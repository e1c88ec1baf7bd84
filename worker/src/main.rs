//! `closeio-worker`: consumes sync jobs and applies them to Close and Hull.

use std::process::ExitCode;

use common::startup::Startup;
use worker::{Worker, WorkerConfig};

/// The first line of `--help`.
const ABOUT: &str = "Consumes jobs from RabbitMQ and syncs Hull with Close. Configured by environment variables (each also a flag named after it).";

#[tokio::main]
async fn main() -> ExitCode {
    let start = Startup::new("closeio-worker");
    run(start).await.unwrap_or_else(|code| code)
}

async fn run(start: Startup) -> Result<ExitCode, ExitCode> {
    let cfg = start.configure::<WorkerConfig>(ABOUT, |c| &c.common)?;
    let worker = Worker::new(cfg.clone()).map_err(|e| start.fail(e))?;
    start.check_key(&worker.ctx().store).await?;
    let shutdown = start.shutdown_on_signal();
    start
        .serve_ops(
            "WORKER_LISTEN",
            cfg.listen,
            &worker.ctx().store,
            &worker.ctx().queue,
            &shutdown,
        )
        .await?;
    tracing::info!(listen = %cfg.listen, concurrency = cfg.concurrency, "closeio-worker started");
    Ok(start.finish(worker.run(shutdown).await))
}
