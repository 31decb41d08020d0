//! CartService latency and throughput: AddItem (a catalog lookup on
//! svc-inventory plus one Redis script), GetCart (one Redis MULTI) and
//! UpdateItem (one Redis script), called directly on svc-cart over gRPC at
//! several concurrencies. Everything runs in this process on real servers:
//! svc-cart on its own redis-server, svc-inventory on PostgreSQL, the rest of
//! the saga beside them, so the figures include the client's and the
//! servers' share of the same cores.
//!
//! ```sh
//! cargo bench -p svc-cart --bench cart_ops
//! CART_BENCH_SECONDS=10 CART_BENCH_CONCURRENCY=1,8,32,64 cargo bench -p svc-cart --bench cart_ops
//! ```

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shop_infra::RedisServer;
use shop_proto::cart::v1::{AddItemRequest, GetCartRequest, UpdateItemRequest, cart_service_client::CartServiceClient};
use shop_runtime::{CancellationToken, Listeners, config::EnvReader};
use system_tests::{AsUser, Service, Stack};
use tonic::transport::Channel;

const SKUS: [&str; 5] = [
    "SKU-MUG-001",
    "SKU-TEE-001",
    "SKU-CAP-001",
    "SKU-BAG-001",
    "SKU-PEN-001",
];

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

async fn call(
    client: &mut CartServiceClient<tonic::service::interceptor::InterceptedService<Channel, AsUser>>,
    op: Op,
    i: usize,
) -> Result<(), tonic::Status> {
    let sku = SKUS[i % SKUS.len()].to_owned();
    match op {
        Op::AddItem => client.add_item(AddItemRequest { sku, quantity: 1 }).await.map(drop),
        Op::GetCart => client.get_cart(GetCartRequest {}).await.map(drop),
        Op::UpdateItem => client
            .update_item(UpdateItemRequest {
                sku,
                quantity: i32::try_from(i % 10).unwrap_or(0) + 1,
            })
            .await
            .map(drop),
    }
}

/// Runs `op` from `concurrency` users for `duration`; returns the latencies
/// (µs) and how many calls completed.
async fn run(channel: &Channel, op: Op, concurrency: u64, duration: Duration) -> anyhow::Result<(Histogram<u64>, u64)> {
    let deadline = Instant::now() + duration;
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let mut client = CartServiceClient::with_interceptor(
            channel.clone(),
            AsUser::customer(&format!("bench-{concurrency}-{worker}")),
        );
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut i = 0usize;
            while Instant::now() < deadline {
                let started = Instant::now();
                call(&mut client, op, i).await?;
                histogram.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                i += 1;
            }
            anyhow::Ok(histogram)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for worker in workers {
        all.add(worker.await??)?;
    }
    let count = all.len();
    Ok((all, count))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds = env_list("CART_BENCH_SECONDS", "5").first().copied().unwrap_or(5);
    let concurrencies = env_list("CART_BENCH_CONCURRENCY", "1,8,32");
    let duration = Duration::from_secs(seconds);

    let stack = Stack::start().await?;
    let redis = RedisServer::start().await?;
    let config = svc_cart::Config::read(EnvReader::from_map([
        ("REDIS_URL", redis.url()),
        ("NATS_URL", stack.nats.url()),
        ("CATALOG_URL", stack.grpc_url(Service::Inventory)),
        ("ORDER_URL", stack.grpc_url(Service::Order)),
        // Every AddItem adds a unit; keep long runs clear of the line limit.
        ("CART_MAX_QUANTITY", "10000".to_owned()),
    ]))?;
    let listeners = Listeners::ephemeral().await?;
    let url = format!("http://{}", listeners.grpc.local_addr()?);
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(svc_cart::run(config, listeners, shutdown.clone()));
    system_tests::wait_serving(&url).await?;
    let channel = Channel::from_shared(url)?.connect().await?;

    // Warm up connections, prepared statements and script caches.
    run(&channel, Op::AddItem, 4, Duration::from_secs(1)).await?;

    println!("svc-cart CartService, direct gRPC, {seconds}s per row, one user per concurrent caller");
    println!(
        "{:<11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "operation", "concurrency", "calls", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    for &concurrency in &concurrencies {
        // AddItem first: it fills the carts GetCart and UpdateItem then use.
        for op in [Op::AddItem, Op::GetCart, Op::UpdateItem] {
            let (latencies, calls) = run(&channel, op, concurrency, duration).await?;
            let ms = |us: u64| us as f64 / 1000.0;
            println!(
                "{:<11} {:>11} {:>9} {:>9.0} {:>9.2} {:>9.2} {:>9.2}",
                format!("{op:?}"),
                concurrency,
                calls,
                calls as f64 / duration.as_secs_f64(),
                ms(latencies.value_at_quantile(0.5)),
                ms(latencies.value_at_quantile(0.99)),
                ms(latencies.max()),
            );
        }
    }
    shutdown.cancel();
    let _ = service.await;
    Ok(())
}
