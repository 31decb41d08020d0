//! Refunds of confirmed orders (`RefundOrder`), against the real stack:
//! svc-payment gives the money back through the provider emulator, whose
//! ledger shows where it is; the last test holds svc-payment back and
//! speaks for it.

use anyhow::Context;
use futures::future::join_all;
use shop_harness::{AsUser, Service, Stack, eventually, line, wait_consumers_idle};
use shop_proto::{
    events::v1 as ev,
    order::v1::{
        GetOrderRequest, Order, OrderStatus, PlaceOrderRequest, Refund, RefundOrderRequest, RefundStatus,
        order_service_client::OrderServiceClient,
    },
};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};

use crate::{TestResult, handled, publish};

type Orders = OrderServiceClient<InterceptedService<Channel, AsUser>>;

async fn admin(stack: &Stack) -> anyhow::Result<Orders> {
    Ok(OrderServiceClient::with_interceptor(
        stack.channel(Service::Order).await?,
        AsUser::admin("ops"),
    ))
}

/// Two mugs and a cap, paid with `card`, as far as the saga takes them.
async fn settled_order(stack: &Stack, key: &str, card: &str) -> anyhow::Result<Order> {
    let request = PlaceOrderRequest {
        idempotency_key: key.into(),
        lines: vec![line("SKU-MUG-001", 2), line("SKU-CAP-001", 1)],
        payment_method: card.into(),
    };
    let order = stack.orders("alice").await?.place_order(request).await?.into_inner();
    stack.settled("alice", &order.order_id).await
}

async fn confirmed_order(stack: &Stack, key: &str) -> anyhow::Result<Order> {
    let order = settled_order(stack, key, "pm_card_ok").await?;
    anyhow::ensure!(order.status() == OrderStatus::Confirmed, "not confirmed: {order:?}");
    Ok(order)
}

fn refund_request(order: &Order, key: &str, lines: &[(&str, i32)]) -> RefundOrderRequest {
    RefundOrderRequest {
        order_id: order.order_id.clone(),
        idempotency_key: key.into(),
        lines: lines.iter().map(|(sku, quantity)| line(sku, *quantity)).collect(),
        restock: true,
    }
}

fn minor(money: Option<&shop_proto::common::v1::Money>) -> i64 {
    money.map_or(0, |m| m.amount_minor)
}

fn total(order: &Order) -> i64 {
    minor(order.total.as_ref())
}

fn unit_price(order: &Order, sku: &str) -> anyhow::Result<i64> {
    let line = order
        .lines
        .iter()
        .find(|l| l.sku == sku)
        .context("a line of the order")?;
    Ok(minor(line.unit_price.as_ref()))
}

/// The order as GetOrder shows it now.
async fn get(stack: &Stack, order: &Order) -> anyhow::Result<Order> {
    let request = GetOrderRequest {
        order_id: order.order_id.clone(),
    };
    Ok(stack.orders("alice").await?.get_order(request).await?.into_inner())
}

/// The order's refund `refund_id`, as GetOrder shows it.
fn refund<'a>(order: &'a Order, refund_id: &str) -> anyhow::Result<&'a Refund> {
    order
        .refunds
        .iter()
        .find(|r| r.refund_id == refund_id)
        .with_context(|| format!("refund {refund_id} on {order:?}"))
}

/// Waits until the order's refund `refund_id` is no longer pending.
async fn refund_settled(stack: &Stack, order: &Order, refund_id: &str) -> anyhow::Result<Order> {
    stack
        .wait_for_order("alice", &order.order_id, |o| {
            o.refunds
                .iter()
                .any(|r| r.refund_id == refund_id && r.status() != RefundStatus::Pending)
        })
        .await
}

/// What the provider gave back of the order's one charge, and what it
/// still has pending to give back.
async fn given_back(stack: &Stack, order_id: &str) -> anyhow::Result<(i64, i64)> {
    match stack.provider.lines_of(order_id).await?.as_slice() {
        [line] => Ok((line.refunded, line.refund_pending)),
        lines => anyhow::bail!("one intent expected for order {order_id}, the ledger has {lines:?}"),
    }
}

/// Waits until every consumer has handled everything, and checks that
/// none of them parked anything.
async fn all_handled(stack: &Stack) -> TestResult {
    let js = stack.jetstream().await?;
    wait_consumers_idle(&js).await?;
    let parked = shop_runtime::dlq::list(&js, &Default::default()).await?;
    let parked: Vec<_> = parked.iter().map(|p| (&p.consumer, &p.subject, &p.error)).collect();
    anyhow::ensure!(parked.is_empty(), "parked: {parked:?}");
    Ok(())
}

async fn on_hand(stack: &Stack, sku: &str) -> anyhow::Result<i64> {
    Ok(stack.stock(sku).await?.on_hand)
}

fn eur(minor: i64) -> String {
    format!("EUR {}.{:02}", minor / 100, minor % 100)
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, code: Code, says: &str) {
    match answer {
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(says),
                "{:?} does not say {says:?}",
                status.message()
            );
        }
        Ok(answer) => panic!("expected {code:?}, got {answer:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confirmed_order_is_refunded_in_part_then_in_full_and_each_refund_once() -> TestResult {
    let stack = Stack::start().await?;
    let order = confirmed_order(&stack, "refunded-1").await?;
    let (cap, mug) = (unit_price(&order, "SKU-CAP-001")?, unit_price(&order, "SKU-MUG-001")?);
    assert_eq!(minor(order.refunded.as_ref()), 0, "{order:?}");
    let mut ops = admin(&stack).await?;
    let (caps, mugs) = (
        on_hand(&stack, "SKU-CAP-001").await?,
        on_hand(&stack, "SKU-MUG-001").await?,
    );

    // One line, back in stock: PENDING at once, then SUCCEEDED.
    let asked = refund_request(&order, "return-cap", &[("SKU-CAP-001", 1)]);
    let answered = ops.refund_order(asked.clone()).await?.into_inner();
    assert_eq!(answered.status(), OrderStatus::Confirmed, "{answered:?}");
    let [first] = answered.refunds.as_slice() else {
        panic!("one refund: {answered:?}");
    };
    assert_eq!(first.status(), RefundStatus::Pending);
    assert_eq!(minor(first.amount.as_ref()), cap);
    assert!(first.restock);
    assert_eq!(
        first
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect::<Vec<_>>(),
        [("SKU-CAP-001", 1)]
    );
    assert_eq!(minor(first.lines[0].unit_price.as_ref()), cap, "at the price paid");

    let shown = refund_settled(&stack, &order, &first.refund_id).await?;
    assert_eq!(refund(&shown, &first.refund_id)?.status(), RefundStatus::Succeeded);
    assert_eq!(shown.status(), OrderStatus::PartiallyRefunded, "{shown:?}");
    assert_eq!(minor(shown.refunded.as_ref()), cap);
    assert_eq!(
        given_back(&stack, &order.order_id).await?,
        (cap, 0),
        "the ledger gave the cap back"
    );

    // The same key and request: the same refund as it stands, nothing more.
    let again = ops.refund_order(asked).await?.into_inner();
    assert_eq!(again.refunds.len(), 1, "{again:?}");
    assert_eq!(refund(&again, &first.refund_id)?.status(), RefundStatus::Succeeded);
    assert_eq!(again.status(), OrderStatus::PartiallyRefunded);
    // The same key with another request.
    assert_refused(
        ops.refund_order(refund_request(&order, "return-cap", &[("SKU-MUG-001", 1)]))
            .await,
        Code::AlreadyExists,
        "return-cap",
    );
    // More than is left, of a line and of the order.
    let left = total(&order) - cap;
    assert_eq!(left, 2 * mug);
    assert_refused(
        ops.refund_order(refund_request(&order, "return-mugs", &[("SKU-MUG-001", 3)]))
            .await,
        Code::FailedPrecondition,
        &format!("only {} is left to refund", eur(left)),
    );
    assert_refused(
        ops.refund_order(refund_request(&order, "return-cap-2", &[("SKU-CAP-001", 1)]))
            .await,
        Code::FailedPrecondition,
        "nothing of SKU-CAP-001 is left to refund",
    );

    // The rest (no lines: all that is left), kept out of stock: REFUNDED.
    let rest = RefundOrderRequest {
        restock: false,
        ..refund_request(&order, "return-rest", &[])
    };
    let rest = ops.refund_order(rest).await?.into_inner();
    let second = rest.refunds.last().context("the second refund")?;
    assert_eq!(minor(second.amount.as_ref()), left);
    assert_eq!(
        second
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect::<Vec<_>>(),
        [("SKU-MUG-001", 2)]
    );
    let shown = refund_settled(&stack, &order, &second.refund_id).await?;
    assert_eq!(shown.status(), OrderStatus::Refunded, "{shown:?}");
    assert_eq!(minor(shown.refunded.as_ref()), total(&order));
    assert_eq!(given_back(&stack, &order.order_id).await?, (total(&order), 0));

    // Nothing is left; a repeat of the first still answers.
    assert_refused(
        ops.refund_order(refund_request(&order, "return-more", &[])).await,
        Code::FailedPrecondition,
        "the order is REFUNDED",
    );
    let late_retry = ops
        .refund_order(refund_request(&order, "return-cap", &[("SKU-CAP-001", 1)]))
        .await?
        .into_inner();
    assert_eq!(late_retry.status(), OrderStatus::Refunded);
    assert_eq!(late_retry.refunds.len(), 2);

    // Everything handled: the provider gave the total back, once, and
    // the cap alone went back in stock.
    all_handled(&stack).await?;
    assert_eq!(given_back(&stack, &order.order_id).await?, (total(&order), 0));
    assert_eq!(
        (
            on_hand(&stack, "SKU-CAP-001").await?,
            on_hand(&stack, "SKU-MUG-001").await?
        ),
        (caps + 1, mugs)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_admin_refunds_only_a_confirmed_order_and_says_what_is_wrong() -> TestResult {
    let stack = Stack::start().await?;
    let order = confirmed_order(&stack, "confirmed-1").await?;
    let whole = refund_request(&order, "return-1", &[]);

    // Her own order, but a customer.
    assert_refused(
        stack.orders("alice").await?.refund_order(whole.clone()).await,
        Code::PermissionDenied,
        "admin",
    );
    let mut ops = admin(&stack).await?;
    assert_refused(
        ops.refund_order(refund_request(&order, "return-1", &[("SKU-MUG-001", 0)]))
            .await,
        Code::InvalidArgument,
        "lines[0].quantity: must be positive, got 0",
    );
    assert_refused(
        ops.refund_order(refund_request(&order, "", &[])).await,
        Code::InvalidArgument,
        "idempotency_key: is required",
    );
    assert_refused(
        ops.refund_order(refund_request(
            &order,
            "return-1",
            &[("SKU-MUG-001", 1), ("SKU-TEE-001", 1)],
        ))
        .await,
        Code::InvalidArgument,
        "lines[1].sku: SKU-TEE-001 is not on this order",
    );
    let unknown = RefundOrderRequest {
        order_id: uuid::Uuid::now_v7().to_string(),
        ..whole.clone()
    };
    assert_refused(ops.refund_order(unknown).await, Code::NotFound, "no order");
    let garbled = RefundOrderRequest {
        order_id: "order-1".into(),
        ..whole.clone()
    };
    assert_refused(ops.refund_order(garbled).await, Code::InvalidArgument, "order_id:");

    // A declined card: cancelled, nothing to refund.
    let declined = settled_order(&stack, "declined-1", "pm_card_declined").await?;
    assert_eq!(declined.status(), OrderStatus::Cancelled, "{declined:?}");
    assert_refused(
        ops.refund_order(refund_request(&declined, "return-1", &[])).await,
        Code::FailedPrecondition,
        "the order is CANCELLED; only a CONFIRMED or PARTIALLY_REFUNDED order can be refunded",
    );
    let shown = get(&stack, &declined).await?;
    assert!(shown.refunds.is_empty(), "{shown:?}");

    // None of the refusals recorded anything.
    let order = get(&stack, &order).await?;
    assert!(order.refunds.is_empty(), "{order:?}");
    all_handled(&stack).await?;
    assert_eq!(given_back(&stack, &order.order_id).await?, (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_whole_refunds_of_one_order_give_its_total_back_once() -> TestResult {
    let stack = Stack::start().await?;
    let order = confirmed_order(&stack, "raced-1").await?;
    let ops = admin(&stack).await?;

    let answers = join_all((0..4).map(|i| {
        let mut ops = ops.clone();
        let request = refund_request(&order, &format!("return-{i}"), &[]);
        async move { ops.refund_order(request).await }
    }))
    .await;
    let (won, lost): (Vec<_>, Vec<_>) = answers.into_iter().partition(Result::is_ok);
    assert_eq!((won.len(), lost.len()), (1, 3), "{won:?} {lost:?}");
    for refused in lost {
        let status = refused.expect_err("refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        // Being refunded, or (had the winner settled already) refunded.
        let message = status.message();
        assert!(
            message.starts_with("nothing is left to refund") || message.starts_with("the order is REFUNDED"),
            "{message}"
        );
    }
    let answered = won
        .into_iter()
        .next()
        .context("a winner")?
        .map(tonic::Response::into_inner)?;
    let [refund_of_all] = answered.refunds.as_slice() else {
        panic!("one refund: {answered:?}");
    };
    assert_eq!(minor(refund_of_all.amount.as_ref()), total(&order));

    let shown = refund_settled(&stack, &order, &refund_of_all.refund_id).await?;
    assert_eq!(shown.status(), OrderStatus::Refunded, "{shown:?}");
    assert_eq!(shown.refunds.len(), 1);
    all_handled(&stack).await?;
    assert_eq!(given_back(&stack, &order.order_id).await?, (total(&order), 0));
    Ok(())
}

/// svc-payment held back after the checkout: the test says what became of
/// each refund, as svc-payment would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_refund_shows_why_gives_its_amount_back_to_refund_and_repeats_change_nothing() -> TestResult {
    let mut stack = Stack::start().await?;
    let order = confirmed_order(&stack, "failing-1").await?;
    stack.stop_service(Service::Payment).await?;
    let js = stack.jetstream().await?;
    let mut ops = admin(&stack).await?;
    let cap = unit_price(&order, "SKU-CAP-001")?;

    let asked = RefundOrderRequest {
        restock: false,
        ..refund_request(&order, "return-cap", &[("SKU-CAP-001", 1)])
    };
    let answered = ops.refund_order(asked).await?.into_inner();
    let refund_id = answered.refunds[0].refund_id.clone();

    // What svc-payment and svc-inventory hear, once the relay sent it.
    let subject = format!("orders.refund_requested.{}", order.order_id);
    let stored = eventually("orders.refund_requested", || async {
        let stream = js.get_stream("ORDERS").await?;
        Ok(stream.get_last_raw_message_by_subject(&subject).await.ok())
    })
    .await?;
    let requested: ev::OrderRefundRequested = serde_json::from_slice(&stored.payload)?;
    assert_eq!(
        (
            requested.refund_id.as_str(),
            requested.user_id.as_str(),
            requested.restock
        ),
        (refund_id.as_str(), "alice", false)
    );
    assert_eq!(minor(requested.amount.as_ref()), cap);
    assert_eq!(
        requested
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity, minor(l.unit_price.as_ref())))
            .collect::<Vec<_>>(),
        [("SKU-CAP-001", 1, cap)]
    );

    let failed = ev::PaymentRefundFailed {
        order_id: order.order_id.clone(),
        user_id: order.user_id.clone(),
        payment_id: uuid::Uuid::now_v7().to_string(),
        refund_id: refund_id.clone(),
        amount: requested.amount.clone(),
        reason: "the card account is closed".into(),
    };
    publish(&js, &failed).await?;
    let shown = refund_settled(&stack, &order, &refund_id).await?;
    let settled = refund(&shown, &refund_id)?;
    assert_eq!(
        (settled.status(), settled.failure_reason.as_str()),
        (RefundStatus::Failed, "the card account is closed")
    );
    assert_eq!(shown.status(), OrderStatus::Confirmed, "nothing came back: {shown:?}");
    assert_eq!(minor(shown.refunded.as_ref()), 0);

    // The same word again changes nothing; a contradicting one is parked
    // for an operator and changes nothing either.
    publish(&js, &failed).await?;
    let contradicting = ev::PaymentRefunded {
        order_id: order.order_id.clone(),
        user_id: order.user_id.clone(),
        payment_id: failed.payment_id.clone(),
        amount: requested.amount.clone(),
        refund_id: refund_id.clone(),
    };
    publish(&js, &contradicting).await?;
    // A cancellation's refund names no refund: not one of these.
    publish(
        &js,
        &ev::PaymentRefunded {
            refund_id: String::new(),
            ..contradicting.clone()
        },
    )
    .await?;
    handled(&js, "order-payments").await?;
    assert_eq!(get(&stack, &order).await?, shown);
    let parked = shop_runtime::dlq::list(&js, &Default::default()).await?;
    let parked: Vec<_> = parked
        .iter()
        .map(|p| (p.consumer.as_str(), p.event_type.as_str()))
        .collect();
    assert_eq!(parked, [("order-payments", "shop.events.v1.PaymentRefunded")]);

    // The cap is left to refund again.
    let again = ops
        .refund_order(refund_request(&order, "return-cap-again", &[("SKU-CAP-001", 1)]))
        .await?
        .into_inner();
    let second = again.refunds.last().context("a second refund")?.clone();
    assert_eq!(
        (second.status(), minor(second.amount.as_ref())),
        (RefundStatus::Pending, cap)
    );
    let refunded = ev::PaymentRefunded {
        refund_id: second.refund_id.clone(),
        ..contradicting
    };
    publish(&js, &refunded).await?;
    let shown = refund_settled(&stack, &order, &second.refund_id).await?;
    assert_eq!(shown.status(), OrderStatus::PartiallyRefunded, "{shown:?}");
    assert_eq!(minor(shown.refunded.as_ref()), cap);

    // Its success heard twice: counted once.
    publish(&js, &refunded).await?;
    handled(&js, "order-payments").await?;
    assert_eq!(get(&stack, &order).await?, shown);
    Ok(())
}

/// The provider fails every refund: svc-payment asks again under new keys
/// until its attempts run out, then the order shows the refund failed with
/// nothing given back, and what it asked is still there to refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_the_provider_keeps_failing_is_tried_again_then_shown_failed() -> TestResult {
    let stack = Stack::start().await?;
    let order = confirmed_order(&stack, "refund-fails").await?;
    let refunds_fail = shop_provider::Faults {
        refunds_fail: 1.0,
        ..shop_provider::Faults::default()
    };
    stack.provider.set_faults(&refunds_fail).await?;

    let asked = admin(&stack)
        .await?
        .refund_order(refund_request(&order, "fails", &[("SKU-CAP-001", 1)]))
        .await?
        .into_inner();
    let refund_id = asked.refunds.first().context("the refund")?.refund_id.clone();
    let settled = refund_settled(&stack, &order, &refund_id).await?;
    let failed = refund(&settled, &refund_id)?;
    assert_eq!(failed.status(), RefundStatus::Failed, "{failed:?}");
    assert!(!failed.failure_reason.is_empty(), "{failed:?}");
    assert_eq!(settled.status(), OrderStatus::Confirmed, "{settled:?}");
    assert_eq!(given_back(&stack, &order.order_id).await?, (0, 0), "nothing came back");
    let attempts = stack
        .provider
        .lines_of(&order.order_id)
        .await?
        .first()
        .map(|line| line.captured)
        .context("the charge")?;
    assert_eq!(attempts, total(&order), "the charge stands whole");

    // The bank takes refunds again: the same amount can be refunded.
    stack.provider.set_faults(&shop_provider::Faults::default()).await?;
    let again = admin(&stack)
        .await?
        .refund_order(refund_request(&order, "again", &[("SKU-CAP-001", 1)]))
        .await?
        .into_inner();
    let refund_id = again
        .refunds
        .iter()
        .find(|r| r.status() == RefundStatus::Pending)
        .context("the new refund")?
        .refund_id
        .clone();
    let settled = refund_settled(&stack, &order, &refund_id).await?;
    assert_eq!(refund(&settled, &refund_id)?.status(), RefundStatus::Succeeded);
    assert_eq!(settled.status(), OrderStatus::PartiallyRefunded, "{settled:?}");
    let cap = unit_price(&order, "SKU-CAP-001")?;
    assert_eq!(given_back(&stack, &order.order_id).await?, (cap, 0));
    Ok(())
}
