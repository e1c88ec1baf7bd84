//! Private infrastructure for fault tests: a RabbitMQ node and a Postgres cluster of the
//! test's own, on free ports, that can be stopped and started again without touching the
//! shared system services.
//!
//! Both run as their service user (`rabbitmq`, `postgres`) through `setpriv`, in a temporary
//! directory owned by that user, in their own process group. Dropping a handle stops the
//! processes synchronously (graceful stop, then `SIGKILL` of the whole process group) and
//! removes the directory, so a panicking test leaves nothing running. A test process that is
//! killed outright runs no `Drop`: for that case each handle also starts a small watchdog (a
//! shell in its own process group) that stops the service and removes its directory once the
//! test process is gone.
//!
//! The RabbitMQ node reads the Erlang cookie of the system installation
//! (`/var/lib/rabbitmq/.erlang.cookie`, readable by the `rabbitmq` user only), which is why
//! `rabbitmqctl` is run as that user too.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// Home of the `rabbitmq` user (holds the Erlang cookie).
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";
/// Postgres server binaries.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// How long a node or cluster may take to boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Uid and gid of a system user.
fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .context("running id")?;
        if !out.status.success() {
            bail!("no system user {user}");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// A fresh directory under the system temp dir, owned by `user`.
fn owned_dir(prefix: &str, user: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir_all(&dir)?;
    let (uid, gid) = user_ids(user)?;
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    Ok(dir)
}

/// A command run as `user` (with that user's groups), from `dir`.
fn as_user(user: &str, program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--",
        program,
    ]);
    cmd
}

/// Runs a command to completion within `timeout`; returns whether it succeeded and its output.
fn run_bounded(mut cmd: Command, timeout: Duration) -> anyhow::Result<(bool, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            let out = child.wait_with_output()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Ok((status.success(), text));
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait();
            return Ok((false, format!("timed out after {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGKILL to a whole process group.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for a child to exit, up to `timeout`; SIGKILLs its process group otherwise.
fn reap(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // The group may still hold helpers (erl_child_setup, inet_gethost).
            kill_group(child.id());
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_group(child.id());
    let _ = child.wait();
}

/// Stops a service when the test process dies without running `Drop` (killed by a signal or
/// a harness timeout). Killed itself when dropped.
struct Watchdog(Child);

impl Watchdog {
    /// Runs `cleanup` (a shell command) once this process no longer exists.
    fn spawn(cleanup: &str) -> anyhow::Result<Watchdog> {
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {cleanup}",
            std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the watchdog")?;
        Ok(Watchdog(child))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Quotes a string for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A private RabbitMQ node (guest/guest, loopback only).
pub struct RabbitNode {
    dir: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
}

impl RabbitNode {
    /// Boots a node on free ports and waits until it accepts connections (~10 s).
    pub async fn start() -> anyhow::Result<RabbitNode> {
        tokio::task::spawn_blocking(|| {
            let dir = owned_dir("closeio-rmq", "rabbitmq")?;
            let mut node = RabbitNode {
                node: format!(
                    "fault{}@localhost",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                ),
                port: free_port()?,
                dist_port: free_port()?,
                dir,
                child: None,
                watchdog: None,
            };
            for sub in ["mnesia", "log"] {
                fs::create_dir_all(node.dir.join(sub))?;
            }
            fs::write(
                node.dir.join("rabbitmq.conf"),
                format!(
                    "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users = none\n",
                    node.port
                ),
            )?;
            fs::write(node.dir.join("enabled_plugins"), "[].\n")?;
            fs::write(node.dir.join("rabbitmq-env.conf"), "")?;
            let (uid, gid) = user_ids("rabbitmq")?;
            for entry in walk(&node.dir)? {
                std::os::unix::fs::chown(&entry, Some(uid), Some(gid))?;
            }
            node.watchdog = Some(Watchdog::spawn(&format!(
                "setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- env HOME={RABBITMQ_HOME} rabbitmqctl -n {} stop; rm -rf {}",
                sh_quote(&node.node),
                sh_quote(&node.dir.to_string_lossy())
            ))?);
            node.boot()?;
            Ok(node)
        })
        .await?
    }

    /// The AMQP URL of this node.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The Erlang node name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// Whether the node process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the node (`rabbitmqctl stop`) and waits for its process to exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take();
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let res = ctl(&node, &["stop"], Duration::from_secs(60));
            if let Some(c) = child.as_mut() {
                reap(c, Duration::from_secs(30));
            }
            res
        })
        .await?
    }

    /// Starts the stopped node again, with the same name, ports and data, and waits until it
    /// accepts connections.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let (node, port, dist_port) = (self.node.clone(), self.port, self.dist_port);
        let child =
            tokio::task::spawn_blocking(move || boot(&dir, &node, port, dist_port)).await??;
        self.child = Some(child);
        Ok(())
    }

    fn boot(&mut self) -> anyhow::Result<()> {
        self.child = Some(boot(&self.dir, &self.node, self.port, self.dist_port)?);
        Ok(())
    }
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_path_buf()];
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// Runs `rabbitmqctl -n node args…` as the rabbitmq user.
fn ctl(node: &str, args: &[&str], timeout: Duration) -> anyhow::Result<()> {
    let mut cmd = as_user("rabbitmq", "rabbitmqctl");
    cmd.arg("-n")
        .arg(node)
        .args(args)
        .env("HOME", RABBITMQ_HOME);
    let (ok, out) = run_bounded(cmd, timeout)?;
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "rabbitmqctl {} failed: {}",
            args.join(" "),
            out.trim()
        ))
    }
}

fn boot(dir: &Path, node: &str, port: u16, dist_port: u16) -> anyhow::Result<Child> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.out"))?;
    let mut cmd = as_user("rabbitmq", "rabbitmq-server");
    cmd.env("HOME", RABBITMQ_HOME)
        .env("RABBITMQ_NODENAME", node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let mut child = cmd.spawn().context("starting rabbitmq-server")?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let out = fs::read_to_string(dir.join("server.out")).unwrap_or_default();
            bail!("rabbitmq-server exited with {status}: {}", tail(&out));
        }
        if ctl(
            node,
            &["await_startup", "--timeout", "30"],
            Duration::from_secs(40),
        )
        .is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait();
            bail!("RabbitMQ node {node} did not boot within {BOOT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = ctl(&self.node, &["stop"], Duration::from_secs(30));
            }
            reap(&mut child, Duration::from_secs(20));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A private Postgres cluster (trust authentication, loopback only, fsync off).
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    running: bool,
    watchdog: Option<Watchdog>,
}

impl PgCluster {
    /// Creates a cluster (`initdb`) on a free port and starts it.
    pub async fn start() -> anyhow::Result<PgCluster> {
        tokio::task::spawn_blocking(|| {
            let dir = owned_dir("closeio-pg", "postgres")?;
            let mut pg = PgCluster {
                dir,
                port: free_port()?,
                running: false,
                watchdog: None,
            };
            pg.watchdog = Some(Watchdog::spawn(&format!(
                "setpriv --reuid=postgres --regid=postgres --init-groups -- {PG_BIN}/pg_ctl -D {} -m immediate stop; rm -rf {}",
                sh_quote(&pg.data().to_string_lossy()),
                sh_quote(&pg.dir.to_string_lossy())
            ))?);
            let mut cmd = as_user("postgres", &format!("{PG_BIN}/initdb"));
            cmd.arg("-D")
                .arg(pg.data())
                .args(["-U", "postgres", "-A", "trust", "--no-sync"]);
            let (ok, out) = run_bounded(cmd, BOOT_TIMEOUT)?;
            if !ok {
                bail!("initdb failed: {}", tail(&out));
            }
            pg.pg_ctl_start()?;
            Ok(pg)
        })
        .await?
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// URL of the `postgres` database as the `postgres` superuser (for creating test databases).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn pg_ctl_start(&mut self) -> anyhow::Result<()> {
        let mut cmd = as_user("postgres", &format!("{PG_BIN}/pg_ctl"));
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                self.port,
                self.dir.display()
            ))
            .arg("start");
        let (ok, out) = run_bounded(cmd, BOOT_TIMEOUT)?;
        if !ok {
            let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            bail!("pg_ctl start failed: {}\n{}", out.trim(), tail(&log));
        }
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let mut cmd = as_user("postgres", &format!("{PG_BIN}/pg_ctl"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        let (ok, out) = run_bounded(cmd, Duration::from_secs(70))?;
        self.running = false;
        if ok {
            Ok(())
        } else {
            Err(anyhow!("pg_ctl stop failed: {}", out.trim()))
        }
    }

    /// Stops the cluster: `fast` disconnects clients cleanly, `immediate` simulates a crash.
    pub async fn stop(&mut self, mode: StopMode) -> anyhow::Result<()> {
        let mode = mode.as_str();
        let mut me = self.detach();
        let (me, res) = tokio::task::spawn_blocking(move || {
            let res = me.pg_ctl_stop(mode);
            (me, res)
        })
        .await?;
        *self = me;
        res
    }

    /// Starts the stopped cluster again on the same port.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let mut me = self.detach();
        let (me, res) = tokio::task::spawn_blocking(move || {
            let res = me.pg_ctl_start();
            (me, res)
        })
        .await?;
        *self = me;
        res
    }

    /// Moves the handle out (leaving an inert one behind that owns nothing).
    fn detach(&mut self) -> PgCluster {
        PgCluster {
            dir: std::mem::take(&mut self.dir),
            port: self.port,
            running: std::mem::replace(&mut self.running, false),
            watchdog: self.watchdog.take(),
        }
    }
}

/// How to stop Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, shut down cleanly.
    Fast,
    /// Abort every process (crash; recovery runs on the next start).
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if self.running && self.pg_ctl_stop("immediate").is_err() {
            // pg_ctl could not stop it: kill the postmaster's process group directly.
            if let Some(pid) = fs::read_to_string(self.data().join("postmaster.pid"))
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
