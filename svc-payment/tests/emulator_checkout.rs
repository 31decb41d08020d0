//! The checkout saga end to end with svc-payment charging through the
//! payment provider emulator (`PAYMENT_PROVIDER_URL`): the platform in this
//! process (`shop_harness::Stack`), the emulator beside it, and the money
//! checked where it is, in the emulator's ledger.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use shop_harness::{Service, Stack, StackOptions, line};
use shop_proto::{
    order::v1::{CancelOrderRequest, CancelReason, Order, OrderStatus, PlaceOrderRequest},
    payment::v1::{GetPaymentRequest, PaymentStatus},
};
use shop_runtime::CancellationToken;
use tokio::net::TcpListener;

/// The emulator, stopped when dropped.
struct Emulator {
    url: String,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Emulator {
    async fn start() -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("payment-provider-").tempdir()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        tokio::spawn(shop_provider::run(
            shop_provider::Config::local(data.path()),
            listener,
            shutdown.clone(),
        ));
        Ok(Self {
            url,
            shutdown,
            _data: data,
        })
    }

    /// Sets every fault knob (`{}`: all off).
    async fn faults(&self, knobs: &'static str) -> anyhow::Result<()> {
        reqwest::Client::new()
            .put(format!("{}/admin/faults", self.url))
            .body(knobs)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn ledger(&self) -> anyhow::Result<Vec<Value>> {
        let ledger: Value = reqwest::get(format!("{}/admin/ledger", self.url))
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(ledger["data"].as_array().context("a ledger list")?.clone())
    }

    /// The ledger line of the intent made for `order_id`.
    async fn line_of(&self, order_id: &str) -> anyhow::Result<Value> {
        let lines: Vec<Value> = self
            .ledger()
            .await?
            .into_iter()
            .filter(|l| l["order_id"] == order_id)
            .collect();
        match lines.as_slice() {
            [line] => Ok(line.clone()),
            lines => bail!("one intent expected for order {order_id}, the ledger has {lines:?}"),
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A stack whose svc-payment charges through `emulator`.
async fn stack(emulator: &Emulator, options: StackOptions) -> anyhow::Result<Stack> {
    Stack::start_with(options.setting(Service::Payment, "PAYMENT_PROVIDER_URL", &emulator.url)).await
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

/// What the simulator in svc-payment's database charged: nothing, when the
/// emulator is the provider.
async fn simulated_charges(stack: &Stack) -> anyhow::Result<i64> {
    let pool = stack.pool(Service::Payment).await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM simulated_provider.charges")
        .fetch_one(&pool)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_saga_confirms_a_good_card_and_cancels_a_declined_one_through_the_provider() -> anyhow::Result<()> {
    let emulator = Emulator::start().await?;
    let stack = stack(&emulator, StackOptions::default()).await?;

    let paid = place(&stack, "emulator-ok", "pm_card_ok").await?;
    let paid = stack.settled("alice", &paid.order_id).await?;
    assert_eq!(paid.status, OrderStatus::Confirmed as i32, "{paid:?}");
    let total = paid.total.as_ref().context("a total")?.amount_minor;
    let line = emulator.line_of(&paid.order_id).await?;
    assert_eq!(line["status"], "succeeded");
    assert_eq!(line["captured"], total, "the order's total, captured once");
    let pool = stack.pool(Service::Payment).await?;
    let charge_id: Option<String> = sqlx::query_scalar("SELECT charge_id FROM payments WHERE order_id = $1")
        .bind(&paid.order_id)
        .fetch_one(&pool)
        .await?;
    assert_eq!(
        charge_id.as_deref(),
        line["intent"].as_str(),
        "the intent is the charge"
    );

    let declined = place(&stack, "emulator-declined", "pm_card_declined").await?;
    let declined = stack.settled("alice", &declined.order_id).await?;
    assert_eq!(declined.status, OrderStatus::Cancelled as i32, "{declined:?}");
    assert_eq!(declined.cancel_reason, CancelReason::PaymentDeclined as i32);
    assert_eq!(
        payment_status(&stack, &declined.order_id).await?,
        PaymentStatus::Failed as i32
    );
    let line = emulator.line_of(&declined.order_id).await?;
    assert_eq!(line["status"], "requires_payment_method");
    assert_eq!(line["captured"], 0, "nothing taken");

    assert_eq!(simulated_charges(&stack).await?, 0, "the emulator did the charging");
    Ok(())
}

/// Every answer lost (the provider acted each time): the attempts run
/// out, the payment turns voiding, and the void, which never learned the
/// intent's id, finds it by its key and refunds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_charge_whose_answers_were_all_lost_is_refunded_and_the_order_cancelled() -> anyhow::Result<()> {
    let emulator = Emulator::start().await?;
    let stack = stack(&emulator, StackOptions::default()).await?;
    emulator.faults(r#"{"lose_answers": 1.0}"#).await?;

    let order = place(&stack, "emulator-lost", "pm_card_ok").await?;
    wait_for_payment(&stack, &order.order_id, "voiding").await?;
    emulator.faults("{}").await?;

    let cancelled = stack.settled("alice", &order.order_id).await?;
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32, "{cancelled:?}");
    wait_for_payment(&stack, &order.order_id, "failed").await?;
    let total = cancelled.total.as_ref().context("a total")?.amount_minor;
    let line = emulator.line_of(&order.order_id).await?;
    assert_eq!(line["captured"], total, "charged once, by the first attempt");
    let refunded = line["refunded"].as_i64().unwrap_or(0) + line["refund_pending"].as_i64().unwrap_or(0);
    assert_eq!(refunded, total, "and given back: {line}");
    Ok(())
}

/// The provider is down from the first charge; the customer cancels. The
/// void finds no intent, waits out any charge in flight, and the payment
/// ends cancelled with nothing ever charged, however often the charge's
/// event comes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_orders_charge_that_never_reached_the_provider_is_voided_without_one() -> anyhow::Result<()> {
    let emulator = Emulator::start().await?;
    let stack = stack(&emulator, StackOptions::default()).await?;
    emulator.faults(r#"{"outage": true}"#).await?;

    let order = place(&stack, "emulator-down", "pm_card_ok").await?;
    wait_for_payment(&stack, &order.order_id, "pending").await?;
    let request = CancelOrderRequest {
        order_id: order.order_id.clone(),
    };
    stack.orders("alice").await?.cancel_order(request).await?;
    let cancelled = stack.settled("alice", &order.order_id).await?;
    assert_eq!(cancelled.cancel_reason, CancelReason::CustomerCancelled as i32);
    wait_for_payment(&stack, &order.order_id, "voiding").await?;
    emulator.faults("{}").await?;

    wait_for_payment(&stack, &order.order_id, "cancelled").await?;
    assert_eq!(
        payment_status(&stack, &order.order_id).await?,
        PaymentStatus::Cancelled as i32
    );
    shop_harness::wait_consumers_idle(&stack.jetstream().await?).await?;
    assert!(emulator.ledger().await?.is_empty(), "nothing was ever charged");
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
