//! `closeio-bench`: benchmarks against the simulators, over the local Postgres and RabbitMQ
//! (`TEST_DATABASE_URL`, `TEST_AMQP_URL`, as the end-to-end tests).
//!
//! `closeio-bench import` starts the simulators in their own process with a generated Close
//! organization and a per-key rate limit the workers are not told, runs a full import through
//! ingest, the scheduler and N worker processes, and prints leads per second, Close requests,
//! and each process's CPU time and peak RSS.
//!
//! `closeio-bench ingest` compares how fast ingest accepts notification batches with a bare
//! lapin publisher with confirms.
//!
//! `closeio-bench scale` sends new accounts with their users, then the same again unchanged,
//! through ingest and N worker processes, under a per-group Close limit the workers are not
//! told, and prints rates per group, 429s, requests and CPU per entity, RSS and connections.
//!
//! `closeio-bench fairness` queues a large backlog for tenant A and measures how long tenant
//! B's single updates take to reach Close meanwhile.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/closeio-bench fairness --backlog 10000 --repeats 20
//! target/release/closeio-bench scale --accounts 2000 --workers 1,2,4,8
//! target/release/closeio-bench import --leads 100000 --workers 1
//! cargo run --release -p closeio-sync-bench -- ingest --notifications 200 --messages 100
//! ```

mod fairness;
mod import;
mod ingest;
mod scale;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "closeio-bench",
    about = "closeio-sync benchmarks (against the simulators, each service in its own process)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Full import of a generated Close organization into the Hull simulator.
    Import(import::ImportArgs),
    /// Notification batches accepted by ingest, against a bare lapin publisher with confirms.
    Ingest(ingest::IngestArgs),
    /// New accounts with users, then unchanged, through ingest and N worker processes under a
    /// per-group Close limit the workers are not told.
    Scale(scale::ScaleArgs),
    /// Tenant A's large backlog on its key, tenant B's single updates: B's time to Close.
    Fairness(fairness::FairnessArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Import(args) => import::run(args).await,
        Command::Ingest(args) => ingest::run(args).await,
        Command::Scale(args) => scale::run(args).await,
        Command::Fairness(args) => fairness::run(args).await,
    }
}
