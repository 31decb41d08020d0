//! svc-inventory: the catalog and the stock.
//!
//! Serves `shop.catalog.v1.CatalogService` and
//! `shop.inventory.v1.InventoryService`, and plays the inventory part of the
//! checkout saga (see [`saga`]): reservations of all lines or none under row
//! locks, committed on payment, released on failure, cancellation or expiry.

mod api;
pub mod config;
mod error;
pub mod saga;
pub mod stock;

use std::sync::Arc;

use shop_proto::{
    catalog::v1::catalog_service_server::CatalogServiceServer,
    inventory::v1::inventory_service_server::InventoryServiceServer,
};
use shop_runtime::{CancellationToken, Listeners, admin, consumer, db, grpc, outbox::Outbox, topology};

pub use config::Config;

/// Public services served on the gRPC port.
pub const SERVICES: &[&str] = &["shop.catalog.v1.CatalogService", "shop.inventory.v1.InventoryService"];

/// Migrates the database (schema and seeded catalog).
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    db::migrate(pool, sqlx::migrate!("./migrations")).await
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = db::connect(
        &config.messaging.database_url,
        config.messaging.database_max_connections,
    )
    .await?;
    migrate(&pool).await?;
    let (nats, js) = shop_runtime::nats::connect(&config.messaging.nats_url, "svc-inventory").await?;
    topology::ensure_streams(&js).await?;
    let definitions = topology::ensure_consumers(&js, &[saga::ORDERS_CONSUMER, saga::PAYMENTS_CONSUMER]).await?;

    let outbox = Outbox::new("svc-inventory");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        outbox
            .relay(pool.clone(), js.clone(), config.messaging.outbox_poll_interval)
            .run(shutdown.clone()),
    );
    for definition in definitions {
        let handler = saga::InventorySaga {
            pool: pool.clone(),
            outbox: outbox.clone(),
            reservation_ttl: config.reservation_ttl,
            consumer: if definition.name() == saga::ORDERS_CONSUMER {
                saga::ORDERS_CONSUMER
            } else {
                saga::PAYMENTS_CONSUMER
            },
        };
        tasks.spawn(consumer::run(
            js.clone(),
            definition,
            Arc::new(handler),
            config.messaging.consumer_concurrency,
            shutdown.clone(),
        ));
    }
    let sweeper = saga::InventorySaga {
        pool: pool.clone(),
        outbox: outbox.clone(),
        reservation_ttl: config.reservation_ttl,
        consumer: "sweeper",
    };
    tasks.spawn(saga::sweep_expired(sweeper, config.sweep_interval, shutdown.clone()));

    let ready = admin::database_and_nats_check(pool.clone(), nats);
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = admin::serve(listeners.admin, ready, async move { admin_shutdown.cancelled().await }).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });

    let api = api::InventoryApi { pool };
    let (router, health) = grpc::router_with_basics(SERVICES)?;
    health.set_serving::<CatalogServiceServer<api::InventoryApi>>().await;
    health.set_serving::<InventoryServiceServer<api::InventoryApi>>().await;
    let router = router
        .add_service(CatalogServiceServer::new(api.clone()))
        .add_service(InventoryServiceServer::new(api));
    tracing::info!(addr = ?listeners.grpc.local_addr().ok(), "svc-inventory serving");
    let served = grpc::serve(router, listeners.grpc, shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    served?;
    Ok(())
}
