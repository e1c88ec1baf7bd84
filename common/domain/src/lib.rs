//! The domain of closeio-sync, with no network or database I/O: the mapping between Hull and
//! Close (pure functions), the jobs that travel between the services, the translation of Close
//! events into changes, the error classes every failure maps to, the configuration shared by
//! every binary, secrets at rest and host allow-lists.

pub mod allowlist;
pub mod changes;
pub mod config;
pub mod crypto;
pub mod error;
pub mod jobs;
pub mod mapping;
