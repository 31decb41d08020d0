//! Cart operations through the gateway: AddItem (a catalog lookup on
//! svc-inventory plus one Redis script), GetCart (one Redis MULTI) and
//! UpdateItem (one Redis script), each call carrying a bearer token the
//! gateway verifies (EdDSA, JWKS file), at several concurrencies, with
//! throughput and p50/p99 latency.
//!
//! ```sh
//! cargo bench -p svc-gateway --bench cart_through_gateway
//! CART_GATEWAY_BENCH_SECONDS=10 CART_GATEWAY_BENCH_CONCURRENCY=1,8,32,64 \
//!   cargo bench -p svc-gateway --bench cart_through_gateway
//! ```
//!
//! Every concurrent caller is its own user with its own token and its own
//! HTTP/2 connection, as separate browsers would be. The per-user rate limit
//! is raised to 1,000,000/s (`RATE_LIMIT_USER_PER_SECOND` and
//! `RATE_LIMIT_USER_BURST`) so the figures show the gateway's and svc-cart's
//! cost rather than the limiter's refusals; any refused call would show up
//! in the `errors` column. Everything — client, gateway, svc-cart,
//! redis-server, svc-inventory, PostgreSQL and the rest of the saga — shares
//! the same cores, so latencies include that contention.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use shop_proto::cart::v1::{
    AddItemRequest, ClearCartRequest, GetCartRequest, UpdateItemRequest, cart_service_client::CartServiceClient,
};
use support::{Gateway, Metadata, cart::CartServer};
use system_tests::Stack;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

type Carts = CartServiceClient<InterceptedService<Channel, Metadata>>;

const SKUS: [&str; 5] = [
    "SKU-MUG-001",
    "SKU-TEE-001",
    "SKU-CAP-001",
    "SKU-BAG-001",
    "SKU-PEN-001",
];
/// AddItem adds a unit per call; a worker empties its cart (untimed) after
/// this many adds (spread over the five SKUs) so that long runs stay under
/// `CART_MAX_QUANTITY`.
const ADDS_BEFORE_CLEAR: usize = 5_000;

#[derive(Debug, Clone, Copy)]
enum Op {
    AddItem,
    GetCart,
    UpdateItem,
}

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

async fn call(carts: &mut Carts, op: Op, i: usize) -> Result<(), tonic::Status> {
    let sku = SKUS[i % SKUS.len()].to_owned();
    match op {
        Op::AddItem => carts.add_item(AddItemRequest { sku, quantity: 1 }).await.map(drop),
        Op::GetCart => carts.get_cart(GetCartRequest {}).await.map(drop),
        Op::UpdateItem => carts
            .update_item(UpdateItemRequest {
                sku,
                quantity: i32::try_from(i % 10).unwrap_or(0) + 1,
            })
            .await
            .map(drop),
    }
}

struct Cell {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
}

/// Runs `op` from every client for `duration`.
async fn run(clients: &[Carts], op: Op, duration: Duration) -> anyhow::Result<Cell> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for client in clients {
        let mut client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                if matches!(op, Op::AddItem) && i > 0 && i.is_multiple_of(ADDS_BEFORE_CLEAR) {
                    client.clear_cart(ClearCartRequest {}).await?;
                }
                let call_started = Instant::now();
                match call(&mut client, op, i).await {
                    Ok(()) => {
                        histogram.record(u64::try_from(call_started.elapsed().as_micros()).unwrap_or(u64::MAX))?
                    }
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
                i += 1;
            }
            anyhow::Ok((histogram, errors))
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = BTreeMap::new();
    for worker in workers {
        let (histogram, worker_errors) = worker.await??;
        latency_us.add(histogram)?;
        for (code, count) in worker_errors {
            *errors.entry(code).or_default() += count;
        }
    }
    Ok(Cell {
        latency_us,
        errors,
        elapsed: started.elapsed(),
    })
}

/// One client per user, each on its own connection, with the user's token.
async fn clients(gateway: &Gateway, concurrency: u64) -> Vec<Carts> {
    let mut clients = Vec::new();
    for worker in 0..concurrency {
        let user = format!("bench-{concurrency}-{worker}");
        clients.push(CartServiceClient::new(gateway.as_user(&user, &["customer"]).await));
    }
    clients
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds = env_list("CART_GATEWAY_BENCH_SECONDS", "5")
        .first()
        .copied()
        .unwrap_or(5);
    let concurrencies = env_list("CART_GATEWAY_BENCH_CONCURRENCY", "1,8,32");
    let duration = Duration::from_secs(seconds);
    println!(
        "command: CART_GATEWAY_BENCH_SECONDS={seconds} CART_GATEWAY_BENCH_CONCURRENCY={} cargo bench -p svc-gateway --bench cart_through_gateway",
        concurrencies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );

    let stack = Stack::start().await?;
    // Every AddItem adds a unit: allow svc-cart's largest line quantity.
    let cart = CartServer::start(&stack, &[("CART_MAX_QUANTITY", "10000")]).await?;
    let mut settings = cart.upstreams(&stack).await;
    settings.extend([
        ("RATE_LIMIT_USER_PER_SECOND".to_owned(), "1000000".to_owned()),
        ("RATE_LIMIT_USER_BURST".to_owned(), "1000000".to_owned()),
    ]);
    let gateway = Gateway::start(settings).await;
    gateway.channel().await;

    // Warm up connections, the catalog's statements, Redis scripts and the
    // gateway's token cache.
    let warm = clients(&gateway, 4).await;
    run(&warm, Op::AddItem, Duration::from_secs(1)).await?;
    run(&warm, Op::GetCart, Duration::from_millis(500)).await?;

    println!(
        "CartService through svc-gateway (bearer token, one user and connection per caller), {seconds}s per row; latency in ms"
    );
    println!(
        "{:<11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
        "operation", "concurrency", "calls", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    for &concurrency in &concurrencies {
        let users = clients(&gateway, concurrency).await;
        // Every SKU in every cart (untimed), so UpdateItem always finds its line.
        for user in &users {
            for sku in SKUS {
                user.clone()
                    .add_item(AddItemRequest {
                        sku: sku.to_owned(),
                        quantity: 1,
                    })
                    .await?;
            }
        }
        for op in [Op::AddItem, Op::GetCart, Op::UpdateItem] {
            let cell = run(&users, op, duration).await?;
            let calls = cell.latency_us.len();
            let ms = |us: u64| us as f64 / 1000.0;
            let errors = if cell.errors.is_empty() {
                "0".to_owned()
            } else {
                cell.errors
                    .iter()
                    .map(|(code, count)| format!("{code}: {count}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "{:<11} {:>11} {:>9} {:>9.0} {:>9.2} {:>9.2} {:>9.2}  {}",
                format!("{op:?}"),
                concurrency,
                calls,
                calls as f64 / cell.elapsed.as_secs_f64(),
                ms(cell.latency_us.value_at_quantile(0.5)),
                ms(cell.latency_us.value_at_quantile(0.99)),
                ms(cell.latency_us.max()),
                errors,
            );
        }
    }
    // Dropped in reverse order: the gateway, svc-cart, then the stack.
    Ok(())
}
