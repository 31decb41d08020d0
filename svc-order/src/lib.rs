//! svc-order: orders and the order state machine.
//!
//! Serves `shop.order.v1.OrderService`. `PlaceOrder` is idempotent per user
//! and key, prices lines from the catalog, and writes the order together
//! with `orders.placed` (outbox). The [`saga`] module moves orders on
//! inventory and payment events through the state machine in [`domain`].

mod api;
mod catalog;
pub mod config;
pub mod domain;
mod error;
pub mod saga;
pub mod store;
mod watch;

use std::sync::Arc;

use shop_proto::order::v1::order_service_server::OrderServiceServer;
use shop_runtime::{CancellationToken, Listeners, admin, consumer, db, grpc, outbox::Outbox, topology};

pub use config::Config;

pub const SERVICES: &[&str] = &["shop.order.v1.OrderService"];

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
    let (nats, js) = shop_runtime::nats::connect(&config.messaging.nats_url, "svc-order").await?;
    topology::ensure_streams(&js).await?;
    let definitions = topology::ensure_consumers(&js, &[saga::INVENTORY_CONSUMER, saga::PAYMENTS_CONSUMER]).await?;

    let outbox = Outbox::new("svc-order");
    let announcer = watch::Announcer::new(nats.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        outbox
            .relay(pool.clone(), js.clone(), config.messaging.outbox_poll_interval)
            .run(shutdown.clone()),
    );
    for definition in definitions {
        let consumer_name = if definition.name() == saga::INVENTORY_CONSUMER {
            saga::INVENTORY_CONSUMER
        } else {
            saga::PAYMENTS_CONSUMER
        };
        let handler = saga::OrderSaga {
            pool: pool.clone(),
            outbox: outbox.clone(),
            announcer: announcer.clone(),
            consumer: consumer_name,
        };
        tasks.spawn(consumer::run(
            js.clone(),
            definition,
            Arc::new(handler),
            config.messaging.consumer_concurrency,
            shutdown.clone(),
        ));
    }
    let ready = admin::database_and_nats_check(pool.clone(), nats);
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = admin::serve(listeners.admin, ready, async move { admin_shutdown.cancelled().await }).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });

    let api = api::OrderApi {
        pool,
        outbox,
        catalog: catalog::Catalog::new(&config.catalog_url, config.catalog_timeout)?,
        accepted_payment_methods: config.accepted_payment_methods.clone(),
        announcer,
    };
    let (router, health) = grpc::router_with_basics(SERVICES)?;
    health.set_serving::<OrderServiceServer<api::OrderApi>>().await;
    let router = router.add_service(OrderServiceServer::new(api));
    tracing::info!(addr = ?listeners.grpc.local_addr().ok(), "svc-order serving");
    let served = grpc::serve(router, listeners.grpc, shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    served?;
    Ok(())
}
