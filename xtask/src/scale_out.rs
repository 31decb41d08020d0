//! `cargo xtask scale-out`: the platform as it runs on several machines,
//! through the faults that come with them, ending by checking the books.
//!
//! A stack of its own on free ports, with fresh data in `.data/scale-out/`:
//! a three-node NATS cluster with every stream on all three nodes,
//! PostgreSQL, Redis, the payment provider emulator, and two replicas of
//! every service, the gateway included, each told every replica of what it
//! calls. Customers (the
//! fault run's, [`load`]) check out through both gateways, their calls
//! going round them as a client's would ([`client::gateways`]), while:
//!
//! 1. **steady**: nothing happens, for a baseline;
//! 2. **faults**: the NATS node leading the ORDERS stream is killed and
//!    started again later, then one replica of every service is killed
//!    (SIGKILL) and its supervisor starts it again;
//! 3. **rolling restart**: every replica of every service in turn gets
//!    SIGTERM, as a rolling update does, and the next one waits until it is
//!    back and ready. No customer call may fail in this phase.
//!
//! Then the stack settles and `shop_verify` checks the books. The run fails
//! on any violation, a stack that does not settle, an order cancelled by
//! its deadline (a stranded saga), or a failed call during the rolling
//! restart; it keeps `.data/scale-out/` (logs included) when it fails.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use shop_infra::infra;
use shop_provider::admin_client::AdminClient;
use shop_runtime::CancellationToken;
use tokio::time::Instant;

use crate::chaos::{self, load};
use crate::client;
use crate::layout::{Layout, Placed};
use crate::stack::{self, Running};
use crate::supervise::Tended;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// How long the steady phase lasts, and the fault phase at least.
    pub seconds: u64,
    pub release: bool,
}

/// Replicas of every service.
const REPLICAS: usize = 2;
/// Every seed the same: a red run can be repeated as it was.
const SEED: u64 = 7;
/// How soon callers ask a replica whose health stream ended again: short,
/// so a restarted replica takes calls again within a second.
const HEALTH_INTERVAL: &str = "1s";
/// An order not settled this long was stranded: the run fails on one.
const ORDER_DEADLINE: &str = "120s";
/// How long a replica may take to be ready again after a restart.
const READY_WITHIN: Duration = Duration::from_secs(120);
/// How long the NATS leader stays down.
const NODE_DOWN: Duration = Duration::from_secs(10);
const TEND_INTERVAL: Duration = Duration::from_millis(250);

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    crate::install::run().context("install")?;
    stack::build_services(options.release)?;
    let bin_dir = stack::bin_dir(options.release)?;
    let data = crate::cmd::root().join(".data").join("scale-out");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("removing the last run's {}", data.display()))?;
    }
    std::fs::create_dir_all(&data)?;

    let mut layout = Layout::on_free_ports(REPLICAS).with_free_nats_cluster();
    layout.service_env = vec![
        ("RUST_LOG", "warn,svc_gateway=error,shop_runtime::host=info".into()),
        ("UPSTREAM_HEALTH_INTERVAL", HEALTH_INTERVAL.into()),
        ("ORDER_DEADLINE", ORDER_DEADLINE.into()),
    ];
    println!(
        "scale-out: {REPLICAS} replicas of every service, a three-node NATS cluster; data and logs in {}",
        data.display()
    );
    let mut running = stack::start_all(&layout, &bin_dir, &data, Some(&data)).await?;
    let outcome = exercise(&layout, &mut running, &data, options).await;
    running.stop().await;
    chaos::conclude(outcome, &data, "the scale-out run failed")
}

async fn exercise(
    layout: &Layout,
    running: &mut Running<'_>,
    data: &Path,
    options: Options,
) -> anyhow::Result<chaos::Report> {
    let (_client, js) = shop_runtime::nats::connect(&running.urls.nats, "xtask-scale-out").await?;
    let books = crate::verify::databases(&running.urls.postgres).await?;
    ready(running, &books, &js).await?;

    let gateway_ports = layout.gateway_ports();
    let channel = client::gateway_channel(gateway_ports[0]).await?;
    let admin = client::issue_token(&channel, "scale-out-admin", &["admin"]).await?;
    let gateways = client::gateways(&gateway_ports);
    load::stock_up(
        gateways.clone(),
        &format!("Bearer {admin}").parse()?,
        6 * options.seconds,
    )
    .await?;
    let initial_on_hand = chaos::on_hand(&books.inventory).await?;
    let customers = load::customers(&channel, "scale-out").await?;
    let mut text = String::new();
    let phase_length = Duration::from_secs(options.seconds);

    // 1. Steady.
    let phase = Phase::start("steady", &gateways, &customers, &books).await?;
    tend_for(running, phase_length).await?;
    let steady = phase.end(&books).await?;
    writeln!(text, "steady, {:.0} s: {}", steady.seconds, steady.summary())?;

    // 2. The ORDERS leader's node, then one replica of every service.
    let phase = Phase::start("faults", &gateways, &customers, &books).await?;
    tend_for(running, Duration::from_secs(2)).await?;
    let leader = orders_leader(&js).await?;
    let node: usize = leader
        .strip_prefix("shop-n")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=3).contains(n))
        .with_context(|| format!("the ORDERS leader {leader:?} is not a node of nats/cluster/"))?;
    println!("scale-out: killing nats-server node {node} ({leader}), the ORDERS leader");
    let killed = &mut running.infra[node - 1];
    killed.signal("KILL")?;
    killed.stop().await;
    tend_for(running, NODE_DOWN).await?;
    let nodes = layout.nats_nodes().context("the layout runs a NATS cluster")?;
    running.infra[node - 1] =
        infra::start_nats_node(node, nodes, &data.join("nats-cluster").join(format!("n{node}"))).await?;
    let new_leader = orders_leader(&js).await.unwrap_or_else(|e| format!("unknown ({e:#})"));
    println!("scale-out: node {node} is back; ORDERS is led by {new_leader}");
    tend_for(running, Duration::from_secs(5)).await?;
    for (placed, supervised) in running.services.iter_mut().filter(|(p, _)| p.replica == REPLICAS) {
        println!("scale-out: SIGKILL {}", placed.name());
        supervised.process().signal("KILL")?;
    }
    let back = Instant::now();
    tend_for(running, Duration::from_secs(2)).await?;
    all_ready(running).await?;
    println!(
        "scale-out: every killed replica is back after {:.1} s",
        back.elapsed().as_secs_f64()
    );
    let remaining = phase_length.saturating_sub(phase.began.elapsed());
    tend_for(running, remaining).await?;
    let faults = phase.end(&books).await?;
    writeln!(
        text,
        "faults, {:.0} s (node {node} killed as ORDERS leader {leader}, {} s down, then led by {new_leader}; replica {REPLICAS} of every service SIGKILLed): {}",
        faults.seconds,
        NODE_DOWN.as_secs(),
        faults.summary()
    )?;

    // 3. A rolling restart: every replica, one at a time.
    tend_for(running, Duration::from_secs(2)).await?;
    // Customers of their own: a cart whose checkout died with its replica
    // in the fault phase stays busy until that checkout's deadline passes,
    // which is the fault phase's cost, not the restart's.
    let rolling_customers = load::customers(&channel, "scale-out-rolling").await?;
    let phase = Phase::start("rolling", &gateways, &rolling_customers, &books).await?;
    let mut restarts = Vec::new();
    for index in 0..running.services.len() {
        let began = Instant::now();
        let name = running.services[index].0.name();
        println!("scale-out: SIGTERM {name}");
        running.services[index].1.process().request_stop();
        let stopped = wait_restarted(running, index).await?;
        let placed = running.services[index].0;
        ready_again(running, placed).await?;
        restarts.push(format!(
            "{name} stopped in {:.1} s, ready {:.1} s later",
            stopped.as_secs_f64(),
            began.elapsed().saturating_sub(stopped).as_secs_f64()
        ));
        // Long enough for every caller's health watch to find it serving.
        tend_for(running, Duration::from_millis(1500)).await?;
    }
    let rolling = phase.end(&books).await?;
    writeln!(
        text,
        "rolling restart, {:.0} s ({}): {}",
        rolling.seconds,
        restarts.join(", "),
        rolling.summary()
    )?;

    println!("scale-out: load over; waiting for the stack to settle");
    let settling = Instant::now();
    let settled = chaos::settle(&books, &js).await;
    let mut verify = shop_verify::Options::new(chrono::Utc::now());
    verify.initial_on_hand = Some(initial_on_hand);
    let provider = AdminClient::new(layout.provider.url(crate::layout::provider_url));
    let checked = shop_verify::check(&books, &provider, Some(&js), &verify).await?;
    let outcomes = chaos::outcomes(&books.order).await?;
    let timed_out: i64 = outcomes
        .iter()
        .filter(|(outcome, _)| outcome.contains("TIMED_OUT"))
        .map(|(_, n)| n)
        .sum();

    let mut report = format!("\n=== scale-out report: {REPLICAS} replicas of every service, 3 NATS nodes ===\n");
    report.push_str(&text);
    writeln!(report, "orders by outcome:")?;
    for (outcome, count) in &outcomes {
        writeln!(report, "  {count:>6}  {outcome}")?;
    }
    writeln!(
        report,
        "longest placement-to-settlement: {:.1} s",
        chaos::longest_settlement(&books.order).await?
    )?;
    match &settled {
        Ok(()) => writeln!(
            report,
            "settled {:.1} s after the load ended",
            settling.elapsed().as_secs_f64()
        )?,
        Err(e) => writeln!(report, "NOT SETTLED: {e:#}")?,
    }
    let rolling_clean = rolling.tally.failed_calls.is_empty() && rolling.tally.abandoned == 0;
    if !rolling_clean {
        writeln!(
            report,
            "FAILED CALLS DURING THE ROLLING RESTART: {:?}",
            rolling.tally.failed_calls
        )?;
        for failure in &rolling.tally.failures {
            writeln!(report, "  {failure}")?;
        }
    }
    if timed_out > 0 {
        writeln!(report, "STRANDED: {timed_out} orders cancelled by their deadline")?;
    }
    writeln!(report, "\n{checked}")?;
    Ok(chaos::Report {
        clean: settled.is_ok() && checked.is_clean() && rolling_clean && timed_out == 0,
        text: report,
    })
}

/// A stretch of load: the customers check out until it ends.
struct Phase {
    began: Instant,
    orders_before: i64,
    stop: CancellationToken,
    customers: tokio::task::JoinHandle<load::Tally>,
}

struct PhaseResult {
    seconds: f64,
    orders: i64,
    tally: load::Tally,
}

impl PhaseResult {
    fn summary(&self) -> String {
        format!(
            "{} orders placed ({:.1}/s), {} through the cart, {} cancellations asked; failed calls {:?}, {} checkouts given up",
            self.orders,
            self.orders as f64 / self.seconds,
            self.tally.via_cart,
            self.tally.cancels_asked,
            self.tally.failed_calls,
            self.tally.abandoned
        )
    }
}

impl Phase {
    /// Load under the name `run`, which keys its checkouts and seeds its
    /// customers' choices.
    async fn start(
        run: &'static str,
        gateways: &shop_runtime::upstream::Balanced,
        customers: &[load::Customer],
        books: &shop_verify::Databases,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let orders_before = orders_placed(books).await?;
        let began = Instant::now();
        let seed = run
            .bytes()
            .fold(SEED, |seed, b| seed.wrapping_mul(31).wrapping_add(u64::from(b)));
        let (gateways, customers) = (gateways.clone(), customers.to_vec());
        let customers = tokio::spawn({
            let stop = stop.clone();
            async move { load::drive(gateways, customers, run, seed, stop).await }
        });
        Ok(Self {
            began,
            orders_before,
            stop,
            customers,
        })
    }

    async fn end(self, books: &shop_verify::Databases) -> anyhow::Result<PhaseResult> {
        self.stop.cancel();
        let tally = self.customers.await.context("the customers' task")?;
        Ok(PhaseResult {
            seconds: self.began.elapsed().as_secs_f64(),
            orders: orders_placed(books).await? - self.orders_before,
            tally,
        })
    }
}

async fn orders_placed(books: &shop_verify::Databases) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&books.order)
        .await?)
}

/// The server name of the node leading the ORDERS stream.
async fn orders_leader(js: &async_nats::jetstream::Context) -> anyhow::Result<String> {
    let began = Instant::now();
    loop {
        let leader = match js.get_stream("ORDERS").await {
            Ok(mut stream) => stream
                .info()
                .await
                .ok()
                .and_then(|info| info.cluster.clone())
                .and_then(|cluster| cluster.leader),
            Err(_) => None,
        };
        match leader {
            Some(leader) => return Ok(leader),
            None if began.elapsed() > Duration::from_secs(30) => bail!("the ORDERS stream has no leader"),
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Keeps every service running (starting again those that exit) for
/// `length`.
async fn tend_for(running: &mut Running<'_>, length: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + length;
    loop {
        tend(running)?;
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::time::sleep(TEND_INTERVAL.min(until - now)).await;
    }
}

fn tend(running: &mut Running<'_>) -> anyhow::Result<()> {
    let services = running.services.iter_mut().map(|(_, supervised)| supervised);
    for supervised in services.chain(running.provider.as_mut()) {
        match supervised.tend()? {
            Tended::Exited { status, .. } => println!("scale-out: {} exited ({status})", supervised.name()),
            Tended::Restarted { .. } => println!("scale-out: {} started again", supervised.name()),
            Tended::Running | Tended::Waiting => {}
        }
    }
    Ok(())
}

/// Until the services have migrated and made their consumers.
async fn ready(
    running: &mut Running<'_>,
    books: &shop_verify::Databases,
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<()> {
    let began = Instant::now();
    loop {
        let (stock, missing) = chaos::readiness(books, js).await;
        if !stock.is_empty() && missing.is_empty() {
            return all_ready(running).await;
        }
        if began.elapsed() > READY_WITHIN {
            bail!(
                "the services were not ready after {READY_WITHIN:?}: consumers missing: [{}]; stock {}",
                missing.join(", "),
                if stock.is_empty() { "empty" } else { "seeded" }
            );
        }
        tend_for(running, Duration::from_millis(500)).await?;
    }
}

/// Until the `index`th service has exited and been started again; how
/// long it took to exit.
async fn wait_restarted(running: &mut Running<'_>, index: usize) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let mut exited = None;
    loop {
        for (n, (placed, supervised)) in running.services.iter_mut().enumerate() {
            match supervised.tend()? {
                Tended::Restarted { .. } if n == index => return Ok(exited.unwrap_or_default()),
                Tended::Exited { status, .. } => {
                    if n == index {
                        exited = Some(began.elapsed());
                    }
                    println!("scale-out: {} exited ({status})", placed.name());
                }
                _ => {}
            }
        }
        if began.elapsed() > READY_WITHIN {
            bail!(
                "{} did not exit and start again within {READY_WITHIN:?}",
                running.services[index].0.name()
            );
        }
        tokio::time::sleep(TEND_INTERVAL).await;
    }
}

/// Until every replica says it is ready.
async fn all_ready(running: &mut Running<'_>) -> anyhow::Result<()> {
    let placed: Vec<&Placed> = running.services.iter().map(|(p, _)| *p).collect();
    for placed in placed {
        ready_again(running, placed).await?;
    }
    Ok(())
}

/// Until `placed` answers `/readyz` with 200, tending the others meanwhile.
async fn ready_again(running: &mut Running<'_>, placed: &Placed) -> anyhow::Result<()> {
    let began = Instant::now();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], placed.admin_port));
    loop {
        if let Ok((200, _)) = shop_infra::http_get(admin, "/readyz").await {
            return Ok(());
        }
        if began.elapsed() > READY_WITHIN {
            bail!("{} was not ready within {READY_WITHIN:?}", placed.name());
        }
        tend_for(running, TEND_INTERVAL).await?;
    }
}
