//! A stack's processes: building the services, starting the
//! infrastructure (or taking it from the environment), the payment provider
//! emulator and every replica of every service with the settings it is
//! told, for `up` and the runs that start a stack of their own (chaos,
//! scale-out, bench, the storefront's tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shop_infra::infra::{self, ServerProcess};
use shop_runtime::identity;
use shop_runtime::registry::{self, ServiceSpec};
use shop_runtime::webhook_secret::WebhookSecret;

use crate::cmd;
use crate::identity::identity_keys;
use crate::layout::{self, Infra, Layout, Placed, SERVICES, Urls};
use crate::supervise::{Restarts, Supervised};

/// How long a service may take to listen: the first start migrates and
/// seeds its database.
const SERVICE_STARTUP: Duration = Duration::from_secs(120);
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

/// A stack `start_all` started: stop the services, then the provider and
/// the servers.
pub(crate) struct Running<'a> {
    // Declared before `services`, so that on an early return the services
    // are dropped (stopped) first.
    pub(crate) infra: Vec<ServerProcess>,
    /// The payment provider emulator, unless the environment named a
    /// provider (or its binary was not built).
    pub(crate) provider: Option<Supervised>,
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
        if let Some(provider) = &mut self.provider {
            println!("stopping {}", provider.name());
            provider.stop().await;
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
        provider: None,
        services: Vec::new(),
        missing: Vec::new(),
        urls,
    };
    if let Infra::Start(port) = layout.provider {
        let binary = bin_dir.join(shop_provider::SERVICE.name);
        if binary.is_file() {
            println!("starting {} on 127.0.0.1:{port}", shop_provider::SERVICE.name);
            let log = logs.map(|dir| dir.join(format!("{}.log", shop_provider::SERVICE.name)));
            running.provider = Some(start_provider(layout, &binary, &root, data, log).await?);
        } else {
            running.missing.push(shop_provider::SERVICE.name);
        }
    }
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

/// Builds every service's binary and the payment provider emulator's
/// (debug, or release).
pub(crate) fn build_services(release: bool) -> anyhow::Result<()> {
    let mut build = cmd::cargo();
    build.args(["build", "--keep-going"]);
    if release {
        build.arg("--release");
    }
    build.args(SERVICES.iter().flat_map(|s| ["-p", s.name]));
    build.args(["-p", "shop-provider"]);
    cmd::run(&mut build)
}

/// Starts the payment provider emulator of `layout` from `binary` (under
/// the same supervisor as the services) and waits until it answers.
pub(crate) async fn start_provider(
    layout: &Layout,
    binary: &Path,
    root: &Path,
    data: &Path,
    log: Option<PathBuf>,
) -> anyhow::Result<Supervised> {
    let Infra::Start(port) = layout.provider else {
        bail!(
            "the environment names the payment provider ({})",
            layout::PROVIDER_URL_VAR
        );
    };
    let command = provider_command(layout, port, binary, root, data)?;
    let mut supervised = Supervised::spawn(shop_provider::SERVICE.name, command, Restarts::default(), log)?;
    supervised
        .process()
        .wait_until(SERVICE_STARTUP, || infra::tcp_accepts(port))
        .await?;
    Ok(supervised)
}

/// The emulator on `port`, its journal under `data`, its webhooks signed
/// with the stack's development secret and sent to the first gateway.
pub(crate) fn provider_command(
    layout: &Layout,
    port: u16,
    binary: &Path,
    root: &Path,
    data: &Path,
) -> anyhow::Result<Command> {
    let mut command = Command::new(binary);
    let journal = data.join("payment-provider");
    std::fs::create_dir_all(&journal).with_context(|| format!("creating {}", journal.display()))?;
    command
        .current_dir(root)
        .env("PROVIDER_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("PROVIDER_DATA_DIR", &journal)
        .env("PROVIDER_WEBHOOK_SECRET", dev_webhook_secret(data)?.expose());
    match layout.webhook_url() {
        Some(url) => command.env("PROVIDER_WEBHOOK_URL", url),
        None => command.env_remove("PROVIDER_WEBHOOK_URL"),
    };
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    if let Some(endpoint) = &layout.otlp_endpoint
        && std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    Ok(command)
}

/// The development webhook secret of the stack whose data is in `data`:
/// made once (`payment-webhook-secret`), then read, so the emulator and
/// svc-payment agree across restarts.
pub(crate) fn dev_webhook_secret(data: &Path) -> anyhow::Result<WebhookSecret> {
    let file = data.join("payment-webhook-secret");
    if let Ok(text) = std::fs::read_to_string(&file) {
        return text
            .trim()
            .parse()
            .map_err(|why| anyhow::anyhow!("{}: {why} (delete it to make a new one)", file.display()));
    }
    let secret = WebhookSecret::generate();
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    write_private(&file, secret.expose()).with_context(|| format!("writing {}", file.display()))?;
    Ok(secret)
}

/// Writes `text` to a new file only this user may read.
fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?
        .write_all(text.as_bytes())
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
pub(crate) async fn start_infrastructure(
    layout: &Layout,
    data: &Path,
    started: &mut Vec<ServerProcess>,
) -> anyhow::Result<Urls> {
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
    // svc-payment charges through the emulator started here and checks its
    // webhooks with the secret it signs them with; a provider the
    // environment names comes with its own PAYMENT_WEBHOOK_SECRET.
    if *service == registry::PAYMENT {
        command.env(layout::PROVIDER_URL_VAR, layout.provider.url(layout::provider_url));
        if let Infra::Start(_) = layout.provider {
            command.env("PAYMENT_WEBHOOK_SECRET", dev_webhook_secret(data)?.expose());
        }
        if let Some(url) = layout.payment_return_url()
            && std::env::var_os("PAYMENT_RETURN_URL").is_none()
        {
            command.env("PAYMENT_RETURN_URL", url);
        }
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
    let storefront = crate::layout::storefront();
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
    fn svc_payment_and_the_emulator_share_the_provider_address_and_one_kept_secret() -> anyhow::Result<()> {
        let layout = Layout::with_offset(0)?;
        let data = scratch("provider");
        let urls = Urls {
            nats: "nats://127.0.0.1:4222".into(),
            postgres: "postgres://127.0.0.1:15432".into(),
            redis: "redis://127.0.0.1:16379".into(),
        };
        let payment = layout
            .services
            .iter()
            .find(|p| *p.service == registry::PAYMENT)
            .expect("svc-payment is placed");
        let payment = envs(&service_command(
            payment,
            &layout,
            Path::new("/bin/true"),
            &urls,
            &data,
            &data,
        )?);
        let provider = envs(&provider_command(&layout, 12111, Path::new("/bin/true"), &data, &data)?);
        let _ = std::fs::remove_dir_all(&data);

        assert_eq!(payment["PAYMENT_PROVIDER_URL"], "http://127.0.0.1:12111");
        assert_eq!(
            payment["PAYMENT_RETURN_URL"],
            "http://127.0.0.1:8080/#/orders/{order_id}"
        );
        assert_eq!(provider["PROVIDER_LISTEN_ADDR"], "127.0.0.1:12111");
        assert_eq!(
            provider["PROVIDER_WEBHOOK_URL"],
            "http://127.0.0.1:8080/webhooks/payments"
        );
        let secret = &payment["PAYMENT_WEBHOOK_SECRET"];
        assert!(secret.starts_with("whsec_"), "a generated secret");
        assert_eq!(
            &provider["PROVIDER_WEBHOOK_SECRET"], secret,
            "the one secret, made once"
        );
        assert!(provider["PROVIDER_DATA_DIR"].starts_with(&data.display().to_string()));
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
