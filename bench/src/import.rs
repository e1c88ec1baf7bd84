//! `closeio-bench import`: a full import of a generated Close organization, with every part
//! in its own process — the simulators (`closeio-sandbox`), ingest, the scheduler and N
//! workers (the release binaries) — so each process's CPU time and peak RSS are its own.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::Value;

use common::store::IncomingProgress;
use harness::services::free_port;
use harness::{default_settings, EnvOptions, TestEnv, API_KEY, CONNECTOR_ID, CONNECTOR_SECRET};

use crate::scale::{cpu_secs, peak_rss_mb, production_vars, sibling, spawn, wait_ready, Proc};

#[derive(Parser)]
pub struct ImportArgs {
    /// Leads in the Close organization.
    #[arg(long, default_value_t = 20_000)]
    pub leads: usize,
    /// Contacts per lead.
    #[arg(long, default_value_t = 3)]
    pub contacts_per_lead: usize,
    /// Close rate limit per API key and endpoint group (requests per second), enforced by the
    /// simulator; the workers are not told it (they learn it from Close's headers).
    #[arg(long, default_value_t = 20.0)]
    pub rate_limit: f64,
    /// Worker processes sharing the import.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Jobs per worker (`WORKER_CONCURRENCY`).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Leads per search page (`FETCH_PAGE_SIZE`, at most 200).
    #[arg(long, default_value_t = 200)]
    pub page_size: u32,
    /// Time windows of the import (`FETCH_WINDOWS`).
    #[arg(long, default_value_t = 8)]
    pub windows: u32,
    /// Random seed of the generated data.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3_600)]
    pub timeout_secs: u64,
}

/// The simulators' process: Close seeded with the organization, Hull with the connector.
fn start_sandbox(args: &ImportArgs, close_port: u16, hull_port: u16) -> anyhow::Result<Proc> {
    let child = Command::new(sibling("closeio-sandbox")?)
        .env_clear()
        .env("SANDBOX_CLOSE_LISTEN", format!("127.0.0.1:{close_port}"))
        .env("SANDBOX_HULL_LISTEN", format!("127.0.0.1:{hull_port}"))
        .env("SANDBOX_API_KEYS", API_KEY)
        .env("SANDBOX_SEED_LEADS", args.leads.to_string())
        .env(
            "SANDBOX_CONTACTS_PER_LEAD",
            args.contacts_per_lead.to_string(),
        )
        .env("SANDBOX_SEED_VALUE", args.seed.to_string())
        .env("SANDBOX_RATE_LIMIT", args.rate_limit.to_string())
        .env("SANDBOX_HULL_CONNECTOR_ID", CONNECTOR_ID)
        .env("SANDBOX_HULL_CONNECTOR_SECRET", CONNECTOR_SECRET)
        .env(
            "SANDBOX_HULL_PRIVATE_SETTINGS",
            default_settings().to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting closeio-sandbox")?;
    Ok(Proc {
        name: "simulators".into(),
        child,
        metrics_url: String::new(),
        wrapped: false,
    })
}

/// Waits until the Close simulator answers (seeding a large organization takes a while).
async fn wait_sandbox(http: &reqwest::Client, close_port: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{close_port}/_sandbox/counters");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        if http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the simulators did not start within 10 minutes")
}

/// Close requests per route and status since the simulator started, from its counters.
async fn close_counters(http: &reqwest::Client, close_port: u16) -> BTreeMap<String, (u64, u64)> {
    let url = format!("http://127.0.0.1:{close_port}/_sandbox/counters");
    let Ok(r) = http.get(url).send().await else {
        return BTreeMap::new();
    };
    let counters: Value = r.json().await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for (route, by_status) in counters.as_object().into_iter().flatten() {
        let (mut all, mut limited) = (0, 0);
        for (status, n) in by_status.as_object().into_iter().flatten() {
            let n = n.as_u64().unwrap_or(0);
            all += n;
            if status == "429" {
                limited += n;
            }
        }
        out.insert(route.clone(), (all, limited));
    }
    out
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.concurrency == 0 {
        bail!("--workers and --concurrency must be at least 1");
    }
    let http = reqwest::Client::new();
    let (close_port, hull_port) = (free_port()?, free_port()?);
    eprintln!(
        "seeding {} leads × {} contacts in the simulators' process…",
        args.leads, args.contacts_per_lead
    );
    let sandbox = start_sandbox(&args, close_port, hull_port)?;
    wait_sandbox(&http, close_port).await?;
    // The harness provides the database and the queue prefix; its in-process simulators stay
    // idle: every process below talks to the sandbox process.
    let env = TestEnv::start(EnvOptions::default()).await?;
    let result = run_with(&env, &args, sandbox, close_port, hull_port).await;
    env.cleanup().await;
    result
}

async fn run_with(
    env: &TestEnv,
    args: &ImportArgs,
    sandbox: Proc,
    close_port: u16,
    hull_port: u16,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let hull = format!("127.0.0.1:{hull_port}");
    let mut vars = production_vars(env);
    for (k, v) in [
        (
            "CLOSE_API_URL",
            format!("http://127.0.0.1:{close_port}/api/v1"),
        ),
        (
            "HULL_FIREHOSE_URL",
            format!("http://{hull}/api/v1/firehose"),
        ),
        ("HULL_KEY_HOSTS", hull.clone()),
        ("HULL_ORGANIZATIONS", hull.clone()),
        ("WORKER_CONCURRENCY", args.concurrency.to_string()),
        ("FETCH_PAGE_SIZE", args.page_size.to_string()),
        ("FETCH_WINDOWS", args.windows.to_string()),
        ("LOG_FORMAT", "json".into()),
    ] {
        vars.insert(k.into(), v);
    }
    let mut procs = vec![sandbox];
    let (ingest, ingest_port) = spawn("closeio-ingest", "ingest".into(), &vars, "INGEST_LISTEN")?;
    wait_ready(&http, ingest_port).await?;
    procs.push(ingest);
    procs.push(crate::scale::start_scheduler(&http, &vars).await?);
    procs.extend(crate::scale::start_workers(&http, &vars, args.workers).await?);
    let store = env.store()?;
    let cpu_before: Vec<f64> = procs.iter().map(|p| cpu_secs(p.child.id())).collect();
    let requests_before = close_counters(&http, close_port).await;

    // Record the connector (as Hull's /fetch schedule would) and ask for the import.
    let url = format!(
        "http://127.0.0.1:{ingest_port}/fetch?organization={hull}&ship={CONNECTOR_ID}&secret={CONNECTOR_SECRET}"
    );
    let status = http.post(url).send().await?.status();
    if !status.is_success() {
        bail!("POST /fetch answered {status}");
    }
    let started = Instant::now();
    let progress = loop {
        let p: Option<IncomingProgress> = store.incoming_progress(CONNECTOR_ID).await?;
        if let Some(p) = p {
            let active = p.last_run.as_ref().is_some_and(|r| r.is_active());
            if !active && p.full_import_completed_at.is_some() {
                break p;
            }
            if !active && p.last_run.is_some() {
                bail!("the import ended without completing: {:?}", p.last_run);
            }
        }
        if started.elapsed() > Duration::from_secs(args.timeout_secs) {
            bail!("timed out after {} s", args.timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let run = progress.last_run.context("no run")?;
    let leads = run.leads_imported as f64;

    let requests_after = close_counters(&http, close_port).await;
    let mut by_route: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (route, (all, limited)) in requests_after {
        let (b_all, b_limited) = requests_before.get(&route).copied().unwrap_or((0, 0));
        if all > b_all {
            by_route.insert(route, (all - b_all, limited - b_limited));
        }
    }
    let total: u64 = by_route.values().map(|v| v.0).sum();
    let limited: u64 = by_route.values().map(|v| v.1).sum();

    println!("closeio-bench import");
    println!("| parameter | value |\n|---|---|");
    println!(
        "| leads × contacts | {} × {} |",
        args.leads, args.contacts_per_lead
    );
    println!(
        "| Close limit (per key and endpoint group; the workers are not told) | {} req/s |",
        args.rate_limit
    );
    println!(
        "| worker processes × concurrency | {} × {} |",
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
    let rate = total as f64 / elapsed;
    println!(
        "| achieved Close request rate | {rate:.2} req/s ({:.1} % of the {} req/s limit) |",
        100.0 * rate / args.rate_limit,
        args.rate_limit
    );
    println!();
    println!("| process | CPU s | CPU s per 1 000 leads | peak RSS MB |\n|---|---|---|---|");
    for (p, before) in procs.iter().zip(cpu_before) {
        let cpu = cpu_secs(p.child.id()) - before;
        println!(
            "| {} | {cpu:.2} | {:.3} | {:.1} |",
            p.name,
            1000.0 * cpu / leads.max(1.0),
            peak_rss_mb(p.child.id())
        );
    }
    println!();
    println!("| Close route | requests | 429 |\n|---|---|---|");
    for (route, (n, l)) in by_route {
        println!("| {route} | {n} | {l} |");
    }
    drop(procs);
    Ok(())
}
