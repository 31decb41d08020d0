//! svc-payment: charges for reserved orders.
//!
//! Serves `shop.payment.v1.PaymentService` and plays the payment part of the
//! checkout saga ([`saga`]) against a [`provider::PaymentProvider`]: the
//! provider's HTTP API at `PAYMENT_PROVIDER_URL` ([`provider::HttpProvider`];
//! in development, the `payment-provider` emulator).

mod api;
pub mod config;
pub mod domain;
pub mod provider;
pub mod refund_saga;
pub mod refunds;
pub mod saga;
pub mod settlement;
mod store;
pub mod webhooks;

use std::sync::Arc;

use provider::PaymentProvider;
use shop_proto::payment::v1::{
    payment_service_server::PaymentServiceServer, payment_webhook_service_server::PaymentWebhookServiceServer,
};
use shop_runtime::{
    CancellationToken, Listeners, grpc,
    host::{Bus, Host, HostError},
    outbox::Outbox,
    registry,
};
use sqlx::PgPool;

pub use config::Config;

pub const SERVICES: &[&str] = registry::PAYMENT.serves;

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = Host::new(&config.service.basics, shutdown);
    let pool = host
        .postgres(&config.service.database, sqlx::migrate!("./migrations"))
        .await?;
    let bus = host.nats(&config.service.messaging).await?;
    let outbox = Outbox::new("svc-payment");
    host.spawn_relay(&bus, &pool, &outbox);
    let (router, health) = grpc::router_with_basics(SERVICES, config.service.identity.clone())?;
    let router = router.add_service(PaymentServiceServer::new(api::PaymentApi { pool: pool.clone() }));
    let url = &config.provider_url;
    let provider = provider::HttpProvider::new(url.clone(), config.provider_timeout)
        .map_err(|e| HostError::setup("the payment provider's client", e))?
        .with_return_url(config.return_url.clone());
    tracing::info!(%url, "charging through the payment provider's HTTP API");
    let provider = Arc::new(provider);
    let saga = spawn_saga(&mut host, &bus, &pool, &outbox, &config, provider.clone()).await?;
    let refunds = |provider| refund_saga::RefundSaga {
        pool: pool.clone(),
        outbox: outbox.clone(),
        provider,
        provider_timeout: config.provider_timeout,
    };
    host.spawn_consumer(&bus, refund_saga::REFUNDS_CONSUMER, refunds(provider.clone()))
        .await?;
    let settlement = Arc::new(settlement::Settlement {
        pool: pool.clone(),
        refunds: Arc::new(refunds(provider.clone())),
        provider,
        saga,
    });
    if config.webhook_secrets.is_empty() {
        tracing::warn!("no PAYMENT_WEBHOOK_SECRET: every webhook is refused; reconciliation alone settles payments");
    }
    let shutdown = host.shutdown();
    host.spawn(settlement.clone().run(config.reconcile_interval, shutdown));
    let router = router.add_service(PaymentWebhookServiceServer::new(webhooks::WebhookApi {
        pool,
        secrets: config.webhook_secrets.clone(),
        settlement,
    }));
    host.serve(router, health, listeners).await
}

/// Runs the saga's two consumers, charging through `provider`; returns a
/// saga for what comes from elsewhere (webhooks, reconciliation).
async fn spawn_saga<P: PaymentProvider>(
    host: &mut Host,
    bus: &Bus,
    pool: &PgPool,
    outbox: &Outbox,
    config: &Config,
    provider: Arc<P>,
) -> Result<Arc<saga::PaymentSaga<P>>, HostError> {
    let saga = |consumer| saga::PaymentSaga {
        pool: pool.clone(),
        outbox: outbox.clone(),
        provider: provider.clone(),
        consumer,
        provider_timeout: config.provider_timeout,
        max_attempts: config.max_attempts,
    };
    let (reserved, cancelled) = (saga(saga::RESERVED_CONSUMER), saga(saga::CANCELLED_CONSUMER));
    host.spawn_consumer(bus, saga::RESERVED_CONSUMER, reserved).await?;
    host.spawn_consumer(bus, saga::CANCELLED_CONSUMER, cancelled).await?;
    Ok(Arc::new(saga(saga::RESERVED_CONSUMER)))
}
