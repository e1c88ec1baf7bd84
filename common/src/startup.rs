//! What every binary does at start, in one place: read and validate the configuration (a bad
//! value stops the process with exit code 2 and a message naming the variable), install
//! tracing, warn about local mode, check `ENCRYPTION_KEY` against the stored data, serve
//! `/metrics`, `/healthz`, `/readyz`, and turn SIGTERM/SIGINT into a cancellation token.

use std::fmt::Display;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use std::ffi::OsString;

use crate::config::{self, CommonConfig, ConfigError, Env, LoadError, Settings};
use crate::queue::Queue;
use crate::store::Store;
use crate::telemetry;

/// A binary starting up; its methods return the exit code to stop with on failure.
#[derive(Debug, Clone, Copy)]
pub struct Startup {
    /// The binary's name, prefixed to every start-up error.
    pub binary: &'static str,
}

impl Startup {
    /// For binary `binary`. Installs the process's metrics recorder first: a counter declared
    /// or a metric handle taken before `/metrics` is served (the services build theirs while
    /// they start) would otherwise go to no recorder, and never be exported.
    pub fn new(binary: &'static str) -> Startup {
        telemetry::metrics_handle();
        Startup { binary }
    }

    /// Prints a start-up error and gives the exit code (2) to stop with.
    pub fn fail(&self, e: impl Display) -> ExitCode {
        eprintln!("{}: {e}", self.binary);
        ExitCode::from(2)
    }

    /// Reads and validates the configuration from the environment and the command line
    /// (`--help` prints every variable with its default and meaning; `about` heads it), then
    /// installs tracing and warns about local mode.
    pub fn configure<T: Settings>(
        &self,
        about: &'static str,
        common: impl Fn(&T) -> &CommonConfig,
    ) -> Result<T, ExitCode> {
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let cfg = match config::load_with_args::<T>(self.binary, Some(about), &Env, args) {
            Ok(cfg) => cfg,
            Err(LoadError::Config(e)) => return Err(self.fail(e)),
            Err(LoadError::Help(text)) => {
                println!("{text}");
                return Err(ExitCode::SUCCESS);
            }
            Err(LoadError::Cli(e)) => {
                let _ = e.print();
                return Err(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)));
            }
        };
        let shared = common(&cfg);
        telemetry::check_log_filter(&shared.log_filter).map_err(|reason| {
            self.fail(ConfigError {
                var: "RUST_LOG",
                value: shared.log_filter.clone(),
                reason,
            })
        })?;
        telemetry::init_tracing(&shared.log_format, &shared.log_filter);
        shared.warn_if_local(self.binary);
        Ok(cfg)
    }

    /// Refuses to start with an `ENCRYPTION_KEY` that cannot open the stored secrets.
    pub async fn check_key(&self, store: &Store) -> Result<(), ExitCode> {
        store.check_key_at_start().await.map_err(|e| self.fail(e))
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` (Postgres and RabbitMQ reachable) on
    /// `listen` (the variable `var`) until `shutdown`.
    pub async fn serve_ops(
        &self,
        var: &'static str,
        listen: SocketAddr,
        store: &Store,
        queue: &Queue,
        shutdown: &CancellationToken,
    ) -> Result<(), ExitCode> {
        let ready = telemetry::store_and_queue_ready(store.clone(), queue.clone());
        telemetry::serve_ops(var, listen, ready, shutdown.clone())
            .await
            .map_err(|e| self.fail(e))
    }

    /// A token cancelled on SIGTERM or SIGINT.
    pub fn shutdown_on_signal(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let signal = token.clone();
        tokio::spawn(async move {
            telemetry::shutdown_signal().await;
            signal.cancel();
        });
        token
    }

    /// The exit code of a run that ended: success, or failure (1) with the error logged.
    pub fn finish<E: Display>(&self, result: Result<(), E>) -> ExitCode {
        match result {
            Ok(()) => {
                tracing::info!(binary = self.binary, "stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(binary = self.binary, error = %e, "failed");
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a service records while it starts, before it serves `/metrics`, is exported.
    #[test]
    fn metrics_recorded_before_serving_are_exported() {
        let _start = Startup::new("closeio-test");
        telemetry::declare_counter("startup_test_declared_total", &[]);
        let handle = metrics::histogram!("startup_test_batch");
        handle.record(3.0);
        let text = telemetry::metrics_handle().render();
        assert!(text.contains("startup_test_declared_total 0"), "{text}");
        assert!(text.contains("startup_test_batch_count 1"), "{text}");
    }
}
