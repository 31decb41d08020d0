//! The checkout saga end to end against the payment provider emulator every
//! stack runs (`shop_harness::Stack`), through its faults: the money checked
//! where it is, in the emulator's ledger.

use std::time::Duration;

use anyhow::{Context, bail};
use shop_harness::{Service, Stack, StackOptions, line};
use shop_proto::{
    order::v1::{CancelOrderRequest, CancelReason, Order, OrderStatus, PlaceOrderRequest},
    payment::v1::{GetPaymentRequest, PaymentStatus},
};
use shop_provider::{Faults, domain::LedgerLine};

/// The ledger line of the one intent made for `order_id`.
async fn line_of(stack: &Stack, order_id: &str) -> anyhow::Result<LedgerLine> {
    match stack.provider.lines_of(order_id).await?.as_slice() {
        [line] => Ok(line.clone()),
        lines => bail!("one intent expected for order {order_id}, the ledger has {lines:?}"),
    }
}

async fn place(stack: &Stack, key: &str, card: &str) -> anyhow::Result<Order> {
    let request = PlaceOrderRequest {
        idempotency_key: key.into(),
        lines: vec![line("SKU-TEE-001", 2)],
        payment_method: card.into(),
    };
    Ok(stack.orders("alice").await?.place_order(request).await?.into_inner())
}

async fn payment_status(stack: &Stack, order_id: &str) -> anyhow::Result<i32> {
    let request = GetPaymentRequest {
        order_id: order_id.into(),
    };
    Ok(stack
        .payments("alice")
        .await?
        .get_payment(request)
        .await?
        .into_inner()
        .status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_saga_confirms_a_good_card_and_cancels_a_declined_one_through_the_provider() -> anyhow::Result<()> {
    let stack = Stack::start().await?;

    let paid = place(&stack, "emulator-ok", "pm_card_ok").await?;
    let paid = stack.settled("alice", &paid.order_id).await?;
    assert_eq!(paid.status, OrderStatus::Confirmed as i32, "{paid:?}");
    let total = paid.total.as_ref().context("a total")?.amount_minor;
    let line = line_of(&stack, &paid.order_id).await?;
    assert_eq!(line.status, shop_provider::domain::Status::Succeeded);
    assert_eq!(line.captured, total, "the order's total, captured once");
    let pool = stack.pool(Service::Payment).await?;
    let charge_id: Option<String> = sqlx::query_scalar("SELECT charge_id FROM payments WHERE order_id = $1")
        .bind(&paid.order_id)
        .fetch_one(&pool)
        .await?;
    assert_eq!(charge_id, Some(line.intent), "the intent is the charge");

    let declined = place(&stack, "emulator-declined", "pm_card_declined").await?;
    let declined = stack.settled("alice", &declined.order_id).await?;
    assert_eq!(declined.status, OrderStatus::Cancelled as i32, "{declined:?}");
    assert_eq!(declined.cancel_reason, CancelReason::PaymentDeclined as i32);
    assert_eq!(
        payment_status(&stack, &declined.order_id).await?,
        PaymentStatus::Failed as i32
    );
    let line = line_of(&stack, &declined.order_id).await?;
    assert_eq!(line.status, shop_provider::domain::Status::RequiresPaymentMethod);
    assert_eq!(line.captured, 0, "nothing taken");
    Ok(())
}

/// Every answer lost (the provider acted each time) and no reconciliation
/// to learn better from the provider's events: the attempts run out, the
/// payment turns voiding, and the void, which never learned the intent's
/// id, finds it by its key and refunds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_charge_whose_answers_were_all_lost_is_refunded_and_the_order_cancelled() -> anyhow::Result<()> {
    let options = StackOptions::default().setting(Service::Payment, "PAYMENT_RECONCILE_INTERVAL", "1h");
    let stack = Stack::start_with(options).await?;
    let lose_every_answer = Faults {
        lose_answers: 1.0,
        ..Faults::default()
    };
    stack.provider.set_faults(&lose_every_answer).await?;

    let order = place(&stack, "emulator-lost", "pm_card_ok").await?;
    wait_for_payment(&stack, &order.order_id, "voiding").await?;
    stack.provider.set_faults(&Faults::default()).await?;

    let cancelled = stack.settled("alice", &order.order_id).await?;
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32, "{cancelled:?}");
    wait_for_payment(&stack, &order.order_id, "failed").await?;
    let total = cancelled.total.as_ref().context("a total")?.amount_minor;
    let line = line_of(&stack, &order.order_id).await?;
    assert_eq!(line.captured, total, "charged once, by the first attempt");
    assert_eq!(line.refunded + line.refund_pending, total, "and given back: {line:?}");
    Ok(())
}

/// The provider is down from the first charge; the customer cancels. The
/// void finds no intent, waits out any charge in flight, and the payment
/// ends cancelled with nothing ever charged, however often the charge's
/// event comes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_orders_charge_that_never_reached_the_provider_is_voided_without_one() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.provider.set_faults(&Faults::outage()).await?;

    let order = place(&stack, "emulator-down", "pm_card_ok").await?;
    wait_for_payment(&stack, &order.order_id, "pending").await?;
    let request = CancelOrderRequest {
        order_id: order.order_id.clone(),
    };
    stack.orders("alice").await?.cancel_order(request).await?;
    let cancelled = stack.settled("alice", &order.order_id).await?;
    assert_eq!(cancelled.cancel_reason, CancelReason::CustomerCancelled as i32);
    wait_for_payment(&stack, &order.order_id, "voiding").await?;
    stack.provider.set_faults(&Faults::default()).await?;

    wait_for_payment(&stack, &order.order_id, "cancelled").await?;
    assert_eq!(
        payment_status(&stack, &order.order_id).await?,
        PaymentStatus::Cancelled as i32
    );
    shop_harness::wait_consumers_idle(&stack.jetstream().await?).await?;
    assert!(stack.provider.ledger().await?.is_empty(), "nothing was ever charged");
    Ok(())
}

/// Waits (bounded) until `order_id`'s payment row is `status`.
async fn wait_for_payment(stack: &Stack, order_id: &str, status: &str) -> anyhow::Result<()> {
    let pool = stack.pool(Service::Payment).await?;
    let started = tokio::time::Instant::now();
    loop {
        let now: Option<String> = sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&pool)
            .await?;
        if now.as_deref() == Some(status) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the payment of order {order_id} never became {status}; it is {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
