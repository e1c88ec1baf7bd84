//! `closeio-bench scale`: new accounts with their users, then the same again unchanged (Hull's
//! echo of the write-back, then the same entities re-sent as exports), through
//! ingest and N **worker processes** (the release binaries next to this one), against a Close
//! simulator that enforces a per-key, per-endpoint-group limit the workers are not told. The
//! simulators run in this process; ingest and every worker run in their own, so their CPU time
//! and peak RSS are their own. Postgres's CPU is that of the backends serving the run's
//! database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use harness::sandbox::close::CloseConfig;
use harness::services::free_port;
use harness::{EnvOptions, TestEnv, CONNECTOR_ID, SYNC_SEGMENT};

/// Arguments of `scale`.
#[derive(clap::Parser)]
pub struct ScaleArgs {
    /// New Hull accounts.
    #[arg(long, default_value_t = 2_000)]
    pub accounts: usize,
    /// New users per account.
    #[arg(long, default_value_t = 3)]
    pub users_per_account: usize,
    /// Worker process counts to run, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub workers: Vec<usize>,
    /// `WORKER_CONCURRENCY` of each worker.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The simulator's limit per API key and endpoint group (requests per second, over 1 s
    /// windows). The workers are not told it.
    #[arg(long, default_value_t = 10.0)]
    pub rate_limit: f64,
    /// `DATABASE_POOL_SIZE` of ingest and of each worker.
    #[arg(long, default_value_t = 4)]
    pub pool_size: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 1_800)]
    pub timeout_secs: u64,
}

/// A process of the system under test.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) metrics_url: String,
    /// Started under `BENCH_WORKER_WRAPPER`: stopped with SIGINT, so that a profiler writes
    /// its data and stops the process it runs.
    pub(crate) wrapped: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.wrapped {
            let pid = self.child.id().to_string();
            let interrupted = Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .is_ok_and(|s| s.success());
            let deadline = Instant::now() + Duration::from_secs(60);
            while interrupted && Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat` (clock ticks of 1/100 s).
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size in MB, from `/proc/<pid>/status` (`VmHWM`).
pub(crate) fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Sum of the samples of `metric` whose labels contain one of `labels` (all when empty).
pub(crate) fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .filter(|l| labels.is_empty() || labels.iter().any(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

pub(crate) async fn metrics_text(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The release binary `name` next to this one.
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build the binaries first (cargo build --release --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

pub(crate) fn spawn(
    bin: &str,
    name: String,
    vars: &BTreeMap<String, String>,
    listen_var: &str,
) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    // Each process names its Postgres connections, so that they can be counted per process.
    let db_url = format!(
        "{}?application_name={}",
        vars.get("DATABASE_URL")
            .map(String::as_str)
            .unwrap_or_default(),
        name.replace(' ', "-")
    );
    // `BENCH_WORKER_WRAPPER` runs each worker under a profiler, e.g.
    // `heaptrack -o /tmp/worker` or `perf record -g -o /tmp/worker.data --`.
    let wrapper: Vec<String> = match std::env::var("BENCH_WORKER_WRAPPER") {
        Ok(w) if bin == "closeio-worker" => w.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    // `BENCH_TRACE_DIR` keeps each process's log there (at `BENCH_RUST_LOG`, default info),
    // and each phase's Close requests (see [`write_trace`]).
    let trace = trace_dir().map(|dir| {
        let level = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into());
        (dir, level)
    });
    let wrapped = !wrapper.is_empty();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(sibling(bin)?);
            c
        }
        None => Command::new(sibling(bin)?),
    };
    let child = command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars)
        .env("DATABASE_URL", db_url)
        .env(listen_var, format!("127.0.0.1:{port}"))
        .env(
            "RUST_LOG",
            trace.as_ref().map_or("warn", |(_, level)| level.as_str()),
        )
        .stdout(match &trace {
            Some((dir, _)) => Stdio::from(
                std::fs::File::create(dir.join(format!("{name}.log")))
                    .with_context(|| format!("creating the log of {name} in {}", dir.display()))?,
            ),
            None => Stdio::null(),
        })
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    Ok((
        Proc {
            name,
            child,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            wrapped,
        },
        port,
    ))
}

pub(crate) async fn wait_ready(http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("a process on port {port} did not become ready")
}

/// CPU seconds of the Postgres backends serving `database`.
async fn postgres_cpu(client: &tokio_postgres::Client) -> f64 {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| cpu_secs(u32::try_from(r.get::<_, i32>(0)).unwrap_or(0)))
        .sum()
}

/// The directory named by `BENCH_TRACE_DIR`, if any.
fn trace_dir() -> Option<PathBuf> {
    std::env::var_os("BENCH_TRACE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// With `BENCH_TRACE_DIR`, writes a phase's Close requests there as JSON lines
/// (`requests-<label>.jsonl`: arrival in µs, method, path, query, group, status, body).
fn write_trace(
    label: &str,
    requests: &[harness::sandbox::close::RequestRecord],
) -> anyhow::Result<()> {
    let Some(dir) = trace_dir() else {
        return Ok(());
    };
    let path = dir.join(format!("requests-{label}.jsonl"));
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for r in requests {
        serde_json::to_writer(&mut out, r)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// What one phase measured.
struct Phase {
    wall: f64,
    requests: Vec<harness::sandbox::close::RequestRecord>,
    cpu: BTreeMap<String, f64>,
    postgres_cpu: f64,
    /// Hull firehose calls the workers made.
    firehose_calls: u64,
}

/// One row of the result table.
struct Row {
    workers: usize,
    new: Phase,
    /// Hull's next notification of each entity, whose changes are the write-back (the echo).
    unchanged: Phase,
    /// Each entity sent again as an export: no changes to go by, so each job reads its sync
    /// state and finds the body unchanged.
    resent: Phase,
    peak_rss: BTreeMap<String, f64>,
    leads: usize,
    contacts: usize,
    duplicates: usize,
    max_pg_connections: i64,
}

/// Runs one phase: notifies every account, then every user (as exports if `export`), and
/// waits until the workers have finished every job ingest published. `writebacks`: the
/// firehose entries the phase is expected to bring (one per entity written to Close).
async fn phase(
    env: &TestEnv,
    procs: &[Proc],
    pg: &tokio_postgres::Client,
    timeout: Duration,
    max_connections: &mut i64,
    export: bool,
    writebacks: usize,
) -> anyhow::Result<Phase> {
    let http = reqwest::Client::new();
    let cpu_before: Vec<f64> = procs.iter().map(|p| cpu_secs(p.child.id())).collect();
    let pg_before = postgres_cpu(pg).await;
    let done_before = finished_jobs(&http, procs).await;
    let published_before = published_jobs(&http, procs).await;
    env.close.clear_requests();
    let firehose_before = env.hull.firehose_calls();
    let entries_before = env.hull.firehose_entries();
    let started = Instant::now();
    let accounts: Vec<String> = env.hull.accounts().into_iter().map(|a| a.id).collect();
    let users: Vec<String> = env.hull.users().into_iter().map(|u| u.id).collect();
    for (channel, ids) in [("account:update", accounts), ("user:update", users)] {
        let r = if export {
            env.hull.notify_export(CONNECTOR_ID, channel, &ids).await?
        } else {
            env.hull.notify(CONNECTOR_ID, channel, &ids).await?
        };
        if r.failed {
            bail!("a notification failed: {:?}", r.statuses);
        }
    }
    let published = published_jobs(&http, procs).await - published_before;
    // Every scrape of a worker's /metrics costs it about half a millisecond of CPU, counted as
    // its own: scraped through the whole phase, N workers are charged N times as much for the
    // same entities (Prometheus scrapes every 15 s or so). So while the phase's write-backs
    // are still arriving at the Hull simulator (in this process, free to ask), the workers
    // are left alone; they are scraped only to see the last jobs finish. Write-backs that
    // stop arriving for 10 s end the wait as well.
    let mut seen = env.hull.firehose_entries();
    let mut last_progress = Instant::now();
    let mut last_connections_check = Instant::now();
    while env.hull.firehose_entries() - entries_before < writebacks
        && last_progress.elapsed() < Duration::from_secs(10)
    {
        if started.elapsed() > timeout {
            bail!(
                "timed out: {} of {writebacks} write-backs arrived",
                seen - entries_before
            );
        }
        if last_connections_check.elapsed() >= Duration::from_secs(1) {
            *max_connections = (*max_connections).max(max_worker_connections(pg).await?);
            last_connections_check = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = env.hull.firehose_entries();
        if now > seen {
            (seen, last_progress) = (now, Instant::now());
        }
    }
    if seen - entries_before < writebacks {
        eprintln!(
            "write-backs stalled at {} of {writebacks} for 10 s; waiting for the jobs to finish",
            seen - entries_before
        );
    }
    let tail_started = Instant::now();
    loop {
        let done = finished_jobs(&http, procs).await - done_before;
        *max_connections = (*max_connections).max(max_worker_connections(pg).await?);
        if done >= published {
            break;
        }
        if started.elapsed() > timeout {
            bail!("timed out: {done} of {published} jobs finished");
        }
        // Polled every 100 ms for 10 s, then once a second (a long phase's wall time is then
        // up to a second late).
        let pause = if tail_started.elapsed() < Duration::from_secs(10) {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        tokio::time::sleep(pause).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = procs
        .iter()
        .zip(cpu_before)
        .map(|(p, before)| (p.name.clone(), cpu_secs(p.child.id()) - before))
        .collect();
    Ok(Phase {
        wall,
        requests: env.close.requests(),
        cpu,
        postgres_cpu: postgres_cpu(pg).await - pg_before,
        firehose_calls: env.hull.firehose_calls() - firehose_before,
    })
}

/// The most Postgres connections one worker process holds right now.
async fn max_worker_connections(pg: &tokio_postgres::Client) -> anyhow::Result<i64> {
    let row = pg
        .query_one(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE 'worker-%'
             GROUP BY application_name) per_worker",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Jobs the workers finished for good (written, unchanged, skipped, stale, dead letter).
async fn finished_jobs(http: &reqwest::Client, procs: &[Proc]) -> f64 {
    let mut sum = 0.0;
    for p in procs.iter().filter(|p| p.name.starts_with("worker")) {
        sum += metric_sum(
            &metrics_text(http, &p.metrics_url).await,
            "worker_jobs_total",
            &[
                "outcome=\"written\"",
                "outcome=\"unchanged\"",
                "outcome=\"skipped\"",
                "outcome=\"stale\"",
                "outcome=\"dead\"",
            ],
        );
    }
    sum
}

async fn published_jobs(http: &reqwest::Client, procs: &[Proc]) -> f64 {
    let mut sum = 0.0;
    for p in procs.iter().filter(|p| p.name == "ingest") {
        sum += metric_sum(
            &metrics_text(http, &p.metrics_url).await,
            "ingest_jobs_published_total",
            &[],
        );
    }
    sum
}

fn profiles(args: &ScaleArgs) -> (Vec<Value>, Vec<Value>) {
    let domain = |i: usize| format!("scale{i}.example.com");
    let accounts = (0..args.accounts)
        .map(|i| json!({"domain": domain(i), "name": format!("Scale Co {i}"), "segment_ids": [SYNC_SEGMENT]}))
        .collect();
    let users = (0..args.accounts)
        .flat_map(|i| {
            (0..args.users_per_account).map(move |j| {
                json!({"email": format!("user{j}@{}", domain(i)), "name": format!("User {i}-{j}"), "title": "Buyer", "account_domain": domain(i)})
            })
        })
        .collect();
    (accounts, users)
}

async fn run_one(args: &ScaleArgs, workers: usize) -> anyhow::Result<Row> {
    let (accounts, users) = profiles(args);
    let mut env = TestEnv::start(EnvOptions {
        accounts,
        users,
        close: CloseConfig {
            rate_limit_rps: Some(args.rate_limit),
            rate_window_secs: 1.0,
            ..CloseConfig::default()
        },
        ..EnvOptions::default()
    })
    .await?;
    let result = run_with(&mut env, args, workers).await;
    env.cleanup().await;
    result
}

/// The test environment's variables with the production defaults where the tests set their
/// own: no Close ceiling (the workers learn the limit from Close's headers), deferral, lead
/// gathering, retries and the scheduler's tick as shipped; no Close webhooks.
pub(crate) fn production_vars(env: &TestEnv) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = env.vars.clone().into_iter().collect();
    for test_only in [
        "CLOSE_RATE_LIMIT_RPS",
        "WORKER_DEFER_AFTER_SECS",
        "NEW_LEAD_GATHER_SECS",
        "SCHEDULER_TICK_SECS",
        "WORKER_INLINE_RETRIES",
        "WORKER_RETRY_BASE_SECS",
        // Close webhooks would go to the harness's in-process ingest: not measured here.
        "PUBLIC_URL",
    ] {
        vars.remove(test_only);
    }
    vars
}

/// Starts the scheduler (it brings deferred jobs back) as its own process.
/// Starts `n` worker processes (`worker 1` …) and waits until each one is ready.
pub(crate) async fn start_workers(
    http: &reqwest::Client,
    vars: &BTreeMap<String, String>,
    n: usize,
) -> anyhow::Result<Vec<Proc>> {
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let (w, port) = spawn(
            "closeio-worker",
            format!("worker {}", i + 1),
            vars,
            "WORKER_LISTEN",
        )?;
        wait_ready(http, port).await?;
        workers.push(w);
    }
    Ok(workers)
}

pub(crate) async fn start_scheduler(
    http: &reqwest::Client,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<Proc> {
    let mut vars = vars.clone();
    let admin_port = free_port()?;
    vars.insert("ADMIN_LISTEN".into(), format!("127.0.0.1:{admin_port}"));
    let (sched, port) = spawn(
        "closeio-scheduler",
        "scheduler".into(),
        &vars,
        "SCHEDULER_LISTEN",
    )?;
    wait_ready(http, port).await?;
    Ok(sched)
}

async fn run_with(env: &mut TestEnv, args: &ScaleArgs, workers: usize) -> anyhow::Result<Row> {
    let mut vars = production_vars(env);
    vars.insert("WORKER_CONCURRENCY".into(), args.concurrency.to_string());
    vars.insert("LOG_FORMAT".into(), "json".into());
    // A small fixed pool, whatever the concurrency: connections are never held across a
    // Close or Hull call or a wait for budget.
    vars.insert("DATABASE_POOL_SIZE".into(), args.pool_size.to_string());
    let http = reqwest::Client::new();
    let mut procs = Vec::new();
    let (ingest, port) = spawn("closeio-ingest", "ingest".into(), &vars, "INGEST_LISTEN")?;
    wait_ready(&http, port).await?;
    env.hull
        .set_connector_url(CONNECTOR_ID, &format!("http://127.0.0.1:{port}"));
    procs.push(ingest);
    procs.push(start_scheduler(&http, &vars).await?);
    procs.extend(start_workers(&http, &vars, workers).await?);
    let (pg, conn) = tokio_postgres::connect(&env.db.url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut max_connections = 0;
    eprintln!("N = {workers}: new entities…");
    // Every new entity is written to Close, and written back to Hull once.
    let entities = args.accounts * (1 + args.users_per_account);
    let new = phase(
        env,
        &procs,
        &pg,
        timeout,
        &mut max_connections,
        false,
        entities,
    )
    .await?;
    write_trace(&format!("{workers}-new"), &new.requests)?;
    eprintln!("N = {workers}: unchanged…");
    let unchanged = phase(env, &procs, &pg, timeout, &mut max_connections, false, 0).await?;
    write_trace(&format!("{workers}-unchanged"), &unchanged.requests)?;
    eprintln!("N = {workers}: re-sent unchanged…");
    let resent = phase(env, &procs, &pg, timeout, &mut max_connections, true, 0).await?;
    write_trace(&format!("{workers}-resent"), &resent.requests)?;
    let peak_rss = procs
        .iter()
        .map(|p| (p.name.clone(), peak_rss_mb(p.child.id())))
        .collect();
    let leads = env.close.leads();
    let contacts = env.close.contacts();
    let lead_names: BTreeSet<String> = leads
        .iter()
        .filter_map(|l| {
            l["display_name"]
                .as_str()
                .or(l["name"].as_str())
                .map(str::to_owned)
        })
        .collect();
    let emails: BTreeSet<String> = contacts
        .iter()
        .filter_map(|c| c["emails"][0]["email"].as_str().map(str::to_owned))
        .collect();
    let duplicates = (leads.len() - lead_names.len()) + (contacts.len() - emails.len());
    drop(procs);
    Ok(Row {
        workers,
        new,
        unchanged,
        resent,
        peak_rss,
        leads: leads.len(),
        contacts: contacts.len(),
        duplicates,
        max_pg_connections: max_connections,
    })
}

/// Per endpoint group: answered ok, answered 429, and the ok rate over the span of the
/// group's requests.
fn groups(
    requests: &[harness::sandbox::close::RequestRecord],
) -> BTreeMap<&'static str, (usize, usize, f64)> {
    let mut by: BTreeMap<&'static str, Vec<&harness::sandbox::close::RequestRecord>> =
        BTreeMap::new();
    for r in requests {
        by.entry(r.group).or_default().push(r);
    }
    by.into_iter()
        .map(|(g, rs)| {
            let ok = rs.iter().filter(|r| (200..300).contains(&r.status)).count();
            let limited = rs.iter().filter(|r| r.status == 429).count();
            let first = rs.iter().map(|r| r.at_us).min().unwrap_or(0);
            let last = rs.iter().map(|r| r.at_us).max().unwrap_or(0);
            let span = (last.saturating_sub(first)) as f64 / 1e6;
            // n requests over a span have n - 1 gaps.
            let rate = if span > 0.0 {
                (ok.saturating_sub(1)) as f64 / span
            } else {
                0.0
            };
            (g, (ok, limited, rate))
        })
        .collect()
}

fn print_row(args: &ScaleArgs, row: &Row) {
    let accounts = args.accounts as f64;
    let entities = (args.accounts * (1 + args.users_per_account)) as f64;
    let n = &row.new;
    let total = n.requests.len();
    let limited = n.requests.iter().filter(|r| r.status == 429).count();
    let per_group: Vec<String> = groups(&n.requests)
        .into_iter()
        .filter(|(_, (ok, _, _))| *ok >= 20)
        .map(|(g, (_, _, rate))| format!("{g} {:.0} %", 100.0 * rate / args.rate_limit))
        .collect();
    let cpu_ms = |phase: &Phase, who: &str| -> f64 {
        phase
            .cpu
            .iter()
            .filter(|(name, _)| name.starts_with(who))
            .map(|(_, s)| s)
            .sum::<f64>()
            * 1000.0
            / entities
    };
    let worker_rss = row
        .peak_rss
        .iter()
        .filter(|(name, _)| name.starts_with("worker"))
        .map(|(_, mb)| *mb)
        .fold(0.0, f64::max);
    println!(
        "| {} | {} | {:.2} % | {:.2} | {:.2} | {:.3} / {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} / {:.3} | {:.1} / {:.1} | {:.1} s / {:.1} s / {:.1} s | {} / {} | {} | {} | {} |",
        row.workers,
        per_group.join(", "),
        100.0 * limited as f64 / total.max(1) as f64,
        total as f64 / accounts,
        n.firehose_calls as f64 / accounts,
        cpu_ms(n, "ingest"),
        cpu_ms(n, "worker"),
        cpu_ms(n, "scheduler"),
        n.postgres_cpu * 1000.0 / entities,
        cpu_ms(&row.unchanged, "ingest"),
        cpu_ms(&row.unchanged, "worker"),
        cpu_ms(&row.unchanged, "scheduler"),
        row.unchanged.postgres_cpu * 1000.0 / entities,
        cpu_ms(&row.resent, "ingest"),
        cpu_ms(&row.resent, "worker"),
        cpu_ms(&row.resent, "scheduler"),
        row.resent.postgres_cpu * 1000.0 / entities,
        row.peak_rss.get("ingest").copied().unwrap_or(0.0),
        worker_rss,
        n.wall,
        row.unchanged.wall,
        row.resent.wall,
        row.leads,
        row.contacts,
        row.unchanged.requests.len() + row.resent.requests.len(),
        row.duplicates,
        row.max_pg_connections,
    );
}

/// Runs `scale` for every worker count and prints the table.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    if args.workers.is_empty() || args.workers.contains(&0) || args.concurrency == 0 {
        bail!("--workers and --concurrency must be at least 1");
    }
    let mut rows = Vec::new();
    for &n in &args.workers {
        rows.push(run_one(&args, n).await?);
    }
    println!("closeio-bench scale");
    println!(
        "{} new accounts × {} users, then the same unchanged (Hull's echo of the write-back), then re-sent as exports; simulator limit {} req/s per key and endpoint group (1 s windows), not told to the workers; WORKER_CONCURRENCY={}, DATABASE_POOL_SIZE={}",
        args.accounts, args.users_per_account, args.rate_limit, args.concurrency, args.pool_size
    );
    println!();
    println!("| workers | ok req/s per group (% of limit) | 429 share | Close req per new account | Hull firehose calls per new account | CPU ms per new entity: ingest / workers / scheduler / Postgres | CPU ms per unchanged entity (echo): ingest / workers / scheduler / Postgres | CPU ms per unchanged entity (re-sent): ingest / workers / scheduler / Postgres | peak RSS MB: ingest / largest worker | wall: new / echo / re-sent | leads / contacts in Close | Close req when unchanged | duplicates | Postgres connections of one worker (max) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        print_row(&args, row);
    }
    println!();
    println!("Where the 429s were (new entities): per group, and in which tenth of the run.");
    println!();
    println!("| workers | 429 per group | 429 per tenth of the run |");
    println!("|---|---|---|");
    for row in &rows {
        let reqs = &row.new.requests;
        let first = reqs.iter().map(|r| r.at_us).min().unwrap_or(0);
        let last = reqs
            .iter()
            .map(|r| r.at_us)
            .max()
            .unwrap_or(0)
            .max(first + 1);
        let mut tenths = [0usize; 10];
        let mut by_group: BTreeMap<&str, usize> = BTreeMap::new();
        for r in reqs.iter().filter(|r| r.status == 429) {
            let i = ((r.at_us - first) * 10 / (last - first + 1)) as usize;
            tenths[i.min(9)] += 1;
            *by_group.entry(r.group).or_default() += 1;
        }
        if std::env::var_os("SCALE_TRACE_429").is_some() {
            for r in reqs.iter().filter(|r| r.status == 429) {
                let before: Vec<String> = reqs
                    .iter()
                    .filter(|o| {
                        o.group == r.group && o.at_us <= r.at_us && r.at_us - o.at_us < 1_100_000
                    })
                    .map(|o| format!("{}:{}", (r.at_us - o.at_us) / 1000, o.status))
                    .collect();
                eprintln!(
                    "429 {} at {:.3}s; 1.1 s before (ms ago:status): {}",
                    r.group,
                    (r.at_us - first) as f64 / 1e6,
                    before.join(" ")
                );
            }
        }
        let groups: Vec<String> = by_group.iter().map(|(g, n)| format!("{g} {n}")).collect();
        let tenths: Vec<String> = tenths.iter().map(usize::to_string).collect();
        println!(
            "| {} | {} | {} |",
            row.workers,
            groups.join(", "),
            tenths.join(" ")
        );
    }
    Ok(())
}
