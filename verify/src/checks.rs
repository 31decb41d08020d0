//! One function per invariant, each with its own SQL.
//!
//! Where a check reads two databases (or a database and the provider's
//! ledger), it reads first the one whose rows imply the other's: a payment
//! or an intent implies its order exists, an email implies its order was
//! settled, a confirmed order implies its payment and sale, a succeeded
//! payment its captured intent.
//! Reading the other way round would let an order placed or settled between
//! the two reads look like a violation on a busy stack.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use anyhow::Context as _;
use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use shop_provider::{admin_client::AdminClient, domain::LedgerLine};
use shop_runtime::dlq::{self, DlqError, Filter};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Databases, Options, report::Check};

/// `now - age`, or the beginning of time when `age` is absurdly large.
fn before(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `3h 5m`, `45m 3s`, `12s`.
fn span(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

fn span_std(d: Duration) -> String {
    span(TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX))
}

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Whether an order may still settle: neither confirmed nor cancelled, and
/// placed less than `ORDER_DEADLINE` ago.
fn in_flight(status: &str, created_at: DateTime<Utc>, options: &Options) -> bool {
    matches!(status, "pending" | "reserved") && created_at > before(options.now, options.order_deadline)
}

/// 1. Every order ends: svc-order's deadline sweep cancels what could not
///    settle, so an unsettled order past its deadline means the sweep or
///    the saga is stuck.
pub(crate) async fn every_order_ends(order_db: &PgPool, options: &Options) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "every order is confirmed, cancelled or still within its deadline",
        "orders",
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(order_db)
        .await
        .context("counting orders")?;
    check.covered = usize::try_from(count).unwrap_or_default();
    let stale: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_id, status, created_at FROM orders
          WHERE status IN ('pending', 'reserved') AND created_at <= $1
          ORDER BY created_at, order_id",
    )
    .bind(before(options.now, options.order_deadline))
    .fetch_all(order_db)
    .await
    .context("reading unsettled orders")?;
    for (order_id, status, created_at) in stale {
        check.violation(
            [order_id],
            format!(
                "order {order_id} still {} {} after it was placed ({}), past its {} deadline",
                status.to_uppercase(),
                span(options.now - created_at),
                at(created_at),
                span_std(options.order_deadline),
            ),
        );
    }
    Ok(check)
}

/// 2. A confirmed order was paid once and its stock sold: svc-inventory
///    commits the reservation only on `payments.succeeded`, and svc-order
///    confirms only on `inventory.committed`.
pub(crate) async fn confirmed_orders_are_paid_and_sold(dbs: &Databases) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "each confirmed order has one succeeded payment and a committed reservation",
        "confirmed orders",
    );
    // Orders first: once confirmed, its payment and sale are already done.
    let Settled {
        ids,
        payments: rows,
        reservations,
    } = settled(dbs, CONFIRMED).await?;
    check.covered = ids.len();
    let mut payments: HashMap<String, Vec<(Uuid, String)>> = HashMap::new();
    for row in rows {
        payments
            .entry(row.order_id)
            .or_default()
            .push((row.payment_id, row.status));
    }

    for order_id in &ids {
        match payments.get(order_id).map(Vec::as_slice).unwrap_or_default() {
            [] => check.violation([order_id], format!("order {order_id} CONFIRMED but has no payment")),
            [(payment_id, status)] => {
                if status != "succeeded" {
                    check.violation(
                        [order_id.clone(), payment_id.to_string()],
                        format!("order {order_id} CONFIRMED but payment {payment_id} is {status}"),
                    );
                }
            }
            several => {
                let listed: Vec<String> = several.iter().map(|(id, status)| format!("{id} ({status})")).collect();
                check.violation(
                    std::iter::once(order_id.clone()).chain(several.iter().map(|(id, _)| id.to_string())),
                    format!(
                        "order {order_id} CONFIRMED with {} payments: {}",
                        several.len(),
                        listed.join(", ")
                    ),
                );
            }
        }
        match reservations.get(order_id).map(String::as_str) {
            Some("committed") => {}
            Some(status) => check.violation(
                [order_id],
                format!("order {order_id} CONFIRMED but its reservation is {status}"),
            ),
            None => check.violation([order_id], format!("order {order_id} CONFIRMED but has no reservation")),
        }
    }
    Ok(check)
}

/// The orders in one final status, with their payments and reservations.
struct Settled {
    ids: Vec<String>,
    payments: Vec<PaymentRow>,
    reservations: HashMap<String, String>,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    order_id: String,
    payment_id: Uuid,
    status: String,
}

/// The statuses of an order that was confirmed: refunds after confirmation
/// move it on, but its payment and sale stand.
const CONFIRMED: &[&str] = &["confirmed", "partially_refunded", "refunded"];

/// The orders in one of `statuses` ([`CONFIRMED`], or `cancelled`), then
/// their payments and reservations: a final status implies what the others
/// did first.
async fn settled(dbs: &Databases, statuses: &[&str]) -> anyhow::Result<Settled> {
    let status = statuses.join("/");
    let orders: Vec<Uuid> = sqlx::query_scalar("SELECT order_id FROM orders WHERE status = ANY($1) ORDER BY order_id")
        .bind(statuses)
        .fetch_all(&dbs.order)
        .await
        .with_context(|| format!("reading {status} orders"))?;
    let ids: Vec<String> = orders.iter().map(Uuid::to_string).collect();
    // `payments_one_per_order` allows one row per order; none are grouped
    // away, so a lost constraint shows up as a second payment.
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT order_id, payment_id, status FROM payments WHERE order_id = ANY($1) ORDER BY created_at",
    )
    .bind(&ids)
    .fetch_all(&dbs.payment)
    .await
    .with_context(|| format!("reading payments of {status} orders"))?;
    let reservations: HashMap<String, String> =
        sqlx::query_as("SELECT order_id, status FROM reservations WHERE order_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&dbs.inventory)
            .await
            .with_context(|| format!("reading reservations of {status} orders"))?
            .into_iter()
            .collect();
    Ok(Settled {
        ids,
        payments,
        reservations,
    })
}

/// What the provider's ledger holds for each order: the intents its
/// metadata names the order of, and over them what was captured and what
/// is still kept. A refund pending counts as given back: the provider has
/// accepted it and does not take it back.
#[derive(Debug, Default)]
struct Held {
    intents: Vec<String>,
    captured: i64,
    kept: i64,
}

impl Held {
    fn add(&mut self, line: &LedgerLine) {
        self.intents.push(line.intent.clone());
        self.captured += line.captured;
        self.kept += kept(line);
    }
}

fn kept(line: &LedgerLine) -> i64 {
    line.captured - line.refunded - line.refund_pending
}

/// The provider's ledger, by order id.
async fn held_by_order(provider: &AdminClient) -> anyhow::Result<HashMap<String, Held>> {
    let ledger = provider
        .ledger()
        .await
        .context("reading the payment provider's ledger")?;
    let mut held: HashMap<String, Held> = HashMap::new();
    for line in &ledger {
        if let Some(order_id) = &line.order_id {
            held.entry(order_id.clone()).or_default().add(line);
        }
    }
    Ok(held)
}

/// 3. A cancelled order keeps no money and holds no stock: cancellation
///    refunds or voids the charge (svc-payment) and releases the
///    reservation, returning sold units too (svc-inventory).
pub(crate) async fn cancelled_orders_keep_nothing(dbs: &Databases, provider: &AdminClient) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "each cancelled order keeps no money (payment absent, failed, refunded or cancelled; nothing left \
         captured at the provider) and holds no stock (reservation absent, released or rejected)",
        "cancelled orders",
    );
    let Settled {
        ids,
        payments,
        reservations,
    } = settled(dbs, &["cancelled"]).await?;
    check.covered = ids.len();
    // After the orders: their money went back before they were cancelled
    // for good, or is on its way back while the payment is not yet final.
    let held = held_by_order(provider).await?;

    for PaymentRow {
        order_id,
        payment_id,
        status,
    } in payments
    {
        // `pending`, `processing`, `requires_action` and `voiding` are
        // charges that may still go through; `refunding` is money not yet
        // given back; `succeeded` is money kept.
        if !matches!(status.as_str(), "failed" | "refunded" | "cancelled") {
            check.violation(
                [order_id.clone(), payment_id.to_string()],
                format!("order {order_id} CANCELLED but payment {payment_id} is {status}"),
            );
        }
    }
    for order_id in &ids {
        if let Some(held) = held.get(order_id)
            && held.kept != 0
        {
            check.violation(
                std::iter::once(order_id.clone()).chain(held.intents.iter().cloned()),
                format!(
                    "order {order_id} CANCELLED but the provider still holds {} of the {} captured for it ({})",
                    held.kept,
                    held.captured,
                    held.intents.join(", ")
                ),
            );
        }
        if let Some(status) = reservations.get(order_id)
            && !matches!(status.as_str(), "released" | "rejected")
        {
            check.violation(
                [order_id],
                format!("order {order_id} CANCELLED but its reservation is {status}"),
            );
        }
    }
    Ok(check)
}

/// 4. No money is taken outside a confirmed order: every intent that holds
///    money (captured less refunded) was made for an order that is
///    confirmed, or still in flight.
pub(crate) async fn money_is_taken_only_for_confirmed_orders(
    dbs: &Databases,
    provider: &AdminClient,
    options: &Options,
) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "every amount the provider holds (captured less refunded) belongs to a confirmed order, or to one still \
         in flight",
        "intents holding money",
    );
    // The ledger first: an intent is made only for an order that exists.
    let holding: Vec<LedgerLine> = provider
        .ledger()
        .await
        .context("reading the payment provider's ledger")?
        .into_iter()
        .filter(|line| kept(line) != 0)
        .collect();
    check.covered = holding.len();
    let order_ids: Vec<String> = holding.iter().filter_map(|l| l.order_id.clone()).collect();
    let orders: HashMap<String, (String, DateTime<Utc>)> =
        sqlx::query_as("SELECT order_id::text, status, created_at FROM orders WHERE order_id::text = ANY($1)")
            .bind(&order_ids)
            .fetch_all(&dbs.order)
            .await
            .context("reading the orders of the intents holding money")?
            .into_iter()
            .map(|(id, status, created_at)| (id, (status, created_at)))
            .collect();

    for line in holding {
        let (intent, amount) = (&line.intent, kept(&line));
        let Some(order_id) = &line.order_id else {
            check.violation(
                [intent],
                format!("the provider holds {amount} under intent {intent}, which names no order"),
            );
            continue;
        };
        match orders.get(order_id) {
            Some((status, _)) if CONFIRMED.contains(&status.as_str()) => {}
            Some((status, created_at)) if in_flight(status, *created_at, options) => {}
            Some((status, _)) => check.violation(
                [order_id, intent],
                format!(
                    "order {order_id} {} but the provider holds {amount} for it under intent {intent}",
                    status.to_uppercase()
                ),
            ),
            // Read after the intent, so it would be there were it real.
            None => check.violation(
                [order_id, intent],
                format!("the provider holds {amount} under intent {intent} for order {order_id}, which svc-order does not know"),
            ),
        }
    }
    Ok(check)
}

/// 5. The provider's books agree with each payment's word: a `succeeded`
///    payment's amount was captured, and no more of it given back than
///    svc-payment refunded (refunds of a confirmed order it asked for, not
///    failed); a `refunded` payment's amount was given back in full.
pub(crate) async fn payments_match_the_provider(dbs: &Databases, provider: &AdminClient) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "each succeeded payment's amount was captured at the provider and no more given back than was refunded, \
         and each refunded payment's amount given back in full",
        "succeeded or refunded payments",
    );
    // Payments first: the provider acted before svc-payment recorded it.
    let payments: Vec<(String, Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT p.order_id, p.payment_id, p.status, p.amount_minor,
                COALESCE((SELECT sum(r.amount_minor) FROM refunds r
                           WHERE r.payment_id = p.payment_id AND r.status <> 'failed'), 0)::bigint
           FROM payments p
          WHERE p.status IN ('succeeded', 'refunded')
          ORDER BY p.created_at, p.payment_id",
    )
    .fetch_all(&dbs.payment)
    .await
    .context("reading succeeded and refunded payments")?;
    check.covered = payments.len();
    let held = held_by_order(provider).await?;
    let nothing = Held::default();

    for (order_id, payment_id, status, amount, refunds) in payments {
        let held = held.get(&order_id).unwrap_or(&nothing);
        let intents = match held.intents.as_slice() {
            [] => "no intent".to_owned(),
            intents => intents.join(", "),
        };
        let ids = [order_id.clone(), payment_id.to_string()]
            .into_iter()
            .chain(held.intents.iter().cloned());
        let given_back = held.captured - held.kept;
        if held.captured != amount {
            check.violation(
                ids,
                format!(
                    "payment {payment_id} of order {order_id} is {status} for {amount} but the provider captured \
                     {} ({intents})",
                    held.captured
                ),
            );
        } else if status == "refunded" && held.kept != 0 {
            check.violation(
                ids,
                format!(
                    "payment {payment_id} of order {order_id} is refunded but the provider still holds {} of its \
                     {amount} ({intents})",
                    held.kept
                ),
            );
        } else if status == "succeeded" && given_back > refunds {
            check.violation(
                ids,
                format!(
                    "payment {payment_id} of order {order_id} is succeeded but the provider gave back {given_back} \
                     of its {amount}, more than the {refunds} svc-payment refunded ({intents})"
                ),
            );
        }
    }
    Ok(check)
}

/// 6. Stock adds up, per SKU: `reserved` is exactly what held reservations
///    hold, the table's CHECK constraints hold, and (when the run recorded
///    the starting stock) `on_hand` went down by exactly what was sold and
///    not put back by a refund.
pub(crate) async fn stock_adds_up(inventory_db: &PgPool, options: &Options) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "per SKU, reserved equals the units of held reservations, 0 <= reserved <= on_hand, \
         and on_hand is the initial stock less the units of committed reservations not returned by a refund",
        "SKUs",
    );
    // One statement, one snapshot: stock and reservations change together.
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT s.sku, s.on_hand, s.reserved,
                COALESCE(sum(l.quantity) FILTER (WHERE r.status = 'held'), 0)::bigint,
                COALESCE(sum(l.quantity - l.returned) FILTER (WHERE r.status = 'committed'), 0)::bigint
           FROM stock s
           LEFT JOIN reservation_lines l ON l.sku = s.sku
           LEFT JOIN reservations r ON r.order_id = l.order_id
          GROUP BY s.sku, s.on_hand, s.reserved
          ORDER BY s.sku",
    )
    .fetch_all(inventory_db)
    .await
    .context("reading stock and reservation lines")?;
    check.covered = rows.len();
    let mut seen = BTreeSet::new();
    for (sku, on_hand, reserved, held, sold) in rows {
        if reserved != held {
            check.violation(
                [&sku],
                format!("SKU {sku}: reserved is {reserved} but held reservations hold {held}"),
            );
        }
        if on_hand < 0 || reserved < 0 || reserved > on_hand {
            check.violation(
                [&sku],
                format!("SKU {sku}: on_hand {on_hand}, reserved {reserved} (needs 0 <= reserved <= on_hand)"),
            );
        }
        if let Some(initial) = options.initial_on_hand.as_ref().and_then(|i| i.get(&sku))
            && on_hand != initial - sold
        {
            check.violation(
                [&sku],
                format!(
                    "SKU {sku}: on_hand is {on_hand} but {initial} at the start less {sold} sold is {}",
                    initial - sold
                ),
            );
        }
        seen.insert(sku);
    }
    for sku in options.initial_on_hand.iter().flat_map(BTreeMap::keys) {
        if !seen.contains(sku) {
            check.violation(
                [sku],
                format!("SKU {sku} had stock at the start but has no stock row now"),
            );
        }
    }
    Ok(check)
}

/// 7. Each settled order got exactly its one email: `order_confirmed` for a
///    confirmed order (refunded since or not), `order_cancelled` for a
///    cancelled one, never both (an order ends only one way) and never
///    twice; refund emails only for confirmed orders, one per refund and
///    kind.
pub(crate) async fn settled_orders_have_their_email(dbs: &Databases) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "each confirmed order has one order_confirmed email and each cancelled order one order_cancelled email, \
         and no other but one per refund of a confirmed order",
        "settled orders",
    );
    // Emails first: an email is only written for an order already settled,
    // and settled orders never change, so its order is among those read next.
    let emails: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT order_id, kind, refund_id, count(*) FROM notifications
          GROUP BY order_id, kind, refund_id ORDER BY order_id, kind, refund_id",
    )
    .fetch_all(&dbs.notify)
    .await
    .context("reading notifications")?;
    let settled: BTreeMap<String, String> =
        sqlx::query_as("SELECT order_id::text, status FROM orders WHERE status = ANY($1)")
            .bind(CONFIRMED.iter().chain(&["cancelled"]).collect::<Vec<_>>())
            .fetch_all(&dbs.order)
            .await
            .context("reading settled orders")?
            .into_iter()
            .collect();
    check.covered = settled.len();
    // The email an order's end gets.
    let ending = |status: &str| {
        if status == "cancelled" {
            "order_cancelled"
        } else {
            "order_confirmed"
        }
    };

    let mut sent: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (order_id, kind, refund_id, count) in &emails {
        sent.entry(order_id).or_default().insert(kind);
        let of = refund_of(refund_id);
        if *count > 1 {
            check.violation(
                [order_id],
                format!("order {order_id} has {count} {kind} emails{of} (one each)"),
            );
        }
        let refund_email = matches!(kind.as_str(), "refund_succeeded" | "refund_failed") && !refund_id.is_empty();
        match settled.get(order_id) {
            Some(status) if *kind == ending(status) && refund_id.is_empty() => {}
            Some(status) if refund_email && ending(status) == "order_confirmed" => {}
            Some(status) => check.violation(
                [order_id],
                format!("order {order_id} {} but has an {kind} email{of}", status.to_uppercase()),
            ),
            None => check.violation(
                [order_id],
                format!("order {order_id} has an {kind} email{of} but is neither confirmed nor cancelled"),
            ),
        }
    }
    for (order_id, status) in &settled {
        let kind = ending(status);
        if !sent.get(order_id.as_str()).is_some_and(|kinds| kinds.contains(kind)) {
            check.violation(
                [order_id],
                format!("order {order_id} {} but has no {kind} email", status.to_uppercase()),
            );
        }
    }
    Ok(check)
}

/// ` of refund <id>` for a refund's email, nothing for an order's own.
fn refund_of(refund_id: &str) -> String {
    match refund_id {
        "" => String::new(),
        id => format!(" of refund {id}"),
    }
}

/// 8. No event was left behind: the relay publishes every outbox row within
///    moments of its commit (or of a restart), so an old unpublished row is
///    an event the rest of the saga never saw.
pub(crate) async fn outboxes_are_drained(dbs: &Databases, options: &Options) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "no outbox row in any service database is left unpublished past the allowed age",
        "outbox rows",
    );
    let cutoff = before(options.now, options.outbox_max_age);
    for (service, pool) in dbs.each() {
        let service = service.name;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(pool)
            .await
            .with_context(|| format!("counting the outbox of {service}"))?;
        check.covered += usize::try_from(count).unwrap_or_default();
        let stuck: Vec<UnpublishedRow> = sqlx::query_as(
            "SELECT event_id, subject, key, created_at, attempts, last_error FROM outbox
              WHERE published_at IS NULL AND created_at <= $1
              ORDER BY created_at, event_id",
        )
        .bind(cutoff)
        .fetch_all(pool)
        .await
        .with_context(|| format!("reading the outbox of {service}"))?;
        for UnpublishedRow {
            event_id,
            subject,
            key,
            created_at,
            attempts,
            last_error,
        } in stuck
        {
            check.violation(
                [event_id.to_string(), key.clone()],
                format!(
                    "{service}: event {event_id} ({subject}) unpublished for {} since {}, \
                     {attempts} attempts{}",
                    span(options.now - created_at),
                    at(created_at),
                    last_error.map(|e| format!(", last error: {e}")).unwrap_or_default(),
                ),
            );
        }
    }
    Ok(check)
}

#[derive(sqlx::FromRow)]
struct UnpublishedRow {
    event_id: Uuid,
    subject: String,
    key: String,
    created_at: DateTime<Utc>,
    attempts: i32,
    last_error: Option<String>,
}

pub(crate) const DLQ_HOLDS_ONLY_EXPECTED_POISON: &str = "the DLQ holds exactly the poison the run injected";

/// 9. Nothing was parked that should not have been: consumers park only
///    poison and retry everything else for ever, so an unexpected parked
///    message is an event some service never applied.
pub(crate) async fn dlq_holds_only_expected_poison(
    js: &jetstream::Context,
    options: &Options,
) -> anyhow::Result<Check> {
    let mut check = Check::new(DLQ_HOLDS_ONLY_EXPECTED_POISON, "parked messages");
    let parked = match dlq::list(js, &Filter::default()).await {
        Ok(parked) => parked,
        // `list` stops at an entry no shop consumer parked; that is a
        // finding about the DLQ, not a failure to read it.
        Err(DlqError::NotParked(sequence, header)) => {
            check.violation(
                [format!("DLQ #{sequence}")],
                format!(
                    "DLQ entry #{sequence} has no {header} header (not parked by a shop consumer); \
                     the entries after it were not read"
                ),
            );
            return Ok(check);
        }
        Err(e) => return Err(e).context("listing the DLQ"),
    };
    check.covered = parked.len();
    let mut matched = vec![false; options.expected_parked.len()];
    for message in &parked {
        let mut expected = false;
        for (pattern, hit) in options.expected_parked.iter().zip(matched.iter_mut()) {
            if dlq::subject_matches(pattern, &message.subject) {
                *hit = true;
                expected = true;
            }
        }
        if !expected {
            check.violation(
                [
                    message.subject.clone(),
                    message.event_id.clone(),
                    message.consumer.clone(),
                ],
                format!(
                    "{} parked {} (event {}, {} #{}, after {} deliveries): {}",
                    message.consumer,
                    message.subject,
                    if message.event_id.is_empty() {
                        "without id"
                    } else {
                        &message.event_id
                    },
                    message.stream,
                    message.stream_sequence,
                    message.delivered,
                    message.error,
                ),
            );
        }
    }
    for (pattern, hit) in options.expected_parked.iter().zip(matched) {
        if !hit {
            check.violation([pattern], format!("poison injected on {pattern} is not on the DLQ"));
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_a_clock() {
        assert_eq!(span(TimeDelta::seconds(12)), "12s");
        assert_eq!(span(TimeDelta::seconds(45 * 60 + 3)), "45m 3s");
        assert_eq!(span(TimeDelta::seconds(3 * 3600 + 5 * 60 + 9)), "3h 5m");
        assert_eq!(span(TimeDelta::seconds(-4)), "0s");
    }

    #[test]
    fn an_order_is_in_flight_only_unsettled_and_within_its_deadline() {
        let options = Options::new(Utc::now());
        let recent = options.now - TimeDelta::minutes(5);
        let old = options.now - TimeDelta::minutes(31);
        assert!(in_flight("pending", recent, &options));
        assert!(in_flight("reserved", recent, &options));
        assert!(!in_flight("reserved", old, &options));
        assert!(!in_flight("confirmed", recent, &options));
        assert!(!in_flight("cancelled", recent, &options));
        assert_eq!(before(options.now, Duration::MAX), DateTime::<Utc>::MIN_UTC);
    }
}
