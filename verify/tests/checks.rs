//! The books against real PostgreSQL, the real payment provider emulator
//! (and nats-server for the DLQ): a consistent world of one confirmed and
//! one cancelled order reads clean, and each broken invariant is reported
//! naming the order, payment, intent, SKU or event. The provider's books are
//! broken the way a bug would break them: through its own API (an intent
//! made, or refunded, behind svc-payment's back).

use std::{collections::BTreeMap, time::Duration};

use async_nats::{HeaderMap, jetstream};
use chrono::{DateTime, TimeDelta, Utc};
use shop_harness::provider::Emulator;
use shop_infra::{NatsServer, fresh_database};
use shop_runtime::{
    consumer, db, topology,
    values::{Currency, Money},
};
use shop_verify::{Databases, Options, Report};
use sqlx::PgPool;
use svc_payment::provider::{HttpProvider, PaymentProvider};
use uuid::Uuid;

/// What every order of the world costs.
const TOTAL: i64 = 2598;

/// One confirmed order (2 mugs, paid at the provider, sold, emailed) and
/// one cancelled because its card was declined (1 tee, declined at the
/// provider, reservation released, emailed).
struct World {
    dbs: Databases,
    provider: Emulator,
    confirmed: Uuid,
    confirmed_payment: Uuid,
    cancelled: Uuid,
    cancelled_payment: Uuid,
    initial_on_hand: BTreeMap<String, i64>,
}

impl World {
    fn options(&self) -> Options {
        Options {
            initial_on_hand: Some(self.initial_on_hand.clone()),
            ..Options::new(Utc::now())
        }
    }

    async fn check(&self) -> anyhow::Result<Report> {
        self.check_with(&self.options()).await
    }

    async fn check_with(&self, options: &Options) -> anyhow::Result<Report> {
        shop_verify::check(&self.dbs, self.provider.admin(), None, options).await
    }

    /// A client of the provider, as svc-payment makes one.
    fn client(&self) -> anyhow::Result<HttpProvider> {
        client(&self.provider)
    }
}

fn client(provider: &Emulator) -> anyhow::Result<HttpProvider> {
    Ok(HttpProvider::new(
        reqwest::Url::parse(provider.url())?,
        Duration::from_secs(5),
    )?)
}

async fn database(migrations: sqlx::migrate::Migrator) -> anyhow::Result<PgPool> {
    let pool = db::connect(&fresh_database().await?, 4, db::Limits::default()).await?;
    db::migrate(&pool, migrations).await?;
    Ok(pool)
}

async fn world() -> anyhow::Result<World> {
    let provider = Emulator::alone(Duration::from_secs(1)).await?;
    let dbs = Databases {
        order: database(sqlx::migrate!("../svc-order/migrations")).await?,
        inventory: database(sqlx::migrate!("../svc-inventory/migrations")).await?,
        payment: database(sqlx::migrate!("../svc-payment/migrations")).await?,
        notify: database(sqlx::migrate!("../svc-notify/migrations")).await?,
    };
    // What a run records before it starts: the seeded catalog's stock.
    let initial_on_hand: BTreeMap<String, i64> = sqlx::query_as("SELECT sku, on_hand FROM stock")
        .fetch_all(&dbs.inventory)
        .await?
        .into_iter()
        .collect();
    let ago = |minutes| Utc::now() - TimeDelta::minutes(minutes);

    let confirmed = order(&dbs.order, "confirmed", None, ago(10)).await?;
    reservation(&dbs.inventory, confirmed, "committed", &[("SKU-MUG-001", 2)]).await?;
    sqlx::query("UPDATE stock SET on_hand = on_hand - 2 WHERE sku = 'SKU-MUG-001'")
        .execute(&dbs.inventory)
        .await?;
    let confirmed_payment = payment(&dbs.payment, &provider, confirmed, "succeeded", Some("pm_card_ok")).await?;
    email(&dbs.notify, confirmed, "order_confirmed").await?;
    outbox(&dbs.order, confirmed, "orders.confirmed", ago(9), true).await?;

    let cancelled = order(&dbs.order, "cancelled", Some("payment_declined"), ago(8)).await?;
    reservation(&dbs.inventory, cancelled, "released", &[("SKU-TEE-001", 1)]).await?;
    let cancelled_payment = payment(&dbs.payment, &provider, cancelled, "failed", Some("pm_card_declined")).await?;
    email(&dbs.notify, cancelled, "order_cancelled").await?;
    outbox(&dbs.payment, cancelled, "payments.failed", ago(8), true).await?;
    // Committed a moment ago, not yet sent: the relay is about to.
    outbox(&dbs.order, cancelled, "orders.cancelled", Utc::now(), false).await?;

    Ok(World {
        dbs,
        provider,
        confirmed,
        confirmed_payment,
        cancelled,
        cancelled_payment,
        initial_on_hand,
    })
}

async fn order(
    pool: &PgPool,
    status: &str,
    cancel_reason: Option<&str>,
    created_at: DateTime<Utc>,
) -> anyhow::Result<Uuid> {
    let order_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders (order_id, user_id, idempotency_key, request_fingerprint, status, cancel_reason,
                             payment_method, total_minor, currency, created_at, updated_at)
         VALUES ($1, 'alice', $2, 'fingerprint', $3, $4, 'pm_card_ok', 2598, 'EUR', $5, $5)",
    )
    .bind(order_id)
    .bind(order_id.to_string())
    .bind(status)
    .bind(cancel_reason)
    .bind(created_at)
    .execute(pool)
    .await?;
    Ok(order_id)
}

async fn reservation(pool: &PgPool, order_id: Uuid, status: &str, lines: &[(&str, i32)]) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO reservations (order_id, user_id, status, expires_at)
         VALUES ($1, 'alice', $2, CASE WHEN $2 = 'held' THEN now() + interval '15 minutes' END)",
    )
    .bind(order_id.to_string())
    .bind(status)
    .execute(pool)
    .await?;
    for (sku, quantity) in lines {
        sqlx::query("INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)")
            .bind(order_id.to_string())
            .bind(sku)
            .bind(quantity)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A payment and, when `card` is given, its charge at the provider (the
/// payment id its key, the order in its metadata), as svc-payment makes it.
async fn payment(
    pool: &PgPool,
    provider: &Emulator,
    order_id: Uuid,
    status: &str,
    card: Option<&str>,
) -> anyhow::Result<Uuid> {
    let payment_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, user_id, status, amount_minor, currency, payment_method)
         VALUES ($1, $2, 'alice', $3, $4, 'EUR', 'pm_card_ok')",
    )
    .bind(payment_id)
    .bind(order_id.to_string())
    .bind(status)
    .bind(TOTAL)
    .execute(pool)
    .await?;
    if let Some(card) = card {
        charge(provider, payment_id, order_id, card).await?;
    }
    Ok(payment_id)
}

/// A charge of [`TOTAL`] for `order_id` under `key`.
async fn charge(provider: &Emulator, key: Uuid, order_id: Uuid, card: &str) -> anyhow::Result<()> {
    let euros = Money::new(Currency::parse("EUR").map_err(anyhow::Error::msg)?, TOTAL);
    client(provider)?
        .charge(key, &order_id.to_string(), euros, card)
        .await?;
    Ok(())
}

async fn email(pool: &PgPool, order_id: Uuid, kind: &str) -> anyhow::Result<()> {
    refund_email(pool, order_id, kind, "").await
}

/// An email of `kind` about refund `refund_id` of the order (`""`: the
/// order's own).
async fn refund_email(pool: &PgPool, order_id: Uuid, kind: &str, refund_id: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO notifications (notification_id, order_id, user_id, kind, recipient, subject, body, sent_at,
                                    refund_id)
         VALUES ($1, $2, 'alice', $3, 'alice@example.com', 'Your order', 'Hello', now(), $4)",
    )
    .bind(Uuid::now_v7())
    .bind(order_id.to_string())
    .bind(kind)
    .bind(refund_id)
    .execute(pool)
    .await?;
    Ok(())
}

async fn outbox(
    pool: &PgPool,
    order_id: Uuid,
    subject: &str,
    created_at: DateTime<Utc>,
    published: bool,
) -> anyhow::Result<Uuid> {
    let event_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, subject, key, payload, occurred_at, created_at, published_at)
         VALUES ($1, 'shop.events.v1.Test', $2, $3, '\\x00', $4, $4, CASE WHEN $5 THEN $4 END)",
    )
    .bind(event_id)
    .bind(format!("{subject}.{order_id}"))
    .bind(order_id.to_string())
    .bind(created_at)
    .bind(published)
    .execute(pool)
    .await?;
    Ok(event_id)
}

/// `check name: message` of every violation naming `id`.
fn naming(report: &Report, id: impl ToString) -> Vec<String> {
    let id = id.to_string();
    report
        .naming(&id)
        .map(|(check, violation)| format!("{}: {}", check.name, violation.message))
        .collect()
}

#[tokio::test]
async fn consistent_books_are_clean() -> anyhow::Result<()> {
    let world = world().await?;
    let report = world.check().await?;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.checks.len(), 8, "{report}");
    let covered = |prefix: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name.starts_with(prefix))
            .map(|c| c.covered)
    };
    assert_eq!(covered("every order"), Some(2));
    assert_eq!(covered("each confirmed"), Some(1));
    assert_eq!(covered("each cancelled"), Some(1));
    assert_eq!(covered("every amount the provider holds"), Some(1));
    assert_eq!(covered("each succeeded payment"), Some(1));
    assert_eq!(
        covered("per SKU"),
        Some(world.initial_on_hand.len()),
        "every seeded SKU"
    );
    assert_eq!(covered("no outbox row"), Some(3));
    let text = report.to_string();
    assert!(text.starts_with("8 checks, the books are clean"), "{text}");
    assert!(text.contains("skip  the DLQ"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_confirmed_order_with_a_failed_payment_is_named() -> anyhow::Result<()> {
    let world = world().await?;
    sqlx::query("UPDATE payments SET status = 'failed' WHERE payment_id = $1")
        .bind(world.confirmed_payment)
        .execute(&world.dbs.payment)
        .await?;
    let report = world.check().await?;
    assert_eq!(report.violations(), 1, "{report}");
    let found = naming(&report, world.confirmed);
    assert_eq!(found.len(), 1, "{report}");
    assert!(
        found[0].contains(&format!(
            "order {} CONFIRMED but payment {} is failed",
            world.confirmed, world.confirmed_payment
        )),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cancelled_order_whose_money_the_provider_holds_is_named() -> anyhow::Result<()> {
    let world = world().await?;
    // A charge for the cancelled order that svc-payment never recorded.
    charge(&world.provider, Uuid::now_v7(), world.cancelled, "pm_card_ok").await?;
    let report = world.check().await?;
    // Money kept by a cancelled order, and money held outside a confirmed one.
    assert_eq!(report.violations(), 2, "{report}");
    let found = naming(&report, world.cancelled);
    assert_eq!(found.len(), 2, "{report}");
    assert!(
        found.iter().any(|m| m.starts_with("each cancelled order")
            && m.contains(&format!(
                "CANCELLED but the provider still holds {TOTAL} of the {TOTAL}"
            ))),
        "{report}"
    );
    assert!(
        found.iter().any(|m| m.starts_with("every amount the provider holds")
            && m.contains(&format!(
                "CANCELLED but the provider holds {TOTAL} for it under intent pi_"
            ))),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn payments_the_provider_disagrees_with_are_named() -> anyhow::Result<()> {
    let world = world().await?;
    // Confirmed, its payment succeeded, but the provider declined the card.
    let unpaid = order(&world.dbs.order, "confirmed", None, Utc::now() - TimeDelta::minutes(5)).await?;
    reservation(&world.dbs.inventory, unpaid, "committed", &[("SKU-PEN-001", 1)]).await?;
    email(&world.dbs.notify, unpaid, "order_confirmed").await?;
    let unpaid_payment = payment(
        &world.dbs.payment,
        &world.provider,
        unpaid,
        "succeeded",
        Some("pm_card_declined"),
    )
    .await?;
    // Cancelled after it was paid, its payment refunded, but the money is
    // still at the provider.
    let kept = order(
        &world.dbs.order,
        "cancelled",
        Some("customer_cancelled"),
        Utc::now() - TimeDelta::minutes(5),
    )
    .await?;
    email(&world.dbs.notify, kept, "order_cancelled").await?;
    let kept_payment = payment(
        &world.dbs.payment,
        &world.provider,
        kept,
        "refunded",
        Some("pm_card_ok"),
    )
    .await?;

    let report = shop_verify::check(&world.dbs, world.provider.admin(), None, &Options::new(Utc::now())).await?;
    let check = "each succeeded payment's amount was captured at the provider";
    assert!(
        naming(&report, unpaid).iter().any(|m| m.starts_with(check)
            && m.contains(&format!(
                "payment {unpaid_payment} of order {unpaid} is succeeded for {TOTAL} but the provider captured 0 (pi_"
            ))),
        "{report}"
    );
    let found = naming(&report, kept);
    assert!(
        found.iter().any(|m| m.starts_with(check)
            && m.contains(&format!(
                "payment {kept_payment} of order {kept} is refunded but the provider still holds {TOTAL} of its {TOTAL}"
            ))),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cancelled_order_still_holding_stock_or_a_pending_payment_is_named() -> anyhow::Result<()> {
    let world = world().await?;
    sqlx::query("UPDATE reservations SET status = 'held', expires_at = now() WHERE order_id = $1")
        .bind(world.cancelled.to_string())
        .execute(&world.dbs.inventory)
        .await?;
    sqlx::query("UPDATE stock SET reserved = 1 WHERE sku = 'SKU-TEE-001'")
        .execute(&world.dbs.inventory)
        .await?;
    sqlx::query("UPDATE payments SET status = 'voiding' WHERE payment_id = $1")
        .bind(world.cancelled_payment)
        .execute(&world.dbs.payment)
        .await?;
    let report = world.check().await?;
    assert_eq!(report.violations(), 2, "{report}");
    let found = naming(&report, world.cancelled);
    assert!(
        found
            .iter()
            .any(|m| m.contains("CANCELLED but its reservation is held")),
        "{report}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains(&format!("payment {} is voiding", world.cancelled_payment))),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn reserved_stock_that_no_held_reservation_explains_is_named() -> anyhow::Result<()> {
    let world = world().await?;
    sqlx::query("UPDATE stock SET reserved = 3 WHERE sku = 'SKU-TEE-001'")
        .execute(&world.dbs.inventory)
        .await?;
    let report = world.check().await?;
    assert_eq!(report.violations(), 1, "{report}");
    let found = naming(&report, "SKU-TEE-001");
    assert_eq!(found.len(), 1, "{report}");
    assert!(
        found[0].contains("SKU SKU-TEE-001: reserved is 3 but held reservations hold 0"),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn on_hand_that_does_not_match_what_was_sold_is_named() -> anyhow::Result<()> {
    let world = world().await?;
    // A sale whose units never left on_hand.
    sqlx::query("UPDATE stock SET on_hand = on_hand + 2 WHERE sku = 'SKU-MUG-001'")
        .execute(&world.dbs.inventory)
        .await?;
    let report = world.check().await?;
    assert_eq!(report.violations(), 1, "{report}");
    let found = naming(&report, "SKU-MUG-001");
    assert!(
        found[0].contains("on_hand is 100 but 100 at the start less 2 sold is 98"),
        "{report}"
    );
    // Without the starting stock, on_hand is not judged.
    let report = world.check_with(&Options::new(Utc::now())).await?;
    assert!(report.is_clean(), "{report}");
    Ok(())
}

#[tokio::test]
async fn an_old_unpublished_outbox_row_is_named() -> anyhow::Result<()> {
    let world = world().await?;
    let stuck = outbox(
        &world.dbs.payment,
        world.confirmed,
        "payments.succeeded",
        Utc::now() - TimeDelta::minutes(5),
        false,
    )
    .await?;
    sqlx::query("UPDATE outbox SET attempts = 7, last_error = 'no responders' WHERE event_id = $1")
        .bind(stuck)
        .execute(&world.dbs.payment)
        .await?;
    let report = world.check().await?;
    assert_eq!(report.violations(), 1, "{report}");
    let found = naming(&report, stuck);
    assert_eq!(found.len(), 1, "{report}");
    assert!(
        found[0].contains(&format!(
            "svc-payment: event {stuck} (payments.succeeded.{0}) unpublished for 5m",
            world.confirmed
        )),
        "{report}"
    );
    assert!(found[0].contains("7 attempts, last error: no responders"), "{report}");
    assert_eq!(naming(&report, world.confirmed).len(), 1, "the order is named too");
    Ok(())
}

#[tokio::test]
async fn a_pending_order_past_its_deadline_is_named_and_one_within_it_is_not() -> anyhow::Result<()> {
    let world = world().await?;
    let stale = order(&world.dbs.order, "pending", None, Utc::now() - TimeDelta::minutes(31)).await?;
    // In flight: reserved, charged, not yet committed — and within its deadline.
    let fresh = order(&world.dbs.order, "reserved", None, Utc::now() - TimeDelta::minutes(1)).await?;
    reservation(&world.dbs.inventory, fresh, "held", &[("SKU-CAP-001", 1)]).await?;
    sqlx::query("UPDATE stock SET reserved = 1 WHERE sku = 'SKU-CAP-001'")
        .execute(&world.dbs.inventory)
        .await?;
    payment(
        &world.dbs.payment,
        &world.provider,
        fresh,
        "succeeded",
        Some("pm_card_ok"),
    )
    .await?;

    let report = world.check().await?;
    assert_eq!(report.violations(), 1, "{report}");
    let found = naming(&report, stale);
    assert_eq!(found.len(), 1, "{report}");
    assert!(
        found[0].starts_with("every order is confirmed, cancelled or still within its deadline"),
        "{report}"
    );
    assert!(
        found[0].contains(&format!("order {stale} still PENDING 31m")),
        "{report}"
    );
    assert!(found[0].contains("past its 10m 0s deadline"), "{report}");
    assert!(naming(&report, fresh).is_empty(), "{report}");

    // The same charge once the in-flight order is past its deadline too.
    let later = Options {
        now: Utc::now() + TimeDelta::minutes(30),
        ..world.options()
    };
    let report = world.check_with(&later).await?;
    let found = naming(&report, fresh);
    assert!(
        found.iter().any(|m| m.contains(&format!(
            "order {fresh} RESERVED but the provider holds {TOTAL} for it under intent pi_"
        ))),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_or_contradicting_email_is_named() -> anyhow::Result<()> {
    let world = world().await?;
    sqlx::query("DELETE FROM notifications WHERE order_id = $1")
        .bind(world.confirmed.to_string())
        .execute(&world.dbs.notify)
        .await?;
    email(&world.dbs.notify, world.cancelled, "order_confirmed").await?;
    let report = world.check().await?;
    assert_eq!(report.violations(), 2, "{report}");
    assert_eq!(
        naming(&report, world.confirmed),
        [format!(
            "each confirmed order has one order_confirmed email and each cancelled order one order_cancelled \
             email, and no other but one per refund of a confirmed order: order {} CONFIRMED but has no \
             order_confirmed email",
            world.confirmed
        )],
        "{report}"
    );
    let found = naming(&report, world.cancelled);
    assert!(
        found[0].contains(&format!(
            "order {} CANCELLED but has an order_confirmed email",
            world.cancelled
        )),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn refund_emails_belong_to_confirmed_orders_one_per_refund() -> anyhow::Result<()> {
    let world = world().await?;
    refund_email(&world.dbs.notify, world.confirmed, "refund_succeeded", "r-1").await?;
    refund_email(&world.dbs.notify, world.confirmed, "refund_failed", "r-2").await?;
    assert_eq!(
        world.check().await?.violations(),
        0,
        "a confirmed order's refunds are mailed"
    );
    refund_email(&world.dbs.notify, world.cancelled, "refund_succeeded", "r-3").await?;
    let report = world.check().await?;
    assert_eq!(report.violations(), 1, "{report}");
    let found = naming(&report, world.cancelled);
    assert!(
        found[0].contains(&format!(
            "order {} CANCELLED but has an refund_succeeded email of refund r-3",
            world.cancelled
        )),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn the_report_reads_as_a_list_of_checks_and_violations() -> anyhow::Result<()> {
    let world = world().await?;
    // The money went back after the order was confirmed, svc-payment
    // knowing nothing of it.
    world.client()?.refund_or_void(world.confirmed_payment).await?;
    let text = world.check().await?.to_string();
    assert!(text.starts_with("8 checks, 1 violation\n"), "{text}");
    assert!(
        text.contains(&format!(
            "FAIL  each succeeded payment's amount was captured at the provider and no more given back than was \
             refunded, and each refunded payment's amount given back in full (succeeded or refunded payments: 1, \
             violations: 1)\n      - payment {} of order {} is succeeded but the provider gave back {TOTAL} of its \
             {TOTAL}, more than the 0 svc-payment refunded (pi_",
            world.confirmed_payment, world.confirmed
        )),
        "{text}"
    );
    assert!(
        text.contains("ok    every order is confirmed, cancelled or still within its deadline (orders: 2)\n"),
        "{text}"
    );
    Ok(())
}

/// Parks a message as a consumer does.
async fn park(js: &jetstream::Context, consumer: &str, subject: &str, error: &str) -> anyhow::Result<String> {
    let event_id = Uuid::now_v7().to_string();
    let mut headers = HeaderMap::new();
    headers.insert(shop_runtime::event::HEADER_ID, event_id.as_str());
    headers.insert(consumer::HEADER_DLQ_STREAM, "ORDERS");
    headers.insert(consumer::HEADER_DLQ_SEQUENCE, "7");
    headers.insert(consumer::HEADER_DLQ_SUBJECT, subject);
    headers.insert(consumer::HEADER_DLQ_CONSUMER, consumer);
    headers.insert(consumer::HEADER_DLQ_DELIVERED, "1");
    headers.insert(consumer::HEADER_DLQ_ERROR, error);
    js.publish_with_headers(
        format!("dlq.{consumer}.{subject}"),
        headers,
        bytes::Bytes::from_static(b"{not json"),
    )
    .await?
    .await?;
    Ok(event_id)
}

#[tokio::test]
async fn only_the_injected_poison_may_be_parked() -> anyhow::Result<()> {
    let world = world().await?;
    let nats = NatsServer::start().await?;
    let (_client, js) = shop_runtime::nats::connect(&nats.url(), "verify-test").await?;
    topology::ensure_streams(&js, 1).await?;
    let poison = format!("orders.placed.{}", Uuid::now_v7());
    let mut options = world.options();
    options.expected_parked = vec![poison.clone()];

    let dlq = |report: &Report| {
        report
            .checks
            .iter()
            .find(|c| c.name.contains("DLQ"))
            .cloned()
            .expect("the DLQ is checked")
    };
    let report = shop_verify::check(&world.dbs, world.provider.admin(), Some(&js), &options).await?;
    assert_eq!(report.violations(), 1, "{report}");
    assert_eq!(
        naming(&report, &poison),
        [format!(
            "the DLQ holds exactly the poison the run injected: poison injected on {poison} is not on the DLQ"
        )],
        "{report}"
    );

    // Every consumer of ORDERS parks its own copy of the poison.
    park(&js, "inventory-orders", &poison, "not a valid OrderPlaced").await?;
    park(&js, "payment-orders", &poison, "not a valid OrderPlaced").await?;
    let report = shop_verify::check(&world.dbs, world.provider.admin(), Some(&js), &options).await?;
    assert!(report.is_clean(), "{report}");
    assert_eq!(dlq(&report).covered, 2);

    let victim = format!("orders.cancelled.{}", world.cancelled);
    let event_id = park(&js, "payment-orders", &victim, "a bug").await?;
    let report = shop_verify::check(&world.dbs, world.provider.admin(), Some(&js), &options).await?;
    assert_eq!(report.violations(), 1, "{report}");
    assert_eq!(
        naming(&report, &event_id),
        [format!(
            "the DLQ holds exactly the poison the run injected: payment-orders parked {victim} (event {event_id}, \
             ORDERS #7, after 1 deliveries): a bug"
        )],
        "{report}"
    );
    assert_eq!(dlq(&report).covered, 3);
    Ok(())
}
