//! svc-payment's handling of an ambiguous charge against a real PostgreSQL
//! and the payment provider emulator, driven through the handler itself,
//! with the provider's answers held back or lost at the worst moment.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use shop_harness::provider::Emulator;
use shop_infra::fresh_database;
use shop_proto::events::v1 as ev;
use shop_provider::{Faults, domain::LedgerLine};
use shop_runtime::{consumer::EventHandler, db, event::IncomingEvent, outbox::Outbox, values::Money};
use sqlx::PgPool;
use svc_payment::{
    provider::{ChargeOutcome, HttpProvider, PaymentProvider, ProviderError},
    saga::{CANCELLED_CONSUMER, PaymentSaga, RESERVED_CONSUMER},
};
use uuid::Uuid;

/// Each provider call's deadline, here and in the saga.
const DEADLINE: Duration = Duration::from_secs(2);

/// The emulator, its refunds settling at once for the tests' eyes.
async fn emulator() -> anyhow::Result<Emulator> {
    Emulator::alone(Duration::from_millis(200)).await
}

/// A client of `emulator`, as svc-payment makes one.
fn client(emulator: &Emulator) -> anyhow::Result<HttpProvider> {
    Ok(HttpProvider::new(reqwest::Url::parse(emulator.url())?, DEADLINE)?)
}

/// The ledger line of the one intent made for `order`.
async fn line_of(emulator: &Emulator, order: &str) -> anyhow::Result<LedgerLine> {
    match emulator.lines_of(order).await?.as_slice() {
        [line] => Ok(line.clone()),
        lines => anyhow::bail!("one intent expected for order {order}, the ledger has {lines:?}"),
    }
}

/// The provider, except that its first void goes through while the service
/// never learns it did (it crashed, or its commit failed).
struct CrashAfterFirstVoid {
    inner: HttpProvider,
    crashed: AtomicBool,
}

impl PaymentProvider for CrashAfterFirstVoid {
    async fn charge(
        &self,
        key: Uuid,
        order_id: &str,
        amount: Money,
        method: &str,
    ) -> Result<ChargeOutcome, ProviderError> {
        self.inner.charge(key, order_id, amount, method).await
    }

    async fn refund_or_void(&self, key: Uuid) -> Result<(), ProviderError> {
        self.inner.refund_or_void(key).await?;
        if !self.crashed.swap(true, Ordering::SeqCst) {
            return Err(ProviderError::Unavailable(
                "the service died right after the void".into(),
            ));
        }
        Ok(())
    }
}

fn incoming<E: shop_runtime::event::Event>(event: &E, order_id: &str) -> IncomingEvent {
    let outgoing = shop_runtime::event::OutgoingEvent::new(event).expect("encodes");
    let headers = shop_runtime::event::headers(
        outgoing.event_id,
        outgoing.event_type,
        "svc-test",
        order_id,
        outgoing.occurred_at,
        &Default::default(),
    );
    IncomingEvent::from_message(&outgoing.subject, Some(&headers), outgoing.payload.into()).expect("well formed")
}

/// `inventory.reserved` for `order_id`, paid with `method` (the
/// emulator's `pm_card_timeout` takes the money and loses its first answer:
/// ambiguous).
fn reserved(order_id: &str, method: &str) -> IncomingEvent {
    let event = ev::InventoryReserved {
        order_id: order_id.into(),
        user_id: "u".into(),
        payment_method: method.into(),
        total: Some(shop_proto::common::v1::Money {
            currency_code: "EUR".into(),
            amount_minor: 1299,
        }),
        ..Default::default()
    };
    incoming(&event, order_id)
}

/// A fresh, migrated svc-payment database.
async fn database() -> anyhow::Result<PgPool> {
    let pool = db::connect(&fresh_database().await?, 4, db::Limits::default()).await?;
    db::migrate(&pool, sqlx::migrate!("./migrations")).await?;
    Ok(pool)
}

fn cancelled(order_id: &str) -> IncomingEvent {
    let event = ev::OrderCancelled {
        order_id: order_id.into(),
        user_id: "u".into(),
        ..Default::default()
    };
    incoming(&event, order_id)
}

/// The saga of `consumer` over `pool` and `provider`, giving each provider
/// call [`DEADLINE`].
fn payment_saga<P>(pool: &PgPool, provider: Arc<P>, consumer: &'static str, max_attempts: u32) -> PaymentSaga<P> {
    PaymentSaga {
        pool: pool.clone(),
        outbox: Outbox::new("svc-payment"),
        provider,
        consumer,
        provider_timeout: DEADLINE,
        max_attempts,
    }
}

/// What the provider gave back of what it captured under `line`.
fn given_back(line: &LedgerLine) -> i64 {
    line.refunded + line.refund_pending
}

/// The status of `order`'s payment row.
async fn payment_status(pool: &PgPool, order: &str) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
        .bind(order)
        .fetch_one(pool)
        .await?)
}

/// The types of the events in the outbox, oldest first.
async fn announced(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY created_at")
        .fetch_all(pool)
        .await?)
}

#[tokio::test]
async fn a_crash_after_voiding_an_ambiguous_charge_never_turns_into_a_success() -> anyhow::Result<()> {
    let pool = database().await?;
    let emulator = emulator().await?;
    let provider = Arc::new(CrashAfterFirstVoid {
        inner: client(&emulator)?,
        crashed: AtomicBool::new(false),
    });
    // The first ambiguous answer already exhausts the attempts.
    let saga = payment_saga(&pool, provider, RESERVED_CONSUMER, 1);
    let order = "01a00000-0000-7000-8000-000000000001";
    let event = reserved(order, "pm_card_timeout");

    // Charge (answer lost), out of attempts, void, crash before recording.
    assert!(saga.handle(event.clone()).await.is_err(), "the crash is a failure");
    // The redelivery.
    saga.handle(event).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let status = payment_status(&pool, order).await?;
    assert_eq!(status, "failed", "the money went back, so the payment failed");
    let events = announced(&pool).await?;
    assert_eq!(events, ["shop.events.v1.PaymentFailed"]);
    let line = line_of(&emulator, order).await?;
    assert_eq!((line.captured, given_back(&line)), (1299, 1299), "{line:?}");
    Ok(())
}

/// An ambiguous charge, then the provider goes away and the order is
/// cancelled meanwhile (its reservation expired). However long the outage,
/// the cancellation must end with the charge given back, not wait for the
/// charge to settle first.
#[tokio::test]
async fn a_cancelled_orders_ambiguous_charge_is_given_back_once_the_provider_returns() -> anyhow::Result<()> {
    let pool = database().await?;
    let emulator = emulator().await?;
    let saga = |consumer| -> anyhow::Result<_> { Ok(payment_saga(&pool, Arc::new(client(&emulator)?), consumer, 100)) };
    let (on_reserved, on_cancelled) = (saga(RESERVED_CONSUMER)?, saga(CANCELLED_CONSUMER)?);
    let order = "01a00000-0000-7000-8000-000000000002";
    let reserved = reserved(order, "pm_card_timeout");
    let cancelled = cancelled(order);

    // The money moves, the answer is lost; then the provider goes down.
    assert!(on_reserved.handle(reserved.clone()).await.is_err());
    emulator.set_faults(&Faults::outage()).await?;
    for _ in 0..3 {
        assert!(
            on_reserved.handle(reserved.clone()).await.is_err(),
            "no provider, no outcome"
        );
        assert!(
            on_cancelled.handle(cancelled.clone()).await.is_err(),
            "no provider, no refund"
        );
    }
    emulator.set_faults(&Faults::default()).await?;

    // The provider is back: the cancellation alone settles it.
    on_cancelled
        .handle(cancelled)
        .await
        .map_err(|e| anyhow::anyhow!("the cancellation must settle the payment: {e}"))?;
    // The charge's own redelivery then finds nothing left to do.
    on_reserved.handle(reserved).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let line = line_of(&emulator, order).await?;
    assert_eq!(
        (line.captured, given_back(&line)),
        (1299, 1299),
        "the money went back: {line:?}"
    );
    let status = payment_status(&pool, order).await?;
    assert_eq!(status, "cancelled", "cancelled with its order, the charge voided");
    let events = announced(&pool).await?;
    assert!(events.is_empty(), "never a success for a cancelled order: {events:?}");
    Ok(())
}

/// A provider that refuses calls for a while delays payments; it does not
/// fail them, however many deliveries the outage takes.
#[tokio::test]
async fn a_provider_outage_delays_a_charge_without_failing_it() -> anyhow::Result<()> {
    let pool = database().await?;
    let emulator = emulator().await?;
    let saga = payment_saga(&pool, Arc::new(client(&emulator)?), RESERVED_CONSUMER, 3);
    let order = "01a00000-0000-7000-8000-000000000003";
    let reserved = reserved(order, "pm_card_ok");

    emulator.set_faults(&Faults::outage()).await?;
    for _ in 0..10 {
        assert!(
            saga.handle(reserved.clone()).await.is_err(),
            "no provider, no outcome yet"
        );
    }
    assert!(emulator.ledger().await?.is_empty(), "nothing charged while it was down");
    emulator.set_faults(&Faults::default()).await?;
    saga.handle(reserved).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let status = payment_status(&pool, order).await?;
    assert_eq!(status, "succeeded", "the outage only delayed the payment");
    assert_eq!(line_of(&emulator, order).await?.captured, 1299, "charged once");
    Ok(())
}

/// Takes the money at once but holds the answer until the cancellation's
/// void has gone through (refunding it), then lets it answer (succeeded)
/// while the cancellation has yet to record its outcome: the worst
/// interleaving of a charge and a cancellation.
struct ChargeLosesToCancellation {
    inner: HttpProvider,
    charging: tokio::sync::Notify,
    voided: tokio::sync::Notify,
}

impl PaymentProvider for ChargeLosesToCancellation {
    async fn charge(
        &self,
        key: Uuid,
        order_id: &str,
        amount: Money,
        method: &str,
    ) -> Result<ChargeOutcome, ProviderError> {
        let outcome = self.inner.charge(key, order_id, amount, method).await;
        self.charging.notify_one();
        self.voided.notified().await;
        outcome
    }

    async fn refund_or_void(&self, key: Uuid) -> Result<(), ProviderError> {
        self.inner.refund_or_void(key).await?;
        self.voided.notify_one();
        // The charge's handler records its answer before this one does.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_charge_answering_after_its_orders_cancellation_ends_cancelled() -> anyhow::Result<()> {
    let pool = database().await?;
    let emulator = emulator().await?;
    let provider = Arc::new(ChargeLosesToCancellation {
        inner: client(&emulator)?,
        charging: tokio::sync::Notify::new(),
        voided: tokio::sync::Notify::new(),
    });
    let saga = |consumer| payment_saga(&pool, provider.clone(), consumer, 3);
    let (on_reserved, on_cancelled) = (saga(RESERVED_CONSUMER), saga(CANCELLED_CONSUMER));
    let order = "01a00000-0000-7000-8000-000000000004";
    let reserved = reserved(order, "pm_card_ok");
    let cancelled = cancelled(order);

    let charging = tokio::spawn(async move { on_reserved.handle(reserved).await.map_err(|e| e.to_string()) });
    provider.charging.notified().await;
    on_cancelled
        .handle(cancelled)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    charging.await?.map_err(anyhow::Error::msg)?;

    let status = payment_status(&pool, order).await?;
    assert_eq!(status, "cancelled", "the order was cancelled: its payment is too");
    let events = announced(&pool).await?;
    assert!(events.is_empty(), "nothing to announce: {events:?}");
    let line = line_of(&emulator, order).await?;
    assert_eq!((line.captured, given_back(&line)), (1299, 1299), "{line:?}");
    Ok(())
}

/// Takes the money at once but holds the answer until told, and fails
/// every void while `voids_fail` is set.
struct HeldAnswerFailingVoids {
    inner: HttpProvider,
    charged: tokio::sync::Notify,
    answer: tokio::sync::Notify,
    voids_fail: AtomicBool,
}

impl PaymentProvider for HeldAnswerFailingVoids {
    async fn charge(
        &self,
        key: Uuid,
        order_id: &str,
        amount: Money,
        method: &str,
    ) -> Result<ChargeOutcome, ProviderError> {
        let outcome = self.inner.charge(key, order_id, amount, method).await;
        self.charged.notify_one();
        self.answer.notified().await;
        outcome
    }

    async fn refund_or_void(&self, key: Uuid) -> Result<(), ProviderError> {
        if self.voids_fail.load(Ordering::SeqCst) {
            return Err(ProviderError::Unavailable("down for the void".into()));
        }
        self.inner.refund_or_void(key).await
    }
}

/// The interleaving the saga model found: a charge that succeeded answers
/// after its order's cancellation turned the payment `voiding` but before
/// the void went through. The payment must stay `voiding` until a void
/// does, or the cancellation's redelivery finds it settled and leaves the
/// money taken.
#[tokio::test]
async fn a_success_answering_into_a_void_in_progress_does_not_keep_the_money() -> anyhow::Result<()> {
    let pool = database().await?;
    let emulator = emulator().await?;
    let provider = Arc::new(HeldAnswerFailingVoids {
        inner: client(&emulator)?,
        charged: tokio::sync::Notify::new(),
        answer: tokio::sync::Notify::new(),
        voids_fail: AtomicBool::new(true),
    });
    let saga = |consumer| payment_saga(&pool, provider.clone(), consumer, 3);
    let (on_reserved, on_cancelled) = (saga(RESERVED_CONSUMER), saga(CANCELLED_CONSUMER));
    let order = "01a00000-0000-7000-8000-000000000005";
    let cancelled = cancelled(order);

    let reserved = reserved(order, "pm_card_ok");
    let charging = tokio::spawn(async move { on_reserved.handle(reserved).await.map_err(|e| e.to_string()) });
    provider.charged.notified().await;
    assert!(
        on_cancelled.handle(cancelled.clone()).await.is_err(),
        "the void failed: the cancellation is retried"
    );
    provider.answer.notify_one();
    let _ = charging.await?;

    provider.voids_fail.store(false, Ordering::SeqCst);
    on_cancelled
        .handle(cancelled)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let line = line_of(&emulator, order).await?;
    assert_eq!(
        (line.captured, given_back(&line)),
        (1299, 1299),
        "no money may stay taken for a cancelled order: {line:?}"
    );
    assert_eq!(payment_status(&pool, order).await?, "cancelled");
    Ok(())
}
