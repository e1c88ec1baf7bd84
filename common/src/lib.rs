//! The glue the binaries share: the clients built from the configuration ([`clients`]), the
//! per-connector Close metadata cache ([`metadata`]), the status check ([`status`]),
//! start-up ([`startup`]) and telemetry ([`telemetry`]).
//!
//! The crates it stands on are re-exported under their own names so that one import path
//! serves the binaries: [`domain`] (mapping, jobs, changes, errors, configuration, secrets,
//! allow-lists), [`closeio`] (the Close client), [`hull`] (the Hull client and notification
//! verification), [`store`] (Postgres) and [`queue`] (RabbitMQ). The operator surface is a crate
//! of its own (`closeio-sync-admin`).

pub use closeio;
pub use domain;
pub use domain::{allowlist, changes, config, crypto, error, jobs, mapping};
pub use hull;
pub use queue;
pub use store;

pub mod clients;
pub mod metadata;
pub mod startup;
pub mod status;
pub mod telemetry;
