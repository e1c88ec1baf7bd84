//! Fault tests: the outgoing sync under worker crashes, broker and database restarts, a
//! flaky Close API, permanent rejections and revoked keys. Every scenario ends with an exact
//! check of the Close simulator: every entity present, none twice.
//!
//! Load: `FAULT_ACCOUNTS` accounts with `FAULT_USERS_PER_ACCOUNT` users each (defaults 200 and
//! 3, which CI runs); `scripts/fault-suite.sh` runs the same tests at 2 000 accounts and 6 000
//! users and prints one `FAULT-REPORT` line per scenario (see `docs/reliability.md`). Every wait
//! is bounded by `FAULT_TIMEOUT_SECS` (default 300); `FAULT_OUTAGE_SECS` (default 3) is how long
//! Postgres stays down.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::sandbox::close::{CloseConfig, Faults};
use harness::services::{PgCluster, RabbitNode, StopMode};
use harness::{EnvOptions, TestEnv, CONNECTOR_ID, OTHER_SEGMENT, SYNC_SEGMENT};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use admin::{Admin, ReplayTarget};
use common::jobs::QueueKind;

/// The size of a scenario.
#[derive(Debug, Clone, Copy)]
struct Load {
    accounts: usize,
    users_per_account: usize,
}

impl Load {
    fn from_env() -> Load {
        let n = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Load {
            accounts: n("FAULT_ACCOUNTS", 200),
            users_per_account: n("FAULT_USERS_PER_ACCOUNT", 3),
        }
    }
    fn users(&self) -> usize {
        self.accounts * self.users_per_account
    }
    fn total(&self) -> usize {
        self.accounts + self.users()
    }
}

fn timeout() -> Duration {
    Duration::from_secs(
        std::env::var("FAULT_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    )
}

/// How long the database stays down in the restart scenario (`FAULT_OUTAGE_SECS`, default 3).
fn outage_hold() -> Duration {
    Duration::from_secs_f64(
        std::env::var("FAULT_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3.0),
    )
}

fn domain(i: usize) -> String {
    format!("fault{i}.example.com")
}

fn email(i: usize, j: usize) -> String {
    format!("user{j}@fault{i}.example.com")
}

fn profiles(load: Load) -> (Vec<Value>, Vec<Value>) {
    let accounts = (0..load.accounts)
        .map(|i| json!({"domain": domain(i), "name": format!("Fault Co {i}"), "segment_ids": [SYNC_SEGMENT]}))
        .collect();
    let users = (0..load.accounts)
        .flat_map(|i| {
            (0..load.users_per_account).map(move |j| {
                json!({"email": email(i, j), "name": format!("User {i}-{j}"), "title": "Buyer", "account_domain": domain(i)})
            })
        })
        .collect();
    (accounts, users)
}

/// Private infrastructure a scenario may ask for.
#[derive(Default)]
struct Infra {
    rabbit: Option<RabbitNode>,
    pg: Option<PgCluster>,
}

async fn start_env(load: Load, close: CloseConfig, infra: &Infra) -> TestEnv {
    let (accounts, users) = profiles(load);
    let mut env = TestEnv::start(EnvOptions {
        accounts,
        users,
        close,
        amqp_url: infra.rabbit.as_ref().map(RabbitNode::url),
        admin_db_url: infra.pg.as_ref().map(PgCluster::admin_url),
        ..EnvOptions::default()
    })
    .await
    .expect("test env");
    env.vars.insert("WORKER_CONCURRENCY".into(), "8".into());
    env.vars.insert("DATABASE_POOL_SIZE".into(), "10".into());
    env.vars.insert("WORKER_DRAIN_SECS".into(), "5".into());
    env
}

/// Sends every profile to ingest as Hull does (accounts first, then users).
async fn notify_all(env: &TestEnv) {
    let accounts: Vec<String> = env.hull.accounts().into_iter().map(|a| a.id).collect();
    let users: Vec<String> = env.hull.users().into_iter().map(|u| u.id).collect();
    for (channel, ids) in [("account:update", accounts), ("user:update", users)] {
        let r = env
            .hull
            .notify(CONNECTOR_ID, channel, &ids)
            .await
            .expect("notify");
        assert!(!r.failed, "notification failed: {r:?}");
    }
}

/// Workers and a scheduler running in this process until stopped.
struct Background {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    fn start(env: &TestEnv, workers: usize) -> Background {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let w = env.new_worker().expect("worker");
            let s = stop.clone();
            tasks.push(tokio::spawn(async move {
                let _ = w.run(s).await;
            }));
        }
        let cfg = scheduler::SchedulerConfig::from_source(&env.vars).expect("scheduler config");
        let sched = scheduler::Scheduler::new(cfg).expect("scheduler");
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _ = sched.run(s).await;
        }));
        Background { stop, tasks }
    }

    async fn shutdown(mut self) {
        self.stop.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A worker process (SIGKILLed on drop).
struct WorkerProcess(Child);

impl WorkerProcess {
    fn spawn(env: &TestEnv) -> WorkerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_closeio-fault-worker"));
        cmd.envs(&env.vars)
            .env(
                "RUST_LOG",
                std::env::var("FAULT_WORKER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        WorkerProcess(cmd.spawn().expect("spawn worker process"))
    }

    /// SIGKILL, then reap.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then waits (bounded) for the drain and exit; returns whether it exited cleanly.
    fn terminate(mut self, within: Duration) -> bool {
        let sent = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + within;
        while sent && Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the outgoing sync stands: entities with a Close id, outgoing jobs waiting for a retry
/// (or parked), outgoing dead letters, outgoing jobs ready in the queue.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    synced: i64,
    retries: i64,
    dead: i64,
    ready: u32,
}

async fn progress(env: &TestEnv) -> Option<Progress> {
    let store = env.store().ok()?;
    let c = store.pool().get().await.ok()?;
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM sync_state WHERE close_id IS NOT NULL),
                    (SELECT count(*) FROM retries WHERE job_name LIKE 'outgoing%'),
                    (SELECT count(*) FROM dead_letters WHERE job_name LIKE 'outgoing%')",
            &[],
        )
        .await
        .ok()?;
    // The outgoing queue only: the incoming sync (a full import of what Close holds, started
    // by the scheduler) runs alongside and is not what these scenarios measure.
    let ready = env.depth(QueueKind::Outgoing).await.ok()?;
    Some(Progress {
        synced: row.get(0),
        retries: row.get(1),
        dead: row.get(2),
        ready,
    })
}

/// Polls until at least `n` entities are synced (bounded).
async fn wait_synced_at_least(env: &TestEnv, n: usize) {
    let deadline = Instant::now() + timeout();
    loop {
        if progress(env).await.is_some_and(|p| p.synced >= n as i64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} entities synced within {:?}",
            timeout()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the Hull simulator's log until ingest answered a notification of `channel` with 503
/// and flow control "retry".
async fn wait_for_503(env: &TestEnv, channel: &str) {
    let deadline = Instant::now() + timeout();
    loop {
        let log = env.hull.notification_log();
        if let Some(n) = log
            .iter()
            .find(|n| n.channel == channel && n.status == Some(503))
        {
            assert_eq!(n.response["flow_control"]["type"], json!("retry"), "{n:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ingest never answered 503 to {channel}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until every entity is synced, no outgoing job waits in the queue and no retry is
/// pending.
async fn wait_complete(env: &TestEnv, load: Load) -> Progress {
    let deadline = Instant::now() + timeout();
    let mut last = Progress::default();
    loop {
        if let Some(p) = progress(env).await {
            last = p;
            if p.synced >= load.total() as i64
                && p.retries == 0
                && p.ready == 0
                && tally(env, load).lost == 0
            {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not synced within {:?}: {last:?}",
            timeout()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls until the number of synced entities grows past its first reading (taken once the
/// database answers), or everything is synced: the sync is moving again.
async fn wait_resumed(env: &TestEnv, load: Load) -> Instant {
    let deadline = Instant::now() + timeout();
    let mut baseline = None;
    loop {
        if let Some(p) = progress(env).await {
            if p.synced >= load.total() as i64 {
                return Instant::now();
            }
            match baseline {
                None => baseline = Some(p.synced),
                Some(b) if p.synced > b => return Instant::now(),
                Some(_) => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "the sync did not resume within {:?}",
            timeout()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the Close simulator holds, compared with what Hull holds.
#[derive(Debug, Default)]
struct Tally {
    leads: usize,
    contacts: usize,
    lost: usize,
    duplicates: usize,
    misplaced: usize,
}

fn tally(env: &TestEnv, load: Load) -> Tally {
    let mut leads_by_url: HashMap<String, Vec<String>> = HashMap::new();
    let leads = env.close.leads();
    for l in &leads {
        let url = l
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let id = l
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        leads_by_url.entry(url).or_default().push(id);
    }
    let contacts = env.close.contacts();
    let mut contacts_by_email: HashMap<String, Vec<String>> = HashMap::new();
    for c in &contacts {
        let email = c
            .get("emails")
            .and_then(|e| e.get(0))
            .and_then(|e| e.get("email"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let lead = c
            .get("lead_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        contacts_by_email.entry(email).or_default().push(lead);
    }
    let mut t = Tally {
        leads: leads.len(),
        contacts: contacts.len(),
        ..Tally::default()
    };
    let mut expected_emails = HashSet::new();
    for i in 0..load.accounts {
        match leads_by_url.get(&domain(i)) {
            None => t.lost += 1,
            Some(ids) => t.duplicates += ids.len() - 1,
        }
        for j in 0..load.users_per_account {
            let e = email(i, j);
            match contacts_by_email.get(&e) {
                None => t.lost += 1,
                Some(lead_ids) => {
                    t.duplicates += lead_ids.len() - 1;
                    let home = leads_by_url.get(&domain(i)).and_then(|ids| ids.first());
                    if lead_ids.first() != home {
                        t.misplaced += 1;
                    }
                }
            }
            expected_emails.insert(e);
        }
    }
    // Anything in Close that no Hull profile explains is a duplicate too.
    t.duplicates += leads_by_url
        .keys()
        .filter(|u| !(0..load.accounts).any(|i| **u == domain(i)))
        .count();
    t.duplicates += contacts_by_email
        .keys()
        .filter(|e| !expected_emails.contains(*e))
        .count();
    t
}

/// When a scenario's phases ended.
struct Timing {
    started: Instant,
    /// End of the fault (restart done, last kill); the start for a fault lasting the whole run.
    fault_end: Instant,
    /// When the sync was seen moving again after the fault (restart scenarios).
    resumed: Option<Instant>,
    /// When everything was synced.
    completed: Instant,
}

fn assert_exact(env: &TestEnv, load: Load, scenario: &str, faults: &str, timing: &Timing) {
    let t = tally(env, load);
    let resumed = timing
        .resumed
        .map(|r| format!("{:.1}", r.duration_since(timing.fault_end).as_secs_f64()))
        .unwrap_or_else(|| "-".into());
    println!(
        "FAULT-REPORT scenario={scenario} accounts={} users={} faults=\"{faults}\" leads={} contacts={} lost={} duplicates={} misplaced={} resumed_secs={resumed} recover_secs={:.1} total_secs={:.1}",
        load.accounts,
        load.users(),
        t.leads,
        t.contacts,
        t.lost,
        t.duplicates,
        t.misplaced,
        timing.completed.duration_since(timing.fault_end).as_secs_f64(),
        timing.completed.duration_since(timing.started).as_secs_f64(),
    );
    assert_eq!(t.lost, 0, "{scenario}: entities lost: {t:?}");
    assert_eq!(t.duplicates, 0, "{scenario}: duplicates: {t:?}");
    assert_eq!(
        t.misplaced, 0,
        "{scenario}: contacts under the wrong lead: {t:?}"
    );
    assert_eq!(t.leads, load.accounts);
    assert_eq!(t.contacts, load.users());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_workers_mid_run_loses_and_duplicates_nothing() {
    let load = Load::from_env();
    let env = start_env(load, CloseConfig::default(), &Infra::default()).await;
    let started = Instant::now();
    notify_all(&env).await;
    // The scheduler only (no in-process worker): the work is done by worker processes.
    let background = Background::start(&env, 0);
    let mut procs = vec![WorkerProcess::spawn(&env), WorkerProcess::spawn(&env)];
    let mut kills = 0;
    for share in [0.1, 0.3, 0.5, 0.7] {
        wait_synced_at_least(&env, (load.total() as f64 * share) as usize).await;
        procs.remove(0).kill();
        kills += 1;
        procs.push(WorkerProcess::spawn(&env));
    }
    let last_kill = Instant::now();
    let p = wait_complete(&env, load).await;
    let timing = Timing {
        started,
        fault_end: last_kill,
        resumed: None,
        completed: Instant::now(),
    };
    // The survivors stop gracefully on SIGTERM, within their drain deadline.
    for w in procs {
        assert!(
            w.terminate(Duration::from_secs(20)),
            "a worker did not exit cleanly on SIGTERM"
        );
    }
    background.shutdown().await;
    assert_eq!(p.dead, 0, "no dead letters: {p:?}");
    assert_exact(
        &env,
        load,
        "sigkill-worker",
        &format!("{kills} x SIGKILL of a worker process"),
        &timing,
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_restart_mid_run_loses_nothing() {
    let rabbit = RabbitNode::start().await.expect("private RabbitMQ node");
    let mut infra = Infra {
        rabbit: Some(rabbit),
        pg: None,
    };
    let load = Load::from_env();
    let env = start_env(load, CloseConfig::default(), &infra).await;
    let started = Instant::now();
    let accounts: Vec<String> = env.hull.accounts().into_iter().map(|a| a.id).collect();
    let users: Vec<String> = env.hull.users().into_iter().map(|u| u.id).collect();
    let r = env
        .hull
        .notify(CONNECTOR_ID, "account:update", &accounts)
        .await
        .expect("notify");
    assert!(!r.failed, "{r:?}");
    let background = Background::start(&env, 2);
    wait_synced_at_least(&env, load.accounts / 3).await;

    let rabbit = infra.rabbit.as_mut().expect("node");
    rabbit.stop().await.expect("stop RabbitMQ");
    let down_since = Instant::now();
    // While the broker is down, ingest asks Hull to retry (503 + flow control "retry"); Hull
    // keeps retrying while the broker comes back.
    let restart = async {
        wait_for_503(&env, "user:update").await;
        rabbit.start_again().await.expect("start RabbitMQ");
        let back_at = Instant::now();
        (back_at, wait_resumed(&env, load).await)
    };
    let (report, (back_at, resumed)) = tokio::join!(
        env.hull.notify(CONNECTOR_ID, "user:update", &users),
        restart
    );
    let outage = back_at.duration_since(down_since);
    if report.expect("notify").failed {
        // Hull gave up on a batch before the broker was back: its next notification carries
        // every profile not delivered yet, as the platform does.
        let again = env.hull.notify_changed(CONNECTOR_ID).await.expect("notify");
        assert!(!again.failed, "{again:?}");
    }
    let p = wait_complete(&env, load).await;
    let timing = Timing {
        started,
        fault_end: back_at,
        resumed: Some(resumed),
        completed: Instant::now(),
    };
    background.shutdown().await;
    assert_eq!(p.dead, 0, "no dead letters: {p:?}");
    assert_exact(
        &env,
        load,
        "rabbitmq-restart",
        &format!(
            "RabbitMQ stopped and restarted mid-run (down {:.1}s)",
            outage.as_secs_f64()
        ),
        &timing,
    );
    env.cleanup().await;
    drop(infra);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_mid_run_loses_nothing() {
    let pg = PgCluster::start().await.expect("private Postgres cluster");
    let mut infra = Infra {
        rabbit: None,
        pg: Some(pg),
    };
    let load = Load::from_env();
    let env = start_env(load, CloseConfig::default(), &infra).await;
    let started = Instant::now();
    notify_all(&env).await;
    let background = Background::start(&env, 2);
    wait_synced_at_least(&env, load.total() / 3).await;

    let pg = infra.pg.as_mut().expect("cluster");
    pg.stop(StopMode::Immediate).await.expect("crash Postgres");
    let down_since = Instant::now();
    // While the database is down, ingest asks Hull to retry.
    let some: Vec<String> = env
        .hull
        .accounts()
        .into_iter()
        .take(5)
        .map(|a| a.id)
        .collect();
    let restart = async {
        wait_for_503(&env, "account:update").await;
        // Keep the database down for the outage being simulated (this is the fault, not a
        // synchronisation).
        tokio::time::sleep(outage_hold()).await;
        pg.start_again().await.expect("start Postgres");
        let back_at = Instant::now();
        (back_at, wait_resumed(&env, load).await)
    };
    let (report, (back_at, resumed)) = tokio::join!(
        env.hull.notify(CONNECTOR_ID, "account:update", &some),
        restart
    );
    let outage = back_at.duration_since(down_since);
    let report = report.expect("notify");
    assert!(!report.failed, "{report:?}");
    let p = wait_complete(&env, load).await;
    let timing = Timing {
        started,
        fault_end: back_at,
        resumed: Some(resumed),
        completed: Instant::now(),
    };
    background.shutdown().await;
    assert_eq!(p.dead, 0, "no dead letters: {p:?}");
    assert_exact(
        &env,
        load,
        "postgres-restart",
        &format!(
            "Postgres crashed (immediate stop) and restarted mid-run (down {:.1}s)",
            outage.as_secs_f64()
        ),
        &timing,
    );
    env.cleanup().await;
    drop(infra);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flaky_close_503_and_lost_responses_leave_exact_state() {
    let load = Load::from_env();
    let close = CloseConfig {
        faults: Faults {
            error_rate: 0.2,
            lost_response_rate: 0.05,
            seed: Some(5),
            ..Faults::default()
        },
        ..CloseConfig::default()
    };
    let env = start_env(load, close, &Infra::default()).await;
    let started = Instant::now();
    notify_all(&env).await;
    let background = Background::start(&env, 2);
    let p = wait_complete(&env, load).await;
    let timing = Timing {
        started,
        fault_end: started,
        resumed: None,
        completed: Instant::now(),
    };
    background.shutdown().await;
    let injected = env
        .close
        .requests()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert!(injected > 0, "faults were injected");
    assert_eq!(p.dead, 0, "no dead letters: {p:?}");
    assert_exact(
        &env,
        load,
        "flaky-close",
        &format!(
            "Close answers 20% of requests 503 and loses 5% of write responses ({injected} 503s)"
        ),
        &timing,
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_400_is_dead_lettered_then_replayed_after_the_fix() {
    let mut settings = harness::default_settings();
    settings["lead_status"] = json!("stat_does_not_exist");
    let env = TestEnv::start(EnvOptions {
        settings: settings.clone(),
        accounts: vec![
            json!({"domain": "broken.example.com", "name": "Broken", "segment_ids": [SYNC_SEGMENT]}),
            json!({"domain": "other.example.com", "name": "Other", "segment_ids": [OTHER_SEGMENT]}),
        ],
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let broken = env
        .hull
        .find_account("domain", "broken.example.com")
        .expect("account")
        .id;
    let other = env
        .hull
        .find_account("domain", "other.example.com")
        .expect("account")
        .id;
    env.hull
        .notify(
            CONNECTOR_ID,
            "account:update",
            std::slice::from_ref(&broken),
        )
        .await
        .expect("notify");
    env.drain().await.expect("drain");

    let admin = Admin::new(
        env.store().expect("store"),
        common::queue::Queue::lazy(&harness::amqp_url(), &env.prefix),
    );
    let dead = admin.dead_letters(&Default::default()).await.expect("dlq");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let shown = admin
        .dead_letter(dead[0].id)
        .await
        .expect("show")
        .expect("exists");
    assert!(
        shown.last_error.contains("status"),
        "the field error is readable: {}",
        shown.last_error
    );
    assert!(env.leads_with_url("broken.example.com").is_empty());
    // A 400 is not retried: exactly one create was attempted.
    assert_eq!(env.close_writes().len(), 1, "{:?}", env.close_writes());

    // The operator fixes the setting in Hull; the next notification carries it (here for an
    // account outside the whitelist, so nothing else syncs the broken one).
    settings["lead_status"] = json!("hull-default");
    env.hull.set_private_settings(CONNECTOR_ID, settings);
    env.hull
        .notify(CONNECTOR_ID, "account:update", &[other])
        .await
        .expect("notify");
    env.drain().await.expect("drain");
    assert!(
        env.leads_with_url("broken.example.com").is_empty(),
        "nothing but the replay may sync it"
    );

    let n = admin
        .replay(ReplayTarget::One(dead[0].id))
        .await
        .expect("replay");
    assert_eq!(n, 1);
    env.drain().await.expect("drain");
    assert_eq!(
        env.leads_with_url("broken.example.com").len(),
        1,
        "replayed job synced"
    );
    let after = admin
        .dead_letter(dead[0].id)
        .await
        .expect("show")
        .expect("exists");
    assert!(after.replayed_at.is_some());
    assert!(
        admin
            .dead_letters(&Default::default())
            .await
            .expect("dlq")
            .is_empty(),
        "none left unreplayed"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_key_parks_then_fixing_it_resumes_the_parked_jobs() {
    let mut settings = harness::default_settings();
    settings["api_key"] = json!("api_revoked_key");
    let env = TestEnv::start(EnvOptions {
        settings: settings.clone(),
        accounts: vec![
            json!({"domain": "acme.example.com", "name": "Acme", "segment_ids": [SYNC_SEGMENT]}),
            json!({"domain": "other.example.com", "name": "Other", "segment_ids": [OTHER_SEGMENT]}),
        ],
        users: vec![json!({"email": "jane@acme.example.com", "name": "Jane", "account_domain": "acme.example.com"})],
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let acme = env
        .hull
        .find_account("domain", "acme.example.com")
        .expect("account")
        .id;
    let other = env
        .hull
        .find_account("domain", "other.example.com")
        .expect("account")
        .id;
    let jane = env
        .hull
        .find_user("email", "jane@acme.example.com")
        .expect("user")
        .id;
    env.hull
        .notify(CONNECTOR_ID, "account:update", &[acme])
        .await
        .expect("notify");
    env.hull
        .notify(CONNECTOR_ID, "user:update", &[jane])
        .await
        .expect("notify");
    env.drain().await.expect("drain");

    let store = env.store().expect("store");
    let retries = store.retries(None, 10).await.expect("retries");
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries.iter().all(|r| r.state == "parked"), "{retries:?}");
    let c = store
        .connector(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("connector");
    assert!(c.parked_reason.is_some());
    // /status says why.
    let status: Value = reqwest::Client::new()
        .get(format!("{}/status?{}", env.ingest_url(), env.creds_query()))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], "error", "{status}");
    let messages = status["messages"].to_string();
    assert!(
        messages.contains("paused until the settings are fixed"),
        "{status}"
    );
    assert!(messages.contains("401"), "{status}");
    // Parked jobs burn no attempts: nothing is republished while the key is wrong.
    let sched =
        scheduler::Scheduler::new(scheduler::SchedulerConfig::from_source(&env.vars).expect("cfg"))
            .expect("scheduler");
    assert_eq!(sched.tick().await.retries_republished, 0);

    // The key is fixed in Hull; the next notification brings it and resumes the parked jobs.
    settings["api_key"] = json!(harness::API_KEY);
    env.hull.set_private_settings(CONNECTOR_ID, settings);
    env.hull
        .notify(CONNECTOR_ID, "account:update", &[other])
        .await
        .expect("notify");
    env.drain().await.expect("drain");
    assert_eq!(sched.tick().await.retries_republished, 2);
    env.drain().await.expect("drain");
    let leads = env.leads_with_url("acme.example.com");
    assert_eq!(leads.len(), 1);
    let contacts: Vec<Value> = env
        .close
        .contacts()
        .into_iter()
        .filter(|c| c["lead_id"] == leads[0]["id"])
        .collect();
    assert_eq!(contacts.len(), 1);
    assert!(store.retries(None, 10).await.expect("retries").is_empty());
    let c = store
        .connector(CONNECTOR_ID)
        .await
        .expect("db")
        .expect("connector");
    assert!(c.parked_reason.is_none());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_postgres_is_torn_down_even_when_the_test_panics() {
    let port = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let port = std::sync::Arc::new(std::sync::Mutex::new(0u16));
        let seen = port.clone();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                let pg = PgCluster::start().await.expect("cluster");
                *seen.lock().expect("lock") = pg.port();
                let (client, conn) =
                    tokio_postgres::connect(&pg.admin_url(), tokio_postgres::NoTls)
                        .await
                        .expect("connect");
                tokio::spawn(conn);
                client.simple_query("SELECT 1").await.expect("query");
                panic!("the test fails while the cluster runs");
            })
        }));
        assert!(panicked.is_err());
        let p = *port.lock().expect("lock");
        p
    })
    .join()
    .expect("thread");
    assert_ne!(port, 0);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the cluster was stopped by Drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_failing_past_max_attempts_is_dead_lettered_with_every_error() {
    let close = CloseConfig {
        faults: Faults {
            error_rate: 1.0,
            routes: Some(vec!["POST /lead/".into()]),
            ..Faults::default()
        },
        ..CloseConfig::default()
    };
    let mut env = TestEnv::start(EnvOptions {
        close,
        accounts: vec![
            json!({"domain": "down.example.com", "name": "Down", "segment_ids": [SYNC_SEGMENT]}),
        ],
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    env.vars.insert("WORKER_MAX_ATTEMPTS".into(), "3".into());
    env.vars.insert("WORKER_INLINE_RETRIES".into(), "0".into());
    let worker = env.new_worker().expect("worker");
    let sched =
        scheduler::Scheduler::new(scheduler::SchedulerConfig::from_source(&env.vars).expect("cfg"))
            .expect("scheduler");
    let id = env
        .hull
        .find_account("domain", "down.example.com")
        .expect("account")
        .id;
    env.hull
        .notify(CONNECTOR_ID, "account:update", &[id])
        .await
        .expect("notify");

    let store = env.store().expect("store");
    let deadline = Instant::now() + timeout();
    let dead = loop {
        worker.run_until_idle().await.expect("worker");
        let dead = store
            .dead_letters(None, None, None, true, 10)
            .await
            .expect("dlq");
        if !dead.is_empty() {
            break dead;
        }
        // The retry waits for its (short) backoff; the scheduler republishes it when due.
        sched.tick().await;
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.attempts, 3);
    let errors = d.errors.as_array().expect("errors");
    assert_eq!(errors.len(), 3, "one error per attempt: {errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e["error"].as_str().unwrap_or_default().contains("503")),
        "{errors:?}"
    );
    assert!(
        d.last_error.starts_with("gave up after 3 attempts"),
        "{}",
        d.last_error
    );
    assert!(
        store.retries(None, 10).await.expect("retries").is_empty(),
        "the retry row became the dead letter"
    );
    // The copy in the broker's dead-letter queue.
    let q = common::queue::Queue::lazy(&harness::amqp_url(), &env.prefix);
    assert_eq!(q.depth(&q.topology().dead_queue()).await.expect("depth"), 1);
    assert!(env.leads_with_url("down.example.com").is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_postgres_is_torn_down_when_the_test_process_is_killed() {
    // A child process owns a cluster and is SIGKILLed (no Drop runs): the watchdog stops it.
    if std::env::var("FAULT_PG_ORPHAN_CHILD").is_ok() {
        let pg = PgCluster::start().await.expect("cluster");
        println!("PORT={}", pg.port());
        std::future::pending::<()>().await;
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "private_postgres_is_torn_down_when_the_test_process_is_killed",
            "--nocapture",
        ])
        .env("FAULT_PG_ORPHAN_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("stdout");
    let port = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("PORT=")
                    .and_then(|p| p.trim().parse::<u16>().ok())
            })
    })
    .await
    .expect("reader")
    .expect("the child reported its cluster's port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the cluster runs"
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the orphaned cluster was not stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
