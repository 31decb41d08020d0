//! svc-payment's handling of an ambiguous charge against a real PostgreSQL,
//! driven through the handler itself with a provider that can be made to
//! fail at the worst moment.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use shop_proto::events::v1 as ev;
use shop_runtime::{consumer::EventHandler, db, event::IncomingEvent, outbox::Outbox};
use shop_test_support::fresh_database;
use svc_payment::{
    provider::{ChargeOutcome, PaymentProvider, ProviderError, SimulatedProvider},
    saga::{PaymentSaga, RESERVED_CONSUMER},
};
use uuid::Uuid;

/// The simulator, except that its first void goes through at the provider
/// while the service never learns it did (it crashed, or its commit failed).
struct CrashAfterFirstVoid {
    inner: SimulatedProvider,
    crashed: AtomicBool,
}

impl PaymentProvider for CrashAfterFirstVoid {
    async fn charge(
        &self,
        key: Uuid,
        amount: shop_runtime::values::Money,
        method: &str,
    ) -> Result<ChargeOutcome, ProviderError> {
        self.inner.charge(key, amount, method).await
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

fn reserved(order_id: &str) -> IncomingEvent {
    let event = ev::InventoryReserved {
        order_id: order_id.into(),
        user_id: "u".into(),
        // The provider takes the money and loses its answer: ambiguous.
        payment_method: "pm_card_timeout".into(),
        total: Some(shop_proto::common::v1::Money {
            currency_code: "EUR".into(),
            amount_minor: 1299,
        }),
        ..Default::default()
    };
    let outgoing = shop_runtime::event::OutgoingEvent::new(&event).expect("encodes");
    let headers = shop_runtime::event::headers(
        outgoing.event_id,
        outgoing.event_type,
        "svc-inventory",
        order_id,
        outgoing.occurred_at,
        None,
    );
    IncomingEvent::from_message(&outgoing.subject, Some(&headers), outgoing.payload.into()).expect("well formed")
}

#[tokio::test]
async fn a_crash_after_voiding_an_ambiguous_charge_never_turns_into_a_success() -> anyhow::Result<()> {
    let pool = db::connect(&fresh_database().await?, 4, db::Limits::default()).await?;
    db::migrate(&pool, sqlx::migrate!("./migrations")).await?;
    let saga = PaymentSaga {
        pool: pool.clone(),
        outbox: Outbox::new("svc-payment"),
        provider: Arc::new(CrashAfterFirstVoid {
            inner: SimulatedProvider::new(pool.clone()),
            crashed: AtomicBool::new(false),
        }),
        consumer: RESERVED_CONSUMER,
        provider_timeout: Duration::from_secs(2),
        // The first ambiguous answer already exhausts the attempts.
        max_attempts: 1,
    };
    let order = "01a00000-0000-7000-8000-000000000001";
    let event = reserved(order);

    // Charge (answer lost), out of attempts, void, crash before recording.
    assert!(saga.handle(event.clone()).await.is_err(), "the crash is a failure");
    // The redelivery.
    saga.handle(event).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
        .bind(order)
        .fetch_one(&pool)
        .await?;
    assert_eq!(status, "failed", "the money went back, so the payment failed");
    let events: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY created_at")
        .fetch_all(&pool)
        .await?;
    assert_eq!(events, ["shop.events.v1.PaymentFailed"]);
    Ok(())
}
