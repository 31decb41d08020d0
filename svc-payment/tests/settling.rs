//! Payments the provider settles in its own time, end to end: the platform
//! in this process with the provider emulator it runs, svc-payment learning
//! the outcome from the provider's event list (reconciliation) or from a
//! webhook, and the money checked in the emulator's ledger.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use shop_harness::{Service, Stack, StackOptions, line};
use shop_proto::{
    order::v1::{CancelOrderRequest, CancelReason, GetOrderRequest, Order, OrderStatus, PlaceOrderRequest},
    payment::v1::{
        GetPaymentRequest, Payment, PaymentStatus, ReceiveWebhookRequest,
        payment_webhook_service_client::PaymentWebhookServiceClient,
    },
};
use shop_provider::{
    Faults,
    domain::{LedgerLine, Status},
};
use shop_runtime::webhook_secret::WebhookSecret;
use tonic::Code;

/// The ledger line of the one intent made for `order_id`.
async fn line_of(stack: &Stack, order_id: &str) -> anyhow::Result<LedgerLine> {
    match stack.provider.lines_of(order_id).await?.as_slice() {
        [line] => Ok(line.clone()),
        lines => bail!("one intent expected for order {order_id}, the ledger has {lines:?}"),
    }
}

fn secret() -> WebhookSecret {
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().expect("a secret")
}

fn previous_secret() -> WebhookSecret {
    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse().expect("a secret")
}

/// A stack whose svc-payment reads the provider's events every
/// `reconcile`, and takes webhooks signed with [`secret`] or
/// [`previous_secret`].
async fn stack(reconcile: &str, options: StackOptions) -> anyhow::Result<Stack> {
    let options = options
        .setting(Service::Payment, "PAYMENT_RECONCILE_INTERVAL", reconcile)
        .setting(Service::Payment, "PAYMENT_WEBHOOK_SECRET", secret().expose())
        .setting(
            Service::Payment,
            "PAYMENT_WEBHOOK_PREVIOUS_SECRET",
            previous_secret().expose(),
        )
        .setting(
            Service::Payment,
            "PAYMENT_RETURN_URL",
            "http://shop.test/#/orders/{order_id}",
        );
    Stack::start_with(options).await
}

async fn place(stack: &Stack, key: &str, card: &str) -> anyhow::Result<Order> {
    let request = PlaceOrderRequest {
        idempotency_key: key.into(),
        lines: vec![line("SKU-TEE-001", 2)],
        payment_method: card.into(),
    };
    Ok(stack.orders("alice").await?.place_order(request).await?.into_inner())
}

async fn payment(stack: &Stack, order_id: &str) -> anyhow::Result<Payment> {
    let request = GetPaymentRequest {
        order_id: order_id.into(),
    };
    Ok(stack.payments("alice").await?.get_payment(request).await?.into_inner())
}

/// Waits (bounded) until `order_id`'s payment is `status`.
async fn payment_becomes(stack: &Stack, order_id: &str, status: PaymentStatus) -> anyhow::Result<Payment> {
    let started = tokio::time::Instant::now();
    loop {
        let seen = payment(stack, order_id).await;
        if let Ok(payment) = &seen
            && payment.status == status as i32
        {
            return seen;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the payment of order {order_id} never became {status:?}; last {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_asynchronous_card_keeps_the_order_reserved_until_the_provider_settles_it() -> anyhow::Result<()> {
    let stack = stack("300ms", StackOptions::default()).await?;

    let order = place(&stack, "async-ok", "pm_card_async").await?;
    payment_becomes(&stack, &order.order_id, PaymentStatus::Processing).await?;
    let request = GetOrderRequest {
        order_id: order.order_id.clone(),
    };
    let waiting = stack.orders("alice").await?.get_order(request).await?.into_inner();
    assert_eq!(waiting.status, OrderStatus::Reserved as i32, "{waiting:?}");

    let confirmed = stack.settled("alice", &order.order_id).await?;
    assert_eq!(confirmed.status, OrderStatus::Confirmed as i32, "{confirmed:?}");
    let total = confirmed.total.as_ref().context("a total")?.amount_minor;
    let line = line_of(&stack, &order.order_id).await?;
    assert_eq!(line.captured, total, "captured once: {line:?}");

    let declined = place(&stack, "async-declined", "pm_card_async_declined").await?;
    payment_becomes(&stack, &declined.order_id, PaymentStatus::Processing).await?;
    let declined = stack.settled("alice", &declined.order_id).await?;
    assert_eq!(declined.status, OrderStatus::Cancelled as i32, "{declined:?}");
    assert_eq!(declined.cancel_reason, CancelReason::PaymentDeclined as i32);
    assert_eq!(line_of(&stack, &declined.order_id).await?.captured, 0);
    Ok(())
}

/// Posts the emulator's 3-D Secure page's button (`complete` or `fail`);
/// where the page sends the customer back, if it does.
async fn authenticate(next_action_url: &str, outcome: &str) -> anyhow::Result<Option<String>> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let answer = client.post(format!("{next_action_url}/{outcome}")).send().await?;
    if !(answer.status().is_success() || answer.status().is_redirection()) {
        bail!("authentication page answered {}", answer.status());
    }
    Ok(answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_that_asks_for_authentication_waits_for_the_customer() -> anyhow::Result<()> {
    let stack = stack("300ms", StackOptions::default()).await?;

    let order = place(&stack, "3ds-ok", "pm_card_3ds").await?;
    let asking = payment_becomes(&stack, &order.order_id, PaymentStatus::RequiresAction).await?;
    assert!(
        asking
            .next_action_url
            .starts_with(&format!("{}/authenticate/", stack.provider.url())),
        "{asking:?}"
    );
    let back = authenticate(&asking.next_action_url, "complete").await?;
    let order_page = format!("#/orders/{}", order.order_id);
    assert!(
        back.as_deref()
            .is_some_and(|url| url.starts_with("http://shop.test/?") && url.ends_with(&order_page)),
        "sent back to {back:?}, not the order's page {order_page}"
    );
    let confirmed = stack.settled("alice", &order.order_id).await?;
    assert_eq!(confirmed.status, OrderStatus::Confirmed as i32, "{confirmed:?}");

    let failing = place(&stack, "3ds-fail", "pm_card_3ds").await?;
    let asking = payment_becomes(&stack, &failing.order_id, PaymentStatus::RequiresAction).await?;
    authenticate(&asking.next_action_url, "fail").await?;
    let cancelled = stack.settled("alice", &failing.order_id).await?;
    assert_eq!(
        cancelled.cancel_reason,
        CancelReason::PaymentDeclined as i32,
        "{cancelled:?}"
    );
    assert_eq!(line_of(&stack, &failing.order_id).await?.captured, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_who_never_authenticates_gets_the_stock_released_and_is_charged_nothing() -> anyhow::Result<()> {
    let options = StackOptions {
        reservation_ttl: Duration::from_secs(3),
        ..StackOptions::default()
    };
    let stack = stack("300ms", options).await?;

    let order = place(&stack, "3ds-never", "pm_card_3ds").await?;
    let asking = payment_becomes(&stack, &order.order_id, PaymentStatus::RequiresAction).await?;
    let cancelled = stack.settled("alice", &order.order_id).await?;
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32, "{cancelled:?}");
    payment_becomes(&stack, &order.order_id, PaymentStatus::Cancelled).await?;
    let line = line_of(&stack, &order.order_id).await?;
    assert_eq!((line.status, line.captured), (Status::Canceled, 0), "{line:?}");
    // Too late: the page can no longer take the money.
    let _ = authenticate(&asking.next_action_url, "complete").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(line_of(&stack, &order.order_id).await?.captured, 0);
    Ok(())
}

/// The customer cancels while the charge is processing and the provider is
/// away; the charge settles meanwhile. When the provider is back the void
/// finds the money taken, and gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_success_that_lands_after_the_cancellation_is_refunded() -> anyhow::Result<()> {
    let stack = stack("300ms", StackOptions::default()).await?;

    let order = place(&stack, "late-success", "pm_card_async").await?;
    payment_becomes(&stack, &order.order_id, PaymentStatus::Processing).await?;
    stack.provider.set_faults(&Faults::outage()).await?;
    let request = CancelOrderRequest {
        order_id: order.order_id.clone(),
    };
    stack.orders("alice").await?.cancel_order(request).await?;
    // The async window passes while the void cannot get through.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.provider.set_faults(&Faults::default()).await?;

    payment_becomes(&stack, &order.order_id, PaymentStatus::Cancelled).await?;
    let total = order.total.as_ref().context("a total")?.amount_minor;
    let line = line_of(&stack, &order.order_id).await?;
    assert_eq!(line.captured, total, "{line:?}");
    assert_eq!(line.refunded + line.refund_pending, total, "given back: {line:?}");
    Ok(())
}

/// Every answer to the charge lost, the provider having acted: its event
/// list tells what the answers did not, and the order is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_charge_whose_answers_were_lost_is_settled_from_the_providers_events() -> anyhow::Result<()> {
    let stack = stack("300ms", StackOptions::default()).await?;
    let lose_every_answer = Faults {
        lose_answers: 1.0,
        ..Faults::default()
    };
    stack.provider.set_faults(&lose_every_answer).await?;

    let order = place(&stack, "lost-answers", "pm_card_ok").await?;
    let confirmed = stack.settled("alice", &order.order_id).await?;
    assert_eq!(confirmed.status, OrderStatus::Confirmed as i32, "{confirmed:?}");
    let total = confirmed.total.as_ref().context("a total")?.amount_minor;
    assert_eq!(line_of(&stack, &order.order_id).await?.captured, total);
    Ok(())
}

/// A webhook as the provider signs one, for event `body`.
fn signed(secret: &WebhookSecret, body: &Value, at: i64) -> ReceiveWebhookRequest {
    let id = body["id"].as_str().unwrap_or("evt_test").to_owned();
    let body = serde_json::to_vec(body).expect("json");
    let signature = secret.signer().sign(&id, at, &body).expect("signs");
    ReceiveWebhookRequest {
        headers: [
            ("webhook-id".to_owned(), id),
            ("webhook-timestamp".to_owned(), at.to_string()),
            ("webhook-signature".to_owned(), signature),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]
        .into(),
        body,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_are_taken_once_signed_and_fresh_and_never_believed() -> anyhow::Result<()> {
    // Reconciliation out of the way: only webhooks can settle anything.
    let stack = stack("1h", StackOptions::default()).await?;
    let mut intake = PaymentWebhookServiceClient::new(stack.channel(Service::Payment).await?);
    let pool = stack.pool(Service::Payment).await?;
    let stored = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_events")
            .fetch_one(&pool)
            .await
    };

    let order = place(&stack, "webhook-async", "pm_card_async").await?;
    let processing = payment_becomes(&stack, &order.order_id, PaymentStatus::Processing).await?;
    let pool_ = stack.pool(Service::Payment).await?;
    let intent: String = sqlx::query_scalar("SELECT charge_id FROM payments WHERE order_id = $1")
        .bind(&order.order_id)
        .fetch_one(&pool_)
        .await?;

    // Signed, fresh, and false: the intent is still processing.
    let false_claim = json!({
        "id": "evt_false_claim", "type": "payment_intent.succeeded", "object": "event",
        "data": {"object": {"object": "payment_intent", "id": intent, "status": "succeeded"}}
    });
    intake.receive_webhook(signed(&secret(), &false_claim, now())).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = payment(&stack, &order.order_id).await?;
    assert_eq!(
        still.status,
        PaymentStatus::Processing as i32,
        "acted on the claim: {still:?} (was {processing:?})"
    );

    // Refused: another secret, a stale or future timestamp, too large.
    let wrong: WebhookSecret = "whsec_dGhpcyBpcyBub3QgdGhlIHNob3AncyBzZWNyZXQ="
        .parse()
        .map_err(anyhow::Error::msg)?;
    for (what, request) in [
        ("another secret", signed(&wrong, &false_claim, now())),
        ("ten minutes old", signed(&secret(), &false_claim, now() - 600)),
        ("ten minutes ahead", signed(&secret(), &false_claim, now() + 600)),
    ] {
        let refused = intake.receive_webhook(request).await.expect_err(what);
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
    }
    let mut tampered = signed(&secret(), &false_claim, now());
    tampered.body.extend_from_slice(b" ");
    let refused = intake.receive_webhook(tampered).await.expect_err("tampered");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let huge = json!({"id": "evt_huge", "type": "x", "data": {"object": {"object": "payment_intent", "id": "pi_x", "pad": "x".repeat(70_000)}}});
    let refused = intake
        .receive_webhook(signed(&secret(), &huge, now()))
        .await
        .expect_err("too large");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(stored().await?, 1, "only the signed, fresh one was stored");

    // Once the provider settled, a webhook (signed with the previous secret,
    // mid-rotation) settles the payment; its repeat changes nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = json!({
        "id": "evt_settled", "type": "payment_intent.succeeded", "object": "event",
        "data": {"object": {"object": "payment_intent", "id": intent}}
    });
    intake
        .receive_webhook(signed(&previous_secret(), &settled, now()))
        .await?;
    intake.receive_webhook(signed(&secret(), &settled, now())).await?;
    let confirmed = stack.settled("alice", &order.order_id).await?;
    assert_eq!(confirmed.status, OrderStatus::Confirmed as i32, "{confirmed:?}");
    assert_eq!(stored().await?, 2, "a repeat is stored once");
    let unhandled: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE handled_at IS NULL")
        .fetch_one(&pool)
        .await?;
    assert_eq!(unhandled, 0);
    Ok(())
}
