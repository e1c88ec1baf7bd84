//! `closeio-ctl`: the operator CLI — migrations, dead letters, retries and connectors.

use clap::{Parser, Subcommand};
use serde_json::Value;
use uuid::Uuid;

use admin::{Admin, DlqFilter, ReplayTarget};
use common::config::{CommonConfig, Env};
use common::crypto::SecretBox;
use common::queue::Queue;
use common::store::{self, Store};

fn help() -> String {
    common::config::describe(&common::config::variables::<CommonConfig>())
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
    /// Re-encrypt every stored secret with ENCRYPTION_KEY (values still under
    /// ENCRYPTION_KEY_PREVIOUS are opened with it). Safe to run twice.
    RotateKey,
    /// Ask for a fetch of a connector's Close leads now (the scheduler starts it on its next
    /// pass): an incremental fetch, or a full import with --full.
    Fetch {
        /// The Hull connector id.
        connector: String,
        /// Re-import every lead instead of those updated since the cursor.
        #[arg(long)]
        full: bool,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// List dead letters, newest first.
    List {
        /// Only this connector (Hull connector id).
        #[arg(long)]
        connector: Option<String>,
        /// Job kind: outgoing_account, outgoing_user, fetch_start, fetch_page, refresh_lead, close_deleted.
        #[arg(long)]
        kind: Option<String>,
        /// Only those whose last error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// Only this error class (close_bad_request, close_server_error, …; see `dlq classes`).
        #[arg(long)]
        class: Option<String>,
        /// Include dead letters that were replayed already.
        #[arg(long)]
        all: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one dead letter: payload, attempts and every error.
    Show { id: Uuid },
    /// Count dead letters per error class (last hour, day, week, all).
    Classes {
        /// Only this connector (Hull connector id).
        #[arg(long)]
        connector: Option<String>,
    },
    /// Publish dead letters again (attempt counter reset).
    Replay {
        /// The dead letter to replay.
        id: Option<Uuid>,
        /// Replay every dead letter not yet replayed (optionally of one connector).
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Only this connector (Hull connector id).
        #[arg(long)]
        connector: Option<String>,
    },
    /// Record in Postgres the messages RabbitMQ dead-lettered (delivery limit reached), so they
    /// can be listed and replayed; drops the queue's copies of dead letters already recorded.
    ImportBroker,
    /// Delete dead letters.
    Purge {
        /// Only this connector (Hull connector id).
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
        /// Only this connector (Hull connector id).
        #[arg(long)]
        connector: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Make a scheduled or parked retry due now.
    Now { id: Uuid },
}

#[derive(Subcommand)]
enum ConnectorsCmd {
    /// Every connector with its status and counters.
    List,
    /// One connector in detail.
    Show { id: String },
    /// Unpark a connector by hand (its parked jobs run again now).
    Unpark { id: String },
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

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = CommonConfig::from_source(&Env)?;
    let store = || -> anyhow::Result<Store> {
        Ok(Store::connect(
            &cfg.database_url,
            2,
            SecretBox::new(cfg.encryption_key, cfg.encryption_key_previous),
        )?)
    };
    let admin = || -> anyhow::Result<Admin> {
        Ok(Admin::new(
            store()?,
            Queue::lazy(&cfg.amqp_url, &cfg.queue_prefix),
        ))
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
            println!(
                "declared exchanges and queues under prefix {:?}",
                cfg.queue_prefix
            );
        }
        Cmd::Dlq { cmd } => match cmd {
            DlqCmd::List {
                connector,
                kind,
                error,
                class,
                all,
                limit,
            } => {
                let rows = admin()?
                    .dead_letters(&DlqFilter {
                        connector,
                        kind,
                        error,
                        class,
                        all,
                        limit: Some(limit),
                        ..Default::default()
                    })
                    .await?;
                let v = serde_json::to_value(&rows)?;
                print(cli.json, &v, || {
                    let mut out = format!(
                        "{:<36}  {:<24}  {:<16}  {:<30}  {:>3}  {}\n",
                        "ID", "CONNECTOR", "KIND", "ENTITY", "TRY", "LAST ERROR"
                    );
                    for d in &rows {
                        out.push_str(&format!(
                            "{:<36}  {:<24}  {:<16}  {:<30}  {:>3}  {}{}\n",
                            d.id,
                            d.connector_id,
                            d.job_name,
                            d.entity_key.as_deref().unwrap_or("-"),
                            d.attempts,
                            first_line(&d.last_error),
                            if d.replayed_at.is_some() {
                                " (replayed)"
                            } else {
                                ""
                            }
                        ));
                    }
                    out.push_str(&format!("{} dead letter(s)\n", rows.len()));
                    out
                });
            }
            DlqCmd::Show { id } => {
                let d = admin()?
                    .dead_letter(id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no dead letter {id}"))?;
                let v = serde_json::to_value(&d)?;
                print(cli.json, &v, || {
                    let mut out = format!(
                        "id:         {}\nconnector:  {}\nkind:       {}\nclass:      {}\nentity:     {}\nattempts:   {}\ncreated:    {}\nreplayed:   {}\n\nerrors:\n",
                        d.id,
                        d.connector_id,
                        d.job_name,
                        d.error_class,
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
                            e.get("error")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .replace('\n', "\n    ")
                        ));
                    }
                    out.push_str(&format!(
                        "\npayload:\n{}\n",
                        serde_json::to_string_pretty(&d.envelope).unwrap_or_default()
                    ));
                    if let Some(body) = &d.last_body {
                        out.push_str(&format!(
                            "\nbody last sent to Close:\n{}\n",
                            serde_json::to_string_pretty(body).unwrap_or_default()
                        ));
                    }
                    out
                });
            }
            DlqCmd::Classes { connector } => {
                let rows = admin()?
                    .error_classes(&DlqFilter {
                        connector,
                        ..Default::default()
                    })
                    .await?;
                let v = serde_json::to_value(&rows)?;
                print(cli.json, &v, || {
                    let mut out = format!(
                        "{:<28}  {:>9}  {:>8}  {:>9}  {:>7}\n",
                        "ERROR CLASS", "LAST HOUR", "LAST DAY", "LAST WEEK", "ALL"
                    );
                    for c in &rows {
                        out.push_str(&format!(
                            "{:<28}  {:>9}  {:>8}  {:>9}  {:>7}\n",
                            c.error_class, c.last_hour, c.last_day, c.last_week, c.total
                        ));
                    }
                    out
                });
            }
            DlqCmd::Replay { id, all, connector } => {
                let target = match (id, all) {
                    (Some(id), _) => ReplayTarget::One(id),
                    (None, true) => ReplayTarget::All { connector },
                    (None, false) => anyhow::bail!("give a dead letter id, or --all"),
                };
                let n = admin()?.replay(target).await?;
                println!("replayed {n} dead letter(s)");
            }
            DlqCmd::ImportBroker => {
                let r = admin()?.import_broker_dead_letters().await?;
                let v = serde_json::to_value(&r)?;
                print(cli.json, &v, || {
                    format!(
                        "imported {} dead letter(s) made by RabbitMQ, dropped {} copie(s) of recorded ones, left {} unreadable message(s) in the queue\n",
                        r.imported, r.copies_dropped, r.unreadable
                    )
                });
            }
            DlqCmd::Purge {
                connector,
                replayed,
            } => {
                let n = admin()?.purge(connector.as_deref(), replayed).await?;
                println!("deleted {n} dead letter(s)");
            }
        },
        Cmd::Retries {
            cmd: RetriesCmd::Now { id },
        } => {
            admin()?.retry_now(id).await?;
            println!("retry {id} is due now; the scheduler queues it on its next pass");
        }
        Cmd::Connectors {
            cmd: ConnectorsCmd::Unpark { id },
        } => {
            admin()?.unpark(&id).await?;
            println!("connector {id} unparked; its parked jobs run again now");
        }
        Cmd::Retries {
            cmd: RetriesCmd::List { connector, limit },
        } => {
            let rows = admin()?.retries(connector.as_deref(), Some(limit)).await?;
            let v = serde_json::to_value(&rows)?;
            print(cli.json, &v, || {
                let mut out = format!(
                    "{:<36}  {:<24}  {:<16}  {:<9}  {:>3}  {:<25}  {}\n",
                    "ID", "CONNECTOR", "KIND", "STATE", "TRY", "NEXT ATTEMPT", "LAST ERROR"
                );
                for r in &rows {
                    out.push_str(&format!(
                        "{:<36}  {:<24}  {:<16}  {:<9}  {:>3}  {:<25}  {}\n",
                        r.id,
                        r.connector_id,
                        r.job_name,
                        r.state,
                        r.attempts,
                        r.next_attempt_at.to_rfc3339(),
                        first_line(&r.last_error)
                    ));
                }
                out.push_str(&format!("{} retr(y/ies)\n", rows.len()));
                out
            });
        }
        Cmd::Connectors {
            cmd: ConnectorsCmd::List,
        } => {
            let admin = admin()?;
            let all = admin.connectors().await?;
            let queues = admin.queue_depths().await;
            let v = serde_json::json!({"connectors": all, "queues": queues});
            print(cli.json, &v, || {
                let mut out = format!(
                    "{:<26}  {:<30}  {:<8}  {:>8}  {:>8}  {:>7}  {:>6}  {:>4}  {:>8}  {:<25}  {}\n",
                    "ID",
                    "ORGANIZATION",
                    "STATUS",
                    "ACCOUNTS",
                    "USERS",
                    "RETRIES",
                    "PARKED",
                    "DLQ",
                    "LAG(S)",
                    "LAST SUCCESS",
                    "LAST FETCH"
                );
                for c in &all {
                    let s = &c.summary;
                    out.push_str(&format!(
                        "{:<26}  {:<30}  {:<8}  {:>8}  {:>8}  {:>7}  {:>6}  {:>4}  {:>8.0}  {:<25}  {}\n",
                        s.id,
                        s.organization,
                        s.status,
                        s.synced_accounts,
                        s.synced_users,
                        s.retries,
                        s.parked,
                        s.dead_letters,
                        c.lag_seconds,
                        s.last_success_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into()),
                        c.last_fetch_completed_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into())
                    ));
                }
                out.push_str(&format!(
                    "queues: outgoing {}, incoming {}, dead {}\n",
                    depth(queues.outgoing),
                    depth(queues.incoming),
                    depth(queues.dead)
                ));
                out
            });
        }
        Cmd::Connectors {
            cmd: ConnectorsCmd::Show { id },
        } => {
            let d = admin()?.connector(&id).await?;
            let v = serde_json::to_value(&d)?;
            print(cli.json, &v, || {
                let s = &d.view.summary;
                let mut out = format!(
                    "id:               {}\norganization:     {}\nstatus:           {}\n",
                    s.id, s.organization, s.status
                );
                for m in &s.status_messages {
                    out.push_str(&format!("  - {m}\n"));
                }
                out.push_str(&format!(
                    "parked:           {}\napi key:          {}\nsynced accounts:  {}\nsynced users:     {}\n\
                     retries:          {} ({} parked, {} overdue)\ndead letters:     {}\nlag:              {:.0}s\n\
                     last success:     {}\nmetadata fetched: {}\nqueues:           outgoing {}, incoming {}, dead {}\n",
                    s.parked_reason.as_deref().unwrap_or("no"),
                    d.api_key_fingerprint.as_deref().map(|f| format!("set (fingerprint {f})")).unwrap_or_else(|| "missing".into()),
                    s.synced_accounts,
                    s.synced_users,
                    s.retries,
                    s.parked,
                    d.view.overdue_retries,
                    s.dead_letters,
                    d.view.lag_seconds,
                    s.last_success_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into()),
                    d.metadata_fetched_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into()),
                    depth(d.queues.outgoing),
                    depth(d.queues.incoming),
                    depth(d.queues.dead),
                ));
                out.push_str(&format!(
                    "incoming cursor:  {}{}\nlast fetch:       {}\n",
                    d.view
                        .incoming_cursor
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "none yet".into()),
                    d.view
                        .incoming_lag_seconds
                        .map(|l| format!(" (lag {l:.0}s)"))
                        .unwrap_or_default(),
                    d.view
                        .last_fetch_completed_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never completed".into()),
                ));
                out.push_str(&format!(
                    "settings:\n{}\n",
                    serde_json::to_string_pretty(&d.private_settings).unwrap_or_default()
                ));
                out
            });
        }
        Cmd::Fetch { connector, full } => {
            if !store()?.request_fetch(&connector, full).await? {
                anyhow::bail!("no connector {connector}");
            }
            println!(
                "{} requested for {connector}; the scheduler starts it on its next pass",
                if full {
                    "full import"
                } else {
                    "incremental fetch"
                }
            );
        }
        Cmd::RotateKey => {
            if cfg.encryption_key_previous.is_none() {
                eprintln!("note: ENCRYPTION_KEY_PREVIOUS is not set; only values already under ENCRYPTION_KEY can be read");
            }
            let report = admin()?.rotate_key().await?;
            let v = serde_json::to_value(&report)?;
            print(cli.json, &v, || {
                let mut out = String::new();
                for c in &report {
                    out.push_str(&format!(
                        "{}: {} re-encrypted, {} already current\n",
                        c.column, c.reencrypted, c.already_current
                    ));
                }
                out.push_str("every stored secret is now encrypted with ENCRYPTION_KEY\n");
                out
            });
        }
    }
    Ok(())
}

fn depth(d: Option<u32>) -> String {
    d.map(|n| n.to_string())
        .unwrap_or_else(|| "unknown (broker unreachable)".into())
}
