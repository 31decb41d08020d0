//! CartService latency and throughput, called directly on svc-cart over
//! gRPC at several concurrencies (the workload is
//! `shop_harness::bench::cart`). Everything runs in this process on real
//! servers: svc-cart on its own redis-server, svc-inventory on PostgreSQL,
//! the rest of the saga beside them, so the figures include the client's and
//! the servers' share of the same cores.
//!
//! ```sh
//! cargo bench -p svc-cart --bench cart_ops
//! CART_BENCH_SECONDS=10 CART_BENCH_CONCURRENCY=1,8,32,64 cargo bench -p svc-cart --bench cart_ops
//! ```

use std::time::Duration;

use shop_harness::{
    AsUser, Service, Stack, StackOptions,
    bench::{
        cart::{self, CartClient, Cell, Op},
        env_list, env_number,
    },
};
use shop_proto::cart::v1::cart_service_client::CartServiceClient;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_number("CART_BENCH_SECONDS", 5);
    let concurrencies: Vec<u64> = env_list("CART_BENCH_CONCURRENCY", "1,8,32");
    let duration = Duration::from_secs(seconds);

    let options =
        StackOptions::default()
            .with(Service::Cart)
            .setting(Service::Cart, "CART_MAX_QUANTITY", cart::MAX_QUANTITY);
    let stack = Stack::start_with(options).await?;
    let channel = stack.channel(Service::Cart).await?;
    let clients = |concurrency: u64| -> Vec<CartClient<AsUser>> {
        (0..concurrency)
            .map(|worker| {
                let user = AsUser::customer(&format!("bench-{concurrency}-{worker}"));
                CartServiceClient::with_interceptor(channel.clone(), user)
            })
            .collect()
    };

    // Warm up connections, prepared statements and script caches.
    cart::run(&clients(4), Op::AddItem, Duration::from_secs(1)).await?;

    println!("svc-cart CartService, direct gRPC, {seconds}s per row, one user per concurrent caller");
    let table = Cell::table();
    for &concurrency in &concurrencies {
        let users = clients(concurrency);
        cart::fill(&users).await?;
        for op in Op::ALL {
            let cell = cart::run(&users, op, duration).await?;
            table.row(cell.row(op, concurrency));
        }
    }
    Ok(())
}
