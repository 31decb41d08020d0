//! What an order's payment waits for (`payments.awaiting`), against the
//! real stack. Most tests hold svc-payment back and publish its events as
//! it would, so each order waits exactly as long as a test needs; the last
//! goes the whole way, through svc-payment and the provider emulator.

use std::time::Duration;

use async_nats::jetstream;
use shop_harness::{Service, Stack, StackOptions, line};
use shop_proto::{
    events::v1 as ev,
    order::v1::{
        CancelOrderRequest, CancelReason, GetOrderRequest, Order, OrderStatus, PaymentWait, PlaceOrderRequest,
        WatchOrderRequest,
    },
};

use crate::{TestResult, handled, publish};

/// A stack whose svc-payment is down (and whatever else `held_back` says):
/// an order waits at RESERVED for the payment events a test publishes.
fn without_payment(options: StackOptions) -> StackOptions {
    StackOptions {
        held_back: [vec![Service::Payment], options.held_back].concat(),
        ..options
    }
}

async fn place(stack: &Stack, user: &str, key: &str) -> anyhow::Result<Order> {
    let request = PlaceOrderRequest {
        idempotency_key: key.into(),
        lines: vec![line("SKU-CAP-001", 1)],
        payment_method: "pm_card_ok".into(),
    };
    Ok(stack.orders(user).await?.place_order(request).await?.into_inner())
}

async fn get(stack: &Stack, user: &str, order_id: &str) -> anyhow::Result<Order> {
    let request = GetOrderRequest {
        order_id: order_id.into(),
    };
    Ok(stack.orders(user).await?.get_order(request).await?.into_inner())
}

/// `payments.awaiting` for the order: the customer must act at `url`, or
/// (empty) the charge is processing.
async fn awaiting(js: &jetstream::Context, order: &Order, url: &str) -> TestResult {
    let event = ev::PaymentAwaiting {
        order_id: order.order_id.clone(),
        user_id: order.user_id.clone(),
        payment_id: uuid::Uuid::now_v7().to_string(),
        next_action_url: url.into(),
    };
    publish(js, &event).await
}

/// `(status, payment_wait, next_action_url)` as the API shows them.
fn shown(order: &Order) -> (OrderStatus, PaymentWait, &str) {
    (order.status(), order.payment_wait(), order.next_action_url.as_str())
}

#[track_caller]
fn assert_cancelled(order: &Order, reason: CancelReason) {
    assert_eq!(shown(order), (OrderStatus::Cancelled, PaymentWait::Unspecified, ""));
    assert_eq!(order.cancel_reason(), reason, "{order:?}");
}

const WAITS_FOR_THE_CUSTOMER: fn(&Order) -> bool = |o| o.payment_wait() == PaymentWait::CustomerAction;

/// The watch's next message, within ten seconds.
async fn next(watch: &mut tonic::Streaming<Order>) -> anyhow::Result<Order> {
    let sent = tokio::time::timeout(Duration::from_secs(10), watch.message()).await??;
    sent.ok_or_else(|| anyhow::anyhow!("the watch ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_shows_what_its_payment_waits_for_and_its_watchers_hear_it() -> TestResult {
    let stack = Stack::start_with(without_payment(StackOptions::default())).await?;
    let js = stack.jetstream().await?;

    // Reserved, then waiting: for the customer, then processing. The
    // status stays RESERVED and the watcher hears each change.
    let order = place(&stack, "alice", "watched-1").await?;
    let order = stack
        .wait_for_order("alice", &order.order_id, |o| o.status() == OrderStatus::Reserved)
        .await?;
    assert_eq!(shown(&order), (OrderStatus::Reserved, PaymentWait::Unspecified, ""));
    let mut watch = stack
        .orders("alice")
        .await?
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        shown(&next(&mut watch).await?),
        (OrderStatus::Reserved, PaymentWait::Unspecified, "")
    );

    let url = "http://127.0.0.1:4242/v1/payment_intents/pi_1/authenticate?return_url=x";
    awaiting(&js, &order, url).await?;
    let heard = next(&mut watch).await?;
    assert_eq!(shown(&heard), (OrderStatus::Reserved, PaymentWait::CustomerAction, url));
    assert_eq!(shown(&get(&stack, "alice", &order.order_id).await?), shown(&heard));

    // Authenticated: the provider settles it now.
    awaiting(&js, &order, "").await?;
    let heard = next(&mut watch).await?;
    assert_eq!(shown(&heard), (OrderStatus::Reserved, PaymentWait::Processing, ""));

    // A wait for the customer that arrives late changes nothing.
    awaiting(&js, &order, url).await?;
    handled(&js, "order-payments").await?;
    assert_eq!(
        shown(&get(&stack, "alice", &order.order_id).await?),
        (OrderStatus::Reserved, PaymentWait::Processing, "")
    );

    // A customer who cancels instead of authenticating cancels.
    let other = place(&stack, "alice", "cancelled-1").await?;
    awaiting(&js, &other, "https://provider.example/3ds/pi_2").await?;
    stack
        .wait_for_order("alice", &other.order_id, WAITS_FOR_THE_CUSTOMER)
        .await?;
    let cancelled = stack
        .orders("alice")
        .await?
        .cancel_order(CancelOrderRequest {
            order_id: other.order_id.clone(),
        })
        .await?
        .into_inner();
    assert_cancelled(&cancelled, CancelReason::CustomerCancelled);
    Ok(())
}

/// The reason of the order's `orders.cancelled`, as published.
async fn published_reason(js: &jetstream::Context, order_id: &str) -> anyhow::Result<ev::OrderCancelReason> {
    let stored = js
        .get_stream("ORDERS")
        .await?
        .get_last_raw_message_by_subject(&format!("orders.cancelled.{order_id}"))
        .await?;
    let cancelled: ev::OrderCancelled = serde_json::from_slice(&stored.payload)?;
    Ok(cancelled.reason())
}

/// Places two orders whose payments wait, one for the customer and one
/// processing, and returns them once the stack shows both waiting (or
/// already cancelled, which the caller's assertions then name).
async fn two_waiting_orders(stack: &Stack, js: &jetstream::Context) -> anyhow::Result<(Order, Order)> {
    let action = place(stack, "alice", "action-1").await?;
    let processing = place(stack, "alice", "processing-1").await?;
    awaiting(js, &action, "https://provider.example/3ds/pi_action").await?;
    awaiting(js, &processing, "").await?;
    let waiting = |wait: PaymentWait| move |o: &Order| o.payment_wait() == wait || o.status() == OrderStatus::Cancelled;
    let action = stack
        .wait_for_order("alice", &action.order_id, waiting(PaymentWait::CustomerAction))
        .await?;
    let processing = stack
        .wait_for_order("alice", &processing.order_id, waiting(PaymentWait::Processing))
        .await?;
    assert_eq!(
        action.status(),
        OrderStatus::Reserved,
        "waited for the customer first: {action:?}"
    );
    assert_eq!(
        processing.status(),
        OrderStatus::Reserved,
        "processing first: {processing:?}"
    );
    Ok((action, processing))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reservation_that_expires_while_the_customer_is_to_authenticate_cancels_not_authenticated() -> TestResult {
    let stack = Stack::start_with(without_payment(StackOptions {
        reservation_ttl: Duration::from_secs(3),
        ..Default::default()
    }))
    .await?;
    let js = stack.jetstream().await?;
    let (action, processing) = two_waiting_orders(&stack, &js).await?;

    let action = stack.settled("alice", &action.order_id).await?;
    assert_cancelled(&action, CancelReason::PaymentNotAuthenticated);
    assert_eq!(
        published_reason(&js, &action.order_id).await?,
        ev::OrderCancelReason::PaymentNotAuthenticated
    );
    let processing = stack.settled("alice", &processing.order_id).await?;
    assert_cancelled(&processing, CancelReason::ReservationExpired);
    assert_eq!(
        published_reason(&js, &processing.order_id).await?,
        ev::OrderCancelReason::ReservationExpired
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_past_its_deadline_while_the_customer_is_to_authenticate_cancels_not_authenticated() -> TestResult {
    let stack = Stack::start_with(without_payment(StackOptions {
        order_deadline: Duration::from_secs(3),
        ..Default::default()
    }))
    .await?;
    let js = stack.jetstream().await?;
    let (action, processing) = two_waiting_orders(&stack, &js).await?;

    let action = stack.settled("alice", &action.order_id).await?;
    assert_cancelled(&action, CancelReason::PaymentNotAuthenticated);
    assert_eq!(
        published_reason(&js, &action.order_id).await?,
        ev::OrderCancelReason::PaymentNotAuthenticated
    );
    let processing = stack.settled("alice", &processing.order_id).await?;
    assert_cancelled(&processing, CancelReason::TimedOut);
    Ok(())
}

/// The whole path with svc-payment and the provider emulator: a card that
/// asks for authentication, never given.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_whose_authentication_never_comes_shows_where_and_ends_not_authenticated() -> TestResult {
    let stack = Stack::start_with(StackOptions {
        reservation_ttl: Duration::from_secs(4),
        ..Default::default()
    })
    .await?;
    let request = PlaceOrderRequest {
        idempotency_key: "3ds-never".into(),
        lines: vec![line("SKU-CAP-001", 1)],
        payment_method: "pm_card_3ds".into(),
    };
    let order = stack.orders("alice").await?.place_order(request).await?.into_inner();
    let asking = stack
        .wait_for_order("alice", &order.order_id, |o| {
            WAITS_FOR_THE_CUSTOMER(o) || o.status() == OrderStatus::Cancelled
        })
        .await?;
    assert_eq!(asking.status(), OrderStatus::Reserved, "{asking:?}");
    assert!(asking.next_action_url.starts_with(stack.provider.url()), "{asking:?}");
    let cancelled = stack.settled("alice", &order.order_id).await?;
    assert_cancelled(&cancelled, CancelReason::PaymentNotAuthenticated);
    Ok(())
}
