//! svc-cart: shopping carts in Redis with a sliding TTL, and checkout from
//! the cart (`shop.cart.v1.CartService`).
//!
//! AddItem checks the SKU against the catalog (a copy kept fresh by its
//! changes, [`shop_catalog`]) and snapshots its name and price; limits are
//! enforced atomically in Redis ([`carts`]). Checkout places the order on
//! svc-order under the client's idempotency key and records and holds what
//! the order took; the [`saga`] consumer removes exactly that from the cart
//! once `orders.confirmed` arrives, or lets it go on `orders.cancelled`.
//! Calls to the catalog and to svc-order have deadlines and a circuit
//! breaker each ([`shop_runtime::breaker`]).

mod api;
pub mod carts;
mod catalog;
pub mod config;
mod error;
mod orders;
pub mod saga;

use std::{sync::Arc, time::Duration};

use shop_proto::cart::v1::cart_service_server::CartServiceServer;
use shop_runtime::{
    CancellationToken, Listeners, grpc,
    host::{Host, HostError},
    registry,
};

pub use config::Config;

pub const SERVICES: &[&str] = registry::CART.serves;

/// Time beyond the PlaceOrder deadline during which a checkout still counts
/// as under way (reply in transit, record being written).
const IN_FLIGHT_SLACK: Duration = Duration::from_secs(5);

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = Host::new(&config.basics, shutdown);
    let carts = carts::CartStore::new(
        config.redis_url.expose(),
        config.redis_timeout,
        carts::Limits {
            max_lines: config.max_lines,
            max_quantity: config.max_quantity,
        },
        carts::Expiries {
            cart: config.cart_ttl,
            checkout: config.checkout_ttl,
            in_flight: config.upstream.timeout + config.upstream.reach.connect_timeout + IN_FLIGHT_SLACK,
        },
    )
    .map_err(|e| HostError::setup("redis client", e))?;
    host.ready_when("redis", redis_answers(carts.clone()));
    let bus = host.nats(&config.messaging).await?;
    let catalog = shop_catalog::Catalog::on_host(&mut host, &bus, &config.catalog, &config.upstream).await?;
    let saga = saga::CartOrders { carts: carts.clone() };
    host.spawn_consumer(&bus, saga::ORDERS_CONSUMER, saga).await?;

    let api = api::CartApi {
        carts,
        catalog,
        orders: orders::Orders::new(&config.order, &config.upstream, host.shutdown()),
    };
    let (router, health) = grpc::router_with_basics(SERVICES, config.identity.clone())?;
    let router = router.add_service(CartServiceServer::new(api));
    host.serve(router, health, listeners).await
}

/// Ready while Redis answers PING.
fn redis_answers(carts: carts::CartStore) -> shop_runtime::admin::ReadinessCheck {
    Arc::new(move || {
        let carts = carts.clone();
        Box::pin(async move { carts.ping().await.map_err(|_| "redis unreachable".to_owned()) })
    })
}
