//! svc-inventory's part of the checkout saga:
//! `orders.placed` → reserve → `inventory.reserved` | `inventory.rejected`;
//! `payments.succeeded` → commit → `inventory.committed`;
//! `payments.failed` / `orders.cancelled` / deadline → release → `inventory.released`;
//! `orders.refund_requested` with `restock` → the refund's units back on hand
//! ([`take_back`]; nothing announced).
//!
//! Each is one transaction: the inbox row, [`apply`] (the decision of
//! [`domain::decide`] under the reservation's row lock) or [`take_back`],
//! and the event it announces through the outbox.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use shop_proto::events::v1 as ev;
use shop_runtime::{
    CancellationToken,
    consumer::{EventHandler, HandleError},
    event::{self, IncomingEvent},
    inbox,
    outbox::{Outbox, Staging},
    values::{Quantity, Sku},
};
use sqlx::{PgConnection, PgPool};

use crate::{
    domain::{self, Decision, Line, Refusal, ReleaseReason, Shortage, Status, Trigger},
    stock,
};

pub const ORDERS_CONSUMER: &str = "inventory-orders";
pub const PAYMENTS_CONSUMER: &str = "inventory-payments";

/// What [`apply`] did to an order's reservation.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every line held, until `expires_at`.
    Reserved {
        expires_at: DateTime<Utc>,
    },
    Rejected(Vec<Shortage>),
    /// Moved to `to`; `user_id` is the reservation's owner, `reason` why
    /// it was released.
    Moved {
        to: Status,
        user_id: String,
        reason: Option<ReleaseReason>,
    },
    /// Nothing to announce: repeated, stale, or a tombstone.
    Unchanged,
    /// The reservation it acts on is not made yet.
    NotYet,
}

/// Applies `trigger` to the order's reservation: decided by
/// [`domain::decide`] under the reservation's row lock, written by
/// [`stock`]. `lines` are the placed lines (for [`Trigger::Placed`] only).
pub async fn apply(
    conn: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    trigger: Trigger,
    lines: &[Line],
    ttl: Duration,
) -> Result<Applied, sqlx::Error> {
    // A placement takes its order for new and lets the claim check that:
    // the common case, an order never seen, costs no read first.
    let mut read = trigger != Trigger::Placed;
    loop {
        let found = if read { stock::lock(conn, order_id).await? } else { None };
        read = true;
        let current = found.as_ref().map(|f| f.status);
        match domain::decide(current, trigger) {
            Decision::Reserve => {
                // A concurrent placement of the same order claimed it first:
                // decide again on what it left.
                let Some(expires_at) = stock::claim(conn, order_id, user_id, ttl).await? else {
                    continue;
                };
                let units = stock::lock_units(conn, lines).await?;
                return Ok(match domain::hold(lines, |sku| units.get(sku.as_str()).copied()) {
                    Ok(()) => {
                        stock::hold(conn, order_id, lines).await?;
                        Applied::Reserved { expires_at }
                    }
                    Err(shortages) => {
                        stock::reject(conn, order_id).await?;
                        Applied::Rejected(shortages)
                    }
                });
            }
            Decision::Move { to, units } => {
                let reason = match trigger {
                    Trigger::Release(reason) => Some(reason),
                    Trigger::Placed | Trigger::PaymentSucceeded => None,
                };
                stock::settle(conn, order_id, to, units, reason).await?;
                let owner = found.map_or_else(|| user_id.to_owned(), |f| f.user_id);
                return Ok(Applied::Moved {
                    to,
                    user_id: owner,
                    reason,
                });
            }
            Decision::Tombstone => {
                let Trigger::Release(reason) = trigger else {
                    return Ok(Applied::Unchanged);
                };
                // The placement's reservation was committed while this insert
                // waited on it: release that one, or the cancellation is lost
                // and the units stay held until the reservation expires.
                if stock::tombstone(conn, order_id, user_id, reason).await? {
                    return Ok(Applied::Unchanged);
                }
            }
            Decision::Ignore => return Ok(Applied::Unchanged),
            Decision::NotYet => return Ok(Applied::NotYet),
        }
    }
}

/// What [`take_back`] did with a refund's units.
#[derive(Debug, PartialEq, Eq)]
pub enum TakenBack {
    /// Back on hand.
    Returned,
    /// This refund's units went back before.
    Repeated,
    /// They cannot go back: nothing changed.
    Refused(Refusal),
}

/// Puts the units of refund `refund_id`'s `lines` (one per SKU) of the
/// order back on hand, once per refund: decided by [`domain::take_back`]
/// under the reservation's row lock and its stock rows' locks (in the same
/// order as every other change), written by [`stock::take_back`].
pub async fn take_back(
    conn: &mut PgConnection,
    order_id: &str,
    refund_id: &str,
    lines: &[Line],
) -> Result<TakenBack, sqlx::Error> {
    let found = stock::lock(conn, order_id).await?;
    if stock::returned_before(conn, refund_id).await? {
        return Ok(TakenBack::Repeated);
    }
    let sold = stock::lock_lines(conn, order_id).await?;
    if let Err(refusal) = domain::take_back(found.map(|f| f.status), lines, |sku| sold.get(sku.as_str()).copied()) {
        return Ok(TakenBack::Refused(refusal));
    }
    stock::take_back(conn, order_id, refund_id, lines).await?;
    Ok(TakenBack::Returned)
}

pub struct InventorySaga {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub reservation_ttl: Duration,
    /// The durable consumer this instance serves (the inbox is per consumer).
    pub consumer: &'static str,
}

impl EventHandler for InventorySaga {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        let mut tx = self.outbox.begin(&self.pool).await?;
        if !inbox::claim(&mut tx, self.consumer, &event).await? {
            return Ok(());
        }
        if event.is::<ev::OrderPlaced>() {
            let mut placed: ev::OrderPlaced = event.decode()?;
            placed.order_id = event::order_id(&placed.order_id)?.to_string();
            if placed.lines.is_empty() {
                return Err(HandleError::Reject(format!("order {} has no lines", placed.order_id)));
            }
            let lines = lines_of(&placed.lines)?;
            let (order_id, user_id) = (placed.order_id.clone(), placed.user_id.clone());
            self.on(&mut tx, &order_id, &user_id, Trigger::Placed, &lines, Some(placed))
                .await?;
        } else if event.is::<ev::OrderCancelled>() {
            let e: ev::OrderCancelled = event.decode()?;
            let trigger = Trigger::Release(ReleaseReason::OrderCancelled);
            let order_id = event::order_id(&e.order_id)?.to_string();
            self.on(&mut tx, &order_id, &e.user_id, trigger, &[], None).await?;
        } else if event.is::<ev::PaymentSucceeded>() {
            let e: ev::PaymentSucceeded = event.decode()?;
            let order_id = event::order_id(&e.order_id)?.to_string();
            self.on(&mut tx, &order_id, &e.user_id, Trigger::PaymentSucceeded, &[], None)
                .await?;
        } else if event.is::<ev::PaymentFailed>() {
            let e: ev::PaymentFailed = event.decode()?;
            let trigger = Trigger::Release(ReleaseReason::PaymentFailed);
            let order_id = event::order_id(&e.order_id)?.to_string();
            self.on(&mut tx, &order_id, &e.user_id, trigger, &[], None).await?;
        } else if event.is::<ev::OrderRefundRequested>() {
            let e: ev::OrderRefundRequested = event.decode()?;
            let order_id = event::order_id(&e.order_id)?.to_string();
            on_refund(&mut tx, &order_id, &e).await?;
        } else {
            return Err(HandleError::unknown_type(&event));
        }
        self.outbox.commit(tx).await?;
        Ok(())
    }
}

impl InventorySaga {
    /// Applies `trigger` and stages what it says to announce: `placed` is
    /// the placement, whose lines and payment an `inventory.reserved`
    /// carries on.
    async fn on(
        &self,
        tx: &mut Staging,
        order_id: &str,
        user_id: &str,
        trigger: Trigger,
        lines: &[Line],
        placed: Option<ev::OrderPlaced>,
    ) -> Result<(), HandleError> {
        let (order_id, user_id) = (order_id.to_owned(), user_id.to_owned());
        match apply(tx, &order_id, &user_id, trigger, lines, self.reservation_ttl).await? {
            Applied::Reserved { expires_at } => {
                let placed = placed.unwrap_or_default();
                let reserved = ev::InventoryReserved {
                    order_id,
                    user_id,
                    lines: placed.lines,
                    total: placed.total,
                    payment_method: placed.payment_method,
                    expires_at: Some(shop_runtime::values::timestamp(expires_at)),
                };
                self.outbox.enqueue(tx, &reserved).await?;
            }
            Applied::Rejected(shortages) => {
                let rejected = ev::InventoryRejected {
                    order_id,
                    user_id,
                    unavailable: shortages
                        .into_iter()
                        .map(|s| ev::UnavailableLine {
                            sku: s.sku,
                            requested: s.requested,
                            available: s.available,
                        })
                        .collect(),
                };
                self.outbox.enqueue(tx, &rejected).await?;
            }
            Applied::Moved { to, user_id, reason } => match (to, reason) {
                (Status::Committed, _) => {
                    self.outbox
                        .enqueue(tx, &ev::InventoryCommitted { order_id, user_id })
                        .await?;
                }
                (_, Some(reason)) => {
                    let released = ev::InventoryReleased {
                        order_id,
                        user_id,
                        reason: match reason {
                            ReleaseReason::Expired => ev::ReleaseReason::Expired,
                            ReleaseReason::PaymentFailed => ev::ReleaseReason::PaymentFailed,
                            ReleaseReason::OrderCancelled => ev::ReleaseReason::OrderCancelled,
                        } as i32,
                    };
                    self.outbox.enqueue(tx, &released).await?;
                }
                (_, None) => {}
            },
            Applied::Unchanged => {}
            Applied::NotYet => {
                return Err(HandleError::Retry(format!("no reservation for order {order_id} yet")));
            }
        }
        Ok(())
    }
}

/// A refund asked of a confirmed order: with `restock`, its lines go back
/// on hand, once per refund. One that cannot (a SKU not on the order, more
/// units than are still sold, an order that sold nothing) changes nothing
/// and is parked on the DLQ for an operator.
async fn on_refund(conn: &mut PgConnection, order_id: &str, e: &ev::OrderRefundRequested) -> Result<(), HandleError> {
    let refund_id = e.refund_id.as_str();
    if !e.restock {
        tracing::debug!(order_id, refund_id, "refund without restock: stock unchanged");
        return Ok(());
    }
    if refund_id.is_empty() {
        return Err(HandleError::Reject(format!(
            "a refund of order {order_id} to restock has no refund_id"
        )));
    }
    if e.lines.is_empty() {
        return Err(HandleError::Reject(format!(
            "refund {refund_id} of order {order_id} asks to restock but names no lines"
        )));
    }
    let lines = lines_of(&e.lines)?;
    match take_back(conn, order_id, refund_id, &lines).await? {
        TakenBack::Returned => {
            let units: i32 = lines.iter().map(|l| l.quantity.get()).sum();
            tracing::info!(order_id, refund_id, units, "refunded units back in stock");
        }
        TakenBack::Repeated => {
            tracing::info!(
                order_id,
                refund_id,
                "refund restocked before under another event id; not again"
            );
        }
        TakenBack::Refused(why) => {
            return Err(HandleError::Reject(format!(
                "refund {refund_id} of order {order_id} cannot restock: {why}"
            )));
        }
    }
    Ok(())
}

/// An event's lines, validated and merged by SKU. A malformed event can
/// never be reserved or restocked: it goes to the DLQ.
fn lines_of(event_lines: &[ev::EventLine]) -> Result<Vec<Line>, HandleError> {
    let mut merged: BTreeMap<Sku, i32> = BTreeMap::new();
    for line in event_lines {
        let sku = Sku::parse(&line.sku).map_err(|why| HandleError::Reject(format!("line sku {why}")))?;
        let total = merged.entry(sku).or_default();
        *total = total.saturating_add(line.quantity);
    }
    merged
        .into_iter()
        .map(|(sku, quantity)| {
            Quantity::new(quantity)
                .map(|quantity| Line { sku, quantity })
                .map_err(|why| HandleError::Reject(format!("line quantity {why}")))
        })
        .collect()
}

/// Releases reservations past their deadline until `shutdown`.
pub async fn sweep_expired(saga: InventorySaga, interval: Duration, shutdown: CancellationToken) {
    loop {
        match sweep_once(&saga).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "released expired reservations"),
            Err(e) => tracing::warn!(error = %e, "reservation sweep failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Reservations one sweep releases at most; the rest wait for the next.
const SWEEP_BATCH: usize = 100;

/// One sweep: releases expired reservations, oldest first, each in a
/// transaction of its own. A transaction then locks one reservation's stock
/// rows, in SKU order as reserving and committing do, so sweepers (one per
/// replica) and the saga cannot deadlock; and a reservation that cannot be
/// released is logged and skipped, holding up no other. Returns how many
/// were released.
pub async fn sweep_once(saga: &InventorySaga) -> Result<usize, HandleError> {
    let mut released = 0;
    let mut skipped: Vec<String> = Vec::new();
    while released + skipped.len() < SWEEP_BATCH {
        let mut tx = saga.outbox.begin(&saga.pool).await?;
        let Some((order_id, user_id)) = stock::claim_expired(&mut tx, &skipped).await? else {
            break;
        };
        let expired = Trigger::Release(ReleaseReason::Expired);
        match saga.on(&mut tx, &order_id, &user_id, expired, &[], None).await {
            Ok(_) => {
                saga.outbox.commit(tx).await?;
                released += 1;
            }
            Err(e) => {
                drop(tx);
                tracing::error!(order_id, error = %e, "cannot release an expired reservation; skipping it");
                metrics::counter!(shop_runtime::series::RESERVATION_RELEASE_FAILURES).increment(1);
                skipped.push(order_id);
            }
        }
    }
    Ok(released)
}
