//! `closeio-bench`: benchmarks run in-process against the simulators, over the local Postgres
//! and RabbitMQ (`TEST_DATABASE_URL`, `TEST_AMQP_URL`, as the end-to-end tests).
//!
//! `closeio-bench import` seeds the Close simulator with a generated organization, enforces a
//! per-key read rate limit there (and gives the same limit to the Close client), runs a full
//! import through the scheduler and N workers, and prints leads per second, Close requests per
//! lead and the achieved Close request rate against what the limit allows.
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
//! cargo run --release -p closeio-sync-bench -- import --leads 20000 --contacts-per-lead 3 --rate-limit 20
//! cargo run --release -p closeio-sync-bench -- ingest --notifications 200 --messages 100
//! ```

mod fairness;
mod ingest;
mod scale;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::future::join_all;

use common::store::IncomingProgress;
use harness::sandbox::close::{CloseConfig, Seed};
use harness::{EnvOptions, TestEnv, CONNECTOR_ID};

#[derive(Parser)]
#[command(
    name = "closeio-bench",
    about = "closeio-sync benchmarks (in-process, against the simulators)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Full import of a generated Close organization into the Hull simulator.
    Import(ImportArgs),
    /// Notification batches accepted by ingest, against a bare lapin publisher with confirms.
    Ingest(ingest::IngestArgs),
    /// New accounts with users, then unchanged, through ingest and N worker processes under a
    /// per-group Close limit the workers are not told.
    Scale(scale::ScaleArgs),
    /// Tenant A's large backlog on its key, tenant B's single updates: B's time to Close.
    Fairness(fairness::FairnessArgs),
}

#[derive(Parser)]
struct ImportArgs {
    /// Leads in the Close organization.
    #[arg(long, default_value_t = 20_000)]
    leads: usize,
    /// Contacts per lead.
    #[arg(long, default_value_t = 3)]
    contacts_per_lead: usize,
    /// Close read rate limit per API key and endpoint group (requests per second), enforced
    /// by the simulator and configured in the client (`CLOSE_RATE_LIMIT_RPS`).
    #[arg(long, default_value_t = 20.0)]
    rate_limit: f64,
    /// Workers sharing the import.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs per worker (`WORKER_CONCURRENCY`).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Leads per search page (`FETCH_PAGE_SIZE`, at most 200).
    #[arg(long, default_value_t = 200)]
    page_size: u32,
    /// Time windows of the import (`FETCH_WINDOWS`).
    #[arg(long, default_value_t = 8)]
    windows: u32,
    /// Random seed of the generated data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Import(args) => import(args).await,
        Command::Ingest(args) => ingest::run(args).await,
        Command::Scale(args) => scale::run(args).await,
        Command::Fairness(args) => fairness::run(args).await,
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.concurrency == 0 {
        bail!("--workers and --concurrency must be at least 1");
    }
    eprintln!(
        "seeding {} leads × {} contacts…",
        args.leads, args.contacts_per_lead
    );
    let mut env = TestEnv::start(EnvOptions {
        close: CloseConfig {
            seed: Seed::Generated {
                seed: args.seed,
                leads: args.leads,
                contacts_per_lead: args.contacts_per_lead,
            },
            rate_limit_rps: Some(args.rate_limit),
            ..CloseConfig::default()
        },
        ..EnvOptions::default()
    })
    .await?;
    let result = run(&mut env, &args).await;
    env.cleanup().await;
    result
}

async fn run(env: &mut TestEnv, args: &ImportArgs) -> anyhow::Result<()> {
    env.vars
        .insert("CLOSE_RATE_LIMIT_RPS".into(), args.rate_limit.to_string());
    env.vars
        .insert("WORKER_CONCURRENCY".into(), args.concurrency.to_string());
    let workers = (0..args.workers)
        .map(|_| env.new_worker())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let page_size = args.page_size.to_string();
    let windows = args.windows.to_string();
    let sched = env.scheduler_with(&[
        ("PUBLIC_URL", ""),
        ("FETCH_PAGE_SIZE", &page_size),
        ("FETCH_WINDOWS", &windows),
    ])?;
    let store = env.store()?;

    // Record the connector (as Hull's /fetch schedule would) and ask for the import.
    let url = format!("{}/fetch?{}", env.ingest_url(), env.creds_query());
    let status = reqwest::Client::new().post(url).send().await?.status();
    if !status.is_success() {
        bail!("POST /fetch answered {status}");
    }
    env.close.clear_requests();
    let started = Instant::now();
    let progress = loop {
        sched.tick().await;
        let handled: usize = join_all(workers.iter().map(|w| w.run_until_idle()))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .sum();
        let p: IncomingProgress = store
            .incoming_progress(CONNECTOR_ID)
            .await?
            .context("connector not recorded")?;
        let active = p.last_run.as_ref().is_some_and(|r| r.is_active());
        if !active && p.full_import_completed_at.is_some() {
            break p;
        }
        if !active && p.last_run.is_some() {
            bail!("the import ended without completing: {:?}", p.last_run);
        }
        if handled == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let run = progress.last_run.context("no run")?;
    let requests = env.close.requests();
    let mut by_path: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &requests {
        let group = r
            .path
            .trim_start_matches("/api/v1/")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let e = by_path.entry(group).or_default();
        e.0 += 1;
        if r.status == 429 {
            e.1 += 1;
        }
    }
    let total = requests.len();
    let limited = requests.iter().filter(|r| r.status == 429).count();
    let searches = requests
        .iter()
        .filter(|r| r.path.contains("/data/search"))
        .count();
    let leads = run.leads_imported as f64;
    let rate = total as f64 / elapsed;
    let allowed_leads_per_sec = args.rate_limit * f64::from(args.page_size);
    println!("closeio-bench import");
    println!("| parameter | value |\n|---|---|");
    println!(
        "| leads × contacts | {} × {} |",
        args.leads, args.contacts_per_lead
    );
    println!(
        "| rate limit (per key and endpoint group) | {} req/s |",
        args.rate_limit
    );
    println!(
        "| workers × concurrency | {} × {} |",
        args.workers, args.concurrency
    );
    println!(
        "| page size / windows | {} / {} |",
        args.page_size, args.windows
    );
    println!();
    println!("| measure | value |\n|---|---|");
    println!("| elapsed | {elapsed:.2} s |");
    println!("| leads imported | {} |", run.leads_imported);
    println!("| contacts imported | {} |", run.contacts_imported);
    println!("| pages | {} |", run.pages_done);
    println!("| leads per second | {:.1} |", leads / elapsed);
    println!("| Close requests | {total} ({limited} answered 429) |");
    println!(
        "| Close requests per lead | {:.4} |",
        total as f64 / leads.max(1.0)
    );
    println!(
        "| achieved Close request rate | {rate:.2} req/s ({:.1} % of the {} req/s limit) |",
        100.0 * rate / args.rate_limit,
        args.rate_limit
    );
    println!(
        "| of which searches | {:.2} req/s |",
        searches as f64 / elapsed
    );
    println!(
        "| share of Close requests answered 429 | {:.2} % |",
        100.0 * limited as f64 / (total.max(1) as f64)
    );
    println!(
        "| leads per second the limit allows (every request a full page) | {allowed_leads_per_sec:.0} ({:.1} % reached) |",
        100.0 * leads / elapsed / allowed_leads_per_sec
    );
    println!();
    println!("| endpoint | requests | 429 |\n|---|---|---|");
    for (path, (n, l)) in by_path {
        println!("| /{path}/ | {n} | {l} |");
    }
    Ok(())
}
