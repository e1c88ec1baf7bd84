//! `closeio-worker`: consumes sync jobs and applies them to Close and Hull.

use std::process::ExitCode;

use common::startup::Startup;
use worker::{Worker, WorkerConfig};

/// The first line of `--help`.
const ABOUT: &str = "Consumes jobs from RabbitMQ and syncs Hull with Close. Configured by environment variables (each also a flag named after it).";

fn main() -> ExitCode {
    let start = Startup::new("closeio-worker");
    let cfg = match start.configure::<WorkerConfig>(ABOUT, |c| &c.common) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    // The runtime has `WORKER_THREADS` threads (one by default), and everything runs on them,
    // none of it on the main thread: the consume loop takes a delivery, spawns its job and
    // sees it finish on the thread the job runs on, instead of waking the main thread for each.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return start.fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        tokio::spawn(run(start, cfg))
            .await
            .unwrap_or_else(|e| start.fail(format!("the worker stopped: {e}")))
    })
}

async fn run(start: Startup, cfg: WorkerConfig) -> ExitCode {
    let worker = match Worker::new(cfg.clone()) {
        Ok(w) => w,
        Err(e) => return start.fail(e),
    };
    if let Err(code) = start.check_key(&worker.ctx().store).await {
        return code;
    }
    let shutdown = start.shutdown_on_signal();
    if let Err(code) = start
        .serve_ops(
            "WORKER_LISTEN",
            cfg.listen,
            &worker.ctx().store,
            &worker.ctx().queue,
            &shutdown,
        )
        .await
    {
        return code;
    }
    tracing::info!(listen = %cfg.listen, concurrency = cfg.concurrency, threads = cfg.threads, "closeio-worker started");
    start.finish(worker.run(shutdown).await)
}
