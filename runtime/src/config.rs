//! Typed configuration from the environment (and an optional `KEY=value`
//! file), collecting every problem before failing so an operator fixes all
//! of them in one go.

use std::{collections::HashMap, fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use crate::registry::ServiceSpec;

/// All configuration problems found, one per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    /// A required value that [`EnvReader::finish`] let through: it has
    /// reported the setting already, so this cannot be seen in practice.
    pub fn missing(key: &str) -> Self {
        Self {
            problems: vec![format!("{key} is not set")],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.problems.len())?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads settings by name and remembers what was missing or malformed.
///
/// Lookups never fail on their own: they return a default (or `None`) and
/// record the problem; [`EnvReader::finish`] reports them all at once.
pub struct EnvReader {
    values: HashMap<String, String>,
    problems: Vec<String>,
}

impl EnvReader {
    /// The process environment, layered over the file named by
    /// `SHOP_CONFIG_FILE` when set (environment wins).
    pub fn from_process_env() -> Self {
        let env: HashMap<String, String> = std::env::vars().collect();
        let mut reader = Self {
            values: HashMap::new(),
            problems: Vec::new(),
        };
        if let Some(path) = env.get("SHOP_CONFIG_FILE") {
            match std::fs::read_to_string(path) {
                Ok(text) => reader.load_file_text(path, &text),
                Err(e) => reader
                    .problems
                    .push(format!("SHOP_CONFIG_FILE: cannot read {path}: {e}")),
            }
        }
        reader.values.extend(env);
        reader
    }

    /// Settings from an explicit map (tests and embedding).
    pub fn from_map<K: Into<String>, V: Into<String>>(map: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            values: map.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            problems: Vec::new(),
        }
    }

    fn load_file_text(&mut self, path: &str, text: &str) {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((key, value)) => {
                    self.values.insert(key.trim().to_owned(), value.trim().to_owned());
                }
                None => self.problems.push(format!("{path}:{}: expected KEY=value", number + 1)),
            }
        }
    }

    fn raw(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Records a problem found while validating settings together.
    pub fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    /// A required setting; records a problem when absent or malformed.
    pub fn required<T: FromStr>(&mut self, key: &str, hint: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match self.raw(key).map(str::to_owned) {
            None => {
                self.problems.push(format!("{key} is not set ({hint})"));
                None
            }
            Some(raw) => self.parse(key, &raw, hint),
        }
    }

    /// An optional setting with a default; a malformed value is a problem,
    /// not silently replaced by the default.
    pub fn or<T: FromStr>(&mut self, key: &str, default: T, hint: &str) -> T
    where
        T::Err: fmt::Display,
    {
        match self.raw(key).map(str::to_owned) {
            None => default,
            Some(raw) => self.parse(key, &raw, hint).unwrap_or(default),
        }
    }

    /// An optional setting without a default.
    pub fn optional<T: FromStr>(&mut self, key: &str, hint: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let raw = self.raw(key)?.to_owned();
        self.parse(key, &raw, hint)
    }

    /// A duration such as `250ms`, `30s`, `15m`, `2h` or `3d`.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        match self.raw(key).map(str::to_owned) {
            None => default,
            Some(raw) => match parse_duration(&raw) {
                Some(d) => d,
                None => {
                    self.problems.push(format!(
                        "{key}={raw:?} is not a duration (use e.g. 250ms, 30s, 15m, 2h, 3d)"
                    ));
                    default
                }
            },
        }
    }

    /// A duration that must be longer than zero (an interval, a timeout).
    pub fn positive_duration(&mut self, key: &str, default: Duration) -> Duration {
        let value = self.duration(key, default);
        if value.is_zero() {
            self.problems.push(format!("{key} must be longer than 0s"));
        }
        value
    }

    /// A count that must be at least 1 (a limit, a concurrency, attempts).
    pub fn count<T>(&mut self, key: &str, default: T) -> T
    where
        T: FromStr + PartialOrd + From<u8> + fmt::Display,
        T::Err: fmt::Display,
    {
        let value = self.or(key, default, "a positive integer");
        if value < T::from(1) {
            self.problems.push(format!("{key}={value} must be at least 1"));
        }
        value
    }

    pub fn socket_addr(&mut self, key: &str, default: SocketAddr) -> SocketAddr {
        self.or(key, default, "host:port, e.g. 127.0.0.1:50051")
    }

    pub fn path(&mut self, key: &str, default: &str) -> PathBuf {
        PathBuf::from(self.raw(key).unwrap_or(default))
    }

    fn parse<T: FromStr>(&mut self, key: &str, raw: &str, hint: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match raw.trim().parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(format!("{key}={raw:?} is invalid: {e} ({hint})"));
                None
            }
        }
    }

    /// Ok when every lookup succeeded, otherwise every problem found.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// Parses `250ms`, `30s`, `15m`, `2h`, `3d` (a bare number means seconds).
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).map(Duration::from_millis)
}

/// Log output format: `text` for a person at a terminal, `json` for a log
/// pipeline, `auto` (the default) picks `text` when standard output is a
/// terminal and `json` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
    Auto,
}

impl LogFormat {
    /// `Text` or `Json`, deciding `Auto` by whether stdout is a terminal.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if std::io::IsTerminal::is_terminal(&std::io::stdout()) => Self::Text,
            Self::Auto => Self::Json,
            chosen => chosen,
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            "auto" => Ok(Self::Auto),
            other => Err(format!("unknown log format {other:?}")),
        }
    }
}

/// A service's configuration, as what runs every service needs it: its
/// [`ServiceBasics`], wherever the service keeps them.
pub trait HasBasics {
    fn basics(&self) -> &ServiceBasics;
}

impl HasBasics for ServiceSettings {
    fn basics(&self) -> &ServiceBasics {
        &self.basics
    }
}

/// Settings every service has.
#[derive(Debug, Clone)]
pub struct ServiceBasics {
    /// The service these settings are for.
    pub service: &'static ServiceSpec,
    /// Where the gRPC server listens (`GRPC_LISTEN_ADDR`).
    pub grpc_addr: SocketAddr,
    /// Where `/livez`, `/readyz` and `/metrics` are served (`ADMIN_LISTEN_ADDR`).
    pub admin_addr: SocketAddr,
    /// `LOG_FORMAT`: `auto` (default: text at a terminal, JSON otherwise),
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER_ARG`.
    pub tracing: crate::telemetry::TracingSettings,
    /// `SHUTDOWN_GRACE_PERIOD` (default 20s): from SIGTERM to exit at most,
    /// however many calls and events are still open (see [`crate::host`]).
    /// Under Kubernetes' default 30 s, so the kubelet never has to kill.
    pub shutdown_grace: Duration,
}

impl ServiceBasics {
    /// The listen addresses default to the service's ports in the registry,
    /// on loopback: a service is reachable from other machines only when its
    /// deployment says so (`GRPC_LISTEN_ADDR=0.0.0.0:50051`).
    pub fn read(env: &mut EnvReader, service: &'static ServiceSpec) -> Self {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            service,
            grpc_addr: env.socket_addr("GRPC_LISTEN_ADDR", loopback(service.grpc_port)),
            admin_addr: env.socket_addr("ADMIN_LISTEN_ADDR", loopback(service.admin_port)),
            log_format: env.or("LOG_FORMAT", LogFormat::Auto, "auto, text or json"),
            tracing: crate::telemetry::TracingSettings::read(env),
            shutdown_grace: env.positive_duration("SHUTDOWN_GRACE_PERIOD", Duration::from_secs(20)),
        }
    }
}

/// A server URL that may carry a password (`postgres://user:secret@host/db`).
/// Reads as the URL where it is used; `Debug` and `Display` show
/// `user:***@host`, so settings can be logged whole.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL, password included: for connecting, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let shown = match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{user}:***"),
                    // NATS token authentication: the token stands where a user would.
                    None if scheme == "nats" => "***".to_owned(),
                    None => userinfo.to_owned(),
                };
                format!("{scheme}://{shown}@{host}{path}")
            }
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Settings of a service that keeps its state in its own PostgreSQL database.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`, the service's own database.
    pub url: SecretUrl,
    /// `DATABASE_MAX_CONNECTIONS` (default 16).
    pub max_connections: u32,
    /// `DATABASE_STATEMENT_TIMEOUT` (default 10s), `DATABASE_LOCK_TIMEOUT`
    /// (default 5s) and `DATABASE_IDLE_IN_TRANSACTION_TIMEOUT` (default 30s).
    pub limits: crate::db::Limits,
}

impl DatabaseSettings {
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            url: SecretUrl::new(
                env.required::<String>("DATABASE_URL", "e.g. postgres://postgres@127.0.0.1:5432/shop_order")
                    .unwrap_or_default(),
            ),
            max_connections: env.count("DATABASE_MAX_CONNECTIONS", 16),
            limits: {
                let default = crate::db::Limits::default();
                crate::db::Limits {
                    statement: env.positive_duration("DATABASE_STATEMENT_TIMEOUT", default.statement),
                    lock: env.positive_duration("DATABASE_LOCK_TIMEOUT", default.lock),
                    idle_in_transaction: env
                        .positive_duration("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", default.idle_in_transaction),
                }
            },
        }
    }
}

/// Settings of a service that takes part in the saga over JetStream.
#[derive(Debug, Clone)]
pub struct MessagingSettings {
    /// `NATS_URL`, e.g. `nats://127.0.0.1:4222`.
    pub nats_url: SecretUrl,
    /// `CONSUMER_CONCURRENCY`: events handled at once per consumer (default 16).
    pub consumer_concurrency: usize,
    /// `OUTBOX_POLL_INTERVAL`: safety-net poll for rows an instance left
    /// unpublished (default 2s), for services with an outbox. The happy
    /// path never waits for it.
    pub outbox_poll_interval: Duration,
    /// `NATS_STREAM_REPLICAS`: how many servers keep each stream (default
    /// 1; 3 on a three-node cluster, so one node may be lost). `NATS_URL`
    /// then lists the nodes, comma-separated.
    pub stream_replicas: usize,
}

impl MessagingSettings {
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            nats_url: SecretUrl::new(
                env.required::<String>("NATS_URL", "e.g. nats://127.0.0.1:4222")
                    .unwrap_or_default(),
            ),
            consumer_concurrency: env.count("CONSUMER_CONCURRENCY", 16),
            outbox_poll_interval: env.positive_duration("OUTBOX_POLL_INTERVAL", Duration::from_secs(2)),
            stream_replicas: {
                let replicas = env.count("NATS_STREAM_REPLICAS", 1);
                if replicas > 5 {
                    env.problem(format!(
                        "NATS_STREAM_REPLICAS={replicas}: JetStream keeps a stream on at most 5 servers"
                    ));
                }
                replicas
            },
        }
    }
}

/// What each service with a database of its own and a part in the saga
/// (svc-order, svc-inventory, svc-payment, svc-notify) reads before its own
/// settings.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub basics: ServiceBasics,
    /// `IDENTITY_VERIFYING_KEY_FILE`: the gateway's public key, which every
    /// caller's identity token must be signed with.
    pub identity: std::sync::Arc<crate::identity::IdentityVerifier>,
    pub database: DatabaseSettings,
    pub messaging: MessagingSettings,
}

impl ServiceSettings {
    pub fn read(env: &mut EnvReader, spec: &'static ServiceSpec) -> Self {
        Self {
            basics: ServiceBasics::read(env, spec),
            identity: crate::identity::IdentityVerifier::from_env(env),
            database: DatabaseSettings::read(env),
            messaging: MessagingSettings::read(env),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_urls_hide_their_password_in_logs_but_not_where_used() {
        let url = SecretUrl::new("postgres://shop:hunter2@db.internal:5432/shop_order");
        assert_eq!(url.expose(), "postgres://shop:hunter2@db.internal:5432/shop_order");
        assert_eq!(url.to_string(), "postgres://shop:***@db.internal:5432/shop_order");
        let mut env = EnvReader::from_map([
            ("NATS_URL", "nats://app:s3cret@127.0.0.1:4222"),
            ("DATABASE_URL", "postgres://shop:hunter2@db.internal/shop_order"),
        ]);
        let logged = format!(
            "{:?} {:?}",
            MessagingSettings::read(&mut env),
            DatabaseSettings::read(&mut env)
        );
        assert!(!logged.contains("hunter2") && !logged.contains("s3cret"), "{logged}");
        assert!(
            logged.contains("postgres://shop:***@db.internal/shop_order"),
            "{logged}"
        );
        assert_eq!(
            SecretUrl::new("redis://127.0.0.1:6379").to_string(),
            "redis://127.0.0.1:6379"
        );
        // NATS token authentication puts the token where a user would be.
        assert_eq!(
            SecretUrl::new("nats://s3cret@host:4222").to_string(),
            "nats://***@host:4222"
        );
        assert_eq!(
            SecretUrl::new("postgres://shop@host/db").to_string(),
            "postgres://shop@host/db"
        );
    }

    use super::*;

    #[test]
    fn reports_every_problem_at_once() {
        let mut env = EnvReader::from_map([("GRPC_LISTEN_ADDR", "nonsense"), ("OUTBOX_POLL_INTERVAL", "soon")]);
        let _ = ServiceBasics::read(&mut env, &crate::registry::ORDER);
        let _ = MessagingSettings::read(&mut env);
        let _ = DatabaseSettings::read(&mut env);
        let err = env.finish().expect_err("bad settings must fail");
        let text = err.to_string();
        for key in ["GRPC_LISTEN_ADDR", "OUTBOX_POLL_INTERVAL", "NATS_URL", "DATABASE_URL"] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        assert_eq!(err.problems.len(), 4);
    }

    #[test]
    fn intervals_and_counts_must_be_positive() {
        let mut env = EnvReader::from_map([("A", "0s"), ("B", "0"), ("C", "2")]);
        assert_eq!(env.positive_duration("A", Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(env.count::<u32>("B", 1), 0);
        assert_eq!(env.count::<usize>("C", 1), 2);
        assert_eq!(env.count::<i32>("D", 3), 3);
        assert_eq!(env.problems, ["A must be longer than 0s", "B=0 must be at least 1"]);
    }

    #[test]
    fn logs_are_json_unless_a_person_reads_them_at_a_terminal() {
        let mut env = EnvReader::from_map([("GRPC_LISTEN_ADDR", "127.0.0.1:1")]);
        assert_eq!(
            ServiceBasics::read(&mut env, &crate::registry::ORDER).log_format,
            LogFormat::Auto
        );
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(LogFormat::Text.resolve(), LogFormat::Text, "asked for is kept");
        // Tests run with stdout captured: not a terminal.
        assert_ne!(LogFormat::Auto.resolve(), LogFormat::Auto);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("3 weeks"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn file_values_are_overridden_by_environment() {
        let mut env = EnvReader::from_map([("A", "from-env")]);
        env.load_file_text("f", "# comment\nA=from-file\nB = 2\nbroken line");
        // from_map then file: file wins here because it is loaded later; the
        // process-env path loads the file first.
        assert_eq!(env.or("B", 0, ""), 2);
        assert_eq!(env.problems.len(), 1);
    }
}
