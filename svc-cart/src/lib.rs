//! svc-cart: shopping carts in Redis with a sliding TTL, and checkout from
//! the cart (`shop.cart.v1.CartService`).
//!
//! AddItem checks the SKU against the catalog and snapshots its name and
//! price; limits are enforced atomically in Redis ([`carts`]). Checkout
//! places the order on svc-order under the client's idempotency key and
//! records what the order took; the [`saga`] consumer removes exactly that
//! from the cart once `orders.confirmed` arrives. Calls to the catalog and
//! to svc-order have deadlines and a circuit breaker each
//! ([`shop_runtime::breaker`]).

mod api;
pub mod carts;
mod catalog;
pub mod config;
mod error;
mod orders;
pub mod saga;

use std::{sync::Arc, time::Duration};

use shop_proto::cart::v1::cart_service_server::CartServiceServer;
use shop_runtime::{CancellationToken, Listeners, admin, consumer, grpc, host::HostError, topology};

pub use config::Config;

pub const SERVICES: &[&str] = shop_runtime::registry::CART.serves;

/// The durable consumers it runs, each declared in `nats/consumers/`.
pub const CONSUMERS: &[&str] = &[saga::ORDERS_CONSUMER];

/// Time beyond the PlaceOrder deadline during which a checkout still counts
/// as under way (reply in transit, record being written).
const IN_FLIGHT_SLACK: Duration = Duration::from_secs(5);

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), HostError> {
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
            in_flight: config.upstream.timeout + config.upstream.connect_timeout + IN_FLIGHT_SLACK,
        },
    )
    .map_err(|e| HostError::setup("redis client", e))?;
    let (nats, js) = shop_runtime::nats::connect(config.nats_url.expose(), "svc-cart").await?;
    topology::ensure_streams(&js).await?;
    let definitions = topology::ensure_consumers(&js, &[saga::ORDERS_CONSUMER]).await?;

    let mut tasks = tokio::task::JoinSet::new();
    for definition in definitions {
        tasks.spawn(consumer::run(
            js.clone(),
            definition,
            Arc::new(saga::CartOrders { carts: carts.clone() }),
            config.consumer_concurrency,
            shutdown.clone(),
        ));
    }
    let ready = readiness(carts.clone(), nats);
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = admin::serve(listeners.admin, ready, async move { admin_shutdown.cancelled().await }).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });

    let api = api::CartApi {
        carts,
        catalog: catalog::Catalog::new(&config.catalog_url, &config.upstream)
            .map_err(|e| HostError::setup("catalog client", e))?,
        orders: orders::Orders::new(&config.order_url, &config.upstream)
            .map_err(|e| HostError::setup("order client", e))?,
    };
    let (router, health) = grpc::router_with_basics(SERVICES)?;
    health.set_serving::<CartServiceServer<api::CartApi>>().await;
    let router = router.add_service(CartServiceServer::new(api));
    tracing::info!(addr = ?listeners.grpc.local_addr().ok(), "svc-cart serving");
    let served = grpc::serve(router, listeners.grpc, shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(served?)
}

/// Ready when Redis answers PING and the NATS connection is up.
fn readiness(carts: carts::CartStore, nats: async_nats::Client) -> admin::ReadinessCheck {
    Arc::new(move || {
        let carts = carts.clone();
        let nats = nats.clone();
        Box::pin(async move {
            carts.ping().await.map_err(|_| "redis unreachable".to_owned())?;
            if nats.connection_state() != async_nats::connection::State::Connected {
                return Err("NATS disconnected".into());
            }
            Ok(())
        })
    })
}
