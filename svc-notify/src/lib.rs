//! svc-notify: customer emails about their orders.
//!
//! Consumes `orders.confirmed` and `orders.cancelled` (durable
//! `notify-orders`, see [`saga`]) and sends one email per order event:
//! stored first, then sent, and resent until a sender accepts it (see
//! [`delivery`]). Emails go to an SMTP relay when `NOTIFY_SMTP_URL` is set,
//! otherwise to `.eml` files (see [`sender`]). Serves
//! `shop.notify.v1.NotificationService` for listing them. Publishes no
//! events, so it runs no outbox relay.

mod api;
pub mod compose;
pub mod config;
pub mod delivery;
mod error;
pub mod saga;
pub mod sender;
pub mod store;

use std::sync::Arc;

use shop_proto::notify::v1::notification_service_server::NotificationServiceServer;
use shop_runtime::{CancellationToken, Listeners, admin, consumer, db, grpc, topology};

pub use config::Config;

/// Public services served on the gRPC port.
pub const SERVICES: &[&str] = &["shop.notify.v1.NotificationService"];

/// Migrates the database.
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
    let (nats, js) = shop_runtime::nats::connect(&config.messaging.nats_url, "svc-notify").await?;
    topology::ensure_streams(&js).await?;
    let definitions = topology::ensure_consumers(&js, &[saga::ORDERS_CONSUMER]).await?;

    let sender = sender::Sender::from_config(&config).await?;
    tracing::info!(via = %sender.describe(), "email delivery configured");
    let delivery = delivery::Delivery {
        pool: pool.clone(),
        sender: Arc::new(sender),
        resend_interval: config.resend_interval,
    };

    let mut tasks = tokio::task::JoinSet::new();
    for definition in definitions {
        let handler = saga::NotifySaga {
            delivery: delivery.clone(),
            recipient_domain: config.recipient_domain.clone(),
        };
        tasks.spawn(consumer::run(
            js.clone(),
            definition,
            Arc::new(handler),
            config.messaging.consumer_concurrency,
            shutdown.clone(),
        ));
    }
    tasks.spawn(delivery.resend_until(shutdown.clone()));

    let ready = admin::database_and_nats_check(pool.clone(), nats);
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = admin::serve(listeners.admin, ready, async move { admin_shutdown.cancelled().await }).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });

    let api = api::NotifyApi { pool };
    let (router, health) = grpc::router_with_basics(SERVICES)?;
    health.set_serving::<NotificationServiceServer<api::NotifyApi>>().await;
    let router = router.add_service(NotificationServiceServer::new(api));
    tracing::info!(addr = ?listeners.grpc.local_addr().ok(), "svc-notify serving");
    let served = grpc::serve(router, listeners.grpc, shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    served?;
    Ok(())
}
