//! Refunds that restock, end to end: svc-inventory running against a real
//! nats-server and PostgreSQL hears `orders.refund_requested` as svc-order
//! publishes it, and puts the refund's units back on hand once, whatever
//! arrives again; a refund without restock changes nothing, and one that
//! cannot restock is parked with the stock untouched.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::pull},
};
use shop_infra::{NatsServer, fresh_database};
use shop_proto::{common::v1::Money, events::v1 as ev};
use shop_runtime::{
    CancellationToken, Listeners,
    config::EnvReader,
    consumer::{HEADER_DLQ_CONSUMER, HEADER_DLQ_ERROR},
    db,
    event::{self, Event},
    topology,
    values::{Quantity, Sku},
};
use sqlx::PgPool;
use svc_inventory::{
    Config,
    domain::{Line, ReleaseReason, Trigger},
    saga::{Applied, TakenBack, apply, take_back},
};
use tokio::{task::JoinHandle, time::Instant};
use uuid::Uuid;

/// Upper bound of every wait: generous for a loaded machine, short enough
/// that a hang fails the test rather than the job.
const PATIENCE: Duration = Duration::from_secs(20);

/// svc-inventory with its own database and nats-server.
struct Service {
    js: jetstream::Context,
    pool: PgPool,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), shop_runtime::host::HostError>>,
    // Dropped last: stops the server.
    _nats: NatsServer,
}

impl Service {
    async fn start() -> anyhow::Result<Self> {
        let database_url = fresh_database().await?;
        let nats = NatsServer::start().await?;
        let js = jetstream::new(async_nats::connect(nats.url()).await?);
        topology::ensure_streams(&js, 1).await?;
        let env = [
            ("NATS_URL", nats.url()),
            ("DATABASE_URL", database_url.clone()),
            ("OUTBOX_POLL_INTERVAL", "100ms".to_owned()),
            (
                shop_runtime::identity::VERIFYING_KEY_FILE,
                shop_runtime::identity::throwaway_keys().verifying.display().to_string(),
            ),
        ];
        let config = Config::read(EnvReader::from_map(env))?;
        let listeners = Listeners::ephemeral().await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(svc_inventory::run(config, listeners, shutdown.clone()));
        let pool = db::connect(&database_url, 2, db::Limits::default()).await?;
        Ok(Self {
            js,
            pool,
            shutdown,
            task,
            _nats: nats,
        })
    }

    /// Publishes `event` as svc-order or svc-payment would, under event id
    /// `event_id`; returns its sequence in the stream.
    async fn publish<E: Event>(&self, event: &E, event_id: Uuid) -> anyhow::Result<u64> {
        self.publish_with(event, headers_for(event, event_id)).await
    }

    async fn publish_with<E: Event>(&self, event: &E, headers: HeaderMap) -> anyhow::Result<u64> {
        let ack = self
            .js
            .publish_with_headers(event.subject(), headers, serde_json::to_vec(event)?.into())
            .await?
            .await?;
        Ok(ack.sequence)
    }

    /// Waits until `inventory-orders` has acknowledged (or parked)
    /// everything up to ORDERS sequence `sequence`.
    async fn wait_handled(&self, sequence: u64) -> anyhow::Result<()> {
        eventually(
            &format!("inventory-orders to settle ORDERS sequence {sequence}"),
            async || {
                let Ok(mut consumer) = self
                    .js
                    .get_consumer_from_stream::<pull::Config, _, _>("inventory-orders", "ORDERS")
                    .await
                else {
                    return false;
                };
                consumer
                    .info()
                    .await
                    .is_ok_and(|info| info.ack_floor.stream_sequence >= sequence)
            },
        )
        .await
    }

    /// Waits for `subject` on stream `stream` (an event svc-inventory
    /// announced, or a parked one on DLQ).
    async fn wait_for(&self, stream: &str, subject: &str) -> anyhow::Result<jetstream::message::StreamMessage> {
        let stream = self.js.get_stream(stream).await?;
        let mut found = None;
        eventually(subject, async || {
            found = stream.get_last_raw_message_by_subject(subject).await.ok();
            found.is_some()
        })
        .await?;
        Ok(found.expect("found"))
    }

    /// `(on_hand, reserved)` of `sku`.
    async fn units(&self, sku: &str) -> anyhow::Result<(i64, i64)> {
        Ok(sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Places, reserves and pays for an order of `lines` as svc-order and
    /// svc-payment would, until svc-inventory announces it committed.
    async fn sold(&self, order_id: Uuid, lines: &[(&str, i32)]) -> anyhow::Result<()> {
        let placed = ev::OrderPlaced {
            order_id: order_id.to_string(),
            user_id: "alice".into(),
            lines: lines.iter().map(|(sku, quantity)| line(sku, *quantity)).collect(),
            total: eur(1000),
            payment_method: "pm_card_ok".into(),
            ..Default::default()
        };
        self.publish(&placed, Uuid::now_v7()).await?;
        self.wait_for("INVENTORY", &format!("inventory.reserved.{order_id}"))
            .await?;
        let paid = ev::PaymentSucceeded {
            order_id: order_id.to_string(),
            user_id: "alice".into(),
            ..Default::default()
        };
        self.publish(&paid, Uuid::now_v7()).await?;
        self.wait_for("INVENTORY", &format!("inventory.committed.{order_id}"))
            .await?;
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task).await???;
        Ok(())
    }
}

fn headers_for<E: Event>(event: &E, event_id: Uuid) -> HeaderMap {
    event::headers(
        event_id,
        E::TYPE,
        "svc-order",
        event.key(),
        chrono::Utc::now(),
        &Default::default(),
    )
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor: minor,
    })
}

fn line(sku: &str, quantity: i32) -> ev::EventLine {
    ev::EventLine {
        sku: sku.into(),
        quantity,
        unit_price: eur(1299),
    }
}

fn refund(order_id: Uuid, lines: &[(&str, i32)], restock: bool) -> ev::OrderRefundRequested {
    ev::OrderRefundRequested {
        order_id: order_id.to_string(),
        user_id: "alice".into(),
        refund_id: Uuid::now_v7().to_string(),
        amount: eur(1299),
        lines: lines.iter().map(|(sku, quantity)| line(sku, *quantity)).collect(),
        restock,
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_that_restocks_puts_its_units_back_once_and_one_that_does_not_changes_nothing() -> anyhow::Result<()> {
    let service = Service::start().await?;
    let order = Uuid::now_v7();
    service.sold(order, &[("SKU-MUG-001", 3), ("SKU-TEE-001", 1)]).await?;
    assert_eq!(service.units("SKU-MUG-001").await?, (97, 0));
    assert_eq!(service.units("SKU-TEE-001").await?, (49, 0));

    // Two mugs come back.
    let two_mugs = refund(order, &[("SKU-MUG-001", 2)], true);
    let event_id = Uuid::now_v7();
    let sequence = service.publish(&two_mugs, event_id).await?;
    service.wait_handled(sequence).await?;
    assert_eq!(service.units("SKU-MUG-001").await?, (99, 0));

    // Heard again: the same event redelivered (a new Nats-Msg-Id gets it
    // past JetStream's dedupe, the same ce-id meets the inbox), and the same
    // refund under a new event id (which only the refund's record stops).
    let mut again = headers_for(&two_mugs, event_id);
    again.insert(async_nats::header::NATS_MESSAGE_ID, Uuid::now_v7().to_string().as_str());
    service.publish_with(&two_mugs, again).await?;
    let sequence = service.publish(&two_mugs, Uuid::now_v7()).await?;
    service.wait_handled(sequence).await?;
    assert_eq!(service.units("SKU-MUG-001").await?, (99, 0), "restocked once");

    // A refund of money only: the stock stays as it is.
    let money_only = refund(order, &[("SKU-TEE-001", 1)], false);
    let sequence = service.publish(&money_only, Uuid::now_v7()).await?;
    service.wait_handled(sequence).await?;
    assert_eq!(service.units("SKU-TEE-001").await?, (49, 0));

    // The rest of the order comes back: everything sold is on hand again.
    let the_rest = refund(order, &[("SKU-TEE-001", 1), ("SKU-MUG-001", 1)], true);
    let sequence = service.publish(&the_rest, Uuid::now_v7()).await?;
    service.wait_handled(sequence).await?;
    assert_eq!(service.units("SKU-MUG-001").await?, (100, 0));
    assert_eq!(service.units("SKU-TEE-001").await?, (50, 0));
    let returned: Vec<(String, i32, i32)> =
        sqlx::query_as("SELECT sku, quantity, returned FROM reservation_lines WHERE order_id = $1 ORDER BY sku")
            .bind(order.to_string())
            .fetch_all(&service.pool)
            .await?;
    assert_eq!(
        returned,
        [("SKU-MUG-001".to_owned(), 3, 3), ("SKU-TEE-001".to_owned(), 1, 1)]
    );

    service.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_that_cannot_restock_is_parked_and_changes_no_stock() -> anyhow::Result<()> {
    let service = Service::start().await?;
    let order = Uuid::now_v7();
    service.sold(order, &[("SKU-MUG-001", 2)]).await?;

    // A SKU not on the order (the cap), beside one that is: neither moves.
    let unknown = refund(order, &[("SKU-MUG-001", 1), ("SKU-CAP-001", 1)], true);
    service.publish(&unknown, Uuid::now_v7()).await?;
    let parked = service
        .wait_for("DLQ", &format!("dlq.inventory-orders.orders.refund_requested.{order}"))
        .await?;
    assert_eq!(
        parked.headers.get(HEADER_DLQ_CONSUMER).map(|v| v.as_str()),
        Some("inventory-orders")
    );
    let error = parked
        .headers
        .get(HEADER_DLQ_ERROR)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(error.contains("SKU-CAP-001 is not on the order"), "{error}");

    // More mugs than were sold, and a refund of an order never sold here.
    let too_many = refund(order, &[("SKU-MUG-001", 3)], true);
    let never_sold = refund(Uuid::now_v7(), &[("SKU-MUG-001", 1)], true);
    service.publish(&too_many, Uuid::now_v7()).await?;
    let sequence = service.publish(&never_sold, Uuid::now_v7()).await?;
    service.wait_handled(sequence).await?;
    service
        .wait_for(
            "DLQ",
            &format!("dlq.inventory-orders.orders.refund_requested.{}", never_sold.order_id),
        )
        .await?;
    let dlq = service.js.get_stream("DLQ").await?.info().await?.state.messages;
    assert_eq!(dlq, 3, "each refund that cannot restock is parked");

    assert_eq!(service.units("SKU-MUG-001").await?, (98, 0));
    assert_eq!(service.units("SKU-CAP-001").await?, (25, 0));
    let returns: i64 = sqlx::query_scalar("SELECT count(*) FROM returns")
        .fetch_one(&service.pool)
        .await?;
    assert_eq!(returns, 0);

    // The order's next refund, one that can restock, still does.
    let one_mug = refund(order, &[("SKU-MUG-001", 1)], true);
    let sequence = service.publish(&one_mug, Uuid::now_v7()).await?;
    service.wait_handled(sequence).await?;
    assert_eq!(service.units("SKU-MUG-001").await?, (99, 0));

    service.stop().await
}

/// The same refund taken back by two transactions at once (two replicas
/// hearing it under different event ids): the second waits on the
/// reservation's row lock, then finds it done.
#[tokio::test]
async fn a_refund_taken_back_twice_at_once_restocks_once() -> anyhow::Result<()> {
    let pool = db::connect(&fresh_database().await?, 4, db::Limits::default()).await?;
    db::migrate(&pool, sqlx::migrate!("./migrations")).await?;
    let mugs = |quantity| -> anyhow::Result<Vec<Line>> {
        Ok(vec![Line {
            sku: Sku::parse("SKU-MUG-001").map_err(anyhow::Error::msg)?,
            quantity: Quantity::new(quantity).map_err(anyhow::Error::msg)?,
        }])
    };
    let ttl = Duration::from_secs(900);
    let mut tx = pool.begin().await?;
    let held = apply(&mut tx, "o-1", "u", Trigger::Placed, &mugs(2)?, ttl).await?;
    assert!(matches!(held, Applied::Reserved { .. }), "{held:?}");
    apply(&mut tx, "o-1", "u", Trigger::PaymentSucceeded, &[], ttl).await?;
    tx.commit().await?;

    let mut first = pool.begin().await?;
    assert_eq!(
        take_back(&mut first, "o-1", "r-1", &mugs(1)?).await?,
        TakenBack::Returned
    );
    let second = tokio::spawn({
        let (pool, lines) = (pool.clone(), mugs(1)?);
        async move {
            let mut tx = pool.begin().await?;
            let taken = take_back(&mut tx, "o-1", "r-1", &lines).await?;
            tx.commit().await?;
            anyhow::Ok(taken)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.commit().await?;
    assert_eq!(second.await??, TakenBack::Repeated);

    let on_hand: i64 = sqlx::query_scalar("SELECT on_hand FROM stock WHERE sku = 'SKU-MUG-001'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(on_hand, 99, "100, two sold, one back");

    // Were the order cancelled after its refund (svc-order refuses that for
    // a confirmed order), only what is still sold would come back.
    let mut tx = pool.begin().await?;
    let cancelled = Trigger::Release(ReleaseReason::OrderCancelled);
    apply(&mut tx, "o-1", "u", cancelled, &[], ttl).await?;
    tx.commit().await?;
    let on_hand: i64 = sqlx::query_scalar("SELECT on_hand FROM stock WHERE sku = 'SKU-MUG-001'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(on_hand, 100, "every unit on the shelf once");
    Ok(())
}
