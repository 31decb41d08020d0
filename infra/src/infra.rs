//! Starting and stopping the servers, shared by the test helpers (throwaway
//! data) and `cargo xtask up` (persistent data under `.data/`).
//!
//! Every process runs under a watchdog shell whose stdin is a pipe from this
//! process. Closing the pipe, on purpose or because this process ended in
//! whatever way, makes the watchdog send the server its stop signal, so no
//! server outlives the process that started it.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::binaries;

/// How long a server may take to accept connections. Generous: CI machines
/// are slow and a PostgreSQL after a crash replays its WAL first.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after its stop signal before it is
/// killed outright.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Lines of a server's log quoted in start-up errors.
const LOG_TAIL_LINES: usize = 40;

/// The watchdog. Arguments: stop signal, directory to delete after the server
/// exits ("" for none), then the server's program and arguments. It exits
/// with the server's status, so waiting on it is waiting on the server.
const WATCHDOG: &str = r#"
sig=$1
cleanup=$2
shift 2
exec 3<&0
"$@" 3<&- </dev/null &
pid=$!
{ read -r _ <&3; kill -s "$sig" "$pid" 2>/dev/null; } &
guard=$!
exec 3<&-
wait "$pid"
status=$?
kill "$guard" 2>/dev/null
if [ -n "$cleanup" ]; then rm -rf -- "$cleanup"; fi
exit "$status"
"#;

/// A port on 127.0.0.1 that was free a moment ago, below the kernel's
/// ephemeral range: a server started on it later does not meet a client
/// socket that the kernel gave the same port meanwhile (a port from the
/// ephemeral range, as binding port 0 hands out, can be taken that way by
/// any outgoing connection, e.g. one to PostgreSQL).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, _) = ephemeral_range();
    let floor = 10_000u32;
    if low > floor + 1_000 {
        let span = low - floor;
        // Processes start at different places, so parallel test processes
        // rarely try the same ports.
        let seed = std::process::id().wrapping_mul(7_919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        for _ in 0..200 {
            let step = NEXT.fetch_add(1, AtomicOrdering::Relaxed);
            let candidate = floor + (seed.wrapping_add(step.wrapping_mul(104_729))) % span;
            let Ok(port) = u16::try_from(candidate) else { continue };
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 must work on any machine that runs the tests")
}

/// The ports the kernel hands to outgoing connections (`low`, `high`).
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().filter_map(|n| n.parse().ok());
            Some((bounds.next()?, bounds.next()?))
        })
        .unwrap_or((32_768, 60_999))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub async fn tcp_accepts(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.is_ok()
}

/// `nats://127.0.0.1:<port>`
pub fn nats_url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

/// `redis://127.0.0.1:<port>`
pub fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// The maintenance database of a server started here, as superuser
/// `postgres` (trust authentication).
pub fn postgres_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// `server_url` with its database replaced by `database` (user, password and
/// query parameters kept).
pub fn database_url(server_url: &str, database: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    let mut url = format!("{base}/{database}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Creates `database` on the server at `server_url` unless it exists.
/// Returns whether it was created. The name must be a plain identifier
/// (ASCII letters, digits, `_`), as it cannot be a bind parameter.
pub async fn create_database(server_url: &str, database: &str) -> anyhow::Result<bool> {
    if database.is_empty() || !database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("refusing to create database {database:?}: not a plain identifier");
    }
    let mut conn = PgConnection::connect(server_url)
        .await
        .with_context(|| format!("connecting to {server_url}"))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(&mut conn)
        .await?;
    let created = if exists.is_some() {
        false
    } else {
        let sql = format!("CREATE DATABASE \"{database}\"");
        match sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await {
            Ok(_) => true,
            // Someone else created it in the meantime.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => false,
            Err(e) => return Err(e).with_context(|| format!("creating database {database}")),
        }
    };
    conn.close().await.ok();
    Ok(created)
}

/// Starts PostgreSQL with its data in `data_dir` (initialised on first use)
/// on 127.0.0.1:`port`, trust authentication, superuser `postgres`. The log
/// goes to `data_dir` with extension `.log`. Stops with a fast shutdown.
pub async fn start_postgres(data_dir: &Path, port: u16) -> anyhow::Result<ServerProcess> {
    spawn_postgres(data_dir, port, Purpose::Dev, None).await
}

/// Starts nats-server with JetStream, the project's `nats/nats-server.conf`
/// and its store in `store_dir`, on 127.0.0.1:`port`. The log goes to
/// `store_dir` with extension `.log` (the configuration used, when it had to
/// be adapted, to `.conf`).
pub async fn start_nats(store_dir: &Path, port: u16) -> anyhow::Result<ServerProcess> {
    spawn_nats(store_dir, port).await
}

/// Starts Redis with an append-only file in `data_dir` on 127.0.0.1:`port`.
/// The log goes to `data_dir` with extension `.log`.
pub async fn start_redis(data_dir: &Path, port: u16) -> anyhow::Result<ServerProcess> {
    spawn_redis(data_dir, port, Purpose::Dev).await
}

/// The project's nats-server configuration.
pub fn nats_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats/nats-server.conf")
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Throwaway data: skip everything that only buys durability.
    Test,
    /// Data kept across runs of `cargo xtask up`.
    Dev,
}

pub(crate) async fn spawn_postgres(
    data_dir: &Path,
    port: u16,
    purpose: Purpose,
    cleanup: Option<&Path>,
) -> anyhow::Result<ServerProcess> {
    let bin = binaries::postgres_bin_dir()?;
    let data_dir = std::path::absolute(data_dir)?;
    // Beside the data directory as given, even when the data lives elsewhere.
    let log = data_dir.with_extension("log");
    // PostgreSQL refuses to run as root; run it as the `postgres` system user.
    let as_postgres = running_as_root();
    let data_dir = if as_postgres && purpose == Purpose::Dev {
        reachable_by_postgres(&data_dir).await?
    } else {
        data_dir
    };
    prepare_postgres_dir(&data_dir, as_postgres).await?;

    if !data_dir.join("PG_VERSION").exists() {
        if fs::read_dir(&data_dir)?.next().is_some() {
            bail!(
                "{} is neither empty nor a PostgreSQL data directory",
                data_dir.display()
            );
        }
        let mut initdb = postgres_user_command(&bin.join("initdb"), as_postgres);
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"]);
        if purpose == Purpose::Test {
            initdb.arg("--no-sync");
        }
        let output = tokio::process::Command::from(initdb)
            .current_dir("/")
            .output()
            .await
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb {} failed ({}):\n{}{}",
                data_dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    let mut postgres = postgres_user_command(&bin.join("postgres"), as_postgres);
    postgres
        .arg("-D")
        .arg(&data_dir)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(&data_dir)
        .args(["-c", "max_connections=300"])
        .current_dir("/");
    let signal = match purpose {
        Purpose::Test => {
            postgres.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
            // Nothing to keep: immediate shutdown.
            StopSignal::Quit
        }
        // Fast shutdown: disconnect clients, checkpoint, exit.
        Purpose::Dev => StopSignal::Int,
    };
    let mut process = ServerProcess::spawn_inner("postgres", &postgres, signal, Some(&log), cleanup)?;
    let url = postgres_url(port);
    process.wait_until(STARTUP_TIMEOUT, || accepts_queries(&url)).await?;
    Ok(process)
}

pub(crate) async fn spawn_nats(store_dir: &Path, port: u16) -> anyhow::Result<ServerProcess> {
    spawn_nats_with(&nats_config(), store_dir, port, &[]).await
}

/// The project's configuration of node `node` (1, 2 or 3) of its
/// three-node cluster.
pub fn nats_cluster_config(node: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../nats/cluster/n{node}.conf"))
}

/// Where one node of a three-node cluster listens: clients on `port`, the
/// other nodes on `route_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterPorts {
    pub port: u16,
    pub route_port: u16,
}

/// Starts node `node` (1-3) of the cluster whose nodes listen at `nodes`,
/// from `nats/cluster/n<node>.conf`, its JetStream store in `store_dir`.
pub async fn start_nats_node(
    node: usize,
    nodes: &[ClusterPorts; 3],
    store_dir: &Path,
) -> anyhow::Result<ServerProcess> {
    let own = nodes[node - 1];
    let routes: Vec<String> = nodes
        .iter()
        .map(|n| format!("nats-route://127.0.0.1:{}", n.route_port))
        .collect();
    let cluster = format!("nats://127.0.0.1:{}", own.route_port);
    let routes = routes.join(",");
    let args = ["--cluster", cluster.as_str(), "--routes", routes.as_str()];
    spawn_nats_with(&nats_cluster_config(node), store_dir, own.port, &args).await
}

/// `nats_urls` of a cluster: every node, comma-separated, as `NATS_URL`
/// takes them.
pub fn nats_cluster_url(nodes: &[ClusterPorts]) -> String {
    nodes.iter().map(|n| nats_url(n.port)).collect::<Vec<_>>().join(",")
}

async fn spawn_nats_with(config: &Path, store_dir: &Path, port: u16, extra: &[&str]) -> anyhow::Result<ServerProcess> {
    let program = binaries::nats_server()?;
    let config = config.to_path_buf();
    let text = fs::read_to_string(&config)
        .with_context(|| format!("reading nats-server configuration {}", config.display()))?;
    fs::create_dir_all(store_dir).with_context(|| format!("creating {}", store_dir.display()))?;
    let store_dir = std::path::absolute(store_dir)?;
    let mut command = Command::new(program);
    // `-a` and `-p` override the file's `listen`; `extra` its cluster ports.
    command.args(extra);
    command.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"]);
    match with_store_dir(&text, &store_dir) {
        // nats-server rejects `-sd` when the file names a store_dir too
        // ("Duplicate 'store_dir' configuration"), so run a copy of the file
        // with only that line changed.
        Some(rewritten) => {
            let copy = store_dir.with_extension("conf");
            fs::write(&copy, rewritten).with_context(|| format!("writing {}", copy.display()))?;
            command.arg(copy);
        }
        None => {
            command.arg(&config).arg("-sd").arg(&store_dir);
        }
    }
    let log = store_dir.with_extension("log");
    let mut process = ServerProcess::spawn_inner("nats-server", &command, StopSignal::Term, Some(&log), None)?;
    process.wait_until(STARTUP_TIMEOUT, || nats_ready(port)).await?;
    Ok(process)
}

/// `config` with every `store_dir` setting pointing at `store_dir`, or None
/// if it has none.
fn with_store_dir(config: &str, store_dir: &Path) -> Option<String> {
    let quoted = format!("{:?}", store_dir.display().to_string());
    let mut found = false;
    let mut out = String::with_capacity(config.len() + quoted.len());
    for line in config.lines() {
        let trimmed = line.trim_start();
        let key_len = ["store_dir", "storedir"]
            .iter()
            .find(|key| {
                trimmed
                    .strip_prefix(**key)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_whitespace() || c == ':' || c == '='))
            })
            .map(|key| key.len());
        match key_len {
            Some(len) => {
                found = true;
                let indent = &line[..line.len() - trimmed.len()];
                out.push_str(&format!("{indent}{}: {quoted}", &trimmed[..len]));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    found.then_some(out)
}

pub(crate) async fn spawn_redis(data_dir: &Path, port: u16, purpose: Purpose) -> anyhow::Result<ServerProcess> {
    let program = binaries::redis_server()?;
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = std::path::absolute(data_dir)?;
    let mut command = Command::new(program);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(&data_dir)
        .args(["--save", "", "--daemonize", "no", "--logfile", ""]);
    let appendonly = match purpose {
        Purpose::Test => "no",
        Purpose::Dev => "yes",
    };
    command.args(["--appendonly", appendonly]);
    let log = data_dir.with_extension("log");
    let mut process = ServerProcess::spawn_inner("redis-server", &command, StopSignal::Term, Some(&log), None)?;
    process.wait_until(STARTUP_TIMEOUT, || redis_ready(port)).await?;
    Ok(process)
}

/// Whether a start-up error was another process taking the port first: the
/// test helpers then retry on another free port.
pub(crate) fn is_port_clash(error: &anyhow::Error) -> bool {
    format!("{error:#}")
        .to_ascii_lowercase()
        .contains("address already in use")
}

/// The signal the watchdog sends to stop a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: the usual graceful stop.
    Term,
    /// SIGINT: PostgreSQL's fast shutdown.
    Int,
    /// SIGQUIT: PostgreSQL's immediate shutdown.
    Quit,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            Self::Term => "TERM",
            Self::Int => "INT",
            Self::Quit => "QUIT",
        }
    }
}

/// A server process under the watchdog. Dropping it stops the server and
/// waits for it to exit.
pub struct ServerProcess {
    name: String,
    /// The watchdog shell, leader of its own process group.
    child: Child,
    /// Closing this pipe tells the watchdog to stop the server.
    lifeline: Option<ChildStdin>,
    exit: Option<ExitStatus>,
    /// The log file and its length before this process started.
    log: Option<(PathBuf, u64)>,
}

impl ServerProcess {
    /// Starts `command` (program, arguments, environment and working
    /// directory are taken from it) under the watchdog. Its output goes to
    /// `log` (appended) or, without one, to this process's stdout and stderr.
    pub fn spawn(name: &str, command: &Command, signal: StopSignal, log: Option<&Path>) -> anyhow::Result<Self> {
        Self::spawn_inner(name, command, signal, log, None)
    }

    /// Like [`spawn`](Self::spawn); the watchdog also deletes `cleanup` once
    /// the server has exited (for servers that live as long as this process).
    pub(crate) fn spawn_inner(
        name: &str,
        command: &Command,
        signal: StopSignal,
        log: Option<&Path>,
        cleanup: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut watchdog = Command::new("sh");
        watchdog
            .arg("-c")
            .arg(WATCHDOG)
            // $0, which names the watchdog in its own error messages.
            .arg("shop-watchdog")
            .arg(signal.name())
            .arg(cleanup.map_or_else(OsString::new, |p| p.as_os_str().to_owned()))
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches only
            // this process, which then stops servers in order; and a stuck
            // server can be killed together with the watchdog.
            .process_group(0);
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => watchdog.env(key, value),
                None => watchdog.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            watchdog.current_dir(dir);
        }
        let log = match log {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening log {}", path.display()))?;
                let offset = file.metadata()?.len();
                watchdog.stdout(file.try_clone()?).stderr(file);
                Some((path.to_path_buf(), offset))
            }
            None => None,
        };
        let mut child = match watchdog.spawn() {
            Ok(child) => child,
            Err(e) => {
                if let Some(dir) = cleanup {
                    fs::remove_dir_all(dir).ok();
                }
                return Err(e).with_context(|| format!("starting {name} under sh"));
            }
        };
        let lifeline = child.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            child,
            lifeline,
            exit: None,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status, once the server has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.exit)
    }

    /// Polls `ready` until it returns true. Fails, quoting the log, if the
    /// server exits first or `timeout` passes.
    pub async fn wait_until<F, Fut>(&mut self, timeout: Duration, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if ready().await {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!("{} exited during start-up ({status}){}", self.name, self.log_tail());
            }
            if Instant::now() >= deadline {
                bail!("{} was not ready after {timeout:?}{}", self.name, self.log_tail());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the server (its stop signal, then SIGKILL after a grace period)
    /// and waits for it. Returns its exit status; no-op if it already exited.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        self.lifeline.take();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.exited_or_unwaitable() {
                return self.exit;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        self.kill();
        self.exit
    }

    /// Sends the server its stop signal, and only the server (not its
    /// watchdog, as [`signal`](Self::signal) would), without waiting: as an
    /// orchestrator stops a container. [`try_wait`](Self::try_wait) tells
    /// when it has exited.
    pub fn request_stop(&mut self) {
        self.lifeline.take();
    }

    /// [`stop`](Self::stop) for `Drop`, which cannot await.
    fn stop_blocking(&mut self) {
        self.lifeline.take();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.exited_or_unwaitable() {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        self.kill();
    }

    fn exited_or_unwaitable(&mut self) -> bool {
        // An error means there is no child to wait for any more.
        self.try_wait().map_or(true, |status| status.is_some())
    }

    /// Sends `signal` (a name `kill -s` knows: `KILL`, `STOP`, `CONT`) to
    /// the server's whole process group: the server, its children (a
    /// PostgreSQL's backends) and the watchdog. For fault injection.
    pub fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        if self.try_wait()?.is_some() {
            bail!("{} has exited; nothing to send {signal} to", self.name);
        }
        let group = format!("-{}", self.child.id());
        let status = Command::new("sh")
            .args(["-c", r#"kill -s "$1" -- "$2""#, "sh", signal, &group])
            .status()
            .with_context(|| format!("sending {signal} to {}", self.name))?;
        if !status.success() {
            bail!("sending {signal} to {} failed ({status})", self.name);
        }
        Ok(())
    }

    /// The id of its process group (the watchdog's pid), for a test that
    /// signals it from another process; `None` once it has exited.
    pub fn process_group(&mut self) -> Option<u32> {
        matches!(self.try_wait(), Ok(None)).then(|| self.child.id())
    }

    /// SIGKILL to the whole process group. Safe from pid reuse: the watchdog
    /// is not reaped yet, so its process group cannot be someone else's.
    fn kill(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("sh")
            .args(["-c", r#"kill -s KILL -- "$1" 2>/dev/null"#, "sh", &group])
            .status();
        self.exit = self.child.wait().ok();
    }

    /// The server's log since this start, as an error message suffix.
    pub fn log_tail(&self) -> String {
        let Some((path, offset)) = &self.log else {
            return String::new();
        };
        let mut text = String::new();
        let read = File::open(path).and_then(|mut file| {
            file.seek(SeekFrom::Start(*offset))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            text = String::from_utf8_lossy(&bytes).into_owned();
            Ok(())
        });
        if let Err(e) = read {
            return format!("\n(log {} unreadable: {e})", path.display());
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!("\n--- end of {} ---\n{tail}", path.display())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop_blocking();
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(uids) = status.lines().find_map(|l| l.strip_prefix("Uid:"))
    {
        return uids.split_whitespace().nth(1) == Some("0");
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// `program`, run as the `postgres` system user when `as_postgres`.
fn postgres_user_command(program: &Path, as_postgres: bool) -> Command {
    if !as_postgres {
        return Command::new(program);
    }
    // setpriv execs in place (unlike runuser, which forks and translates
    // signals), so the watchdog's signal reaches PostgreSQL itself.
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
        .arg(program);
    command
}

/// Where the data of `data_dir` can live when root starts PostgreSQL (which
/// then runs as the `postgres` user): `data_dir` itself if that user can
/// reach it; otherwise a directory in that user's home, with `data_dir` a
/// symlink to it. A checkout under `/root` (mode 0700) is the usual case.
async fn reachable_by_postgres(data_dir: &Path) -> anyhow::Result<PathBuf> {
    if data_dir.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        return fs::read_link(data_dir).with_context(|| format!("reading the link {}", data_dir.display()));
    }
    let parent = data_dir.parent().context("the data directory has a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    if postgres_user_succeeds("test", [OsString::from("-x"), parent.as_os_str().to_owned()]).await {
        return Ok(data_dir.to_path_buf());
    }
    if data_dir.exists() {
        // An empty directory left by an earlier attempt can go; data cannot.
        fs::remove_dir(data_dir).with_context(|| {
            format!(
                "{} holds data but the `postgres` user cannot reach it: move the checkout \
                 somewhere that user can enter, or remove that directory",
                data_dir.display()
            )
        })?;
    }
    let home = postgres_home().await?;
    let escaped = data_dir.to_string_lossy().trim_start_matches('/').replace('/', "-");
    let elsewhere = home.join("shop").join(escaped);
    if elsewhere.exists() {
        // No link points at it any more: its data directory was deleted.
        fs::remove_dir_all(&elsewhere).with_context(|| format!("removing stale {}", elsewhere.display()))?;
    }
    fs::create_dir_all(&elsewhere).with_context(|| format!("creating {}", elsewhere.display()))?;
    std::os::unix::fs::symlink(&elsewhere, data_dir)
        .with_context(|| format!("linking {} to {}", data_dir.display(), elsewhere.display()))?;
    println!(
        "PostgreSQL's data goes to {} ({} is linked to it): the `postgres` user, which runs \
         the server for root, cannot enter {}",
        elsewhere.display(),
        data_dir.display(),
        parent.display()
    );
    Ok(elsewhere)
}

/// The `postgres` user's home directory (`/var/lib/postgresql` on Debian).
async fn postgres_home() -> anyhow::Result<PathBuf> {
    let output = tokio::process::Command::new("getent")
        .args(["passwd", "postgres"])
        .output()
        .await
        .context("running getent")?;
    let entry = String::from_utf8_lossy(&output.stdout);
    match entry.trim_end().split(':').nth(5) {
        Some(home) if output.status.success() && home.starts_with('/') => Ok(PathBuf::from(home)),
        _ => bail!("the `postgres` user has no home directory (the Debian package `postgresql` creates that user)"),
    }
}

/// Whether `program args…` succeeds as the `postgres` user.
async fn postgres_user_succeeds(program: &str, args: impl IntoIterator<Item = OsString>) -> bool {
    let mut probe = postgres_user_command(Path::new(program), true);
    probe.args(args).current_dir("/");
    tokio::process::Command::from(probe)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Creates the data directory and, as root, hands it to `postgres`.
async fn prepare_postgres_dir(data_dir: &Path, as_postgres: bool) -> anyhow::Result<()> {
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    if !as_postgres {
        return Ok(());
    }
    let chown = tokio::process::Command::new("chown")
        .arg("postgres:postgres")
        .arg(data_dir)
        .output()
        .await
        .context("running chown")?;
    if !chown.status.success() {
        bail!(
            "cannot hand {} to the `postgres` user (needed when running as root; \
             the Debian package `postgresql` creates that user): {}",
            data_dir.display(),
            String::from_utf8_lossy(&chown.stderr).trim()
        );
    }
    if !postgres_user_succeeds("test", [OsString::from("-w"), data_dir.as_os_str().to_owned()]).await {
        bail!(
            "the `postgres` user cannot write {} (PostgreSQL runs as that user when \
             started by root); every parent directory must be searchable by it",
            data_dir.display()
        );
    }
    Ok(())
}

async fn accepts_queries(url: &str) -> bool {
    let Ok(mut conn) = PgConnection::connect(url).await else {
        return false;
    };
    let ok = sqlx::query("SELECT 1").execute(&mut conn).await.is_ok();
    conn.close().await.ok();
    ok
}

/// The server greets every client with an INFO line; JetStream is on once
/// it says so.
async fn nats_ready(port: u16) -> bool {
    let probe = async {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        Some(line.starts_with("INFO ") && line.contains("\"jetstream\":true"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

/// PING answers `-LOADING` until the append-only file is loaded.
async fn redis_ready(port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.ok()?;
        Some(line.trim_end() == "+PONG")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_stay_out_of_the_range_outgoing_connections_use() {
        let (low, _) = ephemeral_range();
        for _ in 0..50 {
            let port = u32::from(free_port());
            assert!(port < low, "{port} is in the ephemeral range from {low}");
        }
    }

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "shop_order"),
            "postgres://postgres@127.0.0.1:5432/shop_order"
        );
        assert_eq!(database_url("postgres://u:p@db:5432", "x"), "postgres://u:p@db:5432/x");
        assert_eq!(
            database_url("postgres://u@db/app?sslmode=disable", "x"),
            "postgres://u@db/x?sslmode=disable"
        );
    }

    #[test]
    fn store_dir_is_rewritten_in_place() {
        let config = "listen: 1.2.3.4:5\njetstream {\n  store_dir: \".data/nats\"\n  sync_interval: always\n}\n";
        let rewritten = with_store_dir(config, Path::new("/tmp/x")).expect("has store_dir");
        assert_eq!(
            rewritten,
            "listen: 1.2.3.4:5\njetstream {\n  store_dir: \"/tmp/x\"\n  sync_interval: always\n}\n"
        );
        assert_eq!(with_store_dir("jetstream: enabled\n", Path::new("/x")), None);
        assert_eq!(with_store_dir("# store_dir: a\n", Path::new("/x")), None);
    }
}
