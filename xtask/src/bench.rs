//! `cargo xtask bench`: the platform's speed against this machine's own
//! limits, measured in one run on one stack.
//!
//! It starts a release stack of its own (durable: fsync on, NATS
//! `sync_interval: always`) on free ports, then measures:
//!
//! - the floor: a PostgreSQL commit (latency alone, throughput from 16
//!   connections) and a JetStream publish (latency awaited one by one,
//!   throughput pipelined) on the stack's own servers;
//! - what one checkout costs them, counted: transactions committed, WAL
//!   flushes, events stored, per settled checkout;
//! - the load steps of [`crate::load`], then hot-SKU steps.
//!
//! From these it computes the floor of one checkout's latency and the bound
//! on checkouts per second, and writes `target/bench-report/report.md` with
//! two SVG plots (latency against offered rate; CPU per checkout by
//! service).

mod plot;

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::future::join_all;
use shop_measure::Latencies;
use shop_runtime::registry::ServiceSpec;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;

use crate::{
    cmd, install,
    layout::{self, Layout},
    load::{self, Process, Step},
    stack,
};

/// What `cargo xtask bench` was asked for.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub load: load::Options,
    /// Rates of the hot-SKU steps (none: no such step).
    pub hot_rates: Vec<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            load: load::Options {
                rates: vec![25, 50, 100, 150, 200, 300],
                seconds: 15,
                ..load::Options::default()
            },
            hot_rates: vec![100, 300],
        }
    }
}

/// The storage floor, measured on the stack's own servers.
pub(crate) struct Floor {
    pub commit: Latencies,
    pub commits_per_second: f64,
    pub publish: Latencies,
    pub publishes_per_second: f64,
}

/// What one settled checkout cost the servers, counted over a load step.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PerCheckout {
    /// Transactions committed, read-only ones included, background work
    /// (pollers, sweepers) included.
    pub commits: f64,
    /// WAL flushes to disk (group commit lets one serve several commits).
    pub wal_syncs: f64,
    /// Events stored in the platform's streams.
    pub publishes: f64,
}

pub(crate) async fn run(options: &Options) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        // The generator shares two cores with the stack: it must not be a
        // debug build.
        println!("bench: building and running a release build of itself");
        let mut release = cmd::cargo();
        release.args(["run", "--release", "-q", "-p", "xtask", "--", "bench"]);
        release.args(std::env::args().skip(2));
        return cmd::run(&mut release);
    }
    install::run().context("install")?;
    stack::build_services(true)?;
    let bin_dir = stack::bin_dir(true)?;
    let data = cmd::root().join(".data").join("bench");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("removing the last run's {}", data.display()))?;
    }
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs)?;
    let layout = Layout::on_free_ports(1);
    let mut running = stack::start_all(&layout, &bin_dir, &data, Some(&logs)).await?;
    let measured = measure(&layout, &running.urls, options).await;
    running.stop().await;
    let report = measured?;
    let dir = cmd::root().join("target").join("bench-report");
    report.write(&dir)?;
    println!("\n{}", report.markdown());
    println!("report: {}", dir.join("report.md").display());
    Ok(())
}

struct Report {
    floor: Floor,
    per_checkout: PerCheckout,
    steps: Vec<Step>,
    hot: Vec<Step>,
    edge: Option<load::Edge>,
    peak_rss_mib: Vec<(&'static str, f64)>,
}

async fn measure(layout: &Layout, urls: &layout::Urls, options: &Options) -> anyhow::Result<Report> {
    let gateway = layout.gateway_port().context("the bench layout has a gateway")?;
    let admin_ports: Vec<(&'static ServiceSpec, u16)> =
        layout.services.iter().map(|p| (p.service, p.admin_port)).collect();
    let mut processes = Process::of_stack(&admin_ports);
    let servers = layout.infra_ports().context("the bench starts its own servers")?;
    processes.extend([
        Process::server("nats-server", servers.nats),
        Process::server("postgres", servers.postgres),
        Process::server("redis-server", servers.redis),
    ]);

    println!("bench: the storage floor");
    let floor = Floor::measure(&urls.postgres, &urls.nats).await?;
    println!(
        "  commit p50 {:.2} ms, {:.0} commits/s; publish p50 {:.2} ms, {:.0} publishes/s pipelined",
        floor.commit.ms_at(0.5),
        floor.commits_per_second,
        floor.publish.ms_at(0.5),
        floor.publishes_per_second
    );

    // On a quiet stack, before the checkouts: a saturated step leaves work
    // (emails, cart clears) behind it.
    println!("bench: the edge (GetProduct direct and through the gateway, AddItem)");
    let inventory = layout
        .services
        .iter()
        .find(|p| *p.service == shop_runtime::registry::INVENTORY)
        .context("the bench layout has svc-inventory")?;
    let edge = load::edge(gateway, inventory.grpc_port, 500, 1000, 10).await?;
    println!("bench: what a checkout costs the servers (one step at 50/s)");
    let counting = load::Options {
        rates: vec![50],
        ..options.load.clone()
    };
    let before = Counters::read(&urls.postgres, &urls.nats).await?;
    let counted = load::steps(&[gateway], &processes, &counting).await?;
    let after = Counters::read(&urls.postgres, &urls.nats).await?;
    let settled = counted.iter().map(Step::settled).sum::<u64>().max(1) as f64;
    let per_checkout = after.minus(&before, settled);
    println!(
        "  {:.1} commits ({:.1} WAL flushes) and {:.1} events stored per checkout",
        per_checkout.commits, per_checkout.wal_syncs, per_checkout.publishes
    );

    println!("bench: load steps");
    let steps = load::steps(&[gateway], &processes, &options.load).await?;
    let hot = match options.hot_rates.is_empty() {
        true => Vec::new(),
        false => {
            println!("bench: one hot SKU");
            let hot = load::Options {
                rates: options.hot_rates.clone(),
                hot_sku: true,
                ..options.load.clone()
            };
            load::steps(&[gateway], &processes, &hot).await?
        }
    };
    let peak_rss_mib = processes
        .iter()
        .filter(|p| !p.server)
        .map(|p| (p.name, p.peak_rss_mib()))
        .collect();
    Ok(Report {
        floor,
        per_checkout,
        steps,
        hot,
        edge: Some(edge),
        peak_rss_mib,
    })
}

impl Floor {
    async fn measure(postgres: &str, nats: &str) -> anyhow::Result<Self> {
        const COMMITS: usize = 2_000;
        const PUBLISHES: usize = 2_000;
        const PIPELINED: usize = 20_000;
        const WINDOW: usize = 256;
        const CLIENTS: usize = 16;
        const FOR: Duration = Duration::from_secs(5);

        let created = shop_infra::infra::create_database(postgres, "bench_floor").await?;
        let url = shop_infra::infra::database_url(postgres, "bench_floor");
        let mut one = PgConnection::connect(&url).await?;
        if created {
            sqlx::query("CREATE TABLE IF NOT EXISTS floor (id bigserial PRIMARY KEY, v int NOT NULL)")
                .execute(&mut one)
                .await?;
        }
        let mut commit = Latencies::default();
        for n in 0..COMMITS {
            let began = Instant::now();
            sqlx::query("INSERT INTO floor (v) VALUES ($1)")
                .bind(n as i32)
                .execute(&mut one)
                .await?;
            commit.record(began.elapsed());
        }
        let pool = PgPool::connect(&url).await?;
        let until = Instant::now() + FOR;
        let began = Instant::now();
        let counts = join_all((0..CLIENTS).map(|_| {
            let pool = pool.clone();
            async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    sqlx::query("INSERT INTO floor (v) VALUES (1)").execute(&pool).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            }
        }))
        .await;
        let commits: u64 = counts
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .sum();
        let commits_per_second = commits as f64 / began.elapsed().as_secs_f64();
        pool.close().await;

        let client = async_nats::connect(nats).await?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: "BENCH_FLOOR".into(),
                subjects: vec!["bench.floor".into()],
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let payload = bytes::Bytes::from(vec![b'x'; 256]);
        let mut publish = Latencies::default();
        for _ in 0..PUBLISHES {
            let began = Instant::now();
            js.publish("bench.floor", payload.clone()).await?.await?;
            publish.record(began.elapsed());
        }
        let began = Instant::now();
        for _ in 0..PIPELINED / WINDOW {
            let mut acks = Vec::with_capacity(WINDOW);
            for _ in 0..WINDOW {
                acks.push(js.publish("bench.floor", payload.clone()).await?);
            }
            for ack in join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await {
                ack?;
            }
        }
        let publishes_per_second = (PIPELINED / WINDOW * WINDOW) as f64 / began.elapsed().as_secs_f64();
        drop(stream);
        js.delete_stream("BENCH_FLOOR").await?;
        Ok(Self {
            commit,
            commits_per_second,
            publish,
            publishes_per_second,
        })
    }

    /// One checkout's storage time were its commits and publishes made one
    /// after another: every one counted, so an upper bound of the floor of
    /// its critical path (the email and the cart's clearing run beside it).
    fn latency_ms(&self, per: &PerCheckout) -> f64 {
        per.commits * self.commit.ms_at(0.5) + per.publishes * self.publish.ms_at(0.5)
    }

    /// The checkouts a second the servers could take, the scarcer of the two.
    fn bound_per_second(&self, per: &PerCheckout) -> f64 {
        (self.commits_per_second / per.commits.max(f64::EPSILON))
            .min(self.publishes_per_second / per.publishes.max(f64::EPSILON))
    }
}

/// Server-side counters: transactions, WAL flushes, stored events.
struct Counters {
    commits: i64,
    wal_syncs: i64,
    events: u64,
}

impl Counters {
    async fn read(postgres: &str, nats: &str) -> anyhow::Result<Self> {
        let mut server = PgConnection::connect(postgres).await?;
        let databases: Vec<&str> = layout::SERVICES.iter().filter_map(|s| s.database).collect();
        let commits: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(xact_commit), 0)::bigint FROM pg_stat_database WHERE datname = ANY($1)",
        )
        .bind(&databases)
        .fetch_one(&mut server)
        .await?;
        let wal_syncs: i64 = sqlx::query_scalar("SELECT wal_sync FROM pg_stat_wal")
            .fetch_one(&mut server)
            .await?;
        let js = jetstream::new(async_nats::connect(nats).await?);
        let mut events = 0;
        for config in shop_runtime::topology::streams()? {
            if config.name == shop_runtime::dlq::STREAM {
                continue;
            }
            let mut stream = js.get_stream(&config.name).await?;
            events += stream.info().await?.state.messages;
        }
        Ok(Self {
            commits,
            wal_syncs,
            events,
        })
    }

    fn minus(&self, before: &Self, checkouts: f64) -> PerCheckout {
        PerCheckout {
            commits: (self.commits - before.commits) as f64 / checkouts,
            wal_syncs: (self.wal_syncs - before.wal_syncs) as f64 / checkouts,
            publishes: self.events.saturating_sub(before.events) as f64 / checkouts,
        }
    }
}

impl Report {
    fn markdown(&self) -> String {
        let floor = &self.floor;
        let per = &self.per_checkout;
        let floor_ms = floor.latency_ms(per);
        let bound = floor.bound_per_second(per);
        let knee = load::knee(&self.steps);
        let mut md = String::new();
        let _ = writeln!(md, "## Checkout speed against this machine's limits\n");
        let _ = writeln!(
            md,
            "Release build, durable storage (PostgreSQL `fsync` and `synchronous_commit` on, NATS \
             `sync_interval: always`), {} cores; stack, servers and load generator on the one machine.\n",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let mut rows = vec![
            (
                "PostgreSQL commit, one client".to_owned(),
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms",
                    floor.commit.ms_at(0.5),
                    floor.commit.ms_at(0.99)
                ),
            ),
            (
                "PostgreSQL commits/s, 16 clients".to_owned(),
                format!("{:.0}", floor.commits_per_second),
            ),
            (
                "JetStream publish, awaited".to_owned(),
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms",
                    floor.publish.ms_at(0.5),
                    floor.publish.ms_at(0.99)
                ),
            ),
            (
                "JetStream publishes/s, pipelined".to_owned(),
                format!("{:.0}", floor.publishes_per_second),
            ),
            (
                "one checkout, counted".to_owned(),
                format!(
                    "{:.1} commits ({:.1} WAL flushes), {:.1} events",
                    per.commits, per.wal_syncs, per.publishes
                ),
            ),
            (
                "storage floor of a checkout (all of them in series)".to_owned(),
                format!("{floor_ms:.1} ms"),
            ),
            (
                "bound on checkouts/s by storage (scarcer server)".to_owned(),
                format!("{bound:.0}"),
            ),
        ];
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if let Some(step) = self.steps.iter().filter(|s| s.clean()).max_by_key(|s| s.rate) {
            let (services, servers) = (step.cpu_total_ms(), step.server_cpu_ms.values().sum::<f64>());
            rows.push((
                format!("CPU per checkout, services + servers (at {}/s)", step.rate),
                format!("{services:.1} + {servers:.1} ms"),
            ));
            rows.push((
                format!("bound on checkouts/s by CPU ({cores} cores)"),
                format!("{:.0}", cores * 1000.0 / (services + servers).max(f64::EPSILON)),
            ));
        }
        let _ = writeln!(md, "| the floor | measured |\n|---|---|");
        for (what, value) in rows {
            let _ = writeln!(md, "| {what} | {value} |");
        }
        md.push('\n');

        let _ = writeln!(
            md,
            "| offered/s | settled/s | p50 ms | p90 ms | p99 ms | max ms | p50 / floor | errors | CPU ms per checkout: services | servers |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
        for step in &self.steps {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}× | {} | {:.2} | {:.2} |",
                step.rate,
                step.achieved(),
                step.settle.ms_at(0.5),
                step.settle.ms_at(0.9),
                step.settle.ms_at(0.99),
                step.settle.max_ms(),
                step.settle.ms_at(0.5) / floor_ms.max(f64::EPSILON),
                step.errors.total() + step.shed + step.offered.saturating_sub(step.settled()),
                step.cpu_total_ms(),
                step.server_cpu_ms.values().sum::<f64>()
            );
        }
        for step in self.steps.iter().chain(&self.hot).filter(|s| s.errors.total() > 0) {
            let hot = if step.oversold.is_some() { " (one hot SKU)" } else { "" };
            let _ = writeln!(md, "\nFailed calls at {}/s{hot}: {}.", step.rate, step.errors);
        }
        let _ = writeln!(
            md,
            "\nKnee (p99 ≤ {} ms, no errors): **{}**; achieved/bound {:.0} %.\n",
            load::KNEE_P99_MS,
            knee.map_or("below the lowest rate".to_owned(), |k| format!("{k} checkouts/s")),
            knee.map_or(0.0, |k| f64::from(k) / bound.max(f64::EPSILON) * 100.0)
        );
        if !self.hot.is_empty() {
            let _ = writeln!(md, "| one hot SKU, buyers/s | p50 ms | p99 ms | confirmed | oversold |");
            let _ = writeln!(md, "|---|---|---|---|---|");
            for step in &self.hot {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} | {:.1} | {} | {} |",
                    step.rate,
                    step.settle.ms_at(0.5),
                    step.settle.ms_at(0.99),
                    step.outcomes.get("ORDER_STATUS_CONFIRMED").copied().unwrap_or(0),
                    step.oversold.unwrap_or(0)
                );
            }
            md.push('\n');
        }
        if let Some(edge) = &self.edge {
            let _ = writeln!(md, "| the edge | p50 ms | p99 ms | errors |\n|---|---|---|---|");
            let _ = writeln!(
                md,
                "| GetProduct at {}/s, straight to svc-inventory | {:.2} | {:.2} | |",
                edge.calls_per_second,
                edge.direct.ms_at(0.5),
                edge.direct.ms_at(0.99)
            );
            let _ = writeln!(
                md,
                "| the same through the gateway (adds {:.2} ms at p50) | {:.2} | {:.2} | |",
                edge.through_gateway.ms_at(0.5) - edge.direct.ms_at(0.5),
                edge.through_gateway.ms_at(0.5),
                edge.through_gateway.ms_at(0.99)
            );
            let _ = writeln!(
                md,
                "| AddItem at {}/s through the gateway | {:.2} | {:.2} | {} |\n",
                edge.cart_per_second,
                edge.cart.ms_at(0.5),
                edge.cart.ms_at(0.99),
                edge.cart_errors.total()
            );
        }
        let rss: Vec<String> = self
            .peak_rss_mib
            .iter()
            .map(|(name, mib)| format!("{name} {mib:.0} MiB"))
            .collect();
        let _ = writeln!(md, "Peak RSS: {}.\n", rss.join(", "));
        let _ = writeln!(md, "![latency against offered rate](latency.svg)\n");
        let _ = writeln!(md, "![CPU per checkout by service](cpu.svg)");
        md
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("latency.svg"), plot::latency(&self.steps))?;
        std::fs::write(dir.join("cpu.svg"), plot::cpu(&self.steps))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies(ms: &[u64]) -> Latencies {
        let mut latencies = Latencies::default();
        for ms in ms {
            latencies.record(Duration::from_millis(*ms));
        }
        latencies
    }

    #[test]
    fn the_report_sets_each_step_against_the_floor_and_both_bounds() {
        let floor = Floor {
            commit: latencies(&[1]),
            commits_per_second: 10_000.0,
            publish: latencies(&[2]),
            publishes_per_second: 5_000.0,
        };
        let per_checkout = PerCheckout {
            commits: 20.0,
            wal_syncs: 10.0,
            publishes: 5.0,
        };
        // 20 × 1 ms + 5 × 2 ms; storage allows min(10000/20, 5000/5) = 500/s.
        assert_eq!(floor.latency_ms(&per_checkout).round(), 30.0);
        assert_eq!(floor.bound_per_second(&per_checkout).round(), 500.0);
        let step = Step {
            rate: 50,
            offered: 3,
            seconds: 1.0,
            settle: latencies(&[60, 60, 60]),
            cpu_ms: [("svc-order", 4.0)].into(),
            server_cpu_ms: [("postgres", 6.0)].into(),
            ..Step::default()
        };
        let report = Report {
            floor,
            per_checkout,
            steps: vec![step],
            hot: Vec::new(),
            edge: None,
            peak_rss_mib: vec![("svc-order", 20.0)],
        };
        let md = report.markdown();
        for row in [
            "| storage floor of a checkout (all of them in series) | 30.0 ms |",
            "| bound on checkouts/s by storage (scarcer server) | 500 |",
            "| CPU per checkout, services + servers (at 50/s) | 4.0 + 6.0 ms |",
            "| 50 | 3 | 60.0 | 60.0 | 60.0 | 60.0 | 2.0× | 0 | 4.00 | 6.00 |",
            "Knee (p99 ≤ 250 ms, no errors): **50 checkouts/s**",
        ] {
            assert!(md.contains(row), "{row:?} not in\n{md}");
        }
    }
}
