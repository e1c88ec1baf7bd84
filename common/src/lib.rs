//! Shared code of closeio-sync: configuration, job types, the queue facade, the Postgres store,
//! the Close and Hull clients, the mapping (pure functions) and telemetry.

pub mod admin;
pub mod allowlist;
pub mod clients;
pub mod closeio;
pub mod config;
pub mod crypto;
pub mod error;
pub mod hull;
pub mod incoming;
pub mod jobs;
pub mod mapping;
pub mod metadata;
pub mod queue;
pub mod status;
pub mod store;
pub mod telemetry;
