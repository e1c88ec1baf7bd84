//! `closeio-fault-worker`: the worker's consumer loop in a process of its own, configured from
//! the environment exactly like `closeio-worker` (without the ops listener), so that fault
//! tests can SIGKILL real worker processes. SIGTERM drains in-flight jobs and exits.

use tokio_util::sync::CancellationToken;

use common::config::Env;
use worker::{Worker, WorkerConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = match WorkerConfig::from_source(&Env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("closeio-fault-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    common::telemetry::init_tracing(&cfg.common.log_format, &cfg.common.log_filter);
    let worker = match Worker::new(cfg) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("closeio-fault-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        common::telemetry::shutdown_signal().await;
        signal.cancel();
    });
    match worker.run(shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("closeio-fault-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
