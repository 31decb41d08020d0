//! svc-payment: charges for reserved orders.
//!
//! Serves `shop.payment.v1.PaymentService` and plays the payment part of the
//! checkout saga ([`saga`]) against a [`provider::PaymentProvider`]; the
//! default is the deterministic [`provider::SimulatedProvider`].

mod api;
pub mod config;
pub mod provider;
pub mod saga;
mod store;

use std::sync::Arc;

use shop_proto::payment::v1::payment_service_server::PaymentServiceServer;
use shop_runtime::{
    CancellationToken, Listeners, grpc,
    host::{Host, HostError},
    outbox::Outbox,
};

pub use config::Config;

pub const SERVICES: &[&str] = shop_runtime::registry::PAYMENT.serves;

/// The durable consumers it runs, each declared in `nats/consumers/`.
pub const CONSUMERS: &[&str] = &[saga::RESERVED_CONSUMER, saga::CANCELLED_CONSUMER];

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = Host::start(
        "svc-payment",
        &config.messaging,
        sqlx::migrate!("./migrations"),
        shutdown,
    )
    .await?;
    let outbox = Outbox::new("svc-payment");
    host.spawn_relay(&outbox);
    let provider = Arc::new(provider::SimulatedProvider::new(host.pool.clone()));
    let saga = |consumer| saga::PaymentSaga {
        pool: host.pool.clone(),
        outbox: outbox.clone(),
        provider: provider.clone(),
        consumer,
        provider_timeout: config.provider_timeout,
        max_attempts: config.max_attempts,
    };
    let (reserved, cancelled) = (saga(saga::RESERVED_CONSUMER), saga(saga::CANCELLED_CONSUMER));
    host.spawn_consumer(saga::RESERVED_CONSUMER, reserved).await?;
    host.spawn_consumer(saga::CANCELLED_CONSUMER, cancelled).await?;

    let (router, health) = grpc::router_with_basics(SERVICES)?;
    health.set_serving::<PaymentServiceServer<api::PaymentApi>>().await;
    let router = router.add_service(PaymentServiceServer::new(api::PaymentApi {
        pool: host.pool.clone(),
    }));
    host.serve(router, listeners).await
}
