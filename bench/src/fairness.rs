//! `closeio-bench fairness`: tenant A queues a large backlog of new accounts on its Close key;
//! then tenant B, with a key of its own, sends one update of its (already synced) account at a
//! time. Measured: B's time to Close (from sending the notification to Close answering the
//! lead's update), over repeats, while A saturates its key. Ingest, the workers and the scheduler (which brings deferred jobs
//! back) run as their own processes; the simulators run in this one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use harness::sandbox::close::CloseConfig;
use harness::sandbox::hull::ConnectorSeed;
use harness::{EnvOptions, TestEnv, API_KEY, CONNECTOR_ID, SYNC_SEGMENT};

use crate::scale::{
    metric_sum, metrics_text, production_vars, spawn, start_scheduler, wait_ready, Proc,
};

const B_ID: &str = "5c092905c36af496c700b00b";
const B_SECRET: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const B_KEY: &str = "api_bench_key_tenant_b";

/// Arguments of `fairness`.
#[derive(clap::Parser)]
pub struct FairnessArgs {
    /// New accounts tenant A queues before B's first update.
    #[arg(long, default_value_t = 10_000)]
    pub backlog: usize,
    /// B's updates (a new name for its account each), one after the other.
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// Pause between two of B's updates, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub interval_secs: f64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// `WORKER_CONCURRENCY` of each worker.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The simulator's limit per API key and endpoint group (requests per second, 1 s
    /// windows), the same for both tenants; the workers are not told it.
    #[arg(long, default_value_t = 10.0)]
    pub rate_limit: f64,
    /// `WORKER_DEFER_AFTER_SECS` (unset: the worker's default).
    #[arg(long)]
    pub defer_after_secs: Option<f64>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sends `account:update` notifications for `ids` from `connector`, failing if Hull could not
/// deliver them.
async fn notify(env: &TestEnv, connector: &str, ids: &[String]) -> anyhow::Result<()> {
    let r = env.hull.notify(connector, "account:update", ids).await?;
    if r.failed {
        bail!("{connector}'s notification failed: {:?}", r.statuses);
    }
    Ok(())
}

/// Runs the scenario and prints the table.
pub async fn run(args: FairnessArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.concurrency == 0 || args.repeats == 0 {
        bail!("--workers, --concurrency and --repeats must be at least 1");
    }
    let account =
        |domain: String| json!({"domain": domain, "name": domain, "segment_ids": [SYNC_SEGMENT]});
    let mut accounts: Vec<Value> = (0..args.backlog)
        .map(|i| account(format!("a{i}.example.com")))
        .collect();
    accounts.push(account("b.example.com".to_owned()));
    let mut b_settings = harness::default_settings();
    b_settings["api_key"] = json!(B_KEY);
    eprintln!("seeding {} accounts…", accounts.len());
    let mut env = TestEnv::start(EnvOptions {
        accounts,
        close: CloseConfig {
            api_keys: vec![B_KEY.into()],
            rate_limit_rps: Some(args.rate_limit),
            rate_window_secs: 1.0,
            ..CloseConfig::default()
        },
        more_connectors: vec![ConnectorSeed {
            id: B_ID.into(),
            secret: B_SECRET.into(),
            private_settings: b_settings,
            settings: json!({}),
            url: None,
        }],
        ..EnvOptions::default()
    })
    .await?;
    let result = run_with(&mut env, &args).await;
    env.cleanup().await;
    result
}

async fn run_with(env: &mut TestEnv, args: &FairnessArgs) -> anyhow::Result<()> {
    let mut vars = production_vars(env);
    if let Some(d) = args.defer_after_secs {
        vars.insert("WORKER_DEFER_AFTER_SECS".into(), d.to_string());
    }
    vars.insert("WORKER_CONCURRENCY".into(), args.concurrency.to_string());
    vars.insert("DATABASE_POOL_SIZE".into(), "4".into());
    vars.insert("LOG_FORMAT".into(), "json".into());
    let http = reqwest::Client::new();
    let mut procs: Vec<Proc> = Vec::new();
    let (ingest, port) = spawn("closeio-ingest", "ingest".into(), &vars, "INGEST_LISTEN")?;
    wait_ready(&http, port).await?;
    for id in [CONNECTOR_ID, B_ID] {
        env.hull
            .set_connector_url(id, &format!("http://127.0.0.1:{port}"));
    }
    procs.push(ingest);
    procs.push(start_scheduler(&http, &vars).await?);
    procs.extend(crate::scale::start_workers(&http, &vars, args.workers).await?);

    let hull_accounts = env.hull.accounts();
    let id_of = |domain: &str| {
        hull_accounts
            .iter()
            .find(|a| a.attributes.get("domain").and_then(Value::as_str) == Some(domain))
            .map(|a| a.id.clone())
            .with_context(|| format!("no account {domain}"))
    };
    // B's account is synced first (its lead exists before A's backlog arrives).
    let b_id = id_of("b.example.com")?;
    notify(env, B_ID, std::slice::from_ref(&b_id)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.close.leads().is_empty() {
        if Instant::now() > deadline {
            bail!("B's lead was not created");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_ids = (0..args.backlog)
        .map(|i| id_of(&format!("a{i}.example.com")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!("tenant A queues {} new accounts…", a_ids.len());
    let queued = Instant::now();
    notify(env, CONNECTOR_ID, &a_ids).await?;
    let queued_secs = queued.elapsed().as_secs_f64();
    let started_us = now_us();
    let mut latencies = Vec::new();
    for k in 0..args.repeats {
        tokio::time::sleep(Duration::from_secs_f64(args.interval_secs)).await;
        let name = format!("B revision {k}");
        env.hull
            .upsert_account(json!({"domain": "b.example.com", "name": name}));
        let sent = now_us();
        notify(env, B_ID, std::slice::from_ref(&b_id)).await?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let arrived = loop {
            let hit = env.close.requests().into_iter().find(|q| {
                q.api_key.as_deref() == Some(B_KEY)
                    && q.method == "PUT"
                    && q.group == "lead-write"
                    && (200..300).contains(&q.status)
                    && q.body
                        .as_ref()
                        .and_then(|b| b.get("name"))
                        .and_then(Value::as_str)
                        == Some(name.as_str())
            });
            if let Some(q) = hit {
                break q.at_us;
            }
            if Instant::now() > deadline {
                bail!("B's update {k} did not reach Close within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let secs = arrived.saturating_sub(sent) as f64 / 1e6;
        eprintln!("B update {k}: {secs:.3} s");
        latencies.push(secs);
    }
    let ended_us = now_us();
    let requests = env.close.requests();
    let window = (ended_us - started_us) as f64 / 1e6;
    let a_reqs: Vec<_> = requests
        .iter()
        .filter(|q| q.api_key.as_deref() == Some(API_KEY) && q.at_us >= started_us)
        .collect();
    let mut a_groups: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for q in &a_reqs {
        let e = a_groups.entry(q.group).or_default();
        if (200..300).contains(&q.status) {
            e.0 += 1;
        } else if q.status == 429 {
            e.1 += 1;
        }
    }
    let a_leads = requests
        .iter()
        .filter(|q| {
            q.api_key.as_deref() == Some(API_KEY)
                && q.method == "POST"
                && q.group == "lead-write"
                && (200..300).contains(&q.status)
        })
        .count();
    let mut deferred = 0.0;
    for p in procs.iter().filter(|p| p.name.starts_with("worker")) {
        deferred += metric_sum(
            &metrics_text(&http, &p.metrics_url).await,
            "worker_jobs_total",
            &["outcome=\"deferred\""],
        );
    }
    drop(procs);
    latencies.sort_by(f64::total_cmp);
    println!("closeio-bench fairness");
    println!(
        "tenant A: {} new accounts queued (in {queued_secs:.1} s) before B's first update; tenant B: {} updates of its synced account, one every {} s; simulator limit {} req/s per key and endpoint group (1 s windows), not told to the workers; {} worker processes × WORKER_CONCURRENCY={}, WORKER_DEFER_AFTER_SECS={}",
        args.backlog,
        args.repeats,
        args.interval_secs,
        args.rate_limit,
        args.workers,
        args.concurrency,
        args.defer_after_secs
            .map_or_else(|| "default".to_owned(), |d| d.to_string()),
    );
    println!();
    println!("| B's time to Close p50 | p99 | max | A's ok req/s per group while B was measured (% of limit) | A's 429s | A's leads created | jobs deferred |");
    println!("|---|---|---|---|---|---|---|");
    let a_rates: Vec<String> = a_groups
        .iter()
        .filter(|(_, (ok, _))| *ok >= 10)
        .map(|(g, (ok, _))| format!("{g} {:.0} %", 100.0 * *ok as f64 / window / args.rate_limit))
        .collect();
    let a_429: usize = a_groups.values().map(|(_, l)| l).sum();
    println!(
        "| {:.2} s | {:.2} s | {:.2} s | {} | {a_429} | {a_leads} | {deferred:.0} |",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        a_rates.join(", "),
    );
    Ok(())
}
