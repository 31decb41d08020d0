//! Cart operations through the gateway (the workload is
//! `shop_harness::bench::cart`, the same as svc-cart's `cart_ops` measures
//! directly), each call carrying a bearer token the gateway verifies (EdDSA,
//! JWKS file), at several concurrencies, with throughput and p50/p99
//! latency.
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

use std::time::Duration;

use shop_harness::{
    Service, Stack, StackOptions,
    bench::{
        cart::{self, CartClient, Cell, Op},
        env_list, env_number,
    },
};
use shop_proto::cart::v1::cart_service_client::CartServiceClient;
use support::{Gateway, Metadata};

/// One client per user, each on its own connection, with the user's token.
async fn clients(gateway: &Gateway, concurrency: u64) -> Vec<CartClient<Metadata>> {
    let mut clients = Vec::new();
    for worker in 0..concurrency {
        let user = format!("bench-{concurrency}-{worker}");
        clients.push(CartServiceClient::new(gateway.as_user(&user, &["customer"]).await));
    }
    clients
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_number("CART_GATEWAY_BENCH_SECONDS", 5);
    let concurrencies: Vec<u64> = env_list("CART_GATEWAY_BENCH_CONCURRENCY", "1,8,32");
    let duration = Duration::from_secs(seconds);
    println!(
        "command: CART_GATEWAY_BENCH_SECONDS={seconds} CART_GATEWAY_BENCH_CONCURRENCY={} cargo bench -p svc-gateway --bench cart_through_gateway",
        concurrencies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );

    let options =
        StackOptions::default()
            .with(Service::Cart)
            .setting(Service::Cart, "CART_MAX_QUANTITY", cart::MAX_QUANTITY);
    let stack = Stack::start_with(options).await?;
    let mut settings = stack.url_settings();
    settings.extend([
        ("RATE_LIMIT_USER_PER_SECOND".to_owned(), "1000000".to_owned()),
        ("RATE_LIMIT_USER_BURST".to_owned(), "1000000".to_owned()),
    ]);
    let gateway = Gateway::start(settings).await;
    gateway.channel().await;

    // Warm up connections, the catalog's statements, Redis scripts and the
    // gateway's token cache.
    let warm = clients(&gateway, 4).await;
    cart::run(&warm, Op::AddItem, Duration::from_secs(1)).await?;
    cart::run(&warm, Op::GetCart, Duration::from_millis(500)).await?;

    println!(
        "CartService through svc-gateway (bearer token, one user and connection per caller), {seconds}s per row; latency in ms"
    );
    let table = Cell::table();
    for &concurrency in &concurrencies {
        let users = clients(&gateway, concurrency).await;
        cart::fill(&users).await?;
        for op in Op::ALL {
            let cell = cart::run(&users, op, duration).await?;
            table.row(cell.row(op, concurrency));
        }
    }
    // Dropped in reverse order: the gateway, then the stack.
    Ok(())
}
