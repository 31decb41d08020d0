//! `cargo xtask load`: checkouts through the gateway at fixed arrival rates.
//!
//! Open model: each step offers `rate` checkouts a second on a schedule,
//! whether or not earlier ones have finished, so a stall shows as latency
//! instead of as fewer requests (no coordinated omission). A checkout is a
//! customer's: a direct PlaceOrder or the cart (AddItem, Checkout), paid by
//! card (one in ten declined), then watched with WatchOrder until it is
//! confirmed or cancelled. With `--hot-sku` every checkout buys the same SKU,
//! whose stock covers half of them: none may be oversold.
//!
//! Per step it reports what was offered and achieved, accepted → settled
//! percentiles, the call itself (scheduled → accepted), errors by gRPC code
//! and each service's CPU per checkout (from `/proc`); at the end each
//! service's peak RSS and the knee: the highest rate with p99 under 250 ms
//! and no error.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use rand::Rng;
use shop_measure::{Errors, Latencies, Table, ms};
use shop_proto::{
    cart::v1::{AddItemRequest, CheckoutRequest, cart_service_client::CartServiceClient},
    inventory::v1::{GetStockRequest, RestockRequest, inventory_service_client::InventoryServiceClient},
    order::v1::{
        OrderLine, OrderStatus, PlaceOrderRequest, WatchOrderRequest, order_service_client::OrderServiceClient,
    },
};
use shop_runtime::registry::ServiceSpec;
use shop_runtime::upstream::Balanced;
use tokio::{task::JoinSet, time::Instant};
use tonic::{metadata::AsciiMetadataValue, transport::Channel};

use crate::client::{authorized, gateway_channel, issue_token};

/// SKUs with plenty of stock, restocked before each step.
const SKUS: &[&str] = &["SKU-MUG-001", "SKU-TEE-001", "SKU-CAP-001", "SKU-PEN-001"];
const HOT_SKU: &str = "SKU-MUG-001";
/// A checkout slower than this is a failed one.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// The knee's bound on accepted → settled p99.
pub(crate) const KNEE_P99_MS: f64 = 250.0;
/// Checkouts in flight beyond which arrivals are shed (and counted): the
/// generator must not run this machine out of memory.
const MAX_IN_FLIGHT: usize = 20_000;

#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// Offered checkouts per second, one step each.
    pub rates: Vec<u32>,
    /// Length of each step.
    pub seconds: u64,
    /// Customers (the gateway limits each to 5 orders a second).
    pub users: usize,
    /// Percent of checkouts through the cart; the rest are direct orders.
    pub cart_percent: u32,
    pub hot_sku: bool,
    /// Replicas of every service in the stack of `up` (`up --replicas`):
    /// checkouts go round every gateway.
    pub replicas: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rates: vec![25, 50, 100, 200, 400],
            seconds: 20,
            users: 200,
            cart_percent: 50,
            hot_sku: false,
            replicas: 1,
        }
    }
}

/// One step's measurements.
#[derive(Default)]
pub(crate) struct Step {
    pub rate: u32,
    pub offered: u64,
    /// Arrivals not sent because `MAX_IN_FLIGHT` were in flight.
    pub shed: u64,
    pub seconds: f64,
    /// Scheduled → accepted (PlaceOrder or Checkout answered).
    pub call: Latencies,
    /// Accepted → confirmed or cancelled, as WatchOrder reports it.
    pub settle: Latencies,
    pub outcomes: BTreeMap<String, u64>,
    pub errors: Errors,
    /// CPU milliseconds per settled checkout, by service.
    pub cpu_ms: BTreeMap<&'static str, f64>,
    /// The same for the servers (NATS, PostgreSQL and its backends, Redis),
    /// when they were given.
    pub server_cpu_ms: BTreeMap<&'static str, f64>,
    /// `--hot-sku`: units confirmed beyond the stock the step was given.
    pub oversold: Option<i64>,
}

impl Step {
    pub(crate) fn settled(&self) -> u64 {
        self.settle.count()
    }

    pub(crate) fn achieved(&self) -> f64 {
        self.settled() as f64 / self.seconds.max(f64::EPSILON)
    }

    pub(crate) fn clean(&self) -> bool {
        self.errors.total() == 0 && self.shed == 0 && self.settled() == self.offered
    }

    pub(crate) fn cpu_total_ms(&self) -> f64 {
        self.cpu_ms.values().sum()
    }
}

/// The highest rate whose step had p99 within [`KNEE_P99_MS`] and no error.
pub(crate) fn knee(steps: &[Step]) -> Option<u32> {
    steps
        .iter()
        .filter(|s| s.clean() && s.settle.ms_at(0.99) <= KNEE_P99_MS)
        .map(|s| s.rate)
        .max()
}

/// A process of the stack under load, found by the port it listens on.
pub(crate) struct Process {
    pub name: &'static str,
    /// NATS, PostgreSQL or Redis rather than a service.
    pub server: bool,
    /// The listener; for a server, its children too (PostgreSQL's backends
    /// come and go, so they are looked up at each reading).
    pids: Vec<u32>,
}

impl Process {
    /// Each service's processes: those listening on its admin port.
    /// Every service, with the processes of all its replicas.
    pub(crate) fn of_stack(admin_ports: &[(&'static ServiceSpec, u16)]) -> Vec<Self> {
        let mut services: Vec<Self> = Vec::new();
        for (service, port) in admin_ports {
            let pids = crate::ports::listeners(*port);
            match services.iter_mut().find(|s| s.name == service.name) {
                Some(known) => known.pids.extend(pids),
                None => services.push(Self {
                    name: service.name,
                    server: false,
                    pids,
                }),
            }
        }
        services
    }

    /// A server listening on `port`, with every process it starts.
    pub(crate) fn server(name: &'static str, port: u16) -> Self {
        Self {
            name,
            server: true,
            pids: crate::ports::listeners(port),
        }
    }

    /// User + system CPU time so far, in milliseconds (for a server, its
    /// children's too, the exited ones included).
    fn cpu_ms(&self) -> f64 {
        let pids = match self.server {
            true => descendants(&self.pids),
            false => self.pids.clone(),
        };
        let ticks: u64 = pids.iter().filter_map(|pid| cpu_ticks(*pid, self.server)).sum();
        ticks as f64 * 1000.0 / clock_ticks()
    }

    /// The highest resident set size so far (`VmHWM`), in MiB.
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        self.pids
            .iter()
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .sum::<f64>()
            / 1024.0
    }
}

/// utime + stime of `pid` (fields 14 and 15 of its stat), with its waited-for
/// children's (16 and 17) when asked.
fn cpu_ticks(pid: u32, with_children: bool) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces, state is field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let own = field(14)? + field(15)?;
    Some(match with_children {
        true => own + field(16)? + field(17)?,
        false => own,
    })
}

/// `roots` and every process below them.
fn descendants(roots: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut all = roots.to_vec();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    all
}

/// `CLK_TCK`: the unit of `/proc/<pid>/stat`'s times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The customers, their clients and the admin who restocks.
struct Shop {
    /// Round every gateway.
    channel: Balanced,
    customers: Vec<Customer>,
    admin: AsciiMetadataValue,
    options: Options,
    run: String,
}

struct Customer {
    bearer: AsciiMetadataValue,
    /// One cart per customer: a customer's cart checkouts take turns.
    cart: tokio::sync::Mutex<()>,
}

/// Runs every step of `options` against the gateways on `gateway_ports`.
pub(crate) async fn steps(
    gateway_ports: &[u16],
    processes: &[Process],
    options: &Options,
) -> anyhow::Result<Vec<Step>> {
    let shop = Arc::new(Shop::open(gateway_ports, options).await?);
    let table = Table::new(&[
        "offered/s",
        "settled/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "call p99",
        "errors",
        "CPU ms",
    ]);
    let mut steps = Vec::new();
    for (number, &rate) in options.rates.iter().enumerate() {
        let step = shop.step(number, rate, processes).await?;
        table.row(vec![
            rate.to_string(),
            format!("{:.0}", step.achieved()),
            ms(step.settle.ms_at(0.5)),
            ms(step.settle.ms_at(0.9)),
            ms(step.settle.ms_at(0.99)),
            ms(step.settle.max_ms()),
            ms(step.call.ms_at(0.99)),
            format!(
                "{}",
                step.errors.total() + step.shed + step.offered.saturating_sub(step.settled())
            ),
            format!("{:.2}", step.cpu_total_ms()),
        ]);
        let by_service: Vec<String> = step
            .cpu_ms
            .iter()
            .map(|(name, ms)| format!("{} {ms:.2}", name.trim_start_matches("svc-")))
            .collect();
        println!("  CPU ms per checkout: {}", by_service.join(", "));
        if !step.server_cpu_ms.is_empty() {
            let by_server: Vec<String> = step
                .server_cpu_ms
                .iter()
                .map(|(n, ms)| format!("{n} {ms:.2}"))
                .collect();
            println!("  servers' CPU ms per checkout: {}", by_server.join(", "));
        }
        if step.errors.total() > 0 {
            println!("  errors: {}", step.errors);
        }
        if let Some(oversold) = step.oversold {
            println!("  hot SKU: {oversold} units oversold");
        }
        steps.push(step);
    }
    Ok(steps)
}

impl Shop {
    async fn open(gateway_ports: &[u16], options: &Options) -> anyhow::Result<Self> {
        let channel = gateway_channel(*gateway_ports.first().context("no gateway")?).await?;
        let admin_token = issue_token(&channel, "load-admin", &["admin"]).await?;
        let admin: AsciiMetadataValue = format!("Bearer {admin_token}").parse()?;
        let run = format!("{:x}", rand::rng().random::<u32>());
        let mut customers = Vec::with_capacity(options.users);
        for n in 0..options.users {
            // Issued with the admin's token: the anonymous limit would pace this.
            let request = shop_proto::auth::v1::IssueTokenRequest {
                user_id: format!("load-{run}-{n}"),
                roles: vec!["customer".into()],
            };
            let issuer = shop_proto::auth::v1::dev_auth_service_client::DevAuthServiceClient::new(channel.clone());
            let token = patiently(|| {
                let mut issuer = issuer.clone();
                let request = authorized(&admin, request.clone());
                async move { issuer.issue_token(request).await }
            })
            .await
            .context("issuing customers' tokens (the gateway needs DEV_AUTH=on, as `up` runs it)")?
            .access_token;
            customers.push(Customer {
                bearer: format!("Bearer {token}").parse()?,
                cart: tokio::sync::Mutex::new(()),
            });
        }
        Ok(Self {
            channel: crate::client::gateways(gateway_ports),
            customers,
            admin,
            options: options.clone(),
            run,
        })
    }

    async fn step(self: &Arc<Self>, number: usize, rate: u32, processes: &[Process]) -> anyhow::Result<Step> {
        let wanted = u64::from(rate) * self.options.seconds;
        let hot_stock = match self.options.hot_sku {
            // Half the buyers can have one.
            true => Some(self.stock_exactly(HOT_SKU, (wanted / 2) as i64).await?),
            false => {
                for sku in SKUS {
                    self.stock_at_least(sku, 2 * wanted as i64).await?;
                }
                None
            }
        };
        let cpu_before: Vec<f64> = processes.iter().map(Process::cpu_ms).collect();
        let results = Arc::new(Mutex::new(Step {
            rate,
            ..Step::default()
        }));
        let confirmed_units = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let began = Instant::now();
        let mut tasks = JoinSet::new();
        for n in 0..wanted {
            let scheduled = began + every.mul_f64(n as f64);
            tokio::time::sleep_until(scheduled).await;
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                results.lock().map(|mut r| r.shed += 1).ok();
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (shop, results, confirmed_units, in_flight) = (
                self.clone(),
                results.clone(),
                confirmed_units.clone(),
                in_flight.clone(),
            );
            tasks.spawn(async move {
                shop.checkout(number, n, scheduled, &results, &confirmed_units).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        while tasks.join_next().await.is_some() {}
        let mut step = std::mem::take(&mut *results.lock().map_err(|_| anyhow::anyhow!("a checkout panicked"))?);
        step.rate = rate;
        step.offered = wanted;
        step.seconds = began.elapsed().as_secs_f64();
        let settled = step.settled().max(1) as f64;
        for (process, before) in processes.iter().zip(cpu_before) {
            let per_checkout = (process.cpu_ms() - before) / settled;
            match process.server {
                true => step.server_cpu_ms.insert(process.name, per_checkout),
                false => step.cpu_ms.insert(process.name, per_checkout),
            };
        }
        step.oversold = hot_stock.map(|stock| (confirmed_units.load(Ordering::Relaxed) as i64 - stock).max(0));
        Ok(step)
    }

    /// One customer's checkout, from its scheduled start to its end.
    async fn checkout(
        &self,
        step: usize,
        n: u64,
        scheduled: Instant,
        results: &Mutex<Step>,
        confirmed_units: &AtomicUsize,
    ) {
        let customer = &self.customers[n as usize % self.customers.len()];
        let (through_cart, declined, sku) = {
            let mut rng = rand::rng();
            let sku = match self.options.hot_sku {
                true => HOT_SKU,
                false => SKUS[rng.random_range(0..SKUS.len())],
            };
            (
                rng.random_range(0..100) < self.options.cart_percent,
                rng.random_range(0..10) == 0,
                sku,
            )
        };
        // Unique to the run, the step and the arrival: a step repeating a
        // rate must not replay the earlier one's orders.
        let key = format!("load-{}-{step}-{n}", self.run);
        let method = if declined { "pm_card_declined" } else { "pm_card_ok" };
        // A customer checks their cart out again only once the last
        // checkout of it has settled (svc-cart refuses it before): the turn
        // is held until then, and waiting for it counts as the call's time.
        let _turn = match through_cart {
            true => Some(customer.cart.lock().await),
            false => None,
        };
        let placed = match through_cart {
            true => self.through_cart(customer, sku, &key, method).await,
            false => self.place(customer, sku, &key, method).await,
        };
        let order_id = match placed {
            Ok(order_id) => order_id,
            Err(status) => {
                results.lock().map(|mut r| r.errors.record(&status)).ok();
                return;
            }
        };
        let accepted = Instant::now();
        let outcome = tokio::time::timeout(SETTLE_LIMIT, self.watch(customer, &order_id)).await;
        let mut results = match results.lock() {
            Ok(results) => results,
            Err(_) => return,
        };
        match outcome {
            Ok(Ok(status)) => {
                results.call.record(accepted - scheduled);
                results.settle.record(accepted.elapsed());
                *results.outcomes.entry(status.as_str_name().to_owned()).or_default() += 1;
                if status == OrderStatus::Confirmed {
                    confirmed_units.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(status)) => results.errors.record(&status),
            Err(_) => results
                .errors
                .record(&tonic::Status::deadline_exceeded("not settled within a minute")),
        }
    }

    async fn place(&self, customer: &Customer, sku: &str, key: &str, method: &str) -> Result<String, tonic::Status> {
        let request = PlaceOrderRequest {
            idempotency_key: key.to_owned(),
            lines: vec![OrderLine {
                sku: sku.to_owned(),
                quantity: 1,
                ..Default::default()
            }],
            payment_method: method.to_owned(),
        };
        let order = OrderServiceClient::new(self.channel.clone())
            .place_order(authorized(&customer.bearer, request))
            .await?;
        Ok(order.into_inner().order_id)
    }

    async fn through_cart(
        &self,
        customer: &Customer,
        sku: &str,
        key: &str,
        method: &str,
    ) -> Result<String, tonic::Status> {
        let mut cart = CartServiceClient::new(self.channel.clone());
        let item = AddItemRequest {
            sku: sku.to_owned(),
            quantity: 1,
        };
        cart.add_item(authorized(&customer.bearer, item)).await?;
        let checkout = CheckoutRequest {
            idempotency_key: key.to_owned(),
            payment_method: method.to_owned(),
        };
        Ok(cart
            .checkout(authorized(&customer.bearer, checkout))
            .await?
            .into_inner()
            .order_id)
    }

    /// The order's final status, as WatchOrder streams it.
    async fn watch(&self, customer: &Customer, order_id: &str) -> Result<OrderStatus, tonic::Status> {
        let request = WatchOrderRequest {
            order_id: order_id.to_owned(),
        };
        let mut updates = OrderServiceClient::new(self.channel.clone())
            .watch_order(authorized(&customer.bearer, request))
            .await?
            .into_inner();
        while let Some(order) = updates.message().await? {
            let status = order.status();
            if matches!(status, OrderStatus::Confirmed | OrderStatus::Cancelled) {
                return Ok(status);
            }
        }
        Err(tonic::Status::unavailable("the watch ended before the order did"))
    }

    async fn stock(&self, sku: &str) -> anyhow::Result<i64> {
        let inventory = InventoryServiceClient::new(self.channel.clone());
        let stock = patiently(|| {
            let mut inventory = inventory.clone();
            let request = authorized(&self.admin, GetStockRequest { sku: sku.to_owned() });
            async move { inventory.get_stock(request).await }
        })
        .await
        .with_context(|| format!("GetStock {sku}"))?;
        Ok(stock.available)
    }

    async fn restock(&self, sku: &str, quantity: i64) -> anyhow::Result<()> {
        let inventory = InventoryServiceClient::new(self.channel.clone());
        patiently(|| {
            let mut inventory = inventory.clone();
            let request = RestockRequest {
                sku: sku.to_owned(),
                quantity,
            };
            let request = authorized(&self.admin, request);
            async move { inventory.restock(request).await }
        })
        .await
        .with_context(|| format!("Restock {sku}"))?;
        Ok(())
    }

    async fn stock_at_least(&self, sku: &str, units: i64) -> anyhow::Result<()> {
        let available = self.stock(sku).await?;
        if available < units {
            self.restock(sku, units - available).await?;
        }
        Ok(())
    }

    /// Tops `sku` up to `units` available, and returns what is available
    /// (more, when more was already there).
    async fn stock_exactly(&self, sku: &str, units: i64) -> anyhow::Result<i64> {
        self.stock_at_least(sku, units).await?;
        self.stock(sku).await
    }
}

/// `cargo xtask load`: the steps against the stack of `up` (with the port
/// offset), then each service's peak RSS and the knee.
pub(crate) async fn run(options: &Options) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this load generator is a debug build and shares the CPU with the stack; \
             for figures run `cargo run --release -p xtask -- load` against `cargo xtask up --release`"
        );
    }
    let layout = crate::layout::Layout::from_env()?.with_replicas(options.replicas)?;
    let gateways = layout.gateway_ports();
    let admin_ports: Vec<(&'static ServiceSpec, u16)> =
        layout.services.iter().map(|p| (p.service, p.admin_port)).collect();
    let processes = Process::of_stack(&admin_ports);
    println!(
        "load: {} s per step, {} customers, {}% through the cart{}",
        options.seconds,
        options.users,
        options.cart_percent,
        if options.hot_sku {
            ", every one buying one SKU"
        } else {
            ""
        }
    );
    let steps = steps(&gateways, &processes, options).await?;
    for process in &processes {
        println!("{:<14} peak RSS {:.1} MiB", process.name, process.peak_rss_mib());
    }
    match knee(&steps) {
        Some(rate) => println!("knee: {rate} checkouts/s (p99 ≤ {KNEE_P99_MS} ms, no errors)"),
        None => println!("knee: below the lowest rate offered"),
    }
    Ok(())
}

/// A call of the generator's own (tokens, stock) that waits out the
/// gateway's rate limit of its caller rather than failing.
async fn patiently<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            answered => return answered.map(tonic::Response::into_inner),
        }
    }
}

/// The edge's own costs: what the gateway adds to a call, and cart
/// operations at a fixed rate.
pub(crate) struct Edge {
    /// GetProduct straight to svc-inventory, and the same through the gateway.
    pub direct: Latencies,
    pub through_gateway: Latencies,
    pub calls_per_second: u32,
    /// AddItem through the gateway.
    pub cart: Latencies,
    pub cart_errors: Errors,
    pub cart_per_second: u32,
}

/// Measures [`Edge`]: `calls_per_second` GetProducts each way, both ways
/// in one schedule, then `cart_per_second` AddItems, for `seconds` each,
/// open model.
pub(crate) async fn edge(
    gateway_port: u16,
    inventory_port: u16,
    calls_per_second: u32,
    cart_per_second: u32,
    seconds: u64,
) -> anyhow::Result<Edge> {
    let shop = Arc::new(Shop::open(&[gateway_port], &Options::default()).await?);
    let inventory = gateway_channel(inventory_port).await?;
    // A plain channel each way: the client's own balancing is no part of
    // what the gateway adds.
    let gateway = gateway_channel(gateway_port).await?;
    let product = |channel: Channel, n: u64| {
        let request = authorized(
            &shop.customers[n as usize % shop.customers.len()].bearer,
            shop_proto::catalog::v1::GetProductRequest {
                sku: SKUS[n as usize % SKUS.len()].to_owned(),
            },
        );
        async move {
            shop_proto::catalog::v1::catalog_service_client::CatalogServiceClient::new(channel)
                .get_product(request)
                .await
                .map(drop)
        }
    };
    // The two ways take turns in one schedule (even calls direct, odd ones
    // through the gateway, each pair asking for the same SKU), so a stall of
    // this shared machine lands on both alike instead of on whichever step
    // ran at the time. Both warm up (connections, prepared statements) first.
    let either = |n: u64| {
        let channel = if n.is_multiple_of(2) { &inventory } else { &gateway };
        product(channel.clone(), n / 2)
    };
    at_rate_by::<2, _, _>(2 * calls_per_second, 2, either).await;
    let [(direct, _), (through_gateway, _)] = at_rate_by::<2, _, _>(2 * calls_per_second, seconds, either).await;
    let (cart, cart_errors) = at_rate(cart_per_second, seconds, |n| {
        let request = authorized(
            &shop.customers[n as usize % shop.customers.len()].bearer,
            AddItemRequest {
                sku: SKUS[n as usize % SKUS.len()].to_owned(),
                quantity: 1,
            },
        );
        let mut cart = CartServiceClient::new(shop.channel.clone());
        async move { cart.add_item(request).await.map(drop) }
    })
    .await;
    Ok(Edge {
        direct,
        through_gateway,
        calls_per_second,
        cart,
        cart_errors,
        cart_per_second,
    })
}

/// Calls `call(n)` at `rate` a second for `seconds`, each on schedule
/// whether or not earlier ones have answered; latency from the scheduled
/// start.
async fn at_rate<F, Fut>(rate: u32, seconds: u64, call: F) -> (Latencies, Errors)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let [only] = at_rate_by::<1, _, _>(rate, seconds, call).await;
    only
}

/// [`at_rate`], with call `n` counted in lane `n % LANES`.
async fn at_rate_by<const LANES: usize, F, Fut>(rate: u32, seconds: u64, mut call: F) -> [(Latencies, Errors); LANES]
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let began = Instant::now();
    let mut calls = JoinSet::new();
    for n in 0..u64::from(rate) * seconds {
        let scheduled = began + every.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        let answered = call(n);
        calls.spawn(async move { (n, answered.await, scheduled.elapsed()) });
    }
    let mut lanes: [(Latencies, Errors); LANES] = std::array::from_fn(|_| Default::default());
    while let Some(done) = calls.join_next().await {
        match done {
            Ok((n, answered, took)) => {
                let (latencies, errors) = &mut lanes[(n % LANES as u64) as usize];
                match answered {
                    Ok(()) => latencies.record(took),
                    Err(status) => errors.record(&status),
                }
            }
            Err(_) => lanes[0].1.record(&tonic::Status::internal("a call panicked")),
        }
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: u32, p99_ms: u64, errors: bool) -> Step {
        let mut settle = Latencies::default();
        settle.record(Duration::from_millis(p99_ms));
        let mut step = Step {
            rate,
            offered: 1,
            settle,
            ..Step::default()
        };
        if errors {
            step.errors.record(&tonic::Status::unavailable("down"));
        }
        step
    }

    #[test]
    fn the_knee_is_the_highest_rate_within_the_bound_and_without_errors() {
        let steps = [
            step(50, 20, false),
            step(100, 200, false),
            step(150, 30, true),
            step(200, 900, false),
        ];
        assert_eq!(knee(&steps), Some(100));
        assert_eq!(knee(&[step(50, 300, false)]), None);
    }

    #[test]
    fn a_process_cpu_time_is_read_from_proc() {
        let me = std::process::id();
        assert!(cpu_ticks(me, false).is_some());
        assert!(cpu_ticks(me, true) >= cpu_ticks(me, false));
        assert_eq!(descendants(&[me])[0], me);
    }
}
