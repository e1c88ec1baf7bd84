//! Dashboards and alert rules as code (`deploy/`): every dashboard parses, every panel query
//! and alert expression names only metrics the binaries export (a renamed metric fails here,
//! not on an operator's screen), and every alert links to its runbook section.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The metric names the services register with the `metrics` macros.
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack: Vec<PathBuf> = ["common", "ingest", "worker", "scheduler"]
        .iter()
        .map(|d| root().join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for mac in ["counter!(", "gauge!(", "histogram!("] {
                    for (i, _) in text.match_indices(mac) {
                        let rest = text[i + mac.len()..].trim_start();
                        if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next())
                        {
                            names.insert(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    names
}

/// Our metric names in a PromQL expression (RabbitMQ's and Prometheus's own are not ours).
fn our_metrics(expr: &str) -> Vec<String> {
    const OURS: [&str; 7] = [
        "closeio_",
        "ingest_",
        "worker_",
        "scheduler_",
        "hull_",
        "outgoing_",
        "incoming_",
    ];
    // Label values (`job="outgoing_account"`) are not metric names.
    let unquoted: String = expr
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join(" ");
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| OURS.iter().any(|p| t.starts_with(p)))
        .map(|t| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| t.strip_suffix(s))
                .unwrap_or(t)
                .to_owned()
        })
        .collect()
}

fn exprs_of_dashboard(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|x| exprs_of_dashboard(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| exprs_of_dashboard(x, out)),
        _ => {}
    }
}

/// Every metric of ours the dashboards and alert rules query, with where it is queried.
fn queried() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("deploy/grafana/dashboards"))
        .expect("dashboards")
        .flatten()
    {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).expect("dashboard"))
                .expect("dashboard parses");
        let mut exprs = Vec::new();
        exprs_of_dashboard(&v, &mut exprs);
        for e in exprs {
            for m in our_metrics(&e) {
                out.push((entry.path().display().to_string(), m));
            }
        }
    }
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).expect("alerts"),
    )
    .expect("alerts parse");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().unwrap_or("?");
            for m in our_metrics(rule["expr"].as_str().unwrap_or("")) {
                out.push((format!("alert {name}"), m));
            }
        }
    }
    out
}

/// The services run with a small workload (notifications of accounts and users, their Close
/// writes and firehose batches, a full import, a scheduler pass), then `/metrics` is scraped
/// over HTTP: every metric a dashboard or an alert queries must be in it. The three services
/// run in this test's process, as the libraries their binaries are thin mains over, so one
/// registry serves them all; counters of rare events are declared at 0 when each service
/// starts (`common::telemetry::declare_counter`), which this test also proves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_queried_metric_is_scraped_from_the_running_services() {
    use harness::{EnvOptions, TestEnv, CONNECTOR_ID, SYNC_SEGMENT};
    use serde_json::json;

    // The process-wide recorder, installed before any service records anything.
    common::telemetry::metrics_handle();
    let env = TestEnv::start(EnvOptions {
        accounts: vec![
            json!({"domain": "one.example.com", "name": "One", "segment_ids": [SYNC_SEGMENT]}),
            json!({"domain": "two.example.com", "name": "Two", "segment_ids": [SYNC_SEGMENT]}),
        ],
        // Slow enough that requests wait for their slot (`closeio_budget_wait_seconds`).
        vars: vec![("CLOSE_RATE_LIMIT_RPS".into(), "5".into())],
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let ids: Vec<String> = ["one.example.com", "two.example.com"]
        .iter()
        .map(|d| env.hull.find_account("domain", d).expect("account").id)
        .collect();
    env.hull
        .notify(CONNECTOR_ID, "account:update", &ids)
        .await
        .expect("notify");
    env.drain().await.expect("drain");
    let scheduler = env.scheduler().expect("scheduler");
    for _ in 0..3 {
        scheduler.tick().await;
        env.drain().await.expect("drain");
    }

    let body = reqwest::get(format!("{}/metrics", env.ingest_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let scraped: BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_owned()
        })
        .collect();
    let missing: BTreeSet<String> = queried()
        .into_iter()
        .filter(|(_, m)| !scraped.contains(m))
        .map(|(at, m)| format!("{m} (queried by {at})"))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported by the running services: {missing:#?}\nscraped: {scraped:#?}"
    );
    env.cleanup().await;
}

/// promtool's own checks of the scrape configuration and the rules, when promtool is installed
/// (`.ci/run` installs it; elsewhere the test says it skipped, unless `CI` is set).
#[test]
fn promtool_accepts_the_config_and_the_rules() {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let run = |args: &[&str]| {
        std::process::Command::new(&promtool)
            .args(args)
            .current_dir(root())
            .output()
    };
    let config = match run(&["check", "config", "deploy/prometheus/prometheus.yml"]) {
        Ok(o) => o,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not found ({e}): skipped; .ci/run installs it");
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    assert!(
        config.status.success(),
        "{}{}",
        String::from_utf8_lossy(&config.stdout),
        String::from_utf8_lossy(&config.stderr)
    );
    let rules = run(&["check", "rules", "deploy/prometheus/alerts.yml"]).expect("promtool");
    assert!(
        rules.status.success(),
        "{}{}",
        String::from_utf8_lossy(&rules.stdout),
        String::from_utf8_lossy(&rules.stderr)
    );
}

#[test]
fn every_dashboard_and_alert_queries_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("worker_jobs_total"), "{exported:?}");
    let mut checked = 0;
    let dir = root().join("deploy/grafana/dashboards");
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&dir).expect("dashboards").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("dashboard");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        assert!(v["title"].is_string(), "{}", entry.path().display());
        // docs/operations.md lists every dashboard and its panels.
        let operations =
            std::fs::read_to_string(root().join("docs/operations.md")).expect("operations.md");
        let title = v["title"].as_str().unwrap_or_default();
        assert!(
            operations.contains(&format!("**{title}**")),
            "docs/operations.md does not list the dashboard {title}"
        );
        for panel in v["panels"].as_array().into_iter().flatten() {
            let name = panel["title"].as_str().unwrap_or_default();
            assert!(
                operations.contains(name),
                "docs/operations.md does not list the panel {name:?} of {title}"
            );
        }
        let mut exprs = Vec::new();
        exprs_of_dashboard(&v, &mut exprs);
        assert!(!exprs.is_empty(), "{} has no query", entry.path().display());
        for e in exprs {
            for m in our_metrics(&e) {
                assert!(
                    exported.contains(&m),
                    "{} queries {m}, which no binary exports",
                    entry.path().display()
                );
                checked += 1;
            }
        }
        dashboards += 1;
    }
    assert_eq!(dashboards, 4, "sync overview, Close, queues, ingest");

    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).expect("alerts"),
    )
    .expect("alerts parse");
    let operations =
        std::fs::read_to_string(root().join("docs/operations.md")).expect("operations.md");
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            let expr = rule["expr"].as_str().expect("expr");
            for m in our_metrics(expr) {
                assert!(
                    exported.contains(&m),
                    "alert {name} uses {m}, which no binary exports"
                );
                checked += 1;
            }
            let runbook = rule["annotations"]["runbook"].as_str().expect("runbook");
            let anchor = runbook.rsplit('#').next().expect("anchor");
            assert!(
                operations
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .any(|l| heading_anchor(l) == anchor),
                "alert {name}: no runbook section #{anchor} in docs/operations.md"
            );
            alerts += 1;
        }
    }
    assert!(alerts >= 7, "{alerts} alert rules");
    assert!(checked > 50, "{checked} metric uses checked");
}

/// GitHub's anchor of a Markdown heading.
fn heading_anchor(line: &str) -> String {
    line.trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}
