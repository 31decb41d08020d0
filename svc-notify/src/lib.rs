//! svc-notify: customer emails about their orders.
//!
//! Consumes `orders.confirmed` and `orders.cancelled` (durable
//! `notify-orders`), and `payments.refunded` and `payments.refund_failed`
//! (durable `notify-payments`; see [`saga`]), and sends one email per order
//! event and per refund of a confirmed order: stored first, then sent, and
//! resent until a sender accepts it (see [`delivery`]). Emails go to an SMTP relay when `NOTIFY_SMTP_URL` is set,
//! otherwise to `.eml` files (see [`sender`]). Serves
//! `shop.notify.v1.NotificationService` for listing them. Publishes no
//! events, so it runs no outbox relay.

mod api;
pub mod compose;
pub mod config;
pub mod delivery;
pub mod saga;
pub mod sender;
pub mod store;

use std::sync::Arc;

use shop_proto::notify::v1::notification_service_server::NotificationServiceServer;
use shop_runtime::{
    CancellationToken, Listeners, grpc,
    host::{Host, HostError},
    registry,
};

pub use config::Config;

/// Public services served on the gRPC port.
pub const SERVICES: &[&str] = registry::NOTIFY.serves;

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = Host::new(&config.service.basics, shutdown);
    let pool = host
        .postgres(&config.service.database, sqlx::migrate!("./migrations"))
        .await?;
    let bus = host.nats(&config.service.messaging).await?;
    let sender = sender::Sender::from_config(&config)
        .await
        .map_err(|e| HostError::setup("email sender", e))?;
    tracing::info!(via = %sender.describe(), "email delivery configured");
    let delivery = delivery::Delivery {
        pool: pool.clone(),
        sender: Arc::new(sender),
        resend_interval: config.resend_interval,
    };
    let saga = |consumer| saga::NotifySaga {
        delivery: delivery.clone(),
        recipient_domain: config.recipient_domain.clone(),
        consumer,
    };
    let (orders, payments) = (saga(saga::ORDERS_CONSUMER), saga(saga::PAYMENTS_CONSUMER));
    host.spawn_consumer(&bus, saga::ORDERS_CONSUMER, orders).await?;
    host.spawn_consumer(&bus, saga::PAYMENTS_CONSUMER, payments).await?;
    host.spawn(delivery.resend_until(host.shutdown()));

    let (router, health) = grpc::router_with_basics(SERVICES, config.service.identity.clone())?;
    let router = router.add_service(NotificationServiceServer::new(api::NotifyApi { pool }));
    host.serve(router, health, listeners).await
}
