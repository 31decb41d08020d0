//! `cargo xtask up`: the whole platform on this machine.
//!
//! NATS, PostgreSQL and Redis keep their data under `.data/` (or come from
//! `NATS_URL`, `DATABASE_URL`, `REDIS_URL`); the services are this
//! workspace's debug builds. Everything runs until Ctrl-C or until a process
//! exits on its own, then stops in reverse order: services, then
//! infrastructure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use shop_test_support::infra::{self, ServerProcess, StopSignal};

use crate::{cmd, install};

/// How long a service may take to listen: the first start migrates and
/// seeds its database.
const SERVICE_STARTUP: Duration = Duration::from_secs(120);
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A service: its package (and binary) name, ports and what it connects to.
struct Service {
    name: &'static str,
    grpc_port: u16,
    admin_port: u16,
    /// Its own database, given as `DATABASE_URL`.
    database: Option<&'static str>,
    /// Whether it gets `REDIS_URL`.
    redis: bool,
    /// An environment variable naming a directory under `.data/` for it.
    data_dir: Option<(&'static str, &'static str)>,
    /// Development settings (unless the environment sets them).
    dev_env: &'static [(&'static str, &'static str)],
}

/// Started in this order (what others call first), stopped in reverse.
const SERVICES: &[Service] = &[
    Service {
        name: "svc-inventory",
        grpc_port: 50052,
        admin_port: 9052,
        database: Some("shop_inventory"),
        redis: false,
        data_dir: None,
        dev_env: &[],
    },
    Service {
        name: "svc-payment",
        grpc_port: 50053,
        admin_port: 9053,
        database: Some("shop_payment"),
        redis: false,
        data_dir: None,
        dev_env: &[],
    },
    Service {
        name: "svc-order",
        grpc_port: 50051,
        admin_port: 9051,
        database: Some("shop_order"),
        redis: false,
        data_dir: None,
        dev_env: &[],
    },
    Service {
        name: "svc-notify",
        grpc_port: 50055,
        admin_port: 9055,
        database: Some("shop_notify"),
        redis: false,
        data_dir: Some(("NOTIFY_DATA_DIR", "notify")),
        dev_env: &[],
    },
    Service {
        name: "svc-cart",
        grpc_port: 50054,
        admin_port: 9054,
        database: None,
        redis: true,
        data_dir: None,
        dev_env: &[],
    },
    Service {
        name: "svc-gateway",
        grpc_port: 8080,
        admin_port: 9080,
        database: None,
        redis: false,
        data_dir: None,
        // Dev tokens on (the gateway logs a warning saying so), and any
        // browser origin may call, for a storefront on another port.
        dev_env: &[("DEV_AUTH", "on"), ("CORS_ALLOWED_ORIGINS", "*")],
    },
];

/// Where the infrastructure is.
struct Urls {
    nats: String,
    postgres: String,
    redis: String,
}

pub async fn run() -> anyhow::Result<()> {
    install::run().context("install")?;
    let root = cmd::root();
    let data = root.join(".data");

    // Declared before `services`, so that on an early return the services
    // are dropped (stopped) first.
    let mut infra = Vec::new();
    let urls = start_infrastructure(&data, &mut infra).await?;
    for database in SERVICES.iter().filter_map(|s| s.database) {
        let created = infra::create_database(&urls.postgres, database).await?;
        let how = if created { "created" } else { "exists" };
        println!("database {database}: {how}");
    }

    let packages = SERVICES.iter().flat_map(|s| ["-p", s.name]);
    if let Err(e) = cmd::run(cmd::cargo().args(["build", "--keep-going"]).args(packages)) {
        eprintln!("warning: {e:#}; starting the services that have a binary");
    }
    // The services are built next to this program (target/debug).
    let bin_dir = std::env::current_exe()
        .context("locating xtask's own binary")?
        .parent()
        .context("xtask's binary has a directory")?
        .to_path_buf();

    let mut services = Vec::new();
    let mut missing = Vec::new();
    for service in SERVICES {
        let binary = bin_dir.join(service.name);
        if !binary.is_file() {
            missing.push(service.name);
            continue;
        }
        let command = service_command(service, &binary, &urls, &root, &data)?;
        println!("starting {} on 127.0.0.1:{}", service.name, service.grpc_port);
        let mut process = ServerProcess::spawn(service.name, &command, StopSignal::Term, None)?;
        let port = service.grpc_port;
        process.wait_until(SERVICE_STARTUP, || infra::tcp_accepts(port)).await?;
        services.push((service, process));
    }

    let tokens = if services.iter().any(|(s, _)| s.name == "svc-gateway") {
        match dev_tokens().await {
            Ok(tokens) => Some(tokens),
            Err(e) => {
                eprintln!("warning: no dev tokens from the gateway: {e:#}");
                None
            }
        }
    } else {
        None
    };
    print_summary(&urls, &services, &missing, tokens.as_ref());
    let outcome = watch(&mut services, &mut infra).await;
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
    for (service, process) in services.iter_mut().rev() {
        println!("stopping {}", service.name);
        process.stop().await;
    }
    for process in infra.iter_mut().rev() {
        println!("stopping {}", process.name());
        process.stop().await;
    }
    outcome
}

/// Starts what the environment does not point at, into `started`.
async fn start_infrastructure(data: &Path, started: &mut Vec<ServerProcess>) -> anyhow::Result<Urls> {
    let nats = match given("NATS_URL") {
        Some(url) => url,
        None => {
            let port = infra::preferred_port(4222);
            println!("starting nats-server on 127.0.0.1:{port} (log .data/nats.log)");
            started.push(infra::start_nats(&data.join("nats"), port).await?);
            infra::nats_url(port)
        }
    };
    let postgres = match given("DATABASE_URL") {
        Some(url) => url,
        None => {
            let port = infra::preferred_port(5432);
            println!("starting PostgreSQL on 127.0.0.1:{port} (log .data/postgres.log)");
            started.push(infra::start_postgres(&data.join("postgres"), port).await?);
            infra::postgres_url(port)
        }
    };
    let redis = match given("REDIS_URL") {
        Some(url) => url,
        None => {
            let port = infra::preferred_port(6379);
            println!("starting redis-server on 127.0.0.1:{port} (log .data/redis.log)");
            started.push(infra::start_redis(&data.join("redis"), port).await?);
            infra::redis_url(port)
        }
    };
    Ok(Urls { nats, postgres, redis })
}

/// A URL from the environment, announced as such.
fn given(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|url| !url.is_empty())?;
    println!("using {var}={url}");
    Some(url)
}

fn service_command(service: &Service, binary: &Path, urls: &Urls, root: &Path, data: &Path) -> anyhow::Result<Command> {
    let mut command = Command::new(binary);
    command
        .current_dir(root)
        .env("NATS_URL", &urls.nats)
        .env("GRPC_LISTEN_ADDR", format!("127.0.0.1:{}", service.grpc_port))
        .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{}", service.admin_port));
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info,sqlx=warn,async_nats=warn");
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
    for (var, value) in service.dev_env {
        if std::env::var_os(var).is_none() {
            command.env(var, value);
        }
    }
    if let Some((var, dir)) = service.data_dir {
        let dir: PathBuf = data.join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        command.env(var, dir);
    }
    Ok(command)
}

/// A customer's and an admin's token, from the gateway's dev auth.
struct DevTokens {
    customer: String,
    admin: String,
}

async fn dev_tokens() -> anyhow::Result<DevTokens> {
    use shop_proto::auth::v1::{IssueTokenRequest, dev_auth_service_client::DevAuthServiceClient};
    let mut client = DevAuthServiceClient::connect("http://127.0.0.1:8080").await?;
    let mut issue = async |user: &str, roles: &[&str]| -> anyhow::Result<String> {
        let request = IssueTokenRequest {
            user_id: user.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        Ok(client.issue_token(request).await?.into_inner().access_token)
    };
    Ok(DevTokens {
        customer: issue("alice", &["customer"]).await?,
        admin: issue("ops", &["admin"]).await?,
    })
}

fn print_summary(urls: &Urls, services: &[(&Service, ServerProcess)], missing: &[&str], tokens: Option<&DevTokens>) {
    println!();
    println!("NATS      {}", urls.nats);
    println!("Postgres  {}", urls.postgres);
    println!("Redis     {}", urls.redis);
    for (service, _) in services {
        println!(
            "{:<13} gRPC 127.0.0.1:{}  admin 127.0.0.1:{}",
            service.name, service.grpc_port, service.admin_port
        );
    }
    for name in missing {
        println!("{name:<13} not started: no binary built for it yet");
    }
    match tokens {
        Some(tokens) => println!(
            r#"
Dev tokens (valid 1 h; the gateway signs them because DEV_AUTH=on):
  export TOKEN='{customer}'        # alice, customer
  export ADMIN_TOKEN='{admin}'     # ops, admin

Try, through the gateway on 127.0.0.1:8080:
  grpcurl -plaintext 127.0.0.1:8080 list
  grpcurl -plaintext 127.0.0.1:8080 shop.catalog.v1.CatalogService/ListProducts
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"sku":"SKU-MUG-001","quantity":2}}' \
    127.0.0.1:8080 shop.cart.v1.CartService/AddItem
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"idempotency_key":"checkout-1","payment_method":"pm_card_ok"}}' \
    127.0.0.1:8080 shop.cart.v1.CartService/Checkout
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"order_id":"<order_id from Checkout>"}}' \
    127.0.0.1:8080 shop.order.v1.OrderService/WatchOrder
  grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" -d '{{"sku":"SKU-POSTER-001","quantity":5}}' \
    127.0.0.1:8080 shop.inventory.v1.InventoryService/Restock

Ctrl-C stops everything."#,
            customer = tokens.customer,
            admin = tokens.admin
        ),
        None => println!(
            r#"
Try (straight to the services; identity as x-user-id metadata):
  grpcurl -plaintext 127.0.0.1:50052 shop.catalog.v1.CatalogService/ListProducts
  grpcurl -plaintext -H 'x-user-id: alice' \
    -d '{{"idempotency_key":"k1","lines":[{{"sku":"SKU-MUG-001","quantity":1}}],"payment_method":"pm_card_ok"}}' \
    127.0.0.1:50051 shop.order.v1.OrderService/PlaceOrder

Ctrl-C stops everything."#
        ),
    }
}

/// Until Ctrl-C (Ok) or a process exiting on its own (Err).
async fn watch(services: &mut [(&Service, ServerProcess)], infra: &mut [ServerProcess]) -> anyhow::Result<()> {
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
                let processes = services.iter_mut().map(|(_, p)| p).chain(infra.iter_mut());
                for process in processes {
                    if let Some(status) = process.try_wait()? {
                        bail!("{} exited unexpectedly ({status})", process.name());
                    }
                }
            }
        }
    }
}
