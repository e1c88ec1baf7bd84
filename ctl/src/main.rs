//! `closeio-ctl`: the operator CLI — migrations, dead letters, retries and connectors.

use clap::{Parser, Subcommand};
use serde_json::Value;
use uuid::Uuid;

use common::config::{describe, CommonConfig, Env, COMMON_VARS};
use common::crypto::SecretBox;
use common::jobs::Envelope;
use common::queue::Queue;
use common::store::{self, Store};

fn help() -> String {
    describe(COMMON_VARS)
}

/// Operator CLI of closeio-sync. Reads the same environment variables as the services.
#[derive(Parser)]
#[command(name = "closeio-ctl", version, after_help = help())]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply pending database migrations (run once per deployment, before the services).
    Migrate,
    /// Declare the RabbitMQ exchanges and queues.
    DeclareQueues,
    /// Dead letters: jobs that failed permanently or too often.
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Jobs waiting for another attempt or parked until their connector's settings are fixed.
    Retries {
        #[command(subcommand)]
        cmd: RetriesCmd,
    },
    /// Connectors known to this deployment.
    Connectors {
        #[command(subcommand)]
        cmd: ConnectorsCmd,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// List dead letters, newest first.
    List {
        #[arg(long)]
        connector: Option<String>,
        /// Job kind: outgoing_account, outgoing_user.
        #[arg(long)]
        kind: Option<String>,
        /// Only those whose last error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// Include dead letters that were replayed already.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one dead letter: payload, attempts and every error.
    Show { id: Uuid },
    /// Publish dead letters again (attempt counter reset).
    Replay {
        /// The dead letter to replay.
        id: Option<Uuid>,
        /// Replay every dead letter not yet replayed (optionally of one connector).
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[arg(long)]
        connector: Option<String>,
    },
    /// Delete dead letters.
    Purge {
        #[arg(long)]
        connector: Option<String>,
        /// Only delete those already replayed.
        #[arg(long)]
        replayed: bool,
    },
}

#[derive(Subcommand)]
enum RetriesCmd {
    /// List retries, soonest first.
    List {
        #[arg(long)]
        connector: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum ConnectorsCmd {
    /// Every connector with its status and counters.
    List,
    /// One connector in detail.
    Show { id: String },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("closeio-ctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print(json: bool, v: &Value, table: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", table());
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = CommonConfig::from_source(&Env)?;
    let store = || -> anyhow::Result<Store> {
        Ok(Store::connect(&cfg.database_url, 2, SecretBox::new(cfg.encryption_key, cfg.encryption_key_previous))?)
    };
    match cli.cmd {
        Cmd::Migrate => {
            let applied = store::migrate(&cfg.database_url).await?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                for m in applied {
                    println!("applied {m}");
                }
            }
        }
        Cmd::DeclareQueues => {
            Queue::connect(&cfg.amqp_url, &cfg.queue_prefix).await?;
            println!("declared exchanges and queues under prefix {:?}", cfg.queue_prefix);
        }
        Cmd::Dlq { cmd } => match cmd {
            DlqCmd::List { connector, kind, error, all, limit } => {
                let rows = store()?.dead_letters(connector.as_deref(), kind.as_deref(), error.as_deref(), all, limit).await?;
                let v = serde_json::to_value(&rows)?;
                print(cli.json, &v, || {
                    let mut out = format!("{:<36}  {:<24}  {:<16}  {:<30}  {:>3}  {}\n", "ID", "CONNECTOR", "KIND", "ENTITY", "TRY", "LAST ERROR");
                    for d in &rows {
                        out.push_str(&format!(
                            "{:<36}  {:<24}  {:<16}  {:<30}  {:>3}  {}{}\n",
                            d.id,
                            d.connector_id,
                            d.job_name,
                            d.entity_key.as_deref().unwrap_or("-"),
                            d.attempts,
                            d.last_error.lines().next().unwrap_or(""),
                            if d.replayed_at.is_some() { " (replayed)" } else { "" }
                        ));
                    }
                    out.push_str(&format!("{} dead letter(s)\n", rows.len()));
                    out
                });
            }
            DlqCmd::Show { id } => {
                let d = store()?.dead_letter_by_id(id).await?.ok_or_else(|| anyhow::anyhow!("no dead letter {id}"))?;
                let v = serde_json::to_value(&d)?;
                print(cli.json, &v, || {
                    let mut out = format!(
                        "id:         {}\nconnector:  {}\nkind:       {}\nentity:     {}\nattempts:   {}\ncreated:    {}\nreplayed:   {}\n\nerrors:\n",
                        d.id,
                        d.connector_id,
                        d.job_name,
                        d.entity_key.as_deref().unwrap_or("-"),
                        d.attempts,
                        d.created_at.to_rfc3339(),
                        d.replayed_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "no".into())
                    );
                    for e in d.errors.as_array().into_iter().flatten() {
                        out.push_str(&format!(
                            "  - [{}] attempt {}: {}\n",
                            e.get("at").and_then(Value::as_str).unwrap_or("?"),
                            e.get("attempt").and_then(Value::as_u64).unwrap_or(0),
                            e.get("error").and_then(Value::as_str).unwrap_or("").replace('\n', "\n    ")
                        ));
                    }
                    out.push_str(&format!("\npayload:\n{}\n", serde_json::to_string_pretty(&d.envelope).unwrap_or_default()));
                    out
                });
            }
            DlqCmd::Replay { id, all, connector } => {
                let store = store()?;
                let queue = Queue::connect(&cfg.amqp_url, &cfg.queue_prefix).await?;
                let targets = match (id, all) {
                    (Some(id), _) => vec![store.dead_letter_by_id(id).await?.ok_or_else(|| anyhow::anyhow!("no dead letter {id}"))?],
                    (None, true) => store.dead_letters(connector.as_deref(), None, None, false, 100_000).await?,
                    (None, false) => anyhow::bail!("give a dead letter id, or --all"),
                };
                let mut n = 0;
                for d in targets {
                    let mut env: Envelope = serde_json::from_value(d.envelope.clone())
                        .map_err(|e| anyhow::anyhow!("dead letter {} holds an unreadable job: {e}", d.id))?;
                    env.attempt = 0;
                    queue.publish(&env).await?;
                    store.mark_replayed(d.id).await?;
                    n += 1;
                }
                queue.close().await;
                println!("replayed {n} dead letter(s)");
            }
            DlqCmd::Purge { connector, replayed } => {
                let n = store()?.purge_dead_letters(connector.as_deref(), replayed).await?;
                println!("deleted {n} dead letter(s)");
            }
        },
        Cmd::Retries { cmd: RetriesCmd::List { connector, limit } } => {
            let rows = store()?.retries(connector.as_deref(), limit).await?;
            let v = serde_json::to_value(&rows)?;
            print(cli.json, &v, || {
                let mut out = format!("{:<36}  {:<24}  {:<16}  {:<9}  {:>3}  {:<25}  {}\n", "ID", "CONNECTOR", "KIND", "STATE", "TRY", "NEXT ATTEMPT", "LAST ERROR");
                for r in &rows {
                    out.push_str(&format!(
                        "{:<36}  {:<24}  {:<16}  {:<9}  {:>3}  {:<25}  {}\n",
                        r.id,
                        r.connector_id,
                        r.job_name,
                        r.state,
                        r.attempts,
                        r.next_attempt_at.to_rfc3339(),
                        r.last_error.lines().next().unwrap_or("")
                    ));
                }
                out.push_str(&format!("{} retr(y/ies)\n", rows.len()));
                out
            });
        }
        Cmd::Connectors { cmd } => {
            let store = store()?;
            let all = store.connector_summaries().await?;
            let queue = Queue::lazy(&cfg.amqp_url, &cfg.queue_prefix);
            let depth = queue.depth(&queue.topology().queue(common::jobs::QueueKind::Outgoing)).await.ok();
            match cmd {
                ConnectorsCmd::List => {
                    let v = serde_json::json!({"connectors": all, "outgoing_queue_depth": depth});
                    print(cli.json, &v, || {
                        let mut out = format!("{:<26}  {:<30}  {:<8}  {:>8}  {:>8}  {:>7}  {:>6}  {:>4}  {}\n", "ID", "ORGANIZATION", "STATUS", "ACCOUNTS", "USERS", "RETRIES", "PARKED", "DLQ", "LAST SUCCESS");
                        for c in &all {
                            out.push_str(&format!(
                                "{:<26}  {:<30}  {:<8}  {:>8}  {:>8}  {:>7}  {:>6}  {:>4}  {}\n",
                                c.id, c.organization, c.status, c.synced_accounts, c.synced_users, c.retries, c.parked, c.dead_letters,
                                c.last_success_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into())
                            ));
                        }
                        if let Some(d) = depth {
                            out.push_str(&format!("outgoing queue: {d} job(s) waiting\n"));
                        }
                        out
                    });
                }
                ConnectorsCmd::Show { id } => {
                    let s = all.into_iter().find(|c| c.id == id).ok_or_else(|| anyhow::anyhow!("no connector {id}"))?;
                    let c = store.connector(&id).await?.ok_or_else(|| anyhow::anyhow!("no connector {id}"))?;
                    let v = serde_json::json!({
                        "summary": s, "private_settings": c.private_settings,
                        "api_key_configured": c.api_key.is_some(), "metadata_fetched_at": c.metadata_fetched_at,
                        "outgoing_queue_depth": depth,
                    });
                    print(cli.json, &v, || serde_json::to_string_pretty(&v).unwrap_or_default() + "\n");
                }
            }
        }
    }
    Ok(())
}
