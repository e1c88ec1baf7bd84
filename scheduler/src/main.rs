//! `closeio-scheduler`: due retries, status checks and metadata refreshes (one active instance).

use clap::Parser;
use tokio_util::sync::CancellationToken;

use common::config::{describe, Env, COMMON_VARS};
use common::telemetry;
use scheduler::{Scheduler, SchedulerConfig};

fn help() -> String {
    format!(
        "{}\n{}\n{}",
        describe(COMMON_VARS),
        describe(scheduler::VARS),
        describe(common::admin::VARS)
    )
}

/// Runs periodic work: republishes due retries, checks connector status, refreshes Close
/// metadata. Only one instance is active at a time. Configured by environment variables.
#[derive(Parser)]
#[command(name = "closeio-scheduler", version, after_help = help())]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    let cfg = match SchedulerConfig::from_source(&Env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("closeio-scheduler: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&cfg.common.log_format);
    cfg.common.warn_if_local("closeio-scheduler");
    let scheduler = match Scheduler::new(cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("closeio-scheduler: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = scheduler.store.check_key_at_start().await {
        eprintln!("closeio-scheduler: {e}");
        return std::process::ExitCode::from(2);
    }
    let shutdown = CancellationToken::new();
    let ready = telemetry::store_and_queue_ready(scheduler.store.clone(), scheduler.queue.clone());
    if let Err(e) =
        telemetry::serve_ops("SCHEDULER_LISTEN", cfg.listen, ready, shutdown.clone()).await
    {
        eprintln!("closeio-scheduler: {e}");
        return std::process::ExitCode::from(2);
    }
    if let Err(code) = start_admin_api(&scheduler, &shutdown).await {
        return code;
    }
    let signal = shutdown.clone();
    tokio::spawn(async move {
        telemetry::shutdown_signal().await;
        signal.cancel();
    });
    tracing::info!(listen = %cfg.listen, "closeio-scheduler started");
    match scheduler.run(shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "closeio-scheduler failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Serves the HTTP admin API on `ADMIN_LISTEN` when `ADMIN_TOKEN` is set (on every scheduler
/// replica, active or waiting: it only reads and replays).
async fn start_admin_api(
    scheduler: &Scheduler,
    shutdown: &CancellationToken,
) -> Result<(), std::process::ExitCode> {
    let cfg = common::admin::AdminConfig::from_source(&Env).map_err(|e| {
        eprintln!("closeio-scheduler: {e}");
        std::process::ExitCode::from(2)
    })?;
    let Some(token) = cfg.token else {
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
    let admin = common::admin::Admin::new(scheduler.store.clone(), scheduler.queue.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = common::admin::serve(listener, admin, &token, stop).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    tracing::info!(listen = %cfg.listen, "admin API listening");
    Ok(())
}
