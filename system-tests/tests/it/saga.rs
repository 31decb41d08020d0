//! The checkout saga end to end, in one process: real nats-server
//! (JetStream), real PostgreSQL, the real services.

use std::time::Duration;

use async_nats::{HeaderMap, jetstream::message::PublishMessage};
use bytes::Bytes;
use shop_harness::{AsUser, Service, Stack, StackOptions, eventually, line, wait_consumers_idle};
use shop_proto::{
    notify::v1::Notification,
    order::v1::{CancelReason, ListOrdersRequest, LookupOrderRequest, OrderStatus},
    payment::v1::{GetPaymentRequest, PaymentStatus},
};
use tonic::Code;
use uuid::Uuid;

use crate::support::{
    NotifyClient, OrderClient, PlaceOrders, TestResult, assert_cancelled, cancel, checkout_events, count, get_order,
    header, last_stored, notifications, payment, place_with, request, without_payment,
};

/// What the provider's ledger shows for the order.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    /// Intents made for it: one per payment, and one payment per order.
    intents: usize,
    /// Minor units captured, over its intents.
    captured: i64,
    /// Of that, what is not given back (refunded, or a refund pending).
    kept: i64,
}

impl Held {
    /// One intent that took `amount` once and keeps it.
    fn charged_once(amount: i64) -> Self {
        Self {
            intents: 1,
            captured: amount,
            kept: amount,
        }
    }
}

async fn provider_holds(stack: &Stack, order_id: &str) -> anyhow::Result<Held> {
    let lines = stack.provider.lines_of(order_id).await?;
    let captured = lines.iter().map(|l| l.captured).sum();
    let given_back: i64 = lines.iter().map(|l| l.refunded + l.refund_pending).sum();
    Ok(Held {
        intents: lines.len(),
        captured,
        kept: captured - given_back,
    })
}

async fn stock_settles(stack: &Stack, sku: &str, on_hand: i64, reserved: i64) -> anyhow::Result<()> {
    eventually(&format!("stock of {sku} to be {on_hand}/{reserved}"), || async {
        let s = stack.stock(sku).await?;
        Ok((s.on_hand == on_hand && s.reserved == reserved).then_some(()))
    })
    .await
}

/// Starts the held-back payment service and waits until it has caught up:
/// no charge for the order stands and `sku` is back to `on_hand`, none held.
async fn a_late_payment_keeps_nothing(stack: &mut Stack, order_id: &str, sku: &str, on_hand: i64) -> TestResult {
    stack.start_service(Service::Payment).await?;
    wait_consumers_idle(&stack.jetstream().await?).await?;
    assert_eq!(provider_holds(stack, order_id).await?.kept, 0);
    stock_settles(stack, sku, on_hand, 0).await
}

/// Waits (bounded) for the customer's first notification about the order.
async fn first_notifications(notify: &NotifyClient, what: &str, order_id: &str) -> anyhow::Result<Vec<Notification>> {
    eventually(what, || async {
        let list = notifications(notify, order_id).await?;
        Ok((!list.is_empty()).then_some(list))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn happy_path_confirms_sells_the_stock_charges_once_and_notifies() -> TestResult {
    let stack = Stack::start().await?;
    let before = stack.stock("SKU-MUG-001").await?;

    let order = stack
        .place(
            "alice",
            "happy-1",
            vec![line("SKU-MUG-001", 2), line("SKU-PEN-001", 1)],
            "pm_card_ok",
        )
        .await?;
    assert_eq!(
        order.status,
        OrderStatus::Pending as i32,
        "PlaceOrder answers at once with PENDING"
    );
    let total = order.total.clone().expect("total");
    assert_eq!(
        (total.currency_code.as_str(), total.amount_minor),
        ("EUR", 2 * 1299 + 899)
    );
    assert!(
        order.lines.iter().all(|l| l.unit_price.is_some()),
        "unit prices are set by the service"
    );

    let settled = stack.settled("alice", &order.order_id).await?;
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    assert_eq!(settled.cancel_reason, CancelReason::Unspecified as i32);

    stock_settles(&stack, "SKU-MUG-001", before.on_hand - 2, 0).await?;
    let payment = payment(&stack, "alice", &order.order_id).await?;
    assert_eq!(payment.status, PaymentStatus::Succeeded as i32);
    assert_eq!(payment.amount.map(|m| m.amount_minor), Some(2 * 1299 + 899));
    assert_eq!(
        provider_holds(&stack, &order.order_id).await?,
        Held::charged_once(2 * 1299 + 899)
    );

    let notify = stack.notifications("alice").await?;
    let emails = first_notifications(&notify, "the confirmation email", &order.order_id).await?;
    assert_eq!(emails.len(), 1);
    // An empty order id lists all of the customer's notifications.
    let all = notifications(&notify, "").await?;
    assert_eq!(all.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_stock_cancels_and_leaves_every_line_untouched() -> TestResult {
    let stack = Stack::start().await?;
    let mug = stack.stock("SKU-MUG-001").await?;
    let settled = stack
        .place_settled(
            "alice",
            "oos-1",
            vec![line("SKU-MUG-001", 1), line("SKU-POSTER-001", 1)],
            "pm_card_ok",
        )
        .await?;
    assert_cancelled(&settled, CancelReason::OutOfStock);

    wait_consumers_idle(&stack.jetstream().await?).await?;
    let mug_after = stack.stock("SKU-MUG-001").await?;
    assert_eq!(
        (mug_after.on_hand, mug_after.reserved),
        (mug.on_hand, mug.reserved),
        "all or nothing"
    );
    let poster = stack.stock("SKU-POSTER-001").await?;
    assert_eq!((poster.on_hand, poster.reserved), (0, 0));
    let pool = stack.pool(Service::Payment).await?;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM payments WHERE status <> 'cancelled'").await?,
        0,
        "no charge attempted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declined_payment_cancels_and_releases_the_reservation() -> TestResult {
    let stack = Stack::start().await?;
    let before = stack.stock("SKU-TEE-001").await?;
    let order = stack
        .place_settled("alice", "declined-1", vec![line("SKU-TEE-001", 3)], "pm_card_declined")
        .await?;
    assert_cancelled(&order, CancelReason::PaymentDeclined);
    stock_settles(&stack, "SKU-TEE-001", before.on_hand, 0).await?;
    let payment = payment(&stack, "alice", &order.order_id).await?;
    assert_eq!(payment.status, PaymentStatus::Failed as i32);
    let held = provider_holds(&stack, &order.order_id).await?;
    assert_eq!((held.intents, held.captured), (1, 0), "declined: nothing taken");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_timeout_settles_to_exactly_one_charge() -> TestResult {
    let stack = Stack::start().await?;
    let order = stack
        .place_settled("alice", "timeout-1", vec![line("SKU-CAP-001", 1)], "pm_card_timeout")
        .await?;
    // The provider charged on the first call but its answer was lost; the
    // retry with the same idempotency key learned the outcome: the one
    // intent, captured once.
    assert_eq!(order.status, OrderStatus::Confirmed as i32);
    let total = order.total.as_ref().map_or(0, |t| t.amount_minor);
    assert_eq!(
        provider_holds(&stack, &order.order_id).await?,
        Held::charged_once(total)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customer_cancel_while_reserved_releases_and_never_keeps_money() -> TestResult {
    let mut stack = Stack::start_with(without_payment()).await?;
    let before = stack.stock("SKU-BAG-001").await?;
    let order = stack
        .place("alice", "cancel-1", vec![line("SKU-BAG-001", 2)], "pm_card_ok")
        .await?;
    stack
        .wait_for_order("alice", &order.order_id, |o| o.status == OrderStatus::Reserved as i32)
        .await?;
    assert_eq!(stack.stock("SKU-BAG-001").await?.reserved, 2);

    let mut orders = stack.orders("alice").await?;
    let cancelled = cancel(&mut orders, &order.order_id).await?;
    assert_cancelled(&cancelled, CancelReason::CustomerCancelled);
    stock_settles(&stack, "SKU-BAG-001", before.on_hand, 0).await?;

    // Cancelling again is harmless and answers the same order.
    let again = cancel(&mut orders, &order.order_id).await?;
    assert_eq!(again.cancel_reason, CancelReason::CustomerCancelled as i32);

    // The payment service comes back and sees both the reservation and the
    // cancellation, in whatever order: no money is kept.
    stack.start_service(Service::Payment).await?;
    wait_consumers_idle(&stack.jetstream().await?).await?;
    assert_eq!(provider_holds(&stack, &order.order_id).await?.kept, 0);
    let payment = payment(&stack, "alice", &order.order_id).await?;
    assert!(
        [PaymentStatus::Cancelled as i32, PaymentStatus::Refunded as i32].contains(&payment.status),
        "payment status {}",
        payment.status
    );
    stock_settles(&stack, "SKU-BAG-001", before.on_hand, 0).await?;
    assert_eq!(
        stack.settled("alice", &order.order_id).await?.cancel_reason,
        CancelReason::CustomerCancelled as i32
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confirmed_order_cannot_be_cancelled() -> TestResult {
    let stack = Stack::start().await?;
    let order = stack
        .place_settled("alice", "confirmed-1", vec![line("SKU-PEN-001", 1)], "pm_card_ok")
        .await?;
    let mut orders = stack.orders("alice").await?;
    let err = cancel(&mut orders, &order.order_id).await.expect_err("confirmed");
    assert_eq!(err.code(), Code::FailedPrecondition);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_reservation_cancels_the_order_and_frees_the_stock() -> TestResult {
    let mut stack = Stack::start_with(StackOptions {
        reservation_ttl: Duration::from_millis(600),
        ..without_payment()
    })
    .await?;
    let before = stack.stock("SKU-CAP-001").await?;
    let order = stack
        .place_settled("alice", "expire-1", vec![line("SKU-CAP-001", 4)], "pm_card_ok")
        .await?;
    assert_cancelled(&order, CancelReason::ReservationExpired);
    stock_settles(&stack, "SKU-CAP-001", before.on_hand, 0).await?;

    // A late payment service must not take money for the expired order.
    a_late_payment_keeps_nothing(&mut stack, &order.order_id, "SKU-CAP-001", before.on_hand).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_that_cannot_settle_by_its_deadline_is_cancelled_and_holds_nothing() -> TestResult {
    // Payment is away for longer than the order deadline (and the
    // reservation's TTL is longer still): the order stays RESERVED.
    let mut stack = Stack::start_with(StackOptions {
        order_deadline: Duration::from_millis(1500),
        ..without_payment()
    })
    .await?;
    let before = stack.stock("SKU-CAP-001").await?;
    let order = stack
        .place_settled("alice", "deadline-1", vec![line("SKU-CAP-001", 2)], "pm_card_ok")
        .await?;
    assert_cancelled(&order, CancelReason::TimedOut);
    stock_settles(&stack, "SKU-CAP-001", before.on_hand, 0).await?;

    // Payment comes back to the reservation and the cancellation: whatever
    // it does first, no charge stands and no stock stays held or sold.
    a_late_payment_keeps_nothing(&mut stack, &order.order_id, "SKU-CAP-001", before.on_hand).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_whose_row_a_stalled_transaction_holds_delays_no_other_past_its_deadline() -> TestResult {
    // Payment is away: both orders wait past their deadline.
    let options = StackOptions {
        order_deadline: Duration::from_millis(1500),
        ..without_payment()
    }
    .setting(Service::Order, "DATABASE_LOCK_TIMEOUT", "200ms");
    let stack = Stack::start_with(options).await?;
    let stuck = stack
        .place("alice", "stuck-1", vec![line("SKU-PEN-001", 1)], "pm_card_ok")
        .await?;
    let other = stack
        .place("alice", "other-1", vec![line("SKU-PEN-001", 1)], "pm_card_ok")
        .await?;
    // A transaction that stalled holding the older order's row.
    let pool = stack.pool(Service::Order).await?;
    let mut stalled = pool.begin().await?;
    sqlx::query("SELECT 1 FROM orders WHERE order_id = $1::uuid FOR UPDATE")
        .bind(&stuck.order_id)
        .execute(&mut *stalled)
        .await?;

    let other = stack.settled("alice", &other.order_id).await?;
    assert_cancelled(&other, CancelReason::TimedOut);
    let waiting = get_order(&mut stack.orders("alice").await?, &stuck.order_id).await?;
    assert_ne!(waiting.status, OrderStatus::Cancelled as i32, "its row is still held");

    stalled.rollback().await?;
    let stuck = stack.settled("alice", &stuck.order_id).await?;
    assert_cancelled(&stuck, CancelReason::TimedOut);
    Ok(())
}

/// Republishes a stored message: same body and headers, a new Nats-Msg-Id
/// (so the broker stores it again) and optionally a new event id.
async fn republish(js: &async_nats::jetstream::Context, subject: &str, stream: &str, new_event_id: bool) -> TestResult {
    let stored = last_stored(js, stream, subject).await?;
    let mut headers = HeaderMap::new();
    for (name, values) in stored.headers.iter() {
        for value in values {
            headers.append(name.clone(), value.clone());
        }
    }
    let id = Uuid::now_v7().to_string();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    if new_event_id {
        headers.insert(shop_runtime::event::HEADER_ID, id.as_str());
    }
    let ack = js
        .send_publish(
            subject.to_owned(),
            PublishMessage::build().payload(stored.payload.clone()).headers(headers),
        )
        .await?
        .await?;
    assert!(!ack.duplicate);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_and_replayed_events_change_nothing() -> TestResult {
    let stack = Stack::start().await?;
    let before = stack.stock("SKU-MUG-001").await?;
    let order = stack
        .place_settled("alice", "replay-1", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;
    assert_eq!(order.status, OrderStatus::Confirmed as i32);
    let id = order.order_id.clone();
    let js = stack.jetstream().await?;
    wait_consumers_idle(&js).await?;
    let notify = stack.notifications("alice").await?;
    let notifications_before = notifications(&notify, &id).await?.len();

    // Every event of the order, replayed twice: once as the same event (same
    // ce-id, as a redelivery or `nats stream` replay would carry it) and
    // once as a new event with the same content.
    for new_event_id in [false, true] {
        for (stream, subject) in checkout_events(&id) {
            republish(&js, &subject, stream, new_event_id).await?;
        }
    }
    wait_consumers_idle(&js).await?;

    assert_eq!(
        stack.stock("SKU-MUG-001").await?.on_hand,
        before.on_hand - 1,
        "stock sold once"
    );
    assert_eq!(stack.stock("SKU-MUG-001").await?.reserved, 0);
    assert_eq!(
        provider_holds(&stack, &id).await?,
        Held::charged_once(order.total.as_ref().map_or(0, |t| t.amount_minor)),
        "charged once"
    );
    let order_after = get_order(&mut stack.orders("alice").await?, &id).await?;
    assert_eq!(order_after.status, OrderStatus::Confirmed as i32);
    let notifications = notifications(&notify, &id).await?.len();
    assert_eq!(notifications, notifications_before, "one email per order event");
    // Services published nothing new in reaction.
    for (stream, subject) in [
        ("INVENTORY", "inventory.*"),
        ("PAYMENTS", "payments.*"),
        ("ORDERS", "orders.confirmed"),
    ] {
        let filter = format!("{subject}.{id}");
        let info = js.get_stream(stream).await?.info_with_subjects(filter.clone()).await?;
        use futures::TryStreamExt;
        let per_subject: Vec<(String, usize)> = info.try_collect().await?;
        for (s, n) in per_subject {
            // Each subject holds the original plus the two replays.
            assert_eq!(n, 3, "{s} holds {n} messages");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publish_retried_with_the_same_message_id_is_stored_once() -> TestResult {
    let stack = Stack::start().await?;
    let order = stack
        .place_settled("alice", "dedupe-1", vec![line("SKU-PEN-001", 1)], "pm_card_ok")
        .await?;
    let js = stack.jetstream().await?;
    let orders_stream = js.get_stream("ORDERS").await?.info().await?.state.messages;

    // The relay crashed after the broker stored its events but before it
    // marked them published: on restart it sends them again.
    let pool = stack.pool(Service::Order).await?;
    let reset = sqlx::query("UPDATE outbox SET published_at = NULL WHERE key = $1")
        .bind(&order.order_id)
        .execute(&pool)
        .await?;
    assert_eq!(reset.rows_affected(), 2, "orders.placed and orders.confirmed");
    eventually("the relay to publish again", || async {
        Ok((count(&pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await? == 0).then_some(()))
    })
    .await?;
    let after = js.get_stream("ORDERS").await?.info().await?.state.messages;
    assert_eq!(after, orders_stream, "JetStream dropped the duplicates (Nats-Msg-Id)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_committed_before_a_crash_still_goes_out_after_restart() -> TestResult {
    let mut stack = Stack::start().await?;
    // The broker is unreachable, so the relay cannot publish what PlaceOrder
    // commits; then svc-order dies with the event still in its outbox.
    stack.nats.stop().await;
    let order = stack
        .place("alice", "crash-1", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;
    let pool = stack.pool(Service::Order).await?;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await?,
        1
    );
    stack.stop_service(Service::Order).await?;

    stack.nats.restart().await?;
    stack.start_service(Service::Order).await?;
    let settled = stack.settled("alice", &order.order_id).await?;
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    Ok(())
}

async fn publish_raw(
    js: &async_nats::jetstream::Context,
    subject: String,
    event_type: &str,
    body: &'static [u8],
) -> TestResult {
    let id = Uuid::now_v7();
    let headers = shop_runtime::event::headers(id, event_type, "test", "x", chrono::Utc::now(), &Default::default());
    js.send_publish(
        subject,
        PublishMessage::build()
            .payload(Bytes::from_static(body))
            .headers(headers),
    )
    .await?
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_and_unknown_messages_are_parked_and_the_rest_flows() -> TestResult {
    let stack = Stack::start().await?;
    let js = stack.jetstream().await?;
    let poison_id = Uuid::now_v7();
    publish_raw(
        &js,
        format!("orders.placed.{poison_id}"),
        "shop.events.v1.OrderPlaced",
        b"{not json",
    )
    .await?;
    let future_id = Uuid::now_v7();
    publish_raw(
        &js,
        format!("orders.placed.{future_id}"),
        "shop.events.v9.OrderPlaced",
        b"{}",
    )
    .await?;

    let order = stack
        .place_settled("alice", "after-poison", vec![line("SKU-PEN-001", 1)], "pm_card_ok")
        .await?;
    assert_eq!(order.status, OrderStatus::Confirmed as i32);

    let dlq = js.get_stream("DLQ").await?;
    for (id, error_part) in [(poison_id, "not a valid"), (future_id, "unknown event type")] {
        let subject = format!("dlq.inventory-orders.orders.placed.{id}");
        let parked = eventually(&format!("{subject} on the DLQ"), || {
            let dlq = dlq.clone();
            let subject = subject.clone();
            async move { Ok(dlq.get_last_raw_message_by_subject(&subject).await.ok()) }
        })
        .await?;
        assert_eq!(
            header(&parked, shop_runtime::consumer::HEADER_DLQ_SUBJECT),
            format!("orders.placed.{id}")
        );
        assert_eq!(header(&parked, shop_runtime::consumer::HEADER_DLQ_STREAM), "ORDERS");
        assert!(
            header(&parked, shop_runtime::consumer::HEADER_DLQ_SEQUENCE)
                .parse::<u64>()
                .is_ok()
        );
        assert!(
            header(&parked, shop_runtime::consumer::HEADER_DLQ_ERROR).contains(error_part),
            "{}",
            header(&parked, shop_runtime::consumer::HEADER_DLQ_ERROR)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_buyers_of_five_units_get_exactly_five_orders() -> TestResult {
    let stack = Stack::start().await?;
    let inventory = stack.pool(Service::Inventory).await?;
    sqlx::query(
        "INSERT INTO products (sku, name, price_minor, currency) VALUES ('SKU-LAST-5', 'Last five', 1000, 'EUR')",
    )
    .execute(&inventory)
    .await?;
    sqlx::query("INSERT INTO stock (sku, on_hand) VALUES ('SKU-LAST-5', 5)")
        .execute(&inventory)
        .await?;

    let buyers = (0..50).map(|i| {
        let stack = &stack;
        async move {
            let user = format!("buyer-{i}");
            stack
                .place_settled(&user, "last-unit", vec![line("SKU-LAST-5", 1)], "pm_card_ok")
                .await
        }
    });
    let orders = futures::future::try_join_all(buyers).await?;
    let confirmed = orders
        .iter()
        .filter(|o| o.status == OrderStatus::Confirmed as i32)
        .count();
    let out_of_stock = orders
        .iter()
        .filter(|o| o.cancel_reason == CancelReason::OutOfStock as i32)
        .count();
    assert_eq!((confirmed, out_of_stock), (5, 45));
    stock_settles(&stack, "SKU-LAST-5", 0, 0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_rejected_naming_the_field_and_writes_nothing() -> TestResult {
    let stack = Stack::start().await?;
    let mut orders = stack.orders("alice").await?;
    let cases = [
        (request("k1", vec![], "pm_card_ok"), "lines"),
        (
            request("k2", vec![line("SKU-MUG-001", 0)], "pm_card_ok"),
            "lines[0].quantity",
        ),
        (
            request(
                "k3",
                vec![line("SKU-MUG-001", 1), line("SKU-PEN-001", -2)],
                "pm_card_ok",
            ),
            "lines[1].quantity",
        ),
        (
            request("k4", vec![line("SKU-NOPE-404", 1)], "pm_card_ok"),
            "lines[0].sku",
        ),
        (request("k5", vec![line("not a sku", 1)], "pm_card_ok"), "lines[0].sku"),
        (
            request("", vec![line("SKU-MUG-001", 1)], "pm_card_ok"),
            "idempotency_key",
        ),
        (
            request("k6", vec![line("SKU-MUG-001", 1)], "pm_bitcoin"),
            "payment_method",
        ),
        (request("k7", vec![line("SKU-MUG-001", 1)], ""), "payment_method"),
    ];
    for (req, field) in cases {
        let err = orders
            .place_order(req.clone())
            .await
            .expect_err("invalid request accepted");
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "message {:?} does not name {field}",
            err.message()
        );
    }
    let err = get_order(&mut orders, "42").await.expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = orders
        .list_orders(ListOrdersRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect_err("page");
    assert_eq!(err.code(), Code::InvalidArgument);

    let pool = stack.pool(Service::Order).await?;
    assert_eq!(count(&pool, "SELECT count(*) FROM orders").await?, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await?, 0);

    // Without identity metadata nothing is served.
    let mut anonymous =
        shop_proto::order::v1::order_service_client::OrderServiceClient::new(stack.channel(Service::Order).await?);
    let err = anonymous
        .list_orders(ListOrdersRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_make_one_order_and_refuse_a_different_request() -> TestResult {
    let stack = Stack::start().await?;
    let first = stack
        .place("alice", "same-key", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;
    let again = stack
        .place("alice", "same-key", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;
    assert_eq!(first.order_id, again.order_id);

    // Many concurrent retries of one request still make one order.
    let retries = (0..10).map(|_| stack.place("alice", "burst-key", vec![line("SKU-PEN-001", 2)], "pm_card_ok"));
    let results = futures::future::try_join_all(retries).await?;
    assert!(results.iter().all(|o| o.order_id == results[0].order_id));

    let mut orders = stack.orders("alice").await?;
    let err = place_with(&mut orders, "same-key", vec![line("SKU-MUG-001", 2)], "pm_card_ok")
        .await
        .expect_err("different request under a used key");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("idempotency_key"));

    // The key is per user: bob's "same-key" is his own order.
    let bobs = stack
        .place("bob", "same-key", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;
    assert_ne!(bobs.order_id, first.order_id);

    // LookupOrder finds the caller's order by key, and nobody else's.
    let lookup = |orders: &mut OrderClient, key: &str| {
        let mut orders = orders.clone();
        let idempotency_key = key.to_owned();
        async move {
            orders
                .lookup_order(LookupOrderRequest { idempotency_key })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    assert_eq!(lookup(&mut orders, "same-key").await?.order_id, first.order_id);
    let mut bob = stack.orders("bob").await?;
    assert_eq!(lookup(&mut bob, "same-key").await?.order_id, bobs.order_id);
    let err = lookup(&mut bob, "burst-key").await.expect_err("alice's key, not bob's");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = lookup(&mut orders, "never-used").await.expect_err("no order under it");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = lookup(&mut orders, "").await.expect_err("no key");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("idempotency_key:"), "{}", err.message());

    let pool = stack.pool(Service::Order).await?;
    assert_eq!(count(&pool, "SELECT count(*) FROM orders").await?, 3);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM outbox WHERE event_type = 'shop.events.v1.OrderPlaced'"
        )
        .await?,
        3
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_see_only_their_own_orders_and_payments() -> TestResult {
    let stack = Stack::start().await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            stack
                .place(
                    "alice",
                    &format!("mine-{i}"),
                    vec![line("SKU-PEN-001", 1)],
                    "pm_card_ok",
                )
                .await?
                .order_id,
        );
    }
    let bobs = stack
        .place_settled("bob", "bob-1", vec![line("SKU-PEN-001", 1)], "pm_card_ok")
        .await?;

    let mut alice = stack.orders("alice").await?;
    let err = get_order(&mut alice, &bobs.order_id).await.expect_err("not hers");
    assert_eq!(err.code(), Code::NotFound);
    let err = cancel(&mut alice, &bobs.order_id).await.expect_err("not hers");
    assert_eq!(err.code(), Code::NotFound);
    let err = stack
        .payments("alice")
        .await?
        .get_payment(GetPaymentRequest {
            order_id: bobs.order_id.clone(),
        })
        .await
        .expect_err("not hers");
    assert_eq!(err.code(), Code::NotFound);

    // Paging: newest first, two then one, then nothing more.
    let page1 = alice
        .list_orders(ListOrdersRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(
        page1.orders.iter().map(|o| o.order_id.clone()).collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[1].clone()]
    );
    assert!(!page1.next_page_token.is_empty());
    let page2 = alice
        .list_orders(ListOrdersRequest {
            page_size: 2,
            page_token: page1.next_page_token,
        })
        .await?
        .into_inner();
    assert_eq!(
        page2.orders.iter().map(|o| o.order_id.clone()).collect::<Vec<_>>(),
        vec![ids[0].clone()]
    );
    assert!(page2.next_page_token.is_empty());

    // An admin reads anyone's order.
    let mut admin = shop_proto::order::v1::order_service_client::OrderServiceClient::with_interceptor(
        stack.channel(Service::Order).await?,
        AsUser::admin("root"),
    );
    get_order(&mut admin, &bobs.order_id).await?;
    Ok(())
}

/// An order id is a UUID, and a UUID in capitals is the same UUID: every
/// service finds the order by it, not only the one that stores it as a UUID.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_id_in_capitals_names_the_same_order_everywhere() -> TestResult {
    let stack = Stack::start().await?;
    let order = stack
        .place_settled("alice", "caps-1", vec![line("SKU-PEN-001", 1)], "pm_card_ok")
        .await?;
    let shouted = order.order_id.to_uppercase();
    assert_ne!(shouted, order.order_id);

    let found = get_order(&mut stack.orders("alice").await?, &shouted).await?;
    assert_eq!(found.order_id, order.order_id);
    let payment = payment(&stack, "alice", &shouted).await?;
    assert_eq!(payment.order_id, order.order_id);
    let notify = stack.notifications("alice").await?;
    first_notifications(&notify, "the confirmation email, by the id in capitals", &shouted).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_catalog_means_a_clear_unavailable_and_nothing_written() -> TestResult {
    let mut stack = Stack::start().await?;
    stack.stop_service(Service::Inventory).await?;
    let mut orders = stack.orders("alice").await?;
    let err = place_with(&mut orders, "dead-catalog", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await
        .expect_err("no prices without the catalog");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("catalog"), "{}", err.message());
    let pool = stack.pool(Service::Order).await?;
    assert_eq!(count(&pool, "SELECT count(*) FROM orders").await?, 0);

    // Back again, the same request goes through.
    stack.start_service(Service::Inventory).await?;
    let order = stack
        .place_settled("alice", "dead-catalog", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;
    assert_eq!(order.status, OrderStatus::Confirmed as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_checkout_is_one_trace_across_every_event() -> TestResult {
    let stack = Stack::start().await?;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(request("traced-1", vec![line("SKU-MUG-001", 1)], "pm_card_ok"));
    request
        .metadata_mut()
        .insert("traceparent", format!("00-{caller_trace}-00f067aa0ba902b7-01").parse()?);
    let order = stack.orders("alice").await?.place_order(request).await?.into_inner();
    assert_eq!(
        stack.settled("alice", &order.order_id).await?.status,
        OrderStatus::Confirmed as i32
    );

    let js = stack.jetstream().await?;
    for (stream, subject) in checkout_events(&order.order_id) {
        let traceparent = header(&last_stored(&js, stream, &subject).await?, "traceparent");
        assert!(
            traceparent.starts_with(&format!("00-{caller_trace}-")),
            "{subject} left the caller's trace: {traceparent:?}"
        );
    }
    Ok(())
}
