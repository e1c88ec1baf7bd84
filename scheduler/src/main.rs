//! `closeio-scheduler`: due retries, status checks and metadata refreshes (one active instance).

use tokio_util::sync::CancellationToken;

use common::startup::Startup;
use scheduler::{Scheduler, SchedulerConfig};

/// The first line of `--help`.
const ABOUT: &str = "Runs periodic work: republishes due retries, checks connector status, refreshes Close metadata, schedules the incoming sync. Only one instance is active at a time. Configured by environment variables (each also a flag named after it).";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let start = Startup::new("closeio-scheduler");
    run(start).await.unwrap_or_else(|code| code)
}

async fn run(start: Startup) -> Result<std::process::ExitCode, std::process::ExitCode> {
    let cfg = start.configure::<SchedulerConfig>(ABOUT, |c| &c.common)?;
    let scheduler = Scheduler::new(cfg.clone()).map_err(|e| start.fail(e))?;
    start.check_key(&scheduler.store).await?;
    let shutdown = start.shutdown_on_signal();
    start
        .serve_ops(
            "SCHEDULER_LISTEN",
            cfg.listen,
            &scheduler.store,
            &scheduler.queue,
            &shutdown,
        )
        .await?;
    start_admin_api(&scheduler, &cfg.admin, &shutdown).await?;
    tracing::info!(listen = %cfg.listen, "closeio-scheduler started");
    Ok(start.finish(scheduler.run(shutdown).await))
}

/// Serves the HTTP admin API and the ops console on `ADMIN_LISTEN` when `ADMIN_TOKEN` is set (on every scheduler
/// replica, active or waiting: it only reads and replays).
async fn start_admin_api(
    scheduler: &Scheduler,
    cfg: &admin::AdminConfig,
    shutdown: &CancellationToken,
) -> Result<(), std::process::ExitCode> {
    let Some(token) = cfg.token.clone() else {
        tracing::info!("ADMIN_TOKEN is not set: the admin API is off");
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            eprintln!(
                "closeio-scheduler: cannot listen on ADMIN_LISTEN={}: {e}",
                cfg.listen
            );
            std::process::ExitCode::from(2)
        })?;
    let admin = scheduler.admin();
    let options = cfg.console_options();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = admin::serve(listener, admin, &token, options, stop).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    tracing::info!(listen = %cfg.listen, console = %format!("http://{}/console/", cfg.listen), "admin API and ops console listening");
    Ok(())
}
