//! svc-order: orders and the order state machine.
//!
//! Serves `shop.order.v1.OrderService`. `PlaceOrder` is idempotent per user
//! and key, prices lines from the catalog (its copy, [`shop_catalog`]), and
//! writes the order together with `orders.placed` (outbox). The [`saga`]
//! module moves orders on inventory and payment events through the state
//! machine in [`domain`]. `RefundOrder` (admins) gives back part or all of
//! a confirmed order ([`refunds`]) with `orders.refund_requested`, and the
//! saga settles each refund on svc-payment's word.

mod api;
pub mod config;
mod contract;
pub mod deadline;
pub mod domain;
pub mod refunds;
pub mod saga;
pub mod store;
pub mod watch;

use shop_catalog::Catalog;
use shop_proto::order::v1::order_service_server::OrderServiceServer;
use shop_runtime::{
    CancellationToken, Listeners, grpc,
    host::{Host, HostError},
    outbox::Outbox,
    registry,
};

pub use config::Config;

pub const SERVICES: &[&str] = registry::ORDER.serves;

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = Host::new(&config.service.basics, shutdown);
    let pool = host
        .postgres(&config.service.database, sqlx::migrate!("./migrations"))
        .await?;
    let bus = host.nats(&config.service.messaging).await?;
    let catalog = Catalog::on_host(&mut host, &bus, &config.catalog, &config.upstream).await?;
    let outbox = Outbox::new("svc-order");
    host.spawn_relay(&bus, &pool, &outbox);
    let announcer = watch::Announcer::new(bus.nats.clone(), config.watch_limits, host.stopping());
    let saga = |consumer| saga::OrderSaga {
        pool: pool.clone(),
        outbox: outbox.clone(),
        announcer: announcer.clone(),
        consumer,
    };
    let (inventory, payments) = (saga(saga::INVENTORY_CONSUMER), saga(saga::PAYMENTS_CONSUMER));
    host.spawn_consumer(&bus, saga::INVENTORY_CONSUMER, inventory).await?;
    host.spawn_consumer(&bus, saga::PAYMENTS_CONSUMER, payments).await?;
    let overdue = deadline::Deadline {
        pool: pool.clone(),
        outbox: outbox.clone(),
        announcer: announcer.clone(),
        after: config.order_deadline,
    };
    host.spawn(deadline::run(overdue, config.deadline_sweep_interval, host.shutdown()));

    let api = api::OrderApi {
        pool,
        outbox,
        catalog,
        accepted_payment_methods: config.accepted_payment_methods.clone(),
        announcer,
    };
    let (router, health) = grpc::router_with_basics(SERVICES, config.service.identity.clone())?;
    let router = router.add_service(OrderServiceServer::new(api));
    host.serve(router, health, listeners).await
}
