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
pub mod saga;
pub mod sender;
pub mod store;

use std::sync::Arc;

use shop_proto::notify::v1::notification_service_server::NotificationServiceServer;
use shop_runtime::{
    CancellationToken, Listeners, grpc,
    host::{Host, HostError},
};

pub use config::Config;

/// Public services served on the gRPC port.
pub const SERVICES: &[&str] = shop_runtime::registry::NOTIFY.serves;

/// The durable consumers it runs, each declared in `nats/consumers/`.
pub const CONSUMERS: &[&str] = &[saga::ORDERS_CONSUMER];

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = Host::start(
        "svc-notify",
        &config.messaging,
        sqlx::migrate!("./migrations"),
        shutdown,
    )
    .await?;
    let sender = sender::Sender::from_config(&config)
        .await
        .map_err(|e| HostError::setup("email sender", e))?;
    tracing::info!(via = %sender.describe(), "email delivery configured");
    let delivery = delivery::Delivery {
        pool: host.pool.clone(),
        sender: Arc::new(sender),
        resend_interval: config.resend_interval,
    };
    let handler = saga::NotifySaga {
        delivery: delivery.clone(),
        recipient_domain: config.recipient_domain.clone(),
    };
    host.spawn_consumer(saga::ORDERS_CONSUMER, handler).await?;
    host.spawn(delivery.resend_until(host.shutdown()));

    let (router, health) = grpc::router_with_basics(SERVICES)?;
    health.set_serving::<NotificationServiceServer<api::NotifyApi>>().await;
    let router = router.add_service(NotificationServiceServer::new(api::NotifyApi {
        pool: host.pool.clone(),
    }));
    host.serve(router, listeners).await
}
