//! Static checks of the deployment files (no Docker engine is needed): docker-compose.yml
//! parses, has every service with a healthcheck, runs only binaries this workspace builds, and
//! sets only environment variables the code reads; docs/configuration.md documents every
//! variable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::config::{variables, Variable};
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `[[bin]] name` of the workspace's crates.
fn workspace_binaries() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for krate in ["ingest", "worker", "scheduler", "ctl", "sandbox"] {
        let manifest = read(&format!("{krate}/Cargo.toml"));
        for block in manifest.split("[[bin]]").skip(1) {
            let name = block
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("name = ")
                        .map(|v| v.trim_matches('"').to_string())
                })
                .expect("bin name");
            out.insert(name);
        }
    }
    out
}

/// Every variable a binary of the workspace declares (shared ones once), in declaration order.
fn declared_variables() -> Vec<Variable> {
    let mut seen = BTreeSet::new();
    [
        variables::<common::config::CommonConfig>(),
        variables::<ingest::IngestConfig>(),
        variables::<worker::WorkerConfig>(),
        variables::<scheduler::SchedulerConfig>(),
    ]
    .into_iter()
    .flatten()
    .filter(|v| seen.insert(v.name.clone()))
    .collect()
}

/// Variables the binaries declare, plus the simulators' (clap `env = "..."` attributes) and
/// the demo script's.
fn known_variables() -> BTreeSet<String> {
    let mut vars: BTreeSet<String> = declared_variables().into_iter().map(|v| v.name).collect();
    let sandbox_main = read("sandbox/src/main.rs");
    for part in sandbox_main.split("env = \"").skip(1) {
        vars.insert(part.split('"').next().unwrap().to_string());
    }
    let demo = read("scripts/compose-demo.sh");
    for part in demo.split("${").skip(1) {
        vars.insert(part.split([':', '}']).next().unwrap().to_string());
    }
    vars
}

/// The rows of docs/configuration.md's tables: variable → default cell.
fn documented_variables() -> Vec<(String, String)> {
    read("docs/configuration.md")
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells.get(2)?.to_string()))
        })
        .collect()
}

fn compose() -> Value {
    let mut v: Value =
        serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses");
    v.apply_merge().expect("merge keys resolve");
    // Merges inside services (the `<<: *env` of environment maps) need a second pass per service.
    if let Some(services) = v.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, svc) in services.iter_mut() {
            svc.apply_merge().unwrap();
            if let Some(env) = svc.get_mut("environment") {
                env.apply_merge().unwrap();
            }
        }
    }
    v
}

#[test]
fn compose_has_every_service_with_healthchecks() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    for name in [
        "postgres",
        "rabbitmq",
        "migrate",
        "sandbox",
        "ingest",
        "worker",
        "scheduler",
    ] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    for name in [
        "postgres",
        "rabbitmq",
        "sandbox",
        "ingest",
        "worker",
        "scheduler",
    ] {
        assert!(
            c["services"][name].get("healthcheck").is_some(),
            "{name} has no healthcheck"
        );
    }
    // The worker must be scalable: no fixed container name and no published port.
    assert!(c["services"]["worker"].get("container_name").is_none());
    assert!(c["services"]["worker"].get("ports").is_none());
    // Migrations run once, before the services.
    assert_eq!(c["services"]["migrate"]["command"][0], "closeio-ctl");
    assert_eq!(c["services"]["migrate"]["command"][1], "migrate");
    for svc in ["ingest", "worker", "scheduler"] {
        assert_eq!(
            c["services"][svc]["depends_on"]["migrate"]["condition"],
            "service_completed_successfully",
            "{svc} must wait for the migrations"
        );
    }
    assert!(c["services"]["rabbitmq"]["image"]
        .as_str()
        .unwrap()
        .contains("management"));
}

#[test]
fn compose_commands_and_variables_exist_in_the_code() {
    let c = compose();
    let bins = workspace_binaries();
    let dockerfile = read("Dockerfile");
    let vars = known_variables();
    for (name, svc) in c["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let image = svc.get("image").and_then(Value::as_str).unwrap_or_default();
        if !image.starts_with("closeio-sync") {
            continue;
        }
        let cmd = svc["command"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no command"));
        let known = bins.contains(cmd) || dockerfile.contains(&format!("/usr/local/bin/{cmd}"));
        assert!(
            known,
            "{name} runs {cmd}, which the workspace does not build"
        );
        if bins.contains(cmd) {
            assert!(
                dockerfile.contains(&format!("target/release/{cmd}")),
                "the Dockerfile does not install {cmd}"
            );
        }
        if let Some(env) = svc.get("environment").and_then(Value::as_mapping) {
            for (k, _) in env {
                let k = k.as_str().unwrap();
                assert!(vars.contains(k), "{name} sets {k}, which no binary reads");
            }
        }
    }
}

#[test]
fn every_binary_declares_a_valid_command() {
    // clap's own consistency checks (unique names and flags, valid defaults).
    common::config::command::<common::config::CommonConfig>("closeio-ctl").debug_assert();
    common::config::command::<ingest::IngestConfig>("closeio-ingest").debug_assert();
    common::config::command::<worker::WorkerConfig>("closeio-worker").debug_assert();
    common::config::command::<scheduler::SchedulerConfig>("closeio-scheduler").debug_assert();
}

#[test]
fn configuration_doc_matches_the_declared_variables() {
    let documented = documented_variables();
    let declared = declared_variables();
    for var in &declared {
        let Some((_, default_cell)) = documented.iter().find(|(name, _)| *name == var.name) else {
            panic!("docs/configuration.md does not document {}", var.name);
        };
        match var.default.as_deref() {
            // A real default: the doc shows exactly that value.
            Some(default) if !default.is_empty() => assert_eq!(
                default_cell,
                &format!("`{default}`"),
                "docs/configuration.md gives {} a default the code does not have",
                var.name
            ),
            // No default: the doc says what happens instead (none, required, derived), in words.
            _ => assert!(
                !default_cell.starts_with('`'),
                "docs/configuration.md gives {} a default ({default_cell}) but the code has none",
                var.name
            ),
        }
    }
    // And nothing is documented that no binary reads (the tests' own variables aside).
    let names: BTreeSet<&str> = declared.iter().map(|v| v.name.as_str()).collect();
    for (name, _) in &documented {
        assert!(
            names.contains(name.as_str()) || name.starts_with("TEST_"),
            "docs/configuration.md documents {name}, which no binary declares"
        );
    }
}

#[test]
fn readme_first_screen_gives_the_two_commands() {
    let readme = read("README.md");
    let first: String = readme.lines().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        first.contains("docker compose up"),
        "README must say how to start the system"
    );
    assert!(
        first.contains("scripts/demo.sh"),
        "README must give the no-Docker start command"
    );
    assert!(
        first.contains("cargo nextest run --workspace"),
        "README must give the test command"
    );
    let ci = read(".ci/run");
    assert!(
        ci.contains("cargo nextest run --workspace"),
        ".ci/run must run the README's test command"
    );
}

#[test]
fn the_architecture_doc_names_every_crate_of_the_workspace() {
    let doc = read("docs/architecture.md");
    let manifest = read("Cargo.toml");
    let members: Vec<&str> = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_default()
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.len() >= 10, "{members:?}");
    for member in members {
        let name = member.rsplit('/').next().unwrap_or(member);
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/architecture.md does not describe the crate {member}"
        );
        assert!(std::path::Path::new(&format!(
            "{}/../{member}/Cargo.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .exists());
    }
}
