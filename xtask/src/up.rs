//! `cargo xtask up`: the whole platform on this machine.
//!
//! NATS, PostgreSQL and Redis keep their data under `.data/` (or come from
//! `NATS_URL`, `DATABASE_URL`, `REDIS_URL`); the services are this
//! workspace's debug builds (release with `--release`). Every port is checked
//! before anything starts, and all of them move together with
//! `SHOP_PORT_OFFSET`. A service that exits is started again (see
//! [`supervise`](crate::supervise)); everything runs until Ctrl-C or until a
//! server of the infrastructure exits (with `--check`: until one checkout
//! through the gateway is confirmed), then stops in reverse order: services,
//! then infrastructure. With `--replicas N`, every service runs N times,
//! each replica on ports of its own, and each service is told where all
//! replicas of the others are.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shop_infra::infra::{self, ServerProcess};
use shop_runtime::identity;
use shop_runtime::registry::{self, ServiceSpec};

use crate::observe::{Observe, Observing};
use crate::ports::{self, Port};
use crate::supervise::{Restarts, Supervised, Tended};
use crate::{cmd, install};

/// What `cargo xtask up` was asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// Build and run release binaries.
    pub release: bool,
    /// Place one checkout through the gateway, wait for it to be confirmed,
    /// then stop everything; fail if it is not.
    pub check: bool,
    /// Also run the trace collector and Prometheus (see [`crate::observe`]).
    pub observe: bool,
    /// Run NATS as the three-node cluster of `nats/cluster/`, streams at R3.
    pub nats_cluster: bool,
    /// How many of each service to run (from 1; see [`Layout::with_replicas`]).
    pub replicas: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            release: false,
            check: false,
            observe: false,
            nats_cluster: false,
            replicas: 1,
        }
    }
}

/// The ports of the servers `up` starts itself. PostgreSQL and Redis stay
/// off 5432 and 6379, which the Debian packages' own services take as soon
/// as `cargo xtask install` installs them. NATS keeps its default, which the
/// nats CLI uses when given no server.
const NATS_PORT: u16 = 4222;
/// Where the three nodes of `--nats-cluster` route to each other (their
/// clients use 4222, 4223 and 4224), as in `nats/cluster/`.
const NATS_ROUTE_PORT: u16 = 6222;
const POSTGRES_PORT: u16 = 15432;
const REDIS_PORT: u16 = 16379;

/// Where the NATS and PostgreSQL of the stack of `up` are, for the commands
/// that inspect it (`dlq`, `verify`): the URLs in the environment, or the
/// ports `up` starts them on (with the port offset).
pub(crate) struct Servers {
    pub(crate) nats: String,
    pub(crate) postgres: String,
}

pub(crate) fn servers_from_env() -> anyhow::Result<Servers> {
    let layout = Layout::from_env()?;
    Ok(Servers {
        nats: layout.nats.url(infra::nats_url),
        postgres: layout.postgres.url(infra::postgres_url),
    })
}

/// How long the `--check` checkout may take to be confirmed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a service may take to listen: the first start migrates and
/// seeds its database.
const SERVICE_STARTUP: Duration = Duration::from_secs(120);
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The services, from the registry, started in its order (what others call
/// first) and stopped in reverse.
pub(crate) const SERVICES: &[&ServiceSpec] = registry::ALL;

/// A variable naming a place under `.data/` for a service (whose directory
/// is made), so what it keeps there outlives its restarts.
fn data_path(service: &ServiceSpec) -> Option<(&'static str, &'static str)> {
    if *service == registry::NOTIFY {
        Some(("NOTIFY_DATA_DIR", "notify/"))
    } else if *service == registry::GATEWAY {
        // Its dev token key, made on first start: tokens outlive its restarts.
        Some(("DEV_AUTH_KEY_FILE", "gateway/dev-auth-key.pem"))
    } else {
        None
    }
}

/// Development settings of a service (unless the environment sets them).
fn dev_env(service: &ServiceSpec) -> &'static [(&'static str, &'static str)] {
    if *service == registry::GATEWAY {
        // Dev tokens on (the gateway logs a warning saying so), and any
        // browser origin may call, for a storefront on another port.
        &[("DEV_AUTH", "on"), ("CORS_ALLOWED_ORIGINS", "*")]
    } else {
        &[]
    }
}

/// Where each part listens, with the port offset applied.
pub(crate) struct Layout {
    pub(crate) offset: u16,
    nats: Infra,
    postgres: Infra,
    redis: Infra,
    /// Every replica of every service, a service's replicas together and in
    /// the order of [`SERVICES`].
    pub(crate) services: Vec<Placed>,
    /// How many replicas of each service there are.
    replicas: usize,
    /// Where the services send their spans, if anywhere.
    pub(crate) otlp_endpoint: Option<String>,
    /// The nodes, when NATS runs as a three-node cluster here.
    nats_cluster: Option<[infra::ClusterPorts; 3]>,
    /// Settings every service is given on top of the stack's own.
    pub(crate) service_env: Vec<(&'static str, String)>,
}

/// A server the environment points at, or one to start on a port.
enum Infra {
    Given { var: &'static str, url: String },
    Start(u16),
}

impl Infra {
    fn url(&self, on_port: fn(u16) -> String) -> String {
        match self {
            Infra::Given { url, .. } => url.clone(),
            Infra::Start(port) => on_port(*port),
        }
    }
}

pub(crate) struct Placed {
    pub(crate) service: &'static ServiceSpec,
    /// Which of the service's replicas, from 1.
    pub(crate) replica: usize,
    pub(crate) grpc_port: u16,
    pub(crate) admin_port: u16,
}

impl Placed {
    /// Its process and log name: the first replica is the service's own
    /// name, so a stack of one replica reads as it always has; the others
    /// add their number (`svc-order-2`).
    pub(crate) fn name(&self) -> String {
        match self.replica {
            1 => self.service.name.to_owned(),
            k => format!("{}-{k}", self.service.name),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

/// Every service `replicas` times on its fixed ports (see
/// [`ports::of_replica`]) moved by `offset`.
fn placed(offset: u16, replicas: usize) -> anyhow::Result<Vec<Placed>> {
    let mut services = Vec::with_capacity(SERVICES.len() * replicas);
    for service in SERVICES {
        for replica in 1..=replicas {
            services.push(Placed {
                service,
                replica,
                grpc_port: ports::of_replica(service.grpc_port, replica, offset)?,
                admin_port: ports::of_replica(service.admin_port, replica, offset)?,
            });
        }
    }
    Ok(services)
}

impl Layout {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        Self::with_offset(ports::offset_from_env()?)
    }

    /// Every port moved by `offset`; servers the environment names are used
    /// rather than started.
    pub(crate) fn with_offset(offset: u16) -> anyhow::Result<Self> {
        let infra = |var: &'static str, port: u16| -> anyhow::Result<Infra> {
            Ok(match std::env::var(var).ok().filter(|url| !url.is_empty()) {
                Some(url) => Infra::Given { var, url },
                None => Infra::Start(ports::shifted(port, offset)?),
            })
        };
        Ok(Self {
            offset,
            nats: infra("NATS_URL", NATS_PORT)?,
            postgres: infra("DATABASE_URL", POSTGRES_PORT)?,
            redis: infra("REDIS_URL", REDIS_PORT)?,
            services: placed(offset, 1)?,
            replicas: 1,
            otlp_endpoint: None,
            nats_cluster: None,
            service_env: Vec::new(),
        })
    }

    /// NATS as the three-node cluster of `nats/cluster/` (its ports moved
    /// by the offset), unless the environment names a NATS.
    pub(crate) fn with_nats_cluster(mut self) -> anyhow::Result<Self> {
        if let Infra::Start(_) = self.nats {
            let node = |n: u16| -> anyhow::Result<infra::ClusterPorts> {
                Ok(infra::ClusterPorts {
                    port: ports::shifted(NATS_PORT + n, self.offset)?,
                    route_port: ports::shifted(NATS_ROUTE_PORT + n, self.offset)?,
                })
            };
            self.nats_cluster = Some([node(0)?, node(1)?, node(2)?]);
        }
        Ok(self)
    }

    /// `replicas` of every service (from 1, at most
    /// [`ports::MAX_REPLICAS`]), replica k on its service's ports moved by
    /// k - 1 steps of [`ports::REPLICA_STEP`] and then by the offset: fixed
    /// ports, which a tool told the count finds again.
    pub(crate) fn with_replicas(mut self, replicas: usize) -> anyhow::Result<Self> {
        if !(1..=ports::MAX_REPLICAS).contains(&replicas) {
            bail!(
                "{replicas} replicas: `up` runs 1 to {} of each service",
                ports::MAX_REPLICAS
            );
        }
        self.services = placed(self.offset, replicas)?;
        self.replicas = replicas;
        Ok(self)
    }

    /// Every server, and `replicas` of every service, on a port that was
    /// free a moment ago, for a stack that must not meet any other (a fault
    /// run, next to a running `up`).
    pub(crate) fn on_free_ports(replicas: usize) -> Self {
        let free = || Infra::Start(infra::free_port());
        Self {
            offset: 0,
            nats: free(),
            postgres: free(),
            redis: free(),
            services: SERVICES
                .iter()
                .flat_map(|service| {
                    (1..=replicas).map(move |replica| Placed {
                        service,
                        replica,
                        grpc_port: infra::free_port(),
                        admin_port: infra::free_port(),
                    })
                })
                .collect(),
            replicas,
            otlp_endpoint: None,
            nats_cluster: None,
            service_env: Vec::new(),
        }
    }

    /// NATS as a three-node cluster on ports that were free a moment ago.
    pub(crate) fn with_free_nats_cluster(mut self) -> Self {
        let node = || infra::ClusterPorts {
            port: infra::free_port(),
            route_port: infra::free_port(),
        };
        self.nats_cluster = Some([node(), node(), node()]);
        self
    }

    /// The nodes of the NATS cluster this layout starts, if it does.
    pub(crate) fn nats_nodes(&self) -> Option<&[infra::ClusterPorts; 3]> {
        self.nats_cluster.as_ref()
    }

    /// The port of a server this layout starts itself.
    pub(crate) fn infra_ports(&self) -> Option<InfraPorts> {
        match (&self.nats, &self.postgres, &self.redis) {
            (Infra::Start(nats), Infra::Start(postgres), Infra::Start(redis)) => Some(InfraPorts {
                nats: *nats,
                postgres: *postgres,
                redis: *redis,
            }),
            _ => None,
        }
    }

    /// Every port something started here will listen on.
    fn ports(&self) -> Vec<Port> {
        // A cluster's nodes take the place of the single nats-server.
        let single_nats = self.nats_cluster.is_none().then_some((&self.nats, "nats-server"));
        let infra = single_nats
            .into_iter()
            .chain([(&self.postgres, "PostgreSQL"), (&self.redis, "redis-server")]);
        let infra = infra.filter_map(|(infra, what)| match infra {
            Infra::Start(port) => Some(Port {
                number: *port,
                purpose: what.to_owned(),
            }),
            Infra::Given { .. } => None,
        });
        let services = self.services.iter().flat_map(|placed| {
            // "svc-order gRPC", or with several: "svc-order replica 2 gRPC".
            let who = match self.replicas {
                1 => placed.service.name.to_owned(),
                _ => format!("{} replica {}", placed.service.name, placed.replica),
            };
            [
                Port {
                    number: placed.grpc_port,
                    purpose: format!("{who} gRPC"),
                },
                Port {
                    number: placed.admin_port,
                    purpose: format!("{who} admin"),
                },
            ]
        });
        let cluster = self.nats_cluster.iter().flatten().enumerate().flat_map(|(i, node)| {
            [
                Port {
                    number: node.port,
                    purpose: format!("nats-server node {}", i + 1),
                },
                Port {
                    number: node.route_port,
                    purpose: format!("nats-server node {} routes", i + 1),
                },
            ]
        });
        infra.chain(cluster).chain(services).collect()
    }

    /// Where the servers keep their data: `.data/`, or for a stack moved by
    /// an offset, a directory of its own inside it.
    pub(crate) fn data_dir(&self, root: &Path) -> PathBuf {
        match self.offset {
            0 => root.join(".data"),
            offset => root.join(".data").join(format!("offset-{offset}")),
        }
    }

    /// The gRPC port of the first gateway.
    pub(crate) fn gateway_port(&self) -> Option<u16> {
        self.gateway_ports().first().copied()
    }

    /// The gRPC ports of every gateway, first replica first, for load
    /// spread over them.
    pub(crate) fn gateway_ports(&self) -> Vec<u16> {
        self.replicas_of(&registry::GATEWAY)
            .map(|placed| placed.grpc_port)
            .collect()
    }

    fn replicas_of<'a>(&'a self, service: &'a ServiceSpec) -> impl Iterator<Item = &'a Placed> {
        self.services.iter().filter(move |placed| placed.service == service)
    }

    /// Where the others are told `service` is: every replica's URL, first
    /// replica first, comma-separated (a single URL for one replica).
    fn urls_of(&self, service: &ServiceSpec) -> String {
        self.replicas_of(service).map(Placed::url).collect::<Vec<_>>().join(",")
    }
}

/// The ports of NATS, PostgreSQL and Redis when all three start here.
pub(crate) struct InfraPorts {
    pub(crate) nats: u16,
    pub(crate) postgres: u16,
    pub(crate) redis: u16,
}

/// Where the infrastructure is, as the services are told.
pub(crate) struct Urls {
    pub(crate) nats: String,
    pub(crate) postgres: String,
    pub(crate) redis: String,
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let began = Instant::now();
    install::run().context("install")?;
    let root = cmd::root();
    let mut layout = Layout::from_env()?.with_replicas(options.replicas)?;
    if options.nats_cluster {
        layout = layout.with_nats_cluster()?;
    }
    let data = layout.data_dir(&root);
    let observe = options.observe.then(|| Observe::at(layout.offset)).transpose()?;
    layout.otlp_endpoint = observe.as_ref().map(Observe::otlp_endpoint);
    let mut needed = layout.ports();
    needed.extend(observe.iter().flat_map(Observe::ports));
    // Before the build, so a taken port fails at once; again before the
    // start, in case something took one meanwhile.
    ports::check_free(&needed)?;

    if let Err(e) = build_services(options.release) {
        eprintln!("warning: {e:#}; starting the services that have a binary");
    }
    if let Err(e) = crate::web::build() {
        eprintln!("warning: {e:#}; the gateway serves no storefront");
    }
    let bin_dir = bin_dir(options.release)?;
    ports::check_free(&needed)?;

    let mut observing = match &observe {
        Some(observe) => Some(observe.start(&layout, &data).await?),
        None => None,
    };
    let mut running = start_all(&layout, &bin_dir, &data, None).await?;
    let Running {
        infra,
        services,
        missing,
        urls,
    } = &mut running;

    let gateway = layout
        .gateway_port()
        .filter(|_| services.iter().any(|(p, _)| *p.service == registry::GATEWAY));
    let tokens = match gateway {
        Some(port) => match dev_tokens(port).await {
            Ok(tokens) => Some(tokens),
            Err(e) => {
                eprintln!("warning: no dev tokens from the gateway: {e:#}");
                None
            }
        },
        None => None,
    };
    print_summary(
        urls,
        services,
        missing,
        observing.as_ref(),
        gateway.zip(tokens.as_ref()),
    );

    let outcome = if options.check {
        // With several gateways, the order is watched through the last:
        // their tokens and the services behind them are shared.
        let last = layout.gateway_ports().last().copied();
        match gateway.zip(last) {
            Some((first, last)) => first_checkout(first, last, began).await,
            None => Err(anyhow::anyhow!("--check needs the gateway, which did not start")),
        }
    } else {
        watch(services, infra).await
    };
    if let Err(e) = &outcome {
        eprintln!("{e:#}: stopping everything");
    }

    // A second Ctrl-C skips the orderly shutdown; the watchdogs still stop
    // every process when this one exits. Signals right after the first are
    // the same Ctrl-C delivered twice (some wrappers signal the child and
    // its process group), not a second one.
    let first = std::time::Instant::now();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if first.elapsed() > Duration::from_secs(1) {
                eprintln!("second Ctrl-C: exiting at once");
                std::process::exit(130);
            }
        }
    });
    running.stop().await;
    if let Some(observing) = &mut observing {
        observing.stop().await;
    }
    outcome
}

/// A stack `start_all` started: stop the services, then the servers.
pub(crate) struct Running<'a> {
    // Declared before `services`, so that on an early return the services
    // are dropped (stopped) first.
    pub(crate) infra: Vec<ServerProcess>,
    pub(crate) services: Vec<(&'a Placed, Supervised)>,
    /// Services with no binary built.
    pub(crate) missing: Vec<&'static str>,
    pub(crate) urls: Urls,
}

impl Running<'_> {
    /// Stops the services, last started first, then the servers.
    pub(crate) async fn stop(&mut self) {
        for (placed, process) in self.services.iter_mut().rev() {
            println!("stopping {}", placed.name());
            process.stop().await;
        }
        for process in self.infra.iter_mut().rev() {
            println!("stopping {}", process.name());
            process.stop().await;
        }
    }
}

/// Starts the servers of `layout` and every service that has a binary in
/// `bin_dir`, each once it accepts connections; with `logs`, each service's
/// output goes to `<logs>/<name>.log`.
pub(crate) async fn start_all<'a>(
    layout: &'a Layout,
    bin_dir: &Path,
    data: &Path,
    logs: Option<&Path>,
) -> anyhow::Result<Running<'a>> {
    let root = cmd::root();
    let mut infra = Vec::new();
    let urls = start_infrastructure(layout, data, &mut infra).await?;
    for database in SERVICES.iter().filter_map(|s| s.database) {
        let created = infra::create_database(&urls.postgres, database).await?;
        let how = if created { "created" } else { "exists" };
        println!("database {database}: {how}");
    }
    let mut running = Running {
        infra,
        services: Vec::new(),
        missing: Vec::new(),
        urls,
    };
    // One after another: the first gateway makes the dev auth key the
    // others then read.
    for placed in &layout.services {
        let service = placed.service;
        let binary = bin_dir.join(service.name);
        if !binary.is_file() {
            if !running.missing.contains(&service.name) {
                running.missing.push(service.name);
            }
            continue;
        }
        let command = service_command(placed, layout, &binary, &running.urls, &root, data)?;
        let name = placed.name();
        println!("starting {name} on 127.0.0.1:{}", placed.grpc_port);
        let log = logs.map(|dir| dir.join(format!("{name}.log")));
        let mut supervised = Supervised::spawn(&name, command, Restarts::default(), log)?;
        let port = placed.grpc_port;
        supervised
            .process()
            .wait_until(SERVICE_STARTUP, || infra::tcp_accepts(port))
            .await?;
        running.services.push((placed, supervised));
    }
    Ok(running)
}

/// Builds every service's binary (debug, or release).
pub(crate) fn build_services(release: bool) -> anyhow::Result<()> {
    let mut build = cmd::cargo();
    build.args(["build", "--keep-going"]);
    if release {
        build.arg("--release");
    }
    build.args(SERVICES.iter().flat_map(|s| ["-p", s.name]));
    cmd::run(&mut build)
}

/// Where the services' binaries are: built beside this program
/// (target/debug/xtask).
pub(crate) fn bin_dir(release: bool) -> anyhow::Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    Ok(std::env::current_exe()
        .context("locating xtask's own binary")?
        .parent()
        .and_then(Path::parent)
        .context("xtask's binary sits in a target directory")?
        .join(profile))
}

/// Starts what the environment does not point at, into `started`.
async fn start_infrastructure(layout: &Layout, data: &Path, started: &mut Vec<ServerProcess>) -> anyhow::Result<Urls> {
    let nats = match (&layout.nats, &layout.nats_cluster) {
        (Infra::Given { var, url }, _) => given(var, url),
        (Infra::Start(_), Some(nodes)) => {
            println!(
                "starting a three-node nats-server cluster on 127.0.0.1:{}, {} and {} (logs in {})",
                nodes[0].port,
                nodes[1].port,
                nodes[2].port,
                data.join("nats-cluster").display()
            );
            // Together: each node's JetStream waits for the others.
            let store = |n: usize| data.join("nats-cluster").join(format!("n{n}"));
            let (a, b, c) = (store(1), store(2), store(3));
            let (one, two, three) = tokio::join!(
                infra::start_nats_node(1, nodes, &a),
                infra::start_nats_node(2, nodes, &b),
                infra::start_nats_node(3, nodes, &c),
            );
            started.extend([one?, two?, three?]);
            let url = infra::nats_cluster_url(nodes);
            wait_for_jetstream(&url).await?;
            url
        }
        (Infra::Start(port), None) => {
            println!(
                "starting nats-server on 127.0.0.1:{port} (log {})",
                data.join("nats.log").display()
            );
            started.push(infra::start_nats(&data.join("nats"), *port).await?);
            infra::nats_url(*port)
        }
    };
    let postgres = match &layout.postgres {
        Infra::Given { var, url } => given(var, url),
        Infra::Start(port) => {
            println!(
                "starting PostgreSQL on 127.0.0.1:{port} (log {})",
                data.join("postgres.log").display()
            );
            started.push(infra::start_postgres(&data.join("postgres"), *port).await?);
            infra::postgres_url(*port)
        }
    };
    let redis = match &layout.redis {
        Infra::Given { var, url } => given(var, url),
        Infra::Start(port) => {
            println!(
                "starting redis-server on 127.0.0.1:{port} (log {})",
                data.join("redis.log").display()
            );
            started.push(infra::start_redis(&data.join("redis"), *port).await?);
            infra::redis_url(*port)
        }
    };
    Ok(Urls { nats, postgres, redis })
}

/// Until the cluster at `url` has elected the leader of its JetStream
/// (seconds): the services then find their streams at once.
async fn wait_for_jetstream(url: &str) -> anyhow::Result<()> {
    let (_client, js) = shop_runtime::nats::connect(url, "xtask-up").await?;
    let began = Instant::now();
    while js.query_account().await.is_err() {
        if began.elapsed() > Duration::from_secs(60) {
            bail!("the nats-server cluster at {url} elected no JetStream leader within a minute");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "nats-server cluster: JetStream ready after {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A URL from the environment, announced as such.
fn given(var: &str, url: &str) -> String {
    println!("using {var}={url}");
    url.to_owned()
}

pub(crate) fn service_command(
    placed: &Placed,
    layout: &Layout,
    binary: &Path,
    urls: &Urls,
    root: &Path,
    data: &Path,
) -> anyhow::Result<Command> {
    let service = placed.service;
    let mut command = Command::new(binary);
    if layout.nats_cluster.is_some() {
        // Every stream on all three nodes: any one of them may go.
        command.env("NATS_STREAM_REPLICAS", "3");
    }
    command
        .current_dir(root)
        .env("NATS_URL", &urls.nats)
        .env("GRPC_LISTEN_ADDR", format!("127.0.0.1:{}", placed.grpc_port))
        .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{}", placed.admin_port));
    // Where the others are, every replica; each service reads the ones it
    // calls.
    for other in SERVICES {
        for var in other.url_vars {
            command.env(var, layout.urls_of(other));
        }
    }
    // The gateway vouches for callers with the stack's key; the services
    // check its public half.
    let keys = identity_keys(data)?;
    if *service == registry::GATEWAY {
        command.env(identity::SIGNING_KEY_FILE, &keys.signing);
    } else {
        command.env(identity::VERIFYING_KEY_FILE, &keys.verifying);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info,sqlx=warn,async_nats=warn");
    }
    // Six services, PostgreSQL and NATS share this machine's cores: with
    // one worker thread each, a service spares the wake-ups of work
    // stealing between its own threads (about 15% less CPU per checkout
    // and 10% more checkouts/s at saturation on two cores).
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        command.env("TOKIO_WORKER_THREADS", "1");
    }
    if let Some(endpoint) = &layout.otlp_endpoint
        && std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    // Unset what a service does not use, rather than pass on this
    // process's (server) URLs.
    match service.database {
        Some(database) => command.env("DATABASE_URL", infra::database_url(&urls.postgres, database)),
        None => command.env_remove("DATABASE_URL"),
    };
    if service.redis {
        command.env("REDIS_URL", &urls.redis);
    } else {
        command.env_remove("REDIS_URL");
    }
    for (var, value) in &layout.service_env {
        command.env(var, value);
    }
    for (var, value) in dev_env(service) {
        if std::env::var_os(var).is_none() {
            command.env(var, value);
        }
    }
    // The gateway serves the storefront when one is built (`up` builds it).
    let storefront = crate::web::dist();
    if *service == registry::GATEWAY
        && storefront.join("index.html").is_file()
        && std::env::var_os("STOREFRONT_DIR").is_none()
    {
        command.env("STOREFRONT_DIR", &storefront);
    }
    if let Some((var, path)) = data_path(service) {
        let path: PathBuf = data.join(path);
        // "dir/" is a directory; anything else a file in one.
        let dir = if path.as_os_str().to_string_lossy().ends_with('/') {
            path.as_path()
        } else {
            path.parent().unwrap_or(data)
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        command.env(var, &path);
    }
    Ok(command)
}

/// Where a stack keeps its identity key pair.
pub(crate) struct IdentityKeys {
    pub signing: PathBuf,
    pub verifying: PathBuf,
}

/// The identity key pair of the stack whose data is in `data`, made on first
/// use and kept with the data, so `cargo xtask identity` signs with it.
pub(crate) fn identity_keys(data: &Path) -> anyhow::Result<IdentityKeys> {
    let dir = data.join("identity");
    let keys = IdentityKeys {
        signing: dir.join("signing.pem"),
        verifying: dir.join("verifying.pem"),
    };
    if !(keys.signing.is_file() && keys.verifying.is_file()) {
        identity::write_key_pair(&keys.signing, &keys.verifying)?;
    }
    Ok(keys)
}

/// `cargo xtask identity <user> <roles> <method>…`: an identity token for
/// calling the services of `up` directly, signed with the stack's key as
/// the gateway would, good for the methods named (`package.Service/Method`)
/// for 30 s.
pub(crate) fn print_identity(args: &[&str]) -> anyhow::Result<()> {
    let [user, roles, methods @ ..] = args else {
        anyhow::bail!("usage: cargo xtask identity <user> <roles, comma-separated> <package.Service/Method>…");
    };
    if methods.is_empty() {
        anyhow::bail!("name at least one method, e.g. shop.inventory.v1.InventoryService/Restock");
    }
    let user = identity::UserId::parse(user).map_err(|why| anyhow::anyhow!("user {why}"))?;
    let keys = identity_keys(&Layout::from_env()?.data_dir(&cmd::root()))?;
    let issuer = identity::IdentityIssuer::from_file(&keys.signing)?;
    let paths: Vec<String> = methods
        .iter()
        .map(|m| format!("/{}", m.trim_start_matches('/')))
        .collect();
    let roles: Vec<&str> = roles.split(',').map(str::trim).collect();
    println!("{}", issuer.issue(&user, &roles, &paths));
    Ok(())
}

/// A customer's and an admin's token, from the gateway's dev auth.
struct DevTokens {
    customer: String,
    admin: String,
}

async fn dev_tokens(gateway: u16) -> anyhow::Result<DevTokens> {
    let channel = gateway_channel(gateway).await?;
    Ok(DevTokens {
        customer: issue_token(&channel, "alice", &["customer"]).await?,
        admin: issue_token(&channel, "ops", &["admin"]).await?,
    })
}

/// A channel over every gateway on `ports`, as a client spreading its calls
/// over them uses one: each call goes to the next serving gateway, and on
/// to the next when one refuses it (see `shop_runtime::upstream`).
pub(crate) fn gateways(ports: &[u16]) -> shop_runtime::upstream::Balanced {
    use shop_runtime::upstream::{Balanced, ReachSettings, Replicas, Upstream};
    let replicas = Replicas::loopback(ports);
    let reach = ReachSettings {
        // A gateway back from a restart takes calls again within a second.
        health_interval: Duration::from_secs(1),
        ..ReachSettings::default()
    };
    Balanced::new(Upstream::new("gateway", &replicas, reach, None))
}

pub(crate) async fn gateway_channel(port: u16) -> anyhow::Result<tonic::transport::Channel> {
    let url = format!("http://127.0.0.1:{port}");
    tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to the gateway at {url}"))
}

/// A token from the gateway's development auth.
pub(crate) async fn issue_token(
    channel: &tonic::transport::Channel,
    user: &str,
    roles: &[&str],
) -> anyhow::Result<String> {
    use shop_proto::auth::v1::{IssueTokenRequest, dev_auth_service_client::DevAuthServiceClient};
    let request = IssueTokenRequest {
        user_id: user.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    let response = DevAuthServiceClient::new(channel.clone())
        .issue_token(request)
        .await
        .with_context(|| format!("DevAuthService/IssueToken for {user}"))?;
    Ok(response.into_inner().access_token)
}

/// `--check`: one checkout as a customer would make it through the gateway
/// on port `gateway` (cart, checkout), watched with WatchOrder through the
/// one on `watching` (the same, or another replica) until it is CONFIRMED.
async fn first_checkout(gateway: u16, watching: u16, up_began: Instant) -> anyhow::Result<()> {
    use shop_proto::cart::v1::{AddItemRequest, CheckoutRequest, cart_service_client::CartServiceClient};
    use shop_proto::order::v1::{OrderStatus, WatchOrderRequest, order_service_client::OrderServiceClient};

    let started = Instant::now();
    let channel = gateway_channel(gateway).await?;
    // A new customer each run: data under .data/ outlives runs.
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let token = issue_token(&channel, &format!("check-{millis}"), &["customer"]).await?;
    let bearer: tonic::metadata::AsciiMetadataValue = format!("Bearer {token}").parse()?;

    let mut cart = CartServiceClient::new(channel.clone());
    cart.add_item(authorized(
        &bearer,
        AddItemRequest {
            sku: "SKU-MUG-001".into(),
            quantity: 1,
        },
    ))
    .await
    .context("CartService/AddItem")?;
    let order = cart
        .checkout(authorized(
            &bearer,
            CheckoutRequest {
                idempotency_key: format!("check-{millis}"),
                payment_method: "pm_card_ok".into(),
            },
        ))
        .await
        .context("CartService/Checkout")?
        .into_inner();
    println!("check: order {} accepted", order.order_id);

    let watching = if watching == gateway {
        channel
    } else {
        gateway_channel(watching).await?
    };
    let mut updates = OrderServiceClient::new(watching)
        .watch_order(authorized(
            &bearer,
            WatchOrderRequest {
                order_id: order.order_id.clone(),
            },
        ))
        .await
        .context("OrderService/WatchOrder")?
        .into_inner();
    let settled = async {
        while let Some(update) = updates.message().await.context("OrderService/WatchOrder")? {
            let status = update.status();
            println!("check: order {} {}", update.order_id, status.as_str_name());
            match status {
                OrderStatus::Confirmed => return Ok(()),
                OrderStatus::Cancelled => bail!(
                    "the check's order was cancelled ({})",
                    update.cancel_reason().as_str_name()
                ),
                _ => {}
            }
        }
        bail!("WatchOrder ended before the order was confirmed")
    };
    tokio::time::timeout(CHECK_TIMEOUT, settled)
        .await
        .with_context(|| format!("the check's order was not confirmed within {CHECK_TIMEOUT:?}"))??;
    println!(
        "check: passed, order CONFIRMED {:.1} s after the checkout began, {:.1} s after `up` began",
        started.elapsed().as_secs_f64(),
        up_began.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn authorized<T>(bearer: &tonic::metadata::AsciiMetadataValue, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer.clone());
    request
}

fn print_summary(
    urls: &Urls,
    services: &[(&Placed, Supervised)],
    missing: &[&str],
    observing: Option<&Observing>,
    gateway: Option<(u16, &DevTokens)>,
) {
    println!();
    println!("NATS      {}   (export NATS_URL={0} for the nats CLI)", urls.nats);
    println!("Postgres  {}", urls.postgres);
    println!("Redis     {}", urls.redis);
    // Wide enough for "svc-inventory-2".
    let width = services
        .iter()
        .map(|(placed, _)| placed.name().len())
        .fold(13, usize::max);
    for (placed, _) in services {
        println!(
            "{:<width$} gRPC 127.0.0.1:{}  admin 127.0.0.1:{}",
            placed.name(),
            placed.grpc_port,
            placed.admin_port
        );
    }
    for name in missing {
        println!("{name:<width$} not started: no binary built for it yet");
    }
    if let Some(observing) = observing {
        observing.print_summary();
    }
    match gateway {
        Some((port, tokens)) => println!(
            r#"
Dev tokens (valid 1 h; the gateway signs them because DEV_AUTH=on):
  export TOKEN='{customer}'        # alice, customer
  export ADMIN_TOKEN='{admin}'     # ops, admin

{storefront}Try, through the gateway on 127.0.0.1:{port}:
  grpcurl -plaintext 127.0.0.1:{port} list
  grpcurl -plaintext 127.0.0.1:{port} shop.catalog.v1.CatalogService/ListProducts
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"sku":"SKU-MUG-001","quantity":2}}' \
    127.0.0.1:{port} shop.cart.v1.CartService/AddItem
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"idempotency_key":"checkout-1","payment_method":"pm_card_ok"}}' \
    127.0.0.1:{port} shop.cart.v1.CartService/Checkout
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"order_id":"<order_id from Checkout>"}}' \
    127.0.0.1:{port} shop.order.v1.OrderService/WatchOrder
  grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" -d '{{"sku":"SKU-POSTER-001","quantity":5}}' \
    127.0.0.1:{port} shop.inventory.v1.InventoryService/Restock

Ctrl-C stops everything."#,
            customer = tokens.customer,
            admin = tokens.admin,
            storefront = if crate::web::dist().join("index.html").is_file() {
                format!("Storefront: http://127.0.0.1:{port}/  (sign in under any name)\n\n")
            } else {
                String::new()
            },
        ),
        None => println!(
            r#"
The gateway did not start. To call a service directly (see the ports
above), send an identity token signed with this stack's key:
  grpcurl -plaintext -H "x-shop-identity: $(cargo xtask identity alice customer shop.order.v1.OrderService/ListOrders)" \
    127.0.0.1:50051 shop.order.v1.OrderService/ListOrders

Ctrl-C stops everything."#
        ),
    }
}

/// Until Ctrl-C (Ok) or a server of the infrastructure exiting (Err). A
/// service that exits is started again, with growing pauses, while the rest
/// runs on.
async fn watch(services: &mut [(&Placed, Supervised)], infra: &mut [ServerProcess]) -> anyhow::Result<()> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("listening for Ctrl-C")?;
                println!("\nCtrl-C: stopping");
                return Ok(());
            }
            () = tokio::time::sleep(WATCH_INTERVAL) => {
                for (_, service) in services.iter_mut() {
                    match service.tend()? {
                        Tended::Exited { status, restart_in } => eprintln!(
                            "{} exited ({status}); starting it again in {restart_in:?}",
                            service.name()
                        ),
                        Tended::Restarted { attempt } => {
                            eprintln!("{} started again (restart {attempt} in a row)", service.name());
                        }
                        Tended::Running | Tended::Waiting => {}
                    }
                }
                for process in infra.iter_mut() {
                    if let Some(status) = process.try_wait()? {
                        bail!("{} exited unexpectedly ({status})", process.name());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A directory of its own under the system's temporary one, for what
    /// `service_command` makes (the identity keys, the services' data).
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-up-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The variables of `command`, as the process would be given them.
    fn envs(command: &Command) -> BTreeMap<String, String> {
        command
            .get_envs()
            .filter_map(|(var, value)| Some((var.to_str()?.to_owned(), value?.to_str()?.to_owned())))
            .collect()
    }

    /// The variables `up` gives each replica of every service of `layout`.
    fn commands(layout: &Layout, name: &str) -> anyhow::Result<Vec<(String, BTreeMap<String, String>)>> {
        let data = scratch(name);
        let urls = Urls {
            nats: "nats://127.0.0.1:4222".into(),
            postgres: "postgres://127.0.0.1:15432".into(),
            redis: "redis://127.0.0.1:16379".into(),
        };
        let commands = layout
            .services
            .iter()
            .map(|placed| {
                let command = service_command(placed, layout, Path::new("/bin/true"), &urls, &data, &data)?;
                Ok((placed.name(), envs(&command)))
            })
            .collect();
        let _ = std::fs::remove_dir_all(&data);
        commands
    }

    #[test]
    fn with_replicas_every_port_up_listens_on_is_its_own() -> anyhow::Result<()> {
        for replicas in [2, ports::MAX_REPLICAS] {
            for cluster in [false, true] {
                let mut layout = Layout::with_offset(0)?.with_replicas(replicas)?;
                if cluster {
                    layout = layout.with_nats_cluster()?;
                }
                let mut needed = layout.ports();
                needed.extend(Observe::at(0)?.ports());
                assert_eq!(layout.services.len(), SERVICES.len() * replicas);
                let mut seen = BTreeMap::new();
                for port in &needed {
                    if let Some(other) = seen.insert(port.number, &port.purpose) {
                        panic!("{} for both {other} and {}", port.number, port.purpose);
                    }
                    // Where Debian's own Prometheus and node exporter listen.
                    assert!(![9090, 9100].contains(&port.number), "{port:?}");
                }
                assert!(
                    needed.iter().any(|p| p.purpose == "svc-order replica 2 gRPC"),
                    "{needed:?}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn one_replica_keeps_the_registry_ports_names_and_purposes() -> anyhow::Result<()> {
        let layout = Layout::with_offset(0)?;
        let placed: Vec<_> = layout
            .services
            .iter()
            .map(|p| (p.name(), p.replica, p.grpc_port, p.admin_port))
            .collect();
        let registry: Vec<_> = SERVICES
            .iter()
            .map(|s| (s.name.to_owned(), 1, s.grpc_port, s.admin_port))
            .collect();
        assert_eq!(placed, registry);
        assert!(layout.ports().iter().any(|p| p.purpose == "svc-order gRPC"));
        assert_eq!(layout.gateway_ports(), [registry::GATEWAY.grpc_port]);
        Ok(())
    }

    #[test]
    fn replicas_past_the_first_move_by_steps_and_are_named_by_number() -> anyhow::Result<()> {
        let layout = Layout::with_offset(10)?.with_replicas(3)?;
        let orders: Vec<_> = layout
            .services
            .iter()
            .filter(|p| *p.service == registry::ORDER)
            .map(|p| (p.name(), p.grpc_port, p.admin_port))
            .collect();
        assert_eq!(
            orders,
            [
                ("svc-order".to_owned(), 50061, 9061),
                ("svc-order-2".to_owned(), 50161, 9161),
                ("svc-order-3".to_owned(), 50261, 9261),
            ]
        );
        assert_eq!(layout.gateway_ports(), [8090, 8190, 8290]);
        assert_eq!(layout.gateway_port(), Some(8090));
        for wrong in [0, ports::MAX_REPLICAS + 1] {
            assert!(
                Layout::with_offset(0)?.with_replicas(wrong).is_err(),
                "{wrong} replicas"
            );
        }
        Ok(())
    }

    #[test]
    fn every_service_is_told_every_replica_of_the_others() -> anyhow::Result<()> {
        let layout = Layout::with_offset(0)?.with_replicas(2)?;
        let commands = commands(&layout, "replicas")?;
        assert_eq!(commands.len(), SERVICES.len() * 2);
        for (name, env) in &commands {
            for other in SERVICES {
                let replicas: Vec<String> = layout
                    .services
                    .iter()
                    .filter(|p| p.service == *other)
                    .map(|p| format!("http://127.0.0.1:{}", p.grpc_port))
                    .collect();
                assert_eq!(replicas.len(), 2);
                for var in other.url_vars {
                    assert_eq!(env.get(*var), Some(&replicas.join(",")), "{var} of {name}");
                }
            }
        }
        let (_, gateway_2) = commands
            .iter()
            .find(|(name, _)| name == "svc-gateway-2")
            .expect("listed");
        assert_eq!(gateway_2["ORDER_URL"], "http://127.0.0.1:50051,http://127.0.0.1:50151");
        assert_eq!(gateway_2["GRPC_LISTEN_ADDR"], "127.0.0.1:8180");
        assert_eq!(gateway_2["ADMIN_LISTEN_ADDR"], "127.0.0.1:9180");
        // Every gateway signs dev tokens with the one key file.
        let keys: Vec<_> = commands
            .iter()
            .filter(|(name, _)| name.starts_with("svc-gateway"))
            .map(|(_, env)| &env["DEV_AUTH_KEY_FILE"])
            .collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], keys[1]);
        Ok(())
    }

    #[test]
    fn with_one_replica_a_service_is_told_one_url_as_before() -> anyhow::Result<()> {
        let layout = Layout::with_offset(0)?;
        for (name, env) in commands(&layout, "single")? {
            for other in SERVICES {
                for var in other.url_vars {
                    assert_eq!(env.get(*var), Some(&other.default_url()), "{var} of {name}");
                }
            }
        }
        Ok(())
    }
}
