//! Shared code of closeio-sync: configuration, job types, the queue facade, the Postgres store,
//! the Close and Hull clients, the mapping (pure functions) and telemetry.

pub mod admin;
pub mod error;
pub mod closeio;
pub mod hull;
pub mod mapping;
pub mod config;
pub mod crypto;
pub mod incoming;
pub mod jobs;
pub mod queue;
pub mod store;
pub mod telemetry;
pub mod metadata;
pub mod status;
pub mod clients;
