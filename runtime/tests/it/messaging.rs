//! The messaging rules against real PostgreSQL and nats-server: outbox relay
//! with broker dedupe, inbox idempotency, retries and the dead-letter path.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use shop_infra::{NatsServer, fresh_database};
use shop_proto::events::v1 as ev;
use shop_runtime::{
    CancellationToken,
    consumer::{EventHandler, HandleError},
    db,
    event::IncomingEvent,
    inbox,
    outbox::{Outbox, Relay},
    topology,
};
use sqlx::PgPool;

use crate::support::{RunningConsumer, broker, stream_messages};

async fn database() -> anyhow::Result<PgPool> {
    let pool = db::connect(&fresh_database().await?, 8, db::Limits::default()).await?;
    db::migrate(&pool, sqlx::migrate::Migrator::with_migrations(vec![])).await?;
    Ok(pool)
}

fn placed(order_id: &str) -> ev::OrderPlaced {
    ev::OrderPlaced {
        order_id: order_id.into(),
        user_id: "u".into(),
        payment_method: "pm_card_ok".into(),
        ..Default::default()
    }
}

/// A relay test's start: a database whose outbox (of `svc-test`) holds an
/// `orders.placed` for each of `orders`, and a broker of the test's own.
struct PendingOutbox {
    pool: PgPool,
    nats: NatsServer,
    js: async_nats::jetstream::Context,
    outbox: Outbox,
    /// The event ids, in the order of `orders`.
    ids: Vec<uuid::Uuid>,
}

impl PendingOutbox {
    async fn new(orders: &[impl AsRef<str>]) -> anyhow::Result<Self> {
        let pool = database().await?;
        let (nats, js) = broker().await?;
        let outbox = Outbox::new("svc-test");
        let mut tx = outbox.begin(&pool).await?;
        let mut ids = Vec::with_capacity(orders.len());
        for order in orders {
            ids.push(outbox.enqueue(&mut tx, &placed(order.as_ref())).await?);
        }
        outbox.commit(tx).await?;
        Ok(Self {
            pool,
            nats,
            js,
            outbox,
            ids,
        })
    }

    /// As `new`, with the broker stopped after the rows were written.
    async fn broker_down(orders: &[impl AsRef<str>]) -> anyhow::Result<Self> {
        let mut pending = Self::new(orders).await?;
        pending.nats.stop().await;
        Ok(pending)
    }

    fn relay(&self, poll_interval: Duration) -> Relay {
        self.outbox.relay(self.pool.clone(), self.js.clone(), poll_interval)
    }

    /// Rows not yet marked published.
    async fn unpublished(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Waits up to 10 s for every row to be marked published.
    async fn wait_until_published(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if self.unpublished().await? == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Every row is marked published, and `ORDERS` holds `stored` messages.
    async fn assert_all_published(&self, stored: u64) -> anyhow::Result<()> {
        assert_eq!(self.unpublished().await?, 0);
        assert_eq!(stream_messages(&self.js, "ORDERS").await?, stored);
        Ok(())
    }
}

/// `o-0`, `o-1`, ...: `n` orders.
fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("o-{i}")).collect()
}

#[tokio::test]
async fn relay_publishes_with_the_event_id_as_message_id_and_duplicates_are_dropped() -> anyhow::Result<()> {
    let pending = PendingOutbox::new(&["o-1", "o-2"]).await?;
    let id = pending.ids[0];

    let relay = pending.relay(Duration::from_secs(60));
    relay.drain().await?;
    pending.assert_all_published(2).await?;
    let stored = pending
        .js
        .get_stream("ORDERS")
        .await?
        .get_last_raw_message_by_subject("orders.placed.o-1")
        .await?;
    let header = |n: &str| stored.headers.get(n).map(|v| v.as_str().to_owned());
    assert_eq!(header("Nats-Msg-Id"), Some(id.to_string()));
    assert_eq!(header("ce-id"), Some(id.to_string()));
    assert_eq!(header("ce-type").as_deref(), Some("shop.events.v1.OrderPlaced"));
    assert_eq!(header("ce-source").as_deref(), Some("svc-test"));
    let body: ev::OrderPlaced = serde_json::from_slice(&stored.payload)?;
    assert_eq!(body.order_id, "o-1");

    // Crash after the PubAck, before the rows were marked: sent again, stored once.
    sqlx::query("UPDATE outbox SET published_at = NULL")
        .execute(&pending.pool)
        .await?;
    relay.drain().await?;
    pending.assert_all_published(2).await?;
    Ok(())
}

#[tokio::test]
async fn a_committed_event_is_published_and_marked_without_being_leased() -> anyhow::Result<()> {
    let pending = PendingOutbox::new(&[] as &[&str]).await?;
    // Leasing a row fails from here on: only the handover can publish.
    sqlx::query(
        "CREATE FUNCTION refuse_lease() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN RAISE EXCEPTION 'the relay leased a row it was handed'; END $$",
    )
    .execute(&pending.pool)
    .await?;
    sqlx::query(
        "CREATE TRIGGER refuse_lease BEFORE UPDATE ON outbox FOR EACH ROW
         WHEN (NEW.leased_until IS NOT NULL) EXECUTE FUNCTION refuse_lease()",
    )
    .execute(&pending.pool)
    .await?;
    // Staged before the relay starts, committed after its first lease pass
    // (which would find the row, and fail, had it been committed already).
    let mut staging = pending.outbox.begin(&pending.pool).await?;
    pending.outbox.enqueue(&mut staging, &placed("o-handed")).await?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(pending.relay(Duration::from_secs(60)).run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    pending.outbox.commit(staging).await?;
    pending.wait_until_published().await?;
    shutdown.cancel();
    running.await?;
    let (attempts, error): (i32, Option<String>) = sqlx::query_as("SELECT attempts, last_error FROM outbox")
        .fetch_one(&pending.pool)
        .await?;
    assert_eq!((attempts, error), (0, None), "published at the first try");
    pending.assert_all_published(1).await?;
    Ok(())
}

#[tokio::test]
async fn relay_keeps_rows_while_the_broker_is_down_and_sends_them_after() -> anyhow::Result<()> {
    let mut pending = PendingOutbox::broker_down(&["o-down"]).await?;

    let relay = pending.relay(Duration::from_millis(200));
    assert!(relay.drain().await.is_err(), "publishing without a broker must fail");
    assert_eq!(pending.unpublished().await?, 1, "nothing is lost");
    let (attempts, error): (i32, Option<String>) = sqlx::query_as("SELECT attempts, last_error FROM outbox")
        .fetch_one(&pending.pool)
        .await?;
    assert!(attempts >= 1 && error.is_some());

    pending.nats.restart().await?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    pending.wait_until_published().await?;
    shutdown.cancel();
    running.await?;
    pending.assert_all_published(1).await?;
    Ok(())
}

#[tokio::test]
async fn a_relay_pass_during_an_outage_ends_within_one_ack_timeout() -> anyhow::Result<()> {
    let pending = PendingOutbox::broker_down(&numbered(12)).await?;

    // Each PubAck may wait out its timeout (5 s), but all at once: a pass
    // that waited for them one by one would hold its row locks for a minute.
    let relay = pending.relay(Duration::from_secs(60));
    let started = std::time::Instant::now();
    let pass = tokio::time::timeout(Duration::from_secs(15), relay.drain()).await;
    let took = started.elapsed();
    assert!(
        matches!(pass, Ok(Err(_))),
        "the pass must fail, and soon (took {took:?})"
    );
    assert_eq!(pending.unpublished().await?, 12, "nothing is lost");
    Ok(())
}

/// While a relay waits for PubAcks that do not come, the rows it is
/// publishing stay free for everyone else: a lease, not a held lock, keeps
/// other relays off them.
#[tokio::test]
async fn a_relay_waiting_for_the_broker_holds_no_row_locks() -> anyhow::Result<()> {
    let mut pending = PendingOutbox::broker_down(&numbered(3)).await?;
    let relay = pending.relay(Duration::from_secs(60));
    let pass = tokio::spawn(async move { relay.drain().await });
    // By now the pass has taken its rows and waits for acks (up to 5 s).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let locked = sqlx::query("SELECT event_id FROM outbox FOR UPDATE NOWAIT")
        .fetch_all(&pending.pool)
        .await;
    assert!(
        locked.is_ok(),
        "rows must not be locked while acks are awaited: {locked:?}"
    );
    // A second relay leaves leased rows alone. It runs while the broker is
    // still down, so the first relay cannot have finished in the meantime.
    let other = pending.relay(Duration::from_secs(60));
    other.drain().await?;
    assert_eq!(pending.unpublished().await?, 3, "leased rows belong to the first relay");
    pending.nats.restart().await?;
    // Whether its acks came after the restart or it gave up and handed the
    // lease back, nothing is left behind once it ends.
    let _ = pass.await?;
    other.drain().await?;
    pending.assert_all_published(3).await?;
    Ok(())
}

#[tokio::test]
async fn two_relays_share_the_outbox_without_losing_or_duplicating() -> anyhow::Result<()> {
    let pending = PendingOutbox::new(&numbered(600)).await?;
    let a = pending.relay(Duration::from_secs(60));
    let b = pending.relay(Duration::from_secs(60));
    let (ra, rb) = tokio::join!(a.drain(), b.drain());
    ra?;
    rb?;
    pending.assert_all_published(600).await?;
    Ok(())
}

#[tokio::test]
async fn inbox_claims_an_event_once_per_consumer() -> anyhow::Result<()> {
    let pool = database().await?;
    let headers = shop_runtime::event::headers(
        uuid::Uuid::now_v7(),
        "shop.events.v1.OrderPlaced",
        "t",
        "o",
        chrono::Utc::now(),
        &Default::default(),
    );
    let event = IncomingEvent::from_message("orders.placed.o", Some(&headers), bytes::Bytes::from_static(b"{}"))?;
    let mut conn = pool.acquire().await?;
    assert!(inbox::claim(&mut conn, "a", &event).await?);
    assert!(!inbox::claim(&mut conn, "a", &event).await?, "second claim must fail");
    assert!(
        inbox::claim(&mut conn, "b", &event).await?,
        "another consumer has its own inbox"
    );
    Ok(())
}

/// Counts effects; the effect is guarded only by the inbox, so a second
/// application would show.
struct Counting {
    pool: PgPool,
    attempts: AtomicUsize,
}

impl EventHandler for Counting {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if !event.is::<ev::OrderPlaced>() {
            return Err(HandleError::unknown_type(&event));
        }
        let placed: ev::OrderPlaced = event.decode()?;
        if attempt == 0 {
            return Err(HandleError::Retry("first attempt fails".into()));
        }
        let mut tx = self.pool.begin().await?;
        if !inbox::claim(&mut tx, "inventory-orders", &event).await? {
            return Ok(());
        }
        sqlx::query("INSERT INTO effects (order_id) VALUES ($1)")
            .bind(&placed.order_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

const PLACED: &str = "shop.events.v1.OrderPlaced";

/// Publishes `body` under its own message id, so that the broker does not
/// drop a replay of `ce_id` before the inbox sees it.
async fn publish(
    js: &async_nats::jetstream::Context,
    subject: &str,
    msg_id: &str,
    ce_id: uuid::Uuid,
    ce_type: &str,
    body: &'static [u8],
) -> anyhow::Result<()> {
    let mut headers = shop_runtime::event::headers(ce_id, ce_type, "t", "o", chrono::Utc::now(), &Default::default());
    headers.insert("Nats-Msg-Id", msg_id);
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(bytes::Bytes::from_static(body))
        .headers(headers);
    js.send_publish(subject.to_owned(), message).await?.await?;
    Ok(())
}

/// The orders the `Counting` handler has applied, sorted.
async fn applied_orders(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT order_id FROM effects ORDER BY order_id")
        .fetch_all(pool)
        .await?)
}

/// `inventory-orders` running with a `Counting` handler that has made
/// `attempts` attempts already, on a broker of its own, with an `effects`
/// table in a fresh database.
struct CountingConsumer {
    pool: PgPool,
    _nats: NatsServer,
    js: async_nats::jetstream::Context,
    handler: Arc<Counting>,
    running: RunningConsumer,
}

impl CountingConsumer {
    async fn start(attempts: usize) -> anyhow::Result<Self> {
        let pool = database().await?;
        sqlx::query("CREATE TABLE effects (order_id text NOT NULL)")
            .execute(&pool)
            .await?;
        let (nats, js) = broker().await?;
        let definitions = topology::ensure_consumers(&js, &["inventory-orders"]).await?;
        let handler = Arc::new(Counting {
            pool: pool.clone(),
            attempts: AtomicUsize::new(attempts),
        });
        let running = RunningConsumer::spawn(&js, definitions[0].clone(), handler.clone(), 1);
        Ok(Self {
            pool,
            _nats: nats,
            js,
            handler,
            running,
        })
    }
}

#[tokio::test]
async fn consumer_retries_dedupes_and_parks() -> anyhow::Result<()> {
    let CountingConsumer {
        pool,
        _nats,
        js,
        handler,
        running,
    } = CountingConsumer::start(0).await?;

    let body = br#"{"orderId":"o-1","userId":"u","lines":[{"sku":"SKU-A","quantity":1}]}"#;
    let event_id = uuid::Uuid::now_v7();
    // The first delivery fails and is retried; the same event then arrives
    // again under another message id (a replay): still one effect.
    publish(&js, "orders.placed.o-1", "m-1", event_id, PLACED, body).await?;
    publish(&js, "orders.placed.o-1", "m-2", event_id, PLACED, body).await?;
    // Poison and unknown type: parked, and the consumer carries on.
    publish(&js, "orders.placed.o-2", "m-3", uuid::Uuid::now_v7(), PLACED, b"][").await?;
    let surprise = "shop.events.v2.Surprise";
    publish(&js, "orders.placed.o-3", "m-4", uuid::Uuid::now_v7(), surprise, b"{}").await?;
    let last = br#"{"orderId":"o-4"}"#;
    publish(&js, "orders.placed.o-4", "m-5", uuid::Uuid::now_v7(), PLACED, last).await?;

    let mut effects = Vec::new();
    let mut parked = 0;
    for _ in 0..300 {
        effects = applied_orders(&pool).await?;
        parked = stream_messages(&js, "DLQ").await?;
        if effects.len() >= 2 && parked >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a wrongly repeated effect the chance to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let effects_now = applied_orders(&pool).await?;
    running.stop().await?;
    assert_eq!(effects, vec!["o-1".to_owned(), "o-4".to_owned()]);
    assert_eq!(effects_now, effects);
    assert_eq!(parked, 2);
    assert!(
        handler.attempts.load(Ordering::SeqCst) >= 5,
        "the failed first attempt was redelivered"
    );
    let dlq = js.get_stream("DLQ").await?;
    let poison = dlq
        .get_last_raw_message_by_subject("dlq.inventory-orders.orders.placed.o-2")
        .await?;
    let error = poison
        .headers
        .get("Shop-Dlq-Error")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(error.contains("OrderPlaced"), "{error}");
    assert_eq!(poison.payload.as_ref(), b"][", "the original body is kept");
    let sequence = poison.headers.get("Shop-Dlq-Sequence").map(|v| v.as_str().to_owned());
    assert_eq!(sequence.as_deref(), Some("3"));
    Ok(())
}

#[tokio::test]
async fn a_consumer_recreated_under_a_running_service_is_picked_up_again() -> anyhow::Result<()> {
    // Past its first attempt, the one that fails.
    let CountingConsumer {
        pool,
        _nats,
        js,
        running,
        ..
    } = CountingConsumer::start(1).await?;

    // What nats/README.md tells an operator to do to re-run a consumer.
    let stream = js.get_stream("ORDERS").await?;
    stream.delete_consumer("inventory-orders").await?;
    topology::ensure_consumers(&js, &["inventory-orders"]).await?;

    let body = br#"{"orderId":"o-after"}"#;
    publish(
        &js,
        "orders.placed.o-after",
        "m-after",
        uuid::Uuid::now_v7(),
        PLACED,
        body,
    )
    .await?;
    let mut effects = Vec::new();
    for _ in 0..600 {
        effects = applied_orders(&pool).await?;
        if !effects.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await?;
    assert_eq!(effects, vec!["o-after".to_owned()]);
    Ok(())
}
