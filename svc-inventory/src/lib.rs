//! svc-inventory: the catalog and the stock.
//!
//! Serves `shop.catalog.v1.CatalogService` and
//! `shop.inventory.v1.InventoryService`, and plays the inventory part of the
//! checkout saga (see [`saga`]): reservations of all lines or none under row
//! locks, committed on payment, released on failure, cancellation or expiry.

mod api;
mod browse;
mod changes;
pub mod config;
pub mod domain;
mod products;
pub mod saga;
pub mod stock;

use shop_proto::{
    catalog::v1::catalog_service_server::CatalogServiceServer,
    inventory::v1::inventory_service_server::InventoryServiceServer,
};
use shop_runtime::{
    CancellationToken, Listeners, grpc,
    host::{Host, HostError},
    outbox::Outbox,
    registry,
};

pub use config::Config;

/// Public services served on the gRPC port.
pub const SERVICES: &[&str] = registry::INVENTORY.serves;

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = Host::new(&config.service.basics, shutdown);
    let pool = host
        .postgres(&config.service.database, sqlx::migrate!("./migrations"))
        .await?;
    let bus = host.nats(&config.service.messaging).await?;
    let outbox = Outbox::new("svc-inventory");
    host.spawn_relay(&bus, &pool, &outbox);
    let saga = |consumer| saga::InventorySaga {
        pool: pool.clone(),
        outbox: outbox.clone(),
        reservation_ttl: config.reservation_ttl,
        consumer,
    };
    let (orders, payments, sweeper) = (
        saga(saga::ORDERS_CONSUMER),
        saga(saga::PAYMENTS_CONSUMER),
        saga("sweeper"),
    );
    host.spawn_consumer(&bus, saga::ORDERS_CONSUMER, orders).await?;
    host.spawn_consumer(&bus, saga::PAYMENTS_CONSUMER, payments).await?;
    host.spawn(saga::sweep_expired(sweeper, config.sweep_interval, host.shutdown()));

    let api = api::InventoryApi { pool, outbox };
    let (router, health) = grpc::router_with_basics(SERVICES, config.service.identity.clone())?;
    let router = router
        .add_service(CatalogServiceServer::new(api.clone()))
        .add_service(InventoryServiceServer::new(api));
    host.serve(router, health, listeners).await
}
