//! `cargo xtask chaos --seconds N --seed S`: a fault run that ends by
//! checking the books.
//!
//! It starts a stack of its own on free ports, with fresh data in
//! `.data/chaos/`: NATS, PostgreSQL and Redis, a [`FaultProxy`] between the
//! services and NATS and another between the services and PostgreSQL, the
//! payment provider emulator, and every service under the same supervisor
//! as `up`. Customers check out
//! through the gateway ([`load`]) for N seconds while the faults of the
//! seed's [`schedule`] hit it one after another. Then the faults are lifted,
//! the stack is given time to settle (every order confirmed or cancelled,
//! every consumer and outbox drained), and `shop_verify` checks the books.
//! The report: orders by outcome, faults injected, the longest time an
//! order took to settle, what the customers saw, and every violation. Any
//! violation, or a stack that does not settle, fails the run and keeps
//! `.data/chaos/` (logs included) for a look.

pub(crate) mod load;
mod schedule;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use rand::{Rng, SeedableRng, rngs::StdRng};
use shop_infra::fault_proxy::{self, FaultProxy};
use shop_infra::infra::{self, ServerProcess};
use shop_provider::{Faults, admin_client::AdminClient};
use shop_runtime::registry;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::client;
use crate::layout::{self, InfraPorts, Layout, Urls};
use crate::stack;
use crate::supervise::{Restarts, Supervised, Tended};
use schedule::{Fault, Link, LinkFault, Step};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub seconds: u64,
    pub seed: u64,
    pub release: bool,
}

/// svc-order's deadline during a run: short, so an order the saga strands
/// is still settled (and shows as TIMED_OUT) before the run ends; under the
/// reservation TTL, as in production.
const ORDER_DEADLINE: Duration = Duration::from_secs(90);
/// Reservations can expire within a run, so expiry races with payment.
const RESERVATION_TTL: Duration = Duration::from_secs(120);
/// How late a webhook sent during a `WebhooksDelayed` fault arrives:
/// reconciliation settles its payment first.
const WEBHOOK_DELAY: Duration = Duration::from_secs(60);

/// The provider's webhooks all run long: a fifth dropped (and retried), a
/// fifth delivered twice, and events close together shuffled.
fn webhook_weather() -> Faults {
    let mut faults = Faults::default();
    faults.webhooks.drop = 0.2;
    faults.webhooks.duplicate = 0.2;
    faults.webhooks.reorder = true;
    faults
}

/// How long the stack may take to settle once the faults stop: the order
/// deadline, its sweep, and the cancellations that follow.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
const TEND_INTERVAL: Duration = Duration::from_millis(250);
/// Messages published again per replay fault.
const REPLAYED_PER_FAULT: usize = 8;

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    crate::install::run().context("install")?;
    stack::build_services(options.release)?;
    let bin_dir = stack::bin_dir(options.release)?;
    let data = crate::cmd::root().join(".data").join("chaos");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("removing the last run's {}", data.display()))?;
    }
    std::fs::create_dir_all(&data)?;
    let plan = schedule::plan(options.seed, Duration::from_secs(options.seconds));
    println!(
        "chaos: seed {}, {} s of load, {} faults; data and logs in {}",
        options.seed,
        options.seconds,
        plan.len(),
        data.display()
    );

    let mut stack = Stack::start(&bin_dir, &data).await?;
    let outcome = stack.exercise(&options, &plan).await;
    stack.stop().await;
    conclude(outcome, &data, "the books do not balance")
}

/// Prints the run's report; removes its data when it is clean, keeps it
/// and fails with `failure` when it is not.
pub(crate) fn conclude(outcome: anyhow::Result<Report>, data: &Path, failure: &str) -> anyhow::Result<()> {
    match outcome {
        Ok(report) if report.clean => {
            println!("{}", report.text);
            std::fs::remove_dir_all(data).ok();
            Ok(())
        }
        Ok(report) => {
            println!("{}", report.text);
            bail!("{failure}; logs and data kept in {}", data.display())
        }
        Err(e) => Err(e.context(format!("logs and data kept in {}", data.display()))),
    }
}

struct Stack {
    data: PathBuf,
    ports: InfraPorts,
    gateway_port: u16,
    nats: ServerProcess,
    postgres: ServerProcess,
    redis: ServerProcess,
    nats_link: FaultProxy,
    postgres_link: FaultProxy,
    services: Arc<Mutex<Vec<Supervised>>>,
    restarts: Arc<std::sync::Mutex<BTreeMap<String, u32>>>,
    tender: tokio::task::JoinHandle<()>,
    books: shop_verify::Databases,
    provider: AdminClient,
    js: jetstream::Context,
}

/// What a run found: whether it is clean, and its report.
pub(crate) struct Report {
    pub(crate) clean: bool,
    pub(crate) text: String,
}

impl Stack {
    async fn start(bin_dir: &Path, data: &Path) -> anyhow::Result<Self> {
        let layout = Layout::on_free_ports(1);
        let ports = layout.infra_ports().context("a fault run starts its own servers")?;
        let nats = infra::start_nats(&data.join("nats"), ports.nats).await?;
        let postgres = infra::start_postgres(&data.join("postgres"), ports.postgres).await?;
        let redis = infra::start_redis(&data.join("redis"), ports.redis).await?;
        let nats_link = FaultProxy::start(([127, 0, 0, 1], ports.nats).into())?;
        let postgres_link = FaultProxy::start(([127, 0, 0, 1], ports.postgres).into())?;
        let server = infra::postgres_url(ports.postgres);
        for service in layout::SERVICES {
            if let Some(database) = service.database {
                infra::create_database(&server, database).await?;
            }
        }
        // The services reach NATS and PostgreSQL only through the proxies.
        let urls = Urls {
            nats: infra::nats_url(nats_link.port()),
            postgres: infra::postgres_url(postgres_link.port()),
            redis: infra::redis_url(ports.redis),
        };
        let root = crate::cmd::root();
        let mut services = Vec::new();
        let provider_name = shop_provider::SERVICE.name;
        let provider = stack::start_provider(
            &layout,
            &bin_dir.join(provider_name),
            &root,
            data,
            Some(data.join(format!("{provider_name}.log"))),
        )
        .await?;
        services.push(provider);
        for placed in &layout.services {
            let name = placed.service.name;
            let mut command = stack::service_command(placed, &layout, &bin_dir.join(name), &urls, &root, data)?;
            command
                .env("RUST_LOG", "warn,svc_gateway=error")
                .env("ORDER_DEADLINE", format!("{}s", ORDER_DEADLINE.as_secs()))
                .env("RESERVATION_TTL", format!("{}s", RESERVATION_TTL.as_secs()));
            let log = data.join(format!("{name}.log"));
            let mut supervised = Supervised::spawn(name, command, Restarts::default(), Some(log))?;
            let port = placed.grpc_port;
            supervised
                .process()
                .wait_until(Duration::from_secs(120), || infra::tcp_accepts(port))
                .await?;
            services.push(supervised);
        }
        let services = Arc::new(Mutex::new(services));
        let restarts = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let tender = tokio::spawn(tend(services.clone(), restarts.clone()));
        let books = crate::verify::databases(&server).await?;
        let (_, js) = shop_runtime::nats::connect(&infra::nats_url(ports.nats), "xtask-chaos").await?;
        Ok(Self {
            data: data.to_path_buf(),
            gateway_port: layout.gateway_port().context("the layout has a gateway")?,
            ports,
            nats,
            postgres,
            redis,
            nats_link,
            postgres_link,
            services,
            restarts,
            tender,
            books,
            provider: AdminClient::new(layout.provider.url(layout::provider_url)),
            js,
        })
    }

    async fn exercise(&mut self, options: &Options, plan: &[Step]) -> anyhow::Result<Report> {
        self.ready().await?;
        let channel = client::gateway_channel(self.gateway_port).await?;
        let admin = client::issue_token(&channel, "chaos-admin", &["admin"]).await?;
        let gateway = client::gateways(&[self.gateway_port]);
        load::stock_up(gateway.clone(), &format!("Bearer {admin}").parse()?, options.seconds).await?;
        let initial_on_hand = on_hand(&self.books.inventory).await?;
        let customers = load::customers(&channel, &format!("chaos-{}", options.seed)).await?;
        // Webhooks misbehave for the whole run; the faults below add to it.
        self.provider.set_faults(&webhook_weather()).await?;

        let began = Instant::now();
        let until = began + Duration::from_secs(options.seconds);
        let stop = shop_runtime::CancellationToken::new();
        let customers = tokio::spawn(load::drive(gateway, customers, "chaos", options.seed, stop.clone()));
        let mut rng = StdRng::seed_from_u64(options.seed);
        let mut injected: BTreeMap<&'static str, u32> = BTreeMap::new();
        let mut poison = Vec::new();
        let mut log = String::new();
        for step in plan {
            tokio::time::sleep_until(began + step.at).await;
            let note = self.inject(step, &mut rng, &mut poison).await?;
            *injected.entry(step.fault.kind()).or_default() += 1;
            let line = format!(
                "{:>6.1} s  {:?} for {:.0} s{note}",
                step.at.as_secs_f64(),
                step.fault,
                step.lasts.as_secs_f64()
            );
            println!("chaos: {line}");
            writeln!(log, "  {line}")?;
        }
        tokio::time::sleep_until(until).await;
        stop.cancel();
        let tally = customers.await.context("the customers' task")?;
        let faults_ended = Instant::now();
        println!("chaos: load and faults over; waiting for the stack to settle");
        let settled = settle(&self.books, &self.js).await;

        let mut verify = shop_verify::Options::new(chrono::Utc::now());
        verify.order_deadline = ORDER_DEADLINE;
        verify.initial_on_hand = Some(initial_on_hand);
        verify.expected_parked = poison;
        let books = shop_verify::check(&self.books, &self.provider, Some(&self.js), &verify).await?;

        let mut text = String::new();
        writeln!(
            text,
            "\n=== chaos report: seed {}, {} s ===",
            options.seed, options.seconds
        )?;
        writeln!(text, "orders by outcome:")?;
        for (outcome, count) in outcomes(&self.books.order).await? {
            writeln!(text, "  {count:>6}  {outcome}")?;
        }
        writeln!(
            text,
            "longest placement-to-settlement: {:.1} s",
            longest_settlement(&self.books.order).await?
        )?;
        match &settled {
            Ok(()) => writeln!(
                text,
                "settled {:.1} s after the last fault and checkout",
                faults_ended.elapsed().as_secs_f64()
            )?,
            Err(e) => writeln!(text, "NOT SETTLED: {e:#}")?,
        }
        writeln!(text, "faults injected ({}):", plan.len())?;
        for (kind, count) in &injected {
            writeln!(text, "  {count:>6}  {kind}")?;
        }
        text.push_str(&log);
        let restarts = self
            .restarts
            .lock()
            .expect("the tender never panics holding it")
            .clone();
        writeln!(text, "service restarts by the supervisor: {restarts:?}")?;
        writeln!(
            text,
            "customers: {} checkouts accepted ({} through the cart), {} cancellations asked ({:?} refused), {} given up after {} attempts; failed calls by code: {:?}",
            tally.accepted,
            tally.via_cart,
            tally.cancels_asked,
            tally.answers,
            tally.abandoned,
            load::ATTEMPTS,
            tally.failed_calls
        )?;
        writeln!(
            text,
            "3-D Secure customers: {} authenticated, {} failed, {} never did",
            tally.authenticated, tally.authentication_failed, tally.never_authenticated
        )?;
        writeln!(text, "\n{books}")?;
        Ok(Report {
            clean: settled.is_ok() && books.is_clean(),
            text,
        })
    }

    /// Applies one fault, waits out its length, lifts it. Returns a note
    /// for the log.
    async fn inject(&mut self, step: &Step, rng: &mut StdRng, poison: &mut Vec<String>) -> anyhow::Result<String> {
        let mut note = String::new();
        match &step.fault {
            Fault::Kill(service) => self.signal(service, "KILL").await?,
            Fault::KillMidCharge => {
                // Slow every statement, so handlers spend their time
                // between the provider's answer and their commit.
                self.postgres_link
                    .set(fault_proxy::Fault::Latency(Duration::from_millis(300)));
                tokio::time::sleep(step.lasts).await;
                let killed = self.signal(registry::PAYMENT.name, "KILL").await;
                self.postgres_link.set(fault_proxy::Fault::None);
                killed?;
            }
            Fault::Pause(service) => {
                self.signal(service, "STOP").await?;
                tokio::time::sleep(step.lasts).await;
                self.signal(service, "CONT").await?;
            }
            Fault::RestartNats => {
                self.nats.stop().await;
                tokio::time::sleep(step.lasts).await;
                self.nats = infra::start_nats(&self.data.join("nats"), self.ports.nats).await?;
            }
            Fault::FreezePostgres => {
                self.postgres.signal("STOP")?;
                tokio::time::sleep(step.lasts).await;
                self.postgres.signal("CONT")?;
            }
            Fault::RestartPostgres => {
                self.postgres.stop().await;
                tokio::time::sleep(step.lasts).await;
                self.postgres = infra::start_postgres(&self.data.join("postgres"), self.ports.postgres).await?;
            }
            Fault::RestartRedis => {
                self.redis.stop().await;
                tokio::time::sleep(step.lasts).await;
                self.redis = infra::start_redis(&self.data.join("redis"), self.ports.redis).await?;
            }
            Fault::ProviderOutage => {
                let outage = Faults {
                    outage: true,
                    ..webhook_weather()
                };
                self.provider.set_faults(&outage).await?;
                tokio::time::sleep(step.lasts).await;
                self.provider.set_faults(&webhook_weather()).await?;
            }
            Fault::WebhooksDelayed => {
                let mut delayed = webhook_weather();
                delayed.webhooks.delay_ms = WEBHOOK_DELAY.as_millis().try_into()?;
                self.provider.set_faults(&delayed).await?;
                tokio::time::sleep(step.lasts).await;
                self.provider.set_faults(&webhook_weather()).await?;
            }
            Fault::Link(link, fault) => {
                let proxy = match link {
                    Link::Nats => &self.nats_link,
                    Link::Postgres => &self.postgres_link,
                };
                proxy.set(match fault {
                    LinkFault::Latency(latency) => fault_proxy::Fault::Latency(*latency),
                    LinkFault::Reset => fault_proxy::Fault::Reset,
                    LinkFault::Blackhole => fault_proxy::Fault::Blackhole,
                });
                tokio::time::sleep(step.lasts).await;
                proxy.set(fault_proxy::Fault::None);
            }
            Fault::Replay => {
                let replayed = replay(&self.js, rng).await?;
                note = format!(": {replayed} events published again");
            }
            Fault::Poison => {
                let subject = format!("orders.placed.poison-{}", rng.random::<u32>());
                publish_poison(&self.js, &subject).await?;
                note = format!(": {subject}");
                poison.push(subject);
            }
        }
        Ok(note)
    }

    /// Waits until the services have migrated and created their consumers
    /// (they listen before that). When they do not, says which consumers
    /// are missing and how each of their services is doing, with the end of
    /// its log: a run that fails here leaves nothing else to go on in CI.
    async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (stock, missing) = readiness(&self.books, &self.js).await;
            if !stock.is_empty() && missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut owners: Vec<&str> = missing
                    .iter()
                    .filter_map(|c| shop_runtime::topology::owner_of_consumer(c))
                    .collect();
                if stock.is_empty() {
                    owners.push("inventory");
                }
                owners.dedup();
                let mut why = format!(
                    "the services were not ready after two minutes: consumers missing: [{}]; stock {}",
                    missing.join(", "),
                    if stock.is_empty() { "empty" } else { "seeded" },
                );
                for owner in owners {
                    why.push_str(&self.describe(&format!("svc-{owner}")).await);
                }
                bail!(why);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether `service` runs, how often it was restarted, and the end of
    /// its log since its last start.
    async fn describe(&self, service: &str) -> String {
        let restarts = self
            .restarts
            .lock()
            .expect("nothing panics holding it")
            .get(service)
            .copied()
            .unwrap_or(0);
        let mut services = self.services.lock().await;
        let Some(supervised) = services.iter_mut().find(|s| s.name() == service) else {
            return format!("\n{service}: not started");
        };
        let process = supervised.process();
        let state = match process.try_wait() {
            Ok(None) => "running".to_owned(),
            Ok(Some(status)) => format!("exited ({status})"),
            Err(e) => format!("state unknown ({e:#})"),
        };
        format!("\n{service}: {state}, restarted {restarts} times{}", process.log_tail())
    }

    async fn signal(&self, service: &str, signal: &str) -> anyhow::Result<()> {
        let mut services = self.services.lock().await;
        let supervised = services
            .iter_mut()
            .find(|s| s.name() == service)
            .with_context(|| format!("no service {service}"))?;
        if supervised.process().try_wait()?.is_some() {
            // Down already (killed a moment ago, or it exited when it could
            // not reach its database) and not started again yet: the
            // supervisor is on it, and there is nothing to hit.
            println!("chaos: {service} is down; no {signal} for it");
            return Ok(());
        }
        supervised.process().signal(signal)
    }

    async fn stop(mut self) {
        self.tender.abort();
        for service in self.services.lock().await.iter_mut().rev() {
            // A paused service would not hear its stop signal.
            let _ = service.process().signal("CONT");
            service.stop().await;
        }
        self.nats_link.stop().await;
        self.postgres_link.stop().await;
        let _ = self.postgres.signal("CONT");
        for server in [&mut self.redis, &mut self.postgres, &mut self.nats] {
            server.stop().await;
        }
    }
}

/// Until every order is confirmed or cancelled, every consumer has
/// handled everything and every outbox is empty.
pub(crate) async fn settle(books: &shop_verify::Databases, js: &jetstream::Context) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut waiting = Vec::new();
        let unsettled: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status IN ('pending', 'reserved')")
            .fetch_one(&books.order)
            .await
            .unwrap_or(-1);
        if unsettled != 0 {
            waiting.push(format!("{unsettled} orders unsettled"));
        }
        for (service, pool) in books.each() {
            let name = service.name;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(pool)
                .await
                .unwrap_or(-1);
            if rows != 0 {
                waiting.push(format!("{rows} outbox rows in {name}"));
            }
        }
        match shop_runtime::topology::backlogs(js).await {
            Ok(backlogs) => waiting.extend(backlogs.iter().filter(|b| !b.is_idle()).map(|b| {
                let state = b.state.unwrap_or(shop_runtime::topology::BacklogState {
                    pending: 0,
                    unacknowledged: 0,
                });
                format!(
                    "{} has {} to deliver, {} unacknowledged",
                    b.consumer, state.pending, state.unacknowledged
                )
            })),
            Err(e) => waiting.push(format!("consumers: {e:#}")),
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("after {SETTLE_TIMEOUT:?}: {}", waiting.join("; "));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The supervisor's loop: services that exit are started again.
async fn tend(services: Arc<Mutex<Vec<Supervised>>>, restarts: Arc<std::sync::Mutex<BTreeMap<String, u32>>>) {
    loop {
        tokio::time::sleep(TEND_INTERVAL).await;
        for service in services.lock().await.iter_mut() {
            match service.tend() {
                Ok(Tended::Restarted { .. }) => {
                    let mut restarts = restarts.lock().expect("nothing panics holding it");
                    *restarts.entry(service.name().to_owned()).or_default() += 1;
                }
                Ok(_) => {}
                Err(e) => eprintln!("chaos: tending {}: {e:#}", service.name()),
            }
        }
    }
}

/// What the services have done of their start-up: the stock seeded, and
/// the consumers still missing.
pub(crate) async fn readiness(
    books: &shop_verify::Databases,
    js: &jetstream::Context,
) -> (BTreeMap<String, i64>, Vec<String>) {
    let stock = on_hand(&books.inventory).await.unwrap_or_default();
    let missing: Vec<String> = match shop_runtime::topology::backlogs(js).await {
        Ok(backlogs) => backlogs
            .into_iter()
            .filter(|b| b.state.is_none())
            .map(|b| b.consumer)
            .collect(),
        Err(e) => vec![format!("all ({e})")],
    };
    (stock, missing)
}

pub(crate) async fn on_hand(inventory: &PgPool) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT sku, on_hand FROM stock")
        .fetch_all(inventory)
        .await?;
    Ok(rows.into_iter().collect())
}

pub(crate) async fn outcomes(orders: &PgPool) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT upper(status) || coalesce(' (' || upper(cancel_reason) || ')', ''), count(*)
           FROM orders GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(orders)
    .await?)
}

pub(crate) async fn longest_settlement(orders: &PgPool) -> anyhow::Result<f64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(max(EXTRACT(EPOCH FROM updated_at - created_at)), 0)::float8
           FROM orders WHERE status IN ('confirmed', 'cancelled')",
    )
    .fetch_one(orders)
    .await?)
}

/// Publishes events already in the streams again, under new message ids
/// (so JetStream stores them) and their own event ids (so every inbox
/// knows them).
async fn replay(js: &jetstream::Context, rng: &mut StdRng) -> anyhow::Result<usize> {
    let mut replayed = 0;
    for name in ["ORDERS", "INVENTORY", "PAYMENTS"] {
        let mut stream = js.get_stream(name).await?;
        let state = stream.info().await?.state.clone();
        if state.messages == 0 {
            continue;
        }
        for _ in 0..REPLAYED_PER_FAULT / 3 + 1 {
            let sequence = rng.random_range(state.first_sequence..=state.last_sequence);
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let mut headers = message.headers.clone();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("replay:{name}:{sequence}:{}", rng.random::<u32>()).as_str(),
            );
            let published = PublishMessage::build()
                .payload(message.payload.clone())
                .headers(headers);
            js.send_publish(message.subject.to_string(), published).await?.await?;
            replayed += 1;
        }
    }
    Ok(replayed)
}

/// An `OrderPlaced` whose body is not JSON: every consumer of the subject
/// must park it at once and carry on.
async fn publish_poison(js: &jetstream::Context, subject: &str) -> anyhow::Result<()> {
    let event_id = uuid::Uuid::now_v7();
    let mut headers: HeaderMap = shop_runtime::event::headers(
        event_id,
        "shop.events.v1.OrderPlaced",
        "xtask-chaos",
        "poison",
        chrono::Utc::now(),
        &Default::default(),
    );
    headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id.to_string().as_str());
    let message = PublishMessage::build()
        .payload(bytes::Bytes::from_static(b"{\"orderId\": "))
        .headers(headers);
    js.send_publish(subject.to_owned(), message).await?.await?;
    Ok(())
}
