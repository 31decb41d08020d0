//! The saga services as separate processes, for tests that kill one with
//! SIGKILL. They run from a binary that calls [`Service::serve_from_env`]
//! (system-tests' `shop-service`), which starts each service exactly as its
//! own binary does; the payment provider emulator runs from it too
//! (`shop-service payment-provider`), a process of its own.

use std::{collections::HashMap, path::PathBuf, process::Stdio};

use anyhow::Context;
use shop_infra::{NatsServer, RedisServer, free_port};
use tokio::process::{Child, Command};

use crate::{
    Databases, Service, StackOptions, Surroundings,
    provider::{Emulator, Placement},
    wait_serving,
};

impl Service {
    pub fn binary_name(self) -> &'static str {
        self.spec().name
    }
}

pub struct ProcessStack {
    /// The `shop-service` binary (`env!("CARGO_BIN_EXE_shop-service")` in tests).
    binary: PathBuf,
    pub nats: NatsServer,
    /// Only when svc-cart runs.
    pub redis: Option<RedisServer>,
    pub databases: Databases,
    pub data_dir: tempfile::TempDir,
    /// The payment provider emulator svc-payment charges through.
    pub provider: Emulator,
    options: StackOptions,
    ports: HashMap<Service, u16>,
    admin_ports: HashMap<Service, u16>,
    urls: HashMap<Service, String>,
    children: HashMap<Service, Child>,
}

impl ProcessStack {
    /// Runs the services of `options` ([`Service::SAGA`] unless told
    /// [`with`](StackOptions::with) more), each in its own process.
    pub async fn start(options: StackOptions, binary: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let binary = binary.into();
        let services = options.in_start_order();
        let ports: HashMap<Service, u16> = services.iter().map(|s| (*s, free_port())).collect();
        let data_dir = tempfile::Builder::new().prefix("shop-processes-").tempdir()?;
        let placement = Placement::new(
            data_dir.path().join("payment-provider"),
            ports.get(&Service::Gateway).map(|port| format!("127.0.0.1:{port}")),
        );
        let provider = Emulator::spawn(
            &binary,
            &placement,
            &data_dir.path().join(format!("{}.log", shop_provider::SERVICE.name)),
        )
        .await?;
        let mut stack = Self {
            binary,
            nats: NatsServer::start().await?,
            redis: match services.contains(&Service::Cart) {
                true => Some(RedisServer::start().await?),
                false => None,
            },
            databases: Databases::fresh().await?,
            data_dir,
            provider,
            urls: ports
                .iter()
                .map(|(s, port)| (*s, format!("http://127.0.0.1:{port}")))
                .collect(),
            ports,
            admin_ports: services.iter().map(|s| (*s, free_port())).collect(),
            children: HashMap::new(),
            options,
        };
        for service in services {
            stack.spawn(service).await?;
        }
        Ok(stack)
    }

    pub fn grpc_url(&self, service: Service) -> String {
        format!("http://127.0.0.1:{}", self.ports[&service])
    }

    /// `(status code, body)` of `GET path` on the service's admin port: a
    /// process of its own, so its `/metrics` count only its own work.
    pub async fn admin_get(&self, service: Service, path: &str) -> anyhow::Result<(u16, String)> {
        shop_infra::http_get(([127, 0, 0, 1], self.admin_ports[&service]).into(), path).await
    }

    pub async fn spawn(&mut self, service: Service) -> anyhow::Result<()> {
        let nats_url = self.nats.url();
        let redis_url = self.redis.as_ref().map(RedisServer::url);
        let settings = Surroundings {
            nats_url: &nats_url,
            redis_url: redis_url.as_deref(),
            databases: &self.databases,
            urls: &self.urls,
            options: &self.options,
            data_dir: self.data_dir.path(),
            provider: &self.provider,
        }
        .settings(service);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join(format!("{}.log", service.binary_name())))?;
        let child = Command::new(&self.binary)
            .arg(service.binary_name())
            // Quiet unless the test's settings say otherwise.
            .env("RUST_LOG", "warn")
            .envs(settings)
            .env("GRPC_LISTEN_ADDR", format!("127.0.0.1:{}", self.ports[&service]))
            .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{}", self.admin_ports[&service]))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", service.binary_name()))?;
        self.children.insert(service, child);
        if let Err(e) = wait_serving(&self.grpc_url(service)).await {
            let state = match self.children.get_mut(&service).map(Child::try_wait) {
                Some(Ok(Some(status))) => format!("exited ({status})"),
                Some(Ok(None)) => "still running".to_owned(),
                Some(Err(e)) => format!("state unknown ({e})"),
                None => "gone".to_owned(),
            };
            let log = self.log(service);
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(e.context(format!(
                "{} {state}; its log ends:\n{}",
                service.binary_name(),
                tail.join("\n")
            )));
        }
        Ok(())
    }

    /// SIGKILL: no shutdown hook runs, in-flight work is cut wherever it is.
    pub async fn kill(&mut self, service: Service) -> anyhow::Result<()> {
        let mut child = self.children.remove(&service).context("not running")?;
        child.kill().await?;
        Ok(())
    }

    pub fn log(&self, service: Service) -> String {
        std::fs::read_to_string(self.data_dir.path().join(format!("{}.log", service.binary_name()))).unwrap_or_default()
    }
}
