//! svc-payment: charges for reserved orders.
//!
//! Serves `shop.payment.v1.PaymentService` and plays the payment part of the
//! checkout saga ([`saga`]) against a [`provider::PaymentProvider`]; the
//! default is the deterministic [`provider::SimulatedProvider`].

mod api;
pub mod config;
pub mod provider;
pub mod saga;

use std::sync::Arc;

use shop_proto::payment::v1::payment_service_server::PaymentServiceServer;
use shop_runtime::{CancellationToken, Listeners, admin, consumer, db, grpc, outbox::Outbox, topology};

pub use config::Config;

pub const SERVICES: &[&str] = &["shop.payment.v1.PaymentService"];

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
    let (nats, js) = shop_runtime::nats::connect(&config.messaging.nats_url, "svc-payment").await?;
    topology::ensure_streams(&js).await?;
    let definitions = topology::ensure_consumers(&js, &[saga::RESERVED_CONSUMER, saga::CANCELLED_CONSUMER]).await?;

    let outbox = Outbox::new("svc-payment");
    let provider = Arc::new(provider::SimulatedProvider::new(pool.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        outbox
            .relay(pool.clone(), js.clone(), config.messaging.outbox_poll_interval)
            .run(shutdown.clone()),
    );
    for definition in definitions {
        let consumer_name = if definition.name() == saga::RESERVED_CONSUMER {
            saga::RESERVED_CONSUMER
        } else {
            saga::CANCELLED_CONSUMER
        };
        let handler = saga::PaymentSaga {
            pool: pool.clone(),
            outbox: outbox.clone(),
            provider: provider.clone(),
            consumer: consumer_name,
            provider_timeout: config.provider_timeout,
            max_attempts: config.max_attempts,
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

    let (router, health) = grpc::router_with_basics(SERVICES)?;
    health.set_serving::<PaymentServiceServer<api::PaymentApi>>().await;
    let router = router.add_service(PaymentServiceServer::new(api::PaymentApi { pool }));
    tracing::info!(addr = ?listeners.grpc.local_addr().ok(), "svc-payment serving");
    let served = grpc::serve(router, listeners.grpc, shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    served?;
    Ok(())
}
